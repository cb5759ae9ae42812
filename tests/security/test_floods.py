"""Floods from one client: the node's memory stays within its budget, other clients are served,
and its peers never mark it down.

The attacks of issue 13, made with raw sockets against real nodes:
- pipelined GETs sent without reading a reply (7 MB took a node to 1.9 GB and got it marked
  down for 35 s): the node runs at most max_inflight_commands of a connection's commands at
  once and stops reading it until replies drain;
- idle connections up to max_connections (which locked every other client out): closed after
  client_idle_timeout_ms, and each address holds at most max_connections_per_ip;
- requests never finished (a RESP bulk string, HTTP headers sent a byte at a time, an HTTP
  body that stops): the client-memory budget closes the largest RESP clients, and HTTP
  requests are closed by the header and idle timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.probes import hears_everyone, nodes_down
from ringkv.testing.wait import wait_until

MIB = 1024 * 1024
# What a flooded node may grow by (resident memory), against the 1.9 GB the flood once took.
FLOOD_RSS_GROWTH_BUDGET_BYTES = 200 * MIB
NO_RETRY = Retry(NoBackoff(), 0)  # see a refused connection at once


def settle(node: NodeProcess) -> None:
    """Wait until the node's start-up work (users loaded, first collections) is behind it, so
    that the timings below measure the limits and not the start."""
    r = redis.Redis(port=node.resp_port)
    wait_until(lambda: _answers_within(r, 0.05), 30, "the node answers PING within 50 ms")


def _answers_within(r: redis.Redis, seconds: float) -> bool:
    started = time.perf_counter()
    r.ping()
    return time.perf_counter() - started < seconds and (time.sleep(0.5) or r.ping())


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def is_closed_by_peer(conn: socket.socket, wait_s: float) -> bool:
    """Whether the node closed `conn` within `wait_s` (reads and drops what it sends)."""
    conn.settimeout(0.1)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if conn.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def send_without_reading(port: int, data: bytes, deadline: float, sent: list[int]) -> socket.socket:
    """Send `data` until done or `deadline`, never reading: the node stops reading us."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.settimeout(0.2)
    view = memoryview(data)
    total = 0
    while total < len(data) and time.monotonic() < deadline:
        try:
            total += conn.send(view[total:total + 65536])
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            break
    sent.append(total)
    return conn


