"""Authenticated members on real TCP: the cluster secret's challenge, mutual TLS, and what a
stranger gets (docs/formats/rpc.md, "Handshake"; docs/security.md, "Authenticated members").

Every scenario runs on both event loops, as in test_rpc_loopback.py. A server's handler
records every request it runs, so "nothing the stranger sent was processed" is asserted on
the server side, not inferred from the client's error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from ringkv.errors import ConfigError, HandshakeError
from ringkv.net import MessageCodec, RpcClient, RpcLimits, RpcServer
from ringkv.net.auth import (
    CLIENT,
    NONCE_BYTES,
    RpcSecurity,
    handshake_proof,
    read_secret_file,
)
from ringkv.net.envelope import (
    PROTOCOL_VERSION,
    Handshake,
    HandshakeProof,
    HandshakeReply,
    Request,
)
from ringkv.net.framing import FrameDecoder, encode_frame
from ringkv.net.tls import tls_contexts

CLUSTER = "blue"
SECRET = b"7f3a0c9e5b214d6f8a1e2c3b4d5e6f70"
OTHER_SECRET = b"0000000000000000ffffffffffffffff"
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Echo(msgspec.Struct, tag=True):
    data: bytes


CODEC = MessageCodec([Echo])


class Recorder:
    """The server's handler: every request it ran, in order."""

    def __init__(self) -> None:
        self.ran: list[bytes] = []

    async def handle(self, peer: str, body: Any) -> Any:
        self.ran.append(body.data)
        return body


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def run(scenario: Awaitable[Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(asyncio.wait_for(scenario, 20))

    return run


async def start_server(recorder: Recorder, security: RpcSecurity, *, node_id: str = "n2",
                       **kwargs: Any) -> RpcServer:
    server = RpcServer(recorder.handle, CLUSTER, node_id, CODEC, security=security, **kwargs)
    await server.start("127.0.0.1", 0)
    return server


def client_of(server: RpcServer, security: RpcSecurity, *, node_id: str = "n1",
              peer: str = "n2") -> RpcClient:
    client = RpcClient(node_id, CLUSTER, CODEC, rng=random.Random(7), security=security)
    client.set_peer_address(peer, *server.address)
    return client


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def frames_of(data: bytes) -> list[bytes]:
    return FrameDecoder().feed(data)


# --- the cluster secret ------------------------------------------------------------------------


def test_members_holding_the_secret_call_each_other(run):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, RpcSecurity(SECRET))
        client = client_of(server, RpcSecurity(SECRET))
        replies = await asyncio.gather(*(client.call("n2", Echo(b"%d" % i), 5000) for i in range(50)))
        assert [r.data for r in replies] == [b"%d" % i for i in range(50)]
        assert server.stats.total == 0 and client.stats.peers_refused == 0
        await client.close()
        await server.close()

    run(scenario())


def test_a_caller_with_another_secret_is_refused_and_nothing_it_sent_runs(run, caplog):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, RpcSecurity(SECRET))
        stranger = client_of(server, RpcSecurity(OTHER_SECRET), node_id="n1")
        with pytest.raises(HandshakeError) as caught:
            await stranger.call("n2", Echo(b"write me"), 2000)
        assert "node n2 failed the cluster secret's challenge" in str(caught.value)
        assert "the nodes hold different secrets" in str(caught.value)
        # The server saw the caller hang up instead of proving the secret.
        await asyncio.sleep(0.1)
        assert recorder.ran == []
        assert server.stats.by_kind == {"secret": 1}
        assert stranger.stats.peers_refused == 1
        await stranger.close()
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    logged = warnings_of(caplog)
    assert "refused RPC connection from 127.0.0.1:" in logged
    assert "(node n1): it closed the connection instead of proving the cluster secret" in logged
    assert "RPC handshake with n2 at 127.0.0.1:" in logged


def test_a_caller_without_the_secret_is_refused_with_how_to_configure_it(run, caplog):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, RpcSecurity(SECRET))
        stranger = client_of(server, RpcSecurity(), node_id="evil")
        with pytest.raises(HandshakeError) as caught:
            await stranger.call("n2", Echo(b"write me"), 2000)
        assert ("node n2 requires the cluster secret, and the handshake offered none "
                "(set cluster_secret_file on every member)") in str(caught.value)
        assert recorder.ran == [] and server.stats.by_kind == {"secret": 1}
        await stranger.close()
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "refused RPC connection from 127.0.0.1:" in warnings_of(caplog)
    assert "(node evil): node n2 requires the cluster secret" in warnings_of(caplog)


