"""Fixtures for the protocol tests: real `ringkv serve` processes, a real redis-server to compare
against, and a raw socket client that sees the exact bytes a node writes.

Every node is a subprocess started by `ringkv.testing.launcher.NodeProcess` on free ports, so
the tests exercise what a user runs: the CLI, the configuration loader, the event loop and the
RESP server, not an in-process stand-in.
"""

from __future__ import annotations

import importlib.util
import socket

import pytest

from ringkv.testing.launcher import NodeProcess

# The HTTP API is served beside RESP once it exists; until then the nodes run without it.
HTTP_ENABLED = "true" if importlib.util.find_spec("ringkv.api.http_serving") else "false"

RAW_TIMEOUT_S = 5.0


# ---------------------------------------------------------------------------------------- nodes


@pytest.fixture
def start_node(tmp_path):
    """Start a node with `RINGKV_*` settings (`start_node(keys_max_count=10)`); stopped after."""
    started: list[NodeProcess] = []

    def start(**settings) -> NodeProcess:
        settings.setdefault("http_enabled", HTTP_ENABLED)
        node = NodeProcess(tmp_path / f"n{len(started) + 1}", **settings)
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory):
    """One default node for a whole module: its tests clean the keyspace themselves."""
    node = NodeProcess(tmp_path_factory.mktemp("shared") / "n1", http_enabled=HTTP_ENABLED)
    node.start()
    yield node
    node.stop()


# ---------------------------------------------------------------------------------- raw client


def encode_command(*args: bytes | str | int) -> bytes:
    """A request as every client library sends it: a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def reply_end(buf: bytes, pos: int = 0) -> int | None:
    """Where the RESP2/RESP3 reply starting at `buf[pos]` ends, or None if it is incomplete."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind = buf[pos : pos + 1]
    after = line_end + 2
    if kind in b"+-:_,#(":
        return after
    size = int(buf[pos + 1 : line_end])
    if kind in (b"$", b"=", b"!"):
        if size < 0:
            return after
        return after + size + 2 if len(buf) >= after + size + 2 else None
    if kind in (b"*", b"~", b">", b"%", b"|"):
        items = size * 2 if kind in (b"%", b"|") else max(size, 0)
        for _ in range(items):
            after = reply_end(buf, after)
            if after is None:
                return None
        return after
    raise AssertionError(f"not a RESP reply: {buf[pos : pos + 40]!r}")


class RawConnection:
    """A socket that sends bytes and returns the reply bytes exactly as the node wrote them."""

    def __init__(self, port: int, timeout_s: float = RAW_TIMEOUT_S):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, *args) -> bytes:
        self.send(encode_command(*args))
        return self.read_reply()

    def read_reply(self) -> bytes:
        while True:
            end = reply_end(self.buf) if self.buf else None
            if end is not None:
                reply, self.buf = self.buf[:end], self.buf[end:]
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed by the node; unparsed bytes: {self.buf[:200]!r}")
            self.buf += data

    def read_until_closed(self, limit_bytes: int = 1 << 20) -> bytes:
        """Everything the node writes until it closes the connection (fails on a timeout)."""
        data = self.buf
        self.buf = b""
        while len(data) <= limit_bytes:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"the node kept writing past {limit_bytes} bytes")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_connect():
    """`raw_connect(port)` opens a RawConnection; all are closed after the test."""
    opened: list[RawConnection] = []

    def connect(port: int, timeout_s: float = RAW_TIMEOUT_S) -> RawConnection:
        conn = RawConnection(port, timeout_s)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
