"""Hostile and careless clients: the node stays up and well-behaved clients never notice.

Malformed requests (random bytes, truncated RESP, oversized bulk headers, huge multibulk
counts, unbalanced quotes, a never-ending inline line) arrive on many connections while a
redis-py client does SET/GET/INCR on another and checks every answer. A connection that breaks
the protocol is told `-ERR Protocol error: ...` and closed; nothing else is.

Then the limits an operator sets: `max_connections`, `max_output_buffer_bytes` (a client that
never reads its replies) and `max_value_bytes`, each refused with a message naming the limit.

The random inputs come from one seed, printed on failure; `RINGKV_FUZZ_SEED=<seed>` replays it.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

FUZZ_SEED = int(os.environ.get("RINGKV_FUZZ_SEED", random.randrange(2**32)))
PROTOCOL_ERROR = b"-ERR Protocol error"
INLINE_LIMIT = 64 * 1024
NO_RETRY = Retry(NoBackoff(), 0)  # see a refused or dropped connection at once


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def send_ignoring_close(conn, data: bytes, chunk_bytes: int = 4096) -> None:
    """Send until done or until the node closes the connection (it may, mid-request)."""
    try:
        for i in range(0, len(data), chunk_bytes):
            conn.send(data[i : i + chunk_bytes])
    except (BrokenPipeError, ConnectionResetError):
        pass


# ---------------------------------------------------------------------- malformed requests

MALFORMED = {
    "oversized bulk header": (b"*1\r\n$999999999999\r\n", b"bulk length 999999999999 exceeds"),
    "negative bulk length": (b"*2\r\n$3\r\nGET\r\n$-5\r\n", b"invalid bulk length"),
    "bulk length not a number": (b"*1\r\n$abc\r\n", b"invalid bulk length"),
    "multibulk count over INT_MAX": (b"*2147483648\r\n", b"invalid multibulk length"),
    "multibulk count over max_args": (b"*1048577\r\n", b"multibulk length 1048577 exceeds"),
    "multibulk count that never ends": (b"*" + b"1" * 70_000, b"too big mbulk count string"),
    "argument that is not a bulk string": (b"*1\r\n:5\r\n", b"expected '$', got ':'"),
    "unbalanced double quote": (b'SET k "never closed\r\n', b"unbalanced quotes"),
    "unbalanced single quote": (b"SET k 'never closed\r\n", b"unbalanced quotes"),
    "closing quote followed by a letter": (b'SET "k"v x\r\n', b"unbalanced quotes"),
    "never-ending inline line": (b"SET k " + b"x" * (INLINE_LIMIT + 8192), b"too big inline"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_a_protocol_error_and_the_connection_is_closed(
    name, shared_node, raw_connect
):
    request, detail = MALFORMED[name]
    conn = raw_connect(shared_node.resp_port)
    send_ignoring_close(conn, request)
    reply = conn.read_until_closed()
    assert reply.startswith(PROTOCOL_ERROR) and detail in reply, reply
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
    assert redis.Redis(port=shared_node.resp_port).ping() is True


def test_commands_before_the_bad_bytes_run_and_are_answered_first(shared_node, raw_connect):
    key = b"fuzz:before:%s" % uuid.uuid4().hex.encode()
    conn = raw_connect(shared_node.resp_port)
    conn.send(resp(b"SET", key, b"1") + b"INCR " + key + b"\r\n*1\r\n$abc\r\nGET x\r\n")
    reply = conn.read_until_closed()
    assert reply == b"+OK\r\n:2\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert redis.Redis(port=shared_node.resp_port).get(key) == b"2"


def test_truncated_requests_are_dropped_with_their_connection(shared_node, raw_connect):
    key = b"fuzz:truncated:%s" % uuid.uuid4().hex.encode()
    request = resp(b"SET", key, b"value")
    for cut in range(1, len(request)):
        conn = raw_connect(shared_node.resp_port)
        conn.send(request[:cut])
        conn.close()
    client = redis.Redis(port=shared_node.resp_port)
    assert client.get(key) is None
    # Fed one byte at a time, the same request completes normally.
    conn = raw_connect(shared_node.resp_port)
    for i in range(len(request)):
        conn.send(request[i : i + 1])
    assert conn.read_reply() == b"+OK\r\n"
    assert client.get(key) == b"value"


def test_a_huge_announced_multibulk_count_is_not_allocated_up_front(shared_node, raw_connect):
    # 1,048,576 arguments announced and never sent: the node must neither preallocate them
    # nor stop answering others while the connection waits.
    idle = [raw_connect(shared_node.resp_port) for _ in range(5)]
    for conn in idle:
        conn.send(b"*1048576\r\n$3\r\nSET\r\n")
    client = redis.Redis(port=shared_node.resp_port)
    assert client.ping() is True
    rss_before = client.info("memory").get("used_memory_peak_rss_bytes", 0)
    for conn in idle:
        conn.send(b"$1\r\nk\r\n" * 1000)
    assert client.ping() is True
    rss_after = client.info("memory").get("used_memory_peak_rss_bytes", 0)
    assert rss_after - rss_before < 64 * 1024 * 1024


# ---------------------------------------------------------------------- fuzzing under load


class CheckedClient(threading.Thread):
    """A well-behaved client: SET/GET/INCR/MGET in a loop, checking every answer."""

    def __init__(self, port: int):
        super().__init__(name="checked-client")
        self.client = redis.Redis(port=port, protocol=2, socket_timeout=10)
        self.prefix = f"good:{uuid.uuid4().hex}:"
        self.stop = threading.Event()
        self.wrong: list[str] = []
        self.operations = 0

    def expect(self, what: str, got, wanted) -> None:
        if got != wanted:
            self.wrong.append(f"{what}: got {got!r}, wanted {wanted!r}")

    def run(self) -> None:
        c = self.client
        p = self.prefix
        counter = 0
        i = 0
        try:
            while not self.stop.is_set() or i < 50:
                key = f"{p}{i % 100}"
                value = f"value-{i}-" + "x" * (i % 300)
                self.expect(f"SET {key}", c.set(key, value), True)
                self.expect(f"GET {key}", c.get(key), value.encode())
                counter += 1
                self.expect("INCR", c.execute_command("INCR", p + "counter"), counter)
                if i % 10 == 9:
                    keys = [f"{p}{j % 100}" for j in range(i - 2, i + 1)]
                    values = [
                        f"value-{j}-".encode() + b"x" * (j % 300) for j in range(i - 2, i + 1)
                    ]
                    self.expect("MGET", c.mget(keys), values)
                i += 1
                self.operations += 3
        except Exception as exc:  # any failure of the good client is a wrong answer
            self.wrong.append(f"{type(exc).__name__}: {exc}")
        finally:
            c.close()


def fuzz_inputs(rng: random.Random):
    """Endless (kind, bytes) pairs: random, truncated, mutated and oversized requests."""
    corpus = [
        resp(b"SET", b"fuzz:a", b"1"),
        resp(b"GET", b"fuzz:a"),
        resp(b"INCR", b"fuzz:n"),
        resp(b"APPEND", b"fuzz:s", b"abc"),
        resp(b"MGET", b"fuzz:a", b"fuzz:b"),
        b"SET fuzz:i 'quoted value'\r\nGET fuzz:i\r\n",
    ]
    while True:
        kind = rng.choice(
            [
                "random",
                "random-star",
                "truncated",
                "mutated",
                "bulk-header",
                "count",
                "quotes",
                "long-line",
                "inline-noise",
            ]
        )
        if kind == "random":
            data = rng.randbytes(rng.randrange(1, 4096))
        elif kind == "random-star":
            data = b"*" + rng.randbytes(rng.randrange(1, 512))
        elif kind == "truncated":
            pipeline = b"".join(rng.choices(corpus, k=rng.randrange(1, 6)))
            data = pipeline[: rng.randrange(1, len(pipeline))]
        elif kind == "mutated":
            data = bytearray(b"".join(rng.choices(corpus, k=rng.randrange(1, 6))))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == "bulk-header":
            data = b"*2\r\n$3\r\nGET\r\n$%d\r\n" % rng.choice([10**12, 2**31, 2**63 - 1, 10**30])
        elif kind == "count":
            data = b"*%d\r\n" % rng.choice([2**31, 2**31 - 1, 10**7, 2**20 + 1, 10**18])
        elif kind == "quotes":
            data = (
                b"SET fuzz:q "
                + rng.choice([b'"', b"'"])
                + rng.randbytes(20).replace(b"\n", b"")
                + b"\r\n"
            )
        elif kind == "long-line":
            data = b"GET " + b"y" * rng.randrange(INLINE_LIMIT, INLINE_LIMIT + 20_000)
        else:
            words = [
                rng.choice([b"fuzz:x", b'"a b"', b"'c'", b"\\x41", b'"\\x4"', b"\t"])
                for _ in range(5)
            ]
            data = rng.choice([b"ECHO ", b"EXISTS ", b"PING "]) + b" ".join(words) + b"\r\n"
        yield kind, data


def fuzz_connection(port: int, kind: str, data: bytes) -> str | None:
    """Send one fuzz input on a new connection; return a problem, or None if all is well."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        closed = False
        sock.settimeout(0.05)  # replies to what was sent come at once; then we hang up
        deadline = time.monotonic() + 5
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if PROTOCOL_ERROR not in received or time.monotonic() > deadline:
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        if PROTOCOL_ERROR in received and not closed:
            return f"{kind}: protocol error but the connection stayed open: {data[:80]!r}"
        if PROTOCOL_ERROR in received and not received.rstrip(b"\r\n").split(b"\r\n")[
            -1
        ].startswith(PROTOCOL_ERROR):
            return f"{kind}: the node answered after its protocol error: {received[-200:]!r}"
        return None
    finally:
        sock.close()


