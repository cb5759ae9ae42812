"""Garbage on the HTTP port: random bytes, truncated and mutated requests, oversized heads,
broken chunking, abrupt resets. The node must stay up, never answer 5xx, and a well-behaved
client working at the same time must get correct answers throughout.

Failures print the seed; `RINGKV_HTTP_FUZZ_SEED=<seed>` replays the same inputs (each of the
concurrent fuzzers draws from its own seeded stream; their interleaving is the scheduler's).
"""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import struct
import threading
import time

import httpx
import pytest

from ringkv.testing.launcher import NodeProcess

ROUNDS = 400
FUZZERS = 4  # concurrent hostile clients, each with its own seeded stream of inputs
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")

VALID_REQUESTS = [
    b"GET /api/v1/keys/fuzz:a HTTP/1.1\r\nHost: n\r\n\r\n",
    b"HEAD /api/v1/keys/fuzz:a HTTP/1.1\r\nHost: n\r\n\r\n",
    b"DELETE /api/v1/keys/fuzz:b HTTP/1.1\r\nHost: n\r\n\r\n",
    b'PUT /api/v1/keys/fuzz:a HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"value":"v"}',
    b'PUT /api/v1/keys/fuzz:b HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{"value_base64":"/wD+"}',
    b'PUT /api/v1/keys/fuzz:b?encoding=base64 HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"value":"dg=="}',
    b"PUT /api/v1/keys/fuzz:c?ttl=5 HTTP/1.1\r\nHost: n\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc",
    b'POST /api/v1/keys/fuzz:n/incr HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"delta":2}',
    b'POST /api/v1/batch/get HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{"keys":["fuzz:a"]}',
    b'POST /api/v1/batch/put HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{"operations":[{"key":"fuzz:p","value":"v"}],"atomic":false}',
    b'POST /api/v1/keys/fuzz:c/cas HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n{"expected_version":null,"new_value":"c"}',
    b'POST /api/v1/keys/fuzz:a/ttl HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{"ttl_seconds":60}',
    b"GET /api/v1/keys?prefix=fuzz&limit=5 HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET /api/v1/scan?cursor=0&count=5 HTTP/1.1\r\nHost: n\r\n\r\n",
    b"PUT /api/v1/keys/fuzz:d HTTP/1.1\r\nHost: n\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
]