class Prober:
    """A well-behaved client: a SET and a GET every 20 ms, each timed."""

    def __init__(self, port: int):
        self.client = redis.Redis(port=port, socket_timeout=10)
        self.latencies_s: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            started = time.perf_counter()
            try:
                self.client.set(f"probe:{i % 100}", i)
                assert self.client.get(f"probe:{i % 100}") == str(i).encode()
            except Exception as exc:  # every failure is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.latencies_s.append(time.perf_counter() - started)
            time.sleep(0.02)

    def summary(self) -> str:
        lat = sorted(self.latencies_s)
        return (f"{len(lat)} probes, p50 {statistics.median(lat) * 1000:.1f} ms, "
                f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


# ---------------------------------------------------------------------------- pipelining flood


def test_a_pipelining_flood_on_a_cluster_node_stays_in_budget_and_the_node_is_never_marked_down(tmp_path):
    # Latency under a flood is what is in flight over what the node completes per second: on
    # a loaded 2-core machine a cluster node completes ~2,000 quorum GETs/s, so the cap is set
    # to 32 per connection here (4 connections: ~130 ahead of a probe, ~65 ms).
    with LocalCluster(tmp_path, nodes=3, max_inflight_commands=32) as cluster:
        n1, n2, n3 = cluster.nodes
        peers = [redis.Redis(port=n.resp_port) for n in (n2, n3)]
        wait_until(lambda: all(hears_everyone(p) for p in peers), 30, "n2 and n3 hear every member")
        redis.Redis(port=n1.resp_port).set("flood:key", "v")
        rss_before = rss_bytes(n1.proc.pid)
        with Prober(n1.resp_port) as quiet:  # the same probes without the flood, on this machine now
            time.sleep(4)

        # 4 connections x 8 MB of pipelined GETs (a quorum read each: every one waits on RPC),
        # never reading a reply.
        flood = b"*2\r\n$3\r\nGET\r\n$9\r\nflood:key\r\n" * (8 * MIB // 29)
        seen_down: set[str] = set()
        peak_rss = rss_before
        sent: list[int] = []
        conns: list[socket.socket] = []
        with Prober(n1.resp_port) as prober:
            deadline = time.monotonic() + 12
            floods = [threading.Thread(target=lambda: conns.append(send_without_reading(
                n1.resp_port, flood, deadline, sent)), daemon=True) for _ in range(4)]
            for t in floods:
                t.start()
            while time.monotonic() < deadline:
                peak_rss = max(peak_rss, rss_bytes(n1.proc.pid))
                for p in peers:
                    seen_down |= nodes_down(p)
                time.sleep(0.2)
            for t in floods:
                t.join(10)
        stats = redis.Redis(port=n1.resp_port).info("stats")
        for c in conns:
            c.close()

        growth = peak_rss - rss_before
        print(f"flood: sent {sum(sent) / MIB:.1f} MB unread; RSS {rss_before / MIB:.0f} MB -> peak "
              f"{peak_rss / MIB:.0f} MB (+{growth / MIB:.0f} MB); prober {prober.summary()}; "
              f"reading paused {stats['client_inflight_pauses']} times; {stats['total_commands_processed']} "
              f"commands run; without the flood: {quiet.summary()}")
        assert "n1" not in seen_down, f"a peer marked the flooded node down: {seen_down}"
        assert growth < FLOOD_RSS_GROWTH_BUDGET_BYTES, f"RSS grew by {growth / MIB:.0f} MB"
        assert not prober.errors, prober.errors[:5]
        assert statistics.median(prober.latencies_s) < 0.25, prober.summary()
        assert stats["client_inflight_pauses"] > 0
        assert redis.Redis(port=n1.resp_port).get("flood:key") == b"v"


# ---------------------------------------------------------------------------- idle connections


def test_an_idle_connection_flood_is_closed_after_the_idle_timeout_and_new_clients_get_in(tmp_path):
    with NodeProcess(tmp_path / "n1", max_connections=100, max_connections_per_ip=0, client_idle_timeout_ms=2000,
                     http_header_timeout_ms=2000) as node:
        settle(node)
        idle = [socket.create_connection(("127.0.0.1", node.resp_port)) for _ in range(100)]
        http_idle = [socket.create_connection(("127.0.0.1", node.http_port)) for _ in range(50)]
        with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
            redis.Redis(port=node.resp_port, socket_timeout=5, retry=NO_RETRY).ping()
        started = time.monotonic()
        assert all(is_closed_by_peer(c, 5) for c in idle)
        assert all(is_closed_by_peer(c, 5) for c in http_idle)
        closed_after_s = time.monotonic() - started
        assert closed_after_s < 5, f"the idle connections were closed after {closed_after_s:.1f} s"
        r = redis.Redis(port=node.resp_port)
        assert r.ping() is True
        assert r.info("stats")["client_idle_disconnections"] >= 100
        for c in idle + http_idle:
            c.close()


def test_a_busy_connection_is_not_idle(tmp_path):
    with NodeProcess(tmp_path / "n1", client_idle_timeout_ms=500) as node:
        settle(node)
        r = redis.Redis(port=node.resp_port)
        for i in range(15):
            assert r.set("k", i) is True
            time.sleep(0.1)  # 1.5 s in all, never 0.5 s silent
        assert r.info("stats")["client_idle_disconnections"] == 0


def test_connections_per_address_are_limited_on_both_ports(tmp_path):
    with NodeProcess(tmp_path / "n1", max_connections_per_ip=5) as node:
        settle(node)
        held = [redis.Redis(port=node.resp_port, single_connection_client=True) for _ in range(5)]
        for c in held:
            assert c.ping() is True
        # redis-py turns only Redis's exact wording into a ConnectionError; this one names the limit.
        with pytest.raises((redis.ConnectionError, redis.ResponseError), match=r"max_connections_per_ip=5"):
            redis.Redis(port=node.resp_port, socket_timeout=5, retry=NO_RETRY).ping()
        held.pop().close()
        # The node learns of the close when its read sees EOF; until then the sixth is still refused.
        wait_until(lambda: redis.Redis(port=node.resp_port, socket_timeout=5, retry=NO_RETRY).ping(), 10,
                   "a connection is accepted once one closed",
                   ignore=(redis.ConnectionError, redis.ResponseError))

        http = [socket.create_connection(("127.0.0.1", node.http_port)) for _ in range(5)]
        extra = socket.create_connection(("127.0.0.1", node.http_port))
        extra.settimeout(5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        for c in [*held, *http, extra]:
            c.close()
        assert redis.Redis(port=node.resp_port).info("stats")["rejected_connections_per_ip"] >= 1


# ---------------------------------------------------------------------------- unfinished requests


def test_unfinished_resp_requests_are_bounded_by_the_client_memory_budget(tmp_path):
    budget = 8 * MIB
    with NodeProcess(tmp_path / "n1", max_client_memory_bytes=budget, client_idle_timeout_ms=3000) as node:
        settle(node)
        rss_before = rss_bytes(node.proc.pid)
        conns = []
        # 40 connections, each 900 KB into a SET of a 1,000,000-byte value it never finishes.
        for _ in range(40):
            c = socket.create_connection(("127.0.0.1", node.resp_port))
            c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n" + b"x" * 900_000)
            conns.append(c)
        r = redis.Redis(port=node.resp_port)
        wait_until(lambda: r.info("stats")["evicted_clients"] > 0, 10, "the largest clients evicted")
        clients = r.info("clients")
        assert clients["client_memory_bytes"] <= budget, clients
        assert r.set("small", "fine") is True and r.get("small") == b"fine"
        growth = rss_bytes(node.proc.pid) - rss_before
        assert growth < 100 * MIB, f"RSS grew by {growth / MIB:.0f} MB"
        assert "max_client_memory_bytes" in node.log_path.read_text()
        # The rest are closed by the idle timeout: none sends anything more.
        assert all(is_closed_by_peer(c, 8) for c in conns)
        for c in conns:
            c.close()


def test_http_headers_trickled_a_byte_at_a_time_are_closed_by_the_header_timeout(tmp_path):
    with NodeProcess(tmp_path / "n1", http_header_timeout_ms=1000) as node:
        settle(node)
        conns = [socket.create_connection(("127.0.0.1", node.http_port)) for _ in range(20)]
        for c in conns:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        open_conns = list(conns)
        while open_conns and time.monotonic() - started < 6:
            for c in list(open_conns):
                try:
                    c.sendall(b"X")  # slowloris: a byte of a header line every 100 ms, never the end
                except (BrokenPipeError, ConnectionResetError):
                    open_conns.remove(c)
            time.sleep(0.1)
        assert not open_conns, f"{len(open_conns)} connections still open after 6 s"
        assert time.monotonic() - started < 4
        assert httpx.get(f"http://127.0.0.1:{node.http_port}/healthz").status_code == 200
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()


def test_an_http_body_that_stops_arriving_is_closed_by_the_idle_timeout(tmp_path):
    with NodeProcess(tmp_path / "n1", client_idle_timeout_ms=1000) as node:
        settle(node)
        c = socket.create_connection(("127.0.0.1", node.http_port))
        c.sendall(b"PUT /api/v1/kv/stalled HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"x" * 10)
        assert is_closed_by_peer(c, 5)
        c.close()
        assert redis.Redis(port=node.resp_port).get("stalled") is None
