"""How the Python client carries a session (docs/client.md, "Consistency"): the session's
newest state stays on the pooled connection that ran its last command, and the client fetches
the token only with a write, when another request takes that connection, or when asked; a
lost holder raises SessionStateLostError once. The node answers the token only when a command
changed it (`RINGKV.SESSION TOKEN CHANGED`).
Against a cluster of one real `ringkv serve` (a node of one outside a cluster keeps no
tokens: every read there is as new as any write); the guarantees themselves are tested on clusters
(tests/processes/test_sessions_processes.py, tests/chaos/test_sessions_chaos.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import redis

from ringkv.client import AsyncClient, Client, ClientError, SessionStateLostError, sync
from ringkv.testing.launcher import LocalCluster, NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with LocalCluster(tmp_path_factory.mktemp("client-sessions"), nodes=1, replicas=1, partitions=16,
                      http_enabled="false") as cluster:
        yield cluster.nodes[0]


@pytest.fixture
def sent(monkeypatch) -> list[list[bytes]]:
    """The pipelines the sync client sends in sessions, by command name (first two words of a
    RINGKV.SESSION command, the word of any other), recorded as sent."""
    out: list[list[bytes]] = []
    real = sync.plan

    def recording(*args, **kwargs):
        p = real(*args, **kwargs)
        if p is not None:
            out.append([b" ".join(c[:2]) if c[0] == b"RINGKV.SESSION" else c[0] for c in p.commands])
        return p

    monkeypatch.setattr(sync, "plan", recording)
    return out


RESUME = b"RINGKV.SESSION"  # the first two words of a resume: the token is the second


def _words(pipeline: list[bytes]) -> list[bytes]:
    return [RESUME if w.startswith(b"RINGKV.SESSION ") and not w.endswith((b"TOKEN", b"END")) else w
            for w in pipeline]


def test_a_session_on_its_own_connection_sends_the_command_alone(node: NodeProcess, sent):
    with Client(port=node.resp_port, max_connections=1) as base:
        a, b = base.session(), base.session()
        a.set("k", "1")
        assert a.get("k") == b"1"
        assert a.get("k") == b"1"
        # Writes fetch the token in their pipeline; reads on the holder send the command alone.
        assert [_words(p) for p in sent] == [[RESUME, b"SET", b"RINGKV.SESSION TOKEN"], [b"GET"], [b"GET"]]
        sent.clear()
        # `b` takes the connection: it fetches `a`'s token first, then starts its own session.
        b.get("k")
        assert [_words(p) for p in sent] == [[b"RINGKV.SESSION TOKEN", RESUME, b"GET"]]
        token = a._session.token
        sent.clear()
        assert a.session_token == token  # fetched by `b`'s request: no round trip
        assert sent == []
        # A request without a session on a connection holding one fetches that session's
        # token and ends it there first.
        assert base.get("k") == b"1"
        assert [_words(p) for p in sent] == [[b"RINGKV.SESSION TOKEN", b"RINGKV.SESSION END", b"GET"]]
        sent.clear()
        assert base.get("k") == b"1"
        assert sent == []  # a plain request on a plain connection: no pipeline


def test_two_sessions_alternating_on_one_connection_keep_their_own_state(node: NodeProcess):
    with Client(port=node.resp_port, max_connections=1) as base:
        a, b = base.session(), base.session()
        for i in range(5):
            a.set("alt-a", f"a{i}")
            b.set("alt-b", f"b{i}")
            assert a.get("alt-a") == f"a{i}".encode()
            assert b.get("alt-b") == f"b{i}".encode()
            assert b.get("alt-a") == f"a{i}".encode()
        token_a, token_b = a.session_token, b.session_token
        assert token_a and token_b and token_a != token_b
        # Each token is its own session's: resumed anywhere, it answers as it was.
        r = redis.Redis(port=node.resp_port, single_connection_client=True)
        try:
            assert r.execute_command("RINGKV.SESSION", token_a) == token_a
            assert r.execute_command("RINGKV.SESSION", token_b) == token_b
        finally:
            r.close()


def test_a_session_moves_to_another_connection_when_its_holder_is_taken(node: NodeProcess, sent):
    with Client(port=node.resp_port, max_connections=2) as base:
        a, b = base.session(), base.session()
        a.set("mv", "1")
        a.get("mv")
        holder = a._session.holder
        b.get("mv")  # takes `a`'s holder (the pool's last released) and fetches `a`'s token
        assert a._session.holder is None and not a._session.unfetched
        busy = base._pool.get_connection()  # the connection `b` holds now, lent out
        assert busy is holder  # the pool hands out the connection released last
        try:
            sent.clear()
            assert a.get("mv") == b"1"
            assert [_words(p) for p in sent] == [[RESUME, b"GET"]]
            assert a._session.holder is not None and a._session.holder is not busy
        finally:
            base._pool.release(busy)


def _drop(conn) -> None:
    """The connection dies under the client (as a node-side kill does): its socket is shut."""
    conn._sock.shutdown(socket.SHUT_RDWR)


def test_a_lost_holder_with_unfetched_reads_raises_once_then_the_session_goes_on(node: NodeProcess):
    with Client(port=node.resp_port, max_connections=1) as base:
        a = base.session()
        a.set("lost", "mine")
        token = a.session_token
        assert a.get("lost") == b"mine"
        _drop(a._session.holder)
        with pytest.raises(SessionStateLostError, match=r"session state lost: .* failed during a request") as info:
            a.get("lost")
        assert info.value.token == token
        assert a.get("lost") == b"mine"  # goes on from its token, which holds its write
        # Right after a write nothing is unfetched: losing the holder loses nothing.
        a.set("lost", "again")
        _drop(a._session.holder)
        assert a.get("lost") == b"again"


def test_a_node_restart_mid_session_raises_the_loss_then_reads_see_the_writes(node: NodeProcess):
    with Client(port=node.resp_port, max_connections=2, retries=5) as base:
        a = base.session()
        a.set("restart", "mine")
        assert a.get("restart") == b"mine"
        node.stop()
        node.start()
        with pytest.raises(SessionStateLostError):
            a.get("restart")
        assert a.get("restart") == b"mine"
        assert a.session_token


def test_one_session_from_several_threads_runs_one_request_at_a_time(node: NodeProcess):
    with Client(port=node.resp_port, max_connections=3) as base:
        shared = base.session()
        other = base.session()
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(15):
                    shared.set(f"th{t}", f"{i}")
                    assert shared.get(f"th{t}") == f"{i}".encode()
                    other.get(f"th{t}")  # takes connections the shared session holds
                    base.get(f"th{t}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert shared.session_token and other.session_token


def test_token_changed_answers_the_token_only_when_a_command_changed_it(node: NodeProcess):
    r = redis.Redis(port=node.resp_port, single_connection_client=True)
    other = redis.Redis(port=node.resp_port, single_connection_client=True)
    try:
        assert r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED") is None  # no session
        started = r.execute_command("RINGKV.SESSION")
        assert r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED") == 0  # just answered
        r.set("tc", "v")
        token = r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED")
        assert isinstance(token, bytes) and token != started
        assert r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED") == 0
        r.get("tc")  # the newest entry read again at the same version: nothing changes
        assert r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED") == 0
        # Resuming the token the connection holds, or resuming it elsewhere, answers it as is.
        assert r.execute_command("RINGKV.SESSION", token) == token
        assert other.execute_command("RINGKV.SESSION", token) == token
        assert other.execute_command("RINGKV.SESSION", "TOKEN", "CHANGED") == 0
        assert other.get("tc") == b"v"
        assert other.execute_command("RINGKV.SESSION", "TOKEN") == token
        with pytest.raises(redis.ResponseError, match="TOKEN \\[CHANGED\\]"):
            r.execute_command("RINGKV.SESSION", "TOKEN", "CHANGE")
    finally:
        r.close()
        other.close()


def test_the_async_client_keeps_the_session_on_its_connection(node: NodeProcess):
    async def run() -> None:
        base = AsyncClient(port=node.resp_port, max_connections=1)
        try:
            a, b = base.session(), base.session()
            await a.set("ak", "1")
            assert a.session_token  # a write's token is fetched with it
            assert await a.get("ak") == b"1"
            assert a._session.unfetched
            with pytest.raises(ClientError, match="fetch_session_token"):
                a.session_token  # noqa: B018 - the property raises
            token = await a.fetch_session_token()
            assert token and a.session_token == token
            await a.get("ak")
            await b.get("ak")  # takes the connection: fetches `a`'s token first
            assert not a._session.unfetched and a._session.holder is None
            assert await a.get("ak") == b"1"
            # Two tasks of one session run one at a time.
            results = await asyncio.gather(*(a.get("ak") for _ in range(10)), b.set("ak", "2"))
            assert all(r in (b"1", b"2") for r in results[:10])
            assert await a.get("ak") == b"2"
        finally:
            await base.close()

    asyncio.run(run())