def garbage(rng: random.Random) -> bytes:
    """One hostile input."""
    base = rng.choice(VALID_REQUESTS)
    kind = rng.randrange(9)
    if kind == 0:  # pure noise
        return rng.randbytes(rng.randint(1, 4000))
    if kind == 1:  # a request cut anywhere
        return base[: rng.randrange(1, len(base))]
    if kind == 2:  # a few bytes flipped
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:  # a head far over the limit
        return b"GET /api/v1/keys/" + b"k" * rng.choice([70_000, 200_000]) + b" HTTP/1.1\r\nHost: n\r\n\r\n"
    if kind == 4:  # many headers
        return b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(3000)) + b"\r\n"
    if kind == 5:  # a body shorter than its Content-Length
        return base.replace(b"Content-Length: ", b"Content-Length: 9") if b"Content-Length" in base else base + b"junk"
    if kind == 6:  # broken chunked encoding
        return (b"PUT /api/v1/keys/fuzz:e HTTP/1.1\r\nHost: n\r\nContent-Type: application/octet-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + rng.choice([b"zz\r\nabc\r\n", b"ffffffffffffffff\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"]))
    if kind == 7:  # valid requests pipelined with noise between them
        return base + rng.randbytes(rng.randint(1, 64)) + base
    return bytes(rng.choice(b"\r\n :/%\x00\xff") for _ in range(rng.randint(1, 200)))  # separators only


def send_one(port: int, data: bytes, rng: random.Random) -> list[int]:
    """Send `data`, then reset, half-close or just wait; the statuses answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except OSError:
            return []  # the node closed on us mid-send (e.g. the head limit): fine
        ending = rng.randrange(3)
        if ending == 0:  # vanish with a reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return []
        if ending == 1:
            try:
                s.shutdown(socket.SHUT_WR)  # the node answers what it got, then closes
            except OSError:
                pass  # it closed first (e.g. a head over the limit)
        else:
            # Left open: a keep-alive or incomplete request holds the connection, so read
            # what comes within a short while.
            s.settimeout(0.2)
        got = b""
        try:
            while len(got) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, OSError):
            pass  # a request left open waits for more bytes: the timeout ends it
        return [int(m.group(1)) for m in STATUS_LINE.finditer(got)]


class Fuzzer(threading.Thread):
    def __init__(self, port: int, seed: int, rounds: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.rng = random.Random(seed)
        self.rounds = rounds
        self.statuses: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.rounds):
                self.statuses += send_one(self.port, garbage(self.rng), self.rng)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


class WellBehavedClient(threading.Thread):
    """Writes and reads its own keys for as long as the fuzzing lasts; records every wrong answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.rounds = 0

    def run(self) -> None:
        rng = random.Random(7)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                key = f"good:{self.rounds % 50}"
                # Bytes in value_base64 and text in value, in turn.
                if self.rounds % 2:
                    value = rng.randbytes(rng.randint(0, 2000))
                    body = {"value_base64": base64.b64encode(value).decode()}
                else:
                    text = "".join(rng.choice("aé€😀\x01\"\\ ") for _ in range(rng.randint(0, 500)))
                    value = text.encode()
                    body = {"value": text}
                try:
                    r = client.put(f"/api/v1/keys/{key}", json=body)
                    if r.status_code != 200:
                        self.errors.append(f"PUT {key}: {r.status_code} {r.text[:200]}")
                    r = client.get(f"/api/v1/keys/{key}", headers={"Accept": "application/octet-stream"})
                    if r.status_code != 200 or r.content != value:
                        self.errors.append(f"GET {key}: {r.status_code}, value {'ok' if r.content == value else 'wrong'}")
                    if "value" in body:  # text: JSON answers it as the same text
                        r = client.get(f"/api/v1/keys/{key}")
                        if r.status_code != 200 or r.json().get("value") != body["value"]:
                            self.errors.append(f"GET {key} as JSON: {r.status_code}, {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.rounds += 1


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("http-fuzz") / "n1").start()
    yield node
    assert node.stop() == 0, node.log()


def test_garbage_on_the_http_port_never_takes_the_node_down(node):
    seed = int(os.environ.get("RINGKV_HTTP_FUZZ_SEED", random.randrange(1 << 32)))
    print(f"reproduce with RINGKV_HTTP_FUZZ_SEED={seed}")
    url = f"http://127.0.0.1:{node.http_port}"
    good = WellBehavedClient(url)
    good.start()
    statuses: list[int] = []
    # A few connections stay open, half-sent, for the whole run: they must not block others.
    hanging = [socket.create_connection(("127.0.0.1", node.http_port)) for _ in range(5)]
    try:
        for s in hanging:
            s.sendall(b"PUT /api/v1/keys/hang HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial")
        started = time.monotonic()
        fuzzers = [Fuzzer(node.http_port, seed + i, ROUNDS // FUZZERS) for i in range(FUZZERS)]
        for f in fuzzers:
            f.start()
        for f in fuzzers:
            f.join(120)
            assert f.error is None, f"seed {seed}: a fuzzer failed: {f.error!r}"
            statuses += f.statuses
        fuzz_s = time.monotonic() - started
    finally:
        good.stop.set()
        good.join(30)
        for s in hanging:
            s.close()
    assert node.proc.poll() is None, f"seed {seed}: the node died\n{node.log()}"
    assert not good.errors, f"seed {seed}: the well-behaved client saw: {good.errors[:5]}"
    assert good.rounds > 10, f"the well-behaved client only got {good.rounds} rounds in {fuzz_s:.1f} s"
    assert statuses, "no fuzz input got any answer"
    assert all(s < 500 for s in statuses), f"seed {seed}: 5xx answers: {sorted(set(statuses))}\n{node.log()}"
    r = httpx.get(f"{url}/readyz")
    assert r.json() == {"status": "ready"}
    assert "Traceback" not in node.log(), node.log()


def test_a_broken_chunk_on_an_unknown_path_is_answered_once_and_logs_nothing(node):
    # The server answers the broken chunked body 400 and closes while the router is still
    # producing its 404 for the path: the 404 must be dropped quietly, not logged as an error.
    data = (b"PUT /api'v1/keys/fuzz:d HTTP/1.1\r\nHost: n\r\nContent-Type: application/octet-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\xf7\n\r\n")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as s:
            s.sendall(data)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert [int(m.group(1)) for m in STATUS_LINE.finditer(got)] == [400]
    assert httpx.get(f"http://127.0.0.1:{node.http_port}/readyz").status_code == 200
    assert "Traceback" not in node.log(), node.log()