def test_fuzzed_connections_never_disturb_a_well_behaved_client(shared_node):
    port = shared_node.resp_port
    errors_before = redis.Redis(port=port).info("stats")["protocol_errors"]
    good = CheckedClient(port)
    good.start()
    problems: list[str] = []
    kinds_sent: list[str] = []

    def fuzzer(worker: int) -> None:
        rng = random.Random(FUZZ_SEED * 31 + worker)
        inputs = fuzz_inputs(rng)
        for _ in range(100):
            kind, data = next(inputs)
            kinds_sent.append(kind)
            try:
                problem = fuzz_connection(port, kind, data)
            except OSError as exc:
                problem = f"{kind}: {type(exc).__name__}: {exc}"
            if problem:
                problems.append(problem)

    workers = [threading.Thread(target=fuzzer, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    good.stop.set()
    good.join(60)
    replay = f"(reproduce with RINGKV_FUZZ_SEED={FUZZ_SEED})"
    assert not good.is_alive(), f"the good client hung {replay}"
    assert good.wrong == [], f"{good.wrong[:5]} {replay}"
    assert good.operations >= 150
    assert problems == [], f"{problems[:5]} {replay}"
    assert shared_node.proc.poll() is None, "the node died"
    client = redis.Redis(port=port)
    assert client.ping() is True
    assert client.info("stats")["protocol_errors"] > errors_before
    assert len(kinds_sent) == 300


# ---------------------------------------------------------------------- limits


def test_the_connection_over_max_connections_is_told_and_closed(start_node, raw_connect):
    node = start_node(max_connections=5)
    held = [raw_connect(node.resp_port) for _ in range(5)]
    for conn in held:
        assert conn.command("PING") == b"+PONG\r\n"
    sixth = raw_connect(node.resp_port)
    assert sixth.read_until_closed() == b"-ERR max number of clients reached\r\n"
    # The client writes its command before it reads: the node must read and drop it rather
    # than reset the connection, or the reset may overtake the error (so: many times over).
    for _ in range(30):
        with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
            redis.Redis(port=node.resp_port, protocol=2, retry=NO_RETRY).ping()
    for conn in held:
        assert conn.command("PING") == b"+PONG\r\n"
    # A freed slot is usable again.
    held.pop().close()
    client = redis.Redis(port=node.resp_port, protocol=2, retry=NO_RETRY)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert client.ping() is True
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the freed connection slot was never reused"
            time.sleep(0.05)
    stats = client.info("stats")
    assert stats["rejected_connections"] >= 2
    client.close()


def test_a_client_that_never_reads_is_disconnected_at_the_output_buffer_limit(
    start_node, raw_connect
):
    node = start_node(max_output_buffer_bytes=65536)
    client = redis.Redis(port=node.resp_port, protocol=2)
    client.set("v", b"x" * 4096)
    # The client never reads. (Its receive buffer keeps the kernel's size: one below the
    # loopback MSS makes the close crawl, as window updates wait for a full segment.)
    slow = raw_connect(node.resp_port, timeout_s=10)
    batch = b"GET v\r\n" * 100
    deadline = time.monotonic() + 20
    disconnected = 0
    while not disconnected:
        assert time.monotonic() < deadline, "never disconnected"
        try:
            for _ in range(50):
                slow.send(batch)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        disconnected = client.info("stats")["client_output_buffer_limit_disconnections"]
    assert disconnected == 1
    slow.read_until_closed(limit_bytes=1 << 30)  # what was already in flight, then the close
    assert client.get("v") == b"x" * 4096
    assert "output buffer over max_output_buffer_bytes=65536" in node.log()


def test_a_value_over_max_value_bytes_is_refused_and_the_connection_stays_usable(start_node):
    node = start_node(max_value_bytes=1000)
    client = redis.Redis(port=node.resp_port, protocol=2, single_connection_client=True)
    client_id = client.client_id()
    too_big = b"x" * 1001
    refusals = [
        ("SET", "k", too_big),
        ("SET", "k", too_big, "EX", "100"),
        ("GETSET", "k", too_big),
        ("SETEX", "k", "100", too_big),
        ("SETNX", "k", too_big),
        ("MSET", "k", too_big),
    ]
    for command in refusals:
        with pytest.raises(redis.ResponseError, match="limit is max_value_bytes=1000"):
            client.execute_command(*command)
    assert client.exists("k") == 0
    assert client.set("k", b"x" * 1000) is True
    with pytest.raises(redis.ResponseError, match=r"value is 1001 bytes.*max_value_bytes=1000"):
        client.append("k", b"y")
    assert client.strlen("k") == 1000
    assert client.client_id() == client_id  # the same connection throughout
    client.close()


def test_mset_with_one_oversized_value_writes_nothing(start_node):
    node = start_node(max_value_bytes=1000)
    client = redis.Redis(port=node.resp_port, protocol=2)
    with pytest.raises(redis.ResponseError, match="max_value_bytes=1000"):
        client.mset({"first": "ok", "second": b"x" * 1001})
    assert client.exists("first") == 0


def test_a_key_over_the_key_limit_is_refused_and_the_connection_stays_usable(shared_node):
    client = redis.Redis(
        port=shared_node.resp_port, protocol=2, single_connection_client=True, retry=NO_RETRY
    )
    with pytest.raises(redis.ResponseError, match="key"):
        client.set(b"k" * 70_000, "v")
    assert client.ping() is True
    client.close()