def test_a_node_without_the_secret_is_not_trusted_by_a_caller_holding_it(run):
    # A stranger listening where a member should be (a stale address, a hijacked port) gets
    # none of the member's requests.
    async def scenario() -> None:
        impostor = Recorder()
        server = await start_server(impostor, RpcSecurity())
        member = client_of(server, RpcSecurity(SECRET))
        with pytest.raises(HandshakeError, match="node n2 did not answer the cluster secret's challenge"):
            await member.call("n2", Echo(b"a record"), 2000)
        assert impostor.ran == []
        await member.close()
        await server.close()

    run(scenario())


async def _raw_handshake(server: RpcServer, node_id: str = "n1") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, Handshake, HandshakeReply]:
    """A hand-made connection that has sent its Handshake and read the server's challenge."""
    reader, writer = await asyncio.open_connection(*server.address)
    hello = Handshake(PROTOCOL_VERSION, CLUSTER, node_id, os.urandom(NONCE_BYTES))
    writer.write(encode_frame(CODEC.encode(hello)))
    header = await reader.readexactly(4)
    payload = await reader.readexactly(int.from_bytes(header, "big"))
    return reader, writer, hello, CODEC.decode_handshake_reply(payload)


def test_a_stranger_speaking_the_handshake_by_hand_gets_nothing_run(run, caplog):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, RpcSecurity(SECRET))
        reader, writer, _, challenge = await _raw_handshake(server, "evil")
        assert challenge.accepted and len(challenge.nonce) == NONCE_BYTES
        # A made-up proof, and a request right behind it in the same write.
        writer.write(encode_frame(CODEC.encode(HandshakeProof(os.urandom(32))))
                     + encode_frame(CODEC.encode(Request(1, Echo(b"forged")))))
        rest = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        [refusal] = frames_of(rest)
        reply = CODEC.decode_handshake_reply(refusal)
        assert not reply.accepted and "proof of the cluster secret does not match" in reply.reason
        assert recorder.ran == [] and server.stats.by_kind == {"secret": 1}
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "(node evil): its proof of the cluster secret does not match" in warnings_of(caplog)


