"""Whether a failed call may have run on the peer: a request that was sent when the connection
dropped fails with ConnectionLostError (its outcome is unknown: a caller must not run it
elsewhere), one that never left this node with a plain PeerUnavailableError (it never ran).
node/forwarding.py relies on the difference (docs/reliability.md, Finding 3)."""

from __future__ import annotations

import asyncio

import pytest
from tests.net.test_rpc_loopback import Echo, Hold, Node, client_of, run, start_server  # noqa: F401

from ringkv.errors import ConnectionLostError, PeerUnavailableError


def test_a_request_in_flight_when_the_connection_drops_may_have_run(run):  # noqa: F811
    async def scenario() -> None:
        node = Node()
        server = await start_server(node)
        client = client_of(server)
        call = asyncio.ensure_future(client.call("n2", Hold(b"running"), 10_000))
        while node.running == 0:  # the server is running it now
            await asyncio.sleep(0.005)
        await server.close()
        with pytest.raises(ConnectionLostError, match="n2 unavailable: connection lost"):
            await call
        await client.close()

    run(scenario())


def test_a_request_that_could_not_be_sent_never_ran(run):  # noqa: F811
    async def scenario() -> None:
        server = await start_server(Node())
        client = client_of(server)
        await server.close()
        with pytest.raises(PeerUnavailableError) as refused:
            await client.call("n2", Echo(b"x"), 1000)
        assert not isinstance(refused.value, ConnectionLostError)
        await client.close()

    run(scenario())
