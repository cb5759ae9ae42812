"""A command handler that suspends without a future (a bare `await asyncio.sleep(0)`, which
long-running admin work uses to let requests in between) still gets its reply sent, and the
connection keeps serving after it."""

from __future__ import annotations

import asyncio

from ringkv.api.resp_server import RespConnection, RespServer
from ringkv.clock import Clock
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica
from ringkv.storage import Engine, Options


class SlowAdmin:
    """An admin service whose membership status takes a few bare yields."""

    async def status(self):
        for _ in range(3):
            await asyncio.sleep(0)
        return {"done": ["STATUS"]}


def test_a_reply_after_a_bare_yield_is_sent(tmp_path):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        local = LocalService(LocalStore(Replica(engine, b"a1"), Clock(), namespaces=Namespaces(1, "siblings")))
        server = RespServer(local, SlowAdmin())
        listener = await asyncio.get_running_loop().create_server(lambda: RespConnection(server), "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"*1\r\n$13\r\nRINGKV.STATUS\r\n*1\r\n$4\r\nPING\r\n")
            reply = await asyncio.wait_for(reader.readuntil(b"+PONG\r\n"), timeout=5)
            assert reply == b'$20\r\n{"done": ["STATUS"]}\r\n+PONG\r\n'
            writer.close()
        finally:
            listener.close()
            engine.close()

    asyncio.run(main())