def test_a_recorded_handshake_replayed_is_refused(run):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, RpcSecurity(SECRET))
        # A member's connection, its bytes recorded as an eavesdropper would.
        reader, writer, hello, challenge = await _raw_handshake(server)
        proof = handshake_proof(SECRET, CLIENT, PROTOCOL_VERSION, CLUSTER, "n1", "n2",
                                hello.nonce, challenge.nonce)
        after = (encode_frame(CODEC.encode(HandshakeProof(proof)))
                 + encode_frame(CODEC.encode(Request(1, Echo(b"once")))))
        writer.write(after)
        header = await reader.readexactly(4)
        response = CODEC.decode_envelope(await reader.readexactly(int.from_bytes(header, "big")))
        assert CODEC.decode_body(response.body) == Echo(b"once")
        writer.close()
        recorded = encode_frame(CODEC.encode(hello)) + after
        # The same bytes again, on a new connection: the server's challenge is a new one.
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(recorded)
        answer = frames_of(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        assert len(answer) == 2
        fresh = CODEC.decode_handshake_reply(answer[0])
        assert fresh.accepted and fresh.nonce != challenge.nonce
        assert not CODEC.decode_handshake_reply(answer[1]).accepted
        assert recorder.ran == [b"once"]
        await server.close()

    run(scenario())


def test_a_handshake_over_the_handshake_limit_is_cut_off_at_its_header(run, caplog):
    async def scenario() -> None:
        server = await start_server(Recorder(), RpcSecurity(SECRET))
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write((1024 * 1024).to_bytes(4, "big") + b"x" * 100)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert server.stats.by_kind == {"malformed": 1}
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "frame of 1048576 bytes is over max_handshake_bytes=4096" in warnings_of(caplog)


def test_a_caller_that_never_proves_is_dropped_at_the_handshake_timeout(run, caplog):
    async def scenario() -> None:
        server = await start_server(Recorder(), RpcSecurity(SECRET),
                                    limits=RpcLimits(handshake_timeout_ms=100))
        reader, writer, _, challenge = await _raw_handshake(server)
        assert challenge.accepted
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert time.monotonic() - started < 5
        writer.close()
        assert server.stats.by_kind == {"timeout": 1}
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "handshake not finished within handshake_timeout_ms=100" in warnings_of(caplog)


# --- fuzzed handshakes -------------------------------------------------------------------------

FUZZ_TIMEOUT_MS = 300


class ThreadedServer:
    """A server with the secret on an event loop of its own thread, for blocking-socket
    fuzzing: one server takes every example, as a node takes every stranger."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._await(start_server(
            self.recorder, RpcSecurity(SECRET), limits=RpcLimits(handshake_timeout_ms=FUZZ_TIMEOUT_MS)))

    def _await(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(20)

    def member_call(self, data: bytes) -> bytes:
        async def call() -> bytes:
            client = client_of(self.server, RpcSecurity(SECRET))
            try:
                return (await client.call("n2", Echo(data), 5000)).data
            finally:
                await client.close()

        return self._await(call())

    def close(self) -> None:
        self._await(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def threaded_server():
    server = ThreadedServer()
    yield server
    server.close()


def _valid_opening() -> bytes:
    hello = Handshake(PROTOCOL_VERSION, CLUSTER, "n1", b"\x01" * NONCE_BYTES)
    return (encode_frame(CODEC.encode(hello)) + encode_frame(CODEC.encode(HandshakeProof(b"\x02" * 32)))
            + encode_frame(CODEC.encode(Request(1, Echo(b"fuzz")))))


@st.composite
def hostile_openings(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "mutated"]))
    valid = _valid_opening()
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=600))
    if kind == "truncated":
        return valid[:draw(st.integers(0, len(valid) - 1))]
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(opening=hostile_openings())
def test_fuzzed_handshakes_never_run_anything_and_are_answered_within_the_bound(threaded_server, opening):
    host, port = threaded_server.server.address
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(opening)
        received = b""
        while chunk := s.recv(65536):  # until the server closes: it must, however we stopped
            received += chunk
    elapsed_ms = (time.monotonic() - started) * 1000
    # Closed within the handshake bound (and slack for a loaded machine), never kept open.
    assert elapsed_ms < FUZZ_TIMEOUT_MS + 3000
    # At most the challenge and a refusal came back: never a Response.
    for frame in FrameDecoder(1 << 20).feed(received)[:2]:
        assert isinstance(CODEC.decode_handshake_reply(frame), HandshakeReply)
    assert threaded_server.recorder.ran == []


def test_after_the_fuzzing_members_are_still_served(threaded_server):
    assert threaded_server.member_call(b"still here") == b"still here"
    assert threaded_server.recorder.ran == [b"still here"]


@given(frames=st.lists(st.binary(max_size=50), max_size=6), cut=st.integers(0, 400))
def test_reading_one_frame_at_a_time_keeps_the_rest_for_later(frames, cut):
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got = decoder.feed(stream[:cut], 1)
    assert len(got) <= 1
    got += decoder.feed(stream[cut:], 1)
    while more := decoder.feed(b"", 1):
        got += more
    assert got == frames and decoder.buffered_bytes == 0


# --- the secret file ---------------------------------------------------------------------------


def test_a_secret_file_others_can_read_is_refused_naming_the_setting(tmp_path):
    path = tmp_path / "cluster.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        read_secret_file(str(path))
    assert str(caught.value) == (f"cluster_secret_file: {path} is open to group or others (mode 0644): "
                                 f"whoever reads it can join the cluster; `chmod 600 {path}`")
    path.chmod(0o600)
    assert read_secret_file(str(path)) == SECRET  # the newline is not part of it


def test_a_short_secret_is_refused(tmp_path):
    path = tmp_path / "cluster.secret"
    path.write_bytes(b"hunter2")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"cluster_secret_file: the cluster secret must be 16\.\.1024 bytes, got 7"):
        read_secret_file(str(path))


def test_the_secret_never_shows_in_a_repr():
    assert SECRET.decode() not in repr(RpcSecurity(SECRET))


# --- mutual TLS --------------------------------------------------------------------------------


def tls(ca, node_id: str, secret: bytes | None = None, *, ca_file: str | None = None) -> RpcSecurity:
    cert, key = ca.issue(node_id)
    return RpcSecurity(secret, *tls_contexts(cert, key, ca_file or str(ca.ca_file)))


def test_members_with_certificates_of_the_cluster_ca_call_each_other(run, cluster_ca):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, tls(cluster_ca, "n2"))
        client = client_of(server, tls(cluster_ca, "n1"))
        assert (await client.call("n2", Echo(b"over TLS"), 5000)).data == b"over TLS"
        both = await start_server(recorder, tls(cluster_ca, "n3", SECRET), node_id="n3")
        with_secret = client_of(both, tls(cluster_ca, "n1", SECRET), peer="n3")
        assert (await with_secret.call("n3", Echo(b"TLS and secret"), 5000)).data == b"TLS and secret"
        assert server.stats.total == both.stats.total == 0
        await client.close()
        await with_secret.close()
        await server.close()
        await both.close()

    run(scenario())


def test_a_certificate_of_another_ca_is_refused_on_both_sides(run, caplog, cluster_ca, other_ca):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, tls(cluster_ca, "n2"))
        # Its own certificate from another CA, though it trusts ours: the server refuses it.
        outsider = client_of(server, tls(other_ca, "n1", ca_file=str(cluster_ca.ca_file)))
        with pytest.raises(HandshakeError):
            await outsider.call("n2", Echo(b"in"), 3000)
        await asyncio.sleep(0.2)
        assert server.stats.by_kind == {"tls": 1}
        # A server with another CA's certificate: the member refuses it.
        rogue = await start_server(recorder, tls(other_ca, "n3", ca_file=str(cluster_ca.ca_file)),
                                   node_id="n3")
        member = client_of(rogue, tls(cluster_ca, "n1"), peer="n3")
        with pytest.raises(HandshakeError, match=r"TLS handshake with 127\.0\.0\.1:[0-9]+ failed"):
            await member.call("n3", Echo(b"a record"), 3000)
        assert recorder.ran == []
        for closing in (outsider, member):
            await closing.close()
        await server.close()
        await rogue.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "refused RPC connection from 127.0.0.1:" in warnings_of(caplog)
    assert "TLS handshake failed" in warnings_of(caplog)


def test_a_certificate_naming_another_node_is_refused(run, caplog, cluster_ca):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, tls(cluster_ca, "n2"))
        # n9's certificate (of the cluster CA), claiming to be n1.
        cert, key = cluster_ca.issue("n9")
        impostor = client_of(server, RpcSecurity(None, *tls_contexts(cert, key, str(cluster_ca.ca_file))))
        with pytest.raises(HandshakeError, match="its certificate names n9, not node n1"):
            await impostor.call("n2", Echo(b"in"), 3000)
        assert server.stats.by_kind == {"certificate": 1}
        # The other way: the node at n2's address holds n3's certificate.
        moved = await start_server(recorder, tls(cluster_ca, "n3"), node_id="n2")
        member = client_of(moved, tls(cluster_ca, "n1"))
        with pytest.raises(HandshakeError, match=r"the certificate of 127\.0\.0\.1:[0-9]+ names n3, not node n2"):
            await member.call("n2", Echo(b"a record"), 3000)
        assert recorder.ran == []
        for closing in (impostor, member):
            await closing.close()
        await server.close()
        await moved.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "(node n1): its certificate names n9, not node n1" in warnings_of(caplog)


def test_a_subject_alternative_name_names_a_node_too(run, cluster_ca):
    async def scenario() -> None:
        cert, key = cluster_ca.issue("host-17.example", dns_names=("n1", "host-17.example"))
        server = await start_server(Recorder(), tls(cluster_ca, "n2"))
        client = client_of(server, RpcSecurity(None, *tls_contexts(cert, key, str(cluster_ca.ca_file))))
        assert (await client.call("n2", Echo(b"by SAN"), 5000)).data == b"by SAN"
        await client.close()
        await server.close()

    run(scenario())


def test_a_private_key_every_user_can_read_is_refused(cluster_ca):
    cert, key = cluster_ca.issue("n1")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=r"rpc_tls_key: .* is open to every user"):
        tls_contexts(cert, key, str(cluster_ca.ca_file))


def test_plain_bytes_to_a_tls_port_are_refused_with_a_log_line(run, caplog, cluster_ca):
    async def scenario() -> None:
        recorder = Recorder()
        server = await start_server(recorder, tls(cluster_ca, "n2", SECRET))
        reader, writer = await asyncio.open_connection(*server.address)
        hello = Handshake(PROTOCOL_VERSION, CLUSTER, "evil", os.urandom(NONCE_BYTES))
        writer.write(encode_frame(CODEC.encode(hello)) + encode_frame(CODEC.encode(Request(1, Echo(b"x")))))
        await asyncio.wait_for(reader.read(), 10)  # a TLS alert at most, then the close
        writer.close()
        assert recorder.ran == [] and server.stats.by_kind == {"tls": 1}
        await server.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net"):
        run(scenario())
    assert "TLS handshake failed" in warnings_of(caplog)
