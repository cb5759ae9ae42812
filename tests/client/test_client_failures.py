"""What an application sees when the node is down, crashes, restarts, stalls or says no.

Each scenario runs its own `ringkv serve` process (sync="always", so a SIGKILL loses no
acknowledged write and the counters below count exactly), and kills, pauses (SIGSTOP) or
restarts it. Timings are asserted with wide margins: the machine is shared.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ringkv.client import (
    Client,
    ClientError,
    ConnectionFailedError,
    RequestTimeoutError,
    ResultUnknownError,
    ServerError,
)
from ringkv.client.retry import backoff_ms
from ringkv.testing.launcher import NodeProcess, free_port
from ringkv.testing.wait import wait_until


@pytest.fixture
def node(tmp_path) -> Iterator[NodeProcess]:
    n = NodeProcess(tmp_path / "n1", http_enabled="false", sync="always")
    n.start()
    try:
        yield n
    finally:
        resume(n)  # a failed assertion must not leave a stopped process behind
        n.kill()


def pause(n: NodeProcess) -> None:
    os.kill(n.proc.pid, signal.SIGSTOP)


def resume(n: NodeProcess) -> None:
    if n.proc is not None and n.proc.poll() is None:
        os.kill(n.proc.pid, signal.SIGCONT)


def unread_bytes_at(port: int) -> int:
    """Bytes that arrived at 127.0.0.1:`port` on established connections and that the
    process listening there has not read yet (from /proc/net/tcp: Linux)."""
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)  # the header
        for line in f:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.split(":")[1], 16) == port:  # 01: ESTABLISHED
                total += int(queues.split(":")[1], 16)
    return total


def retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "ringkv.client" and "retry" in r.getMessage())


def test_closed_port_fails_after_the_configured_retries_naming_the_address(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ringkv.client")
    port = free_port()  # nothing listens there
    kv = Client(port=port, retries=3, backoff_base_ms=100, backoff_max_ms=1000)
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError) as info:
        kv.get("k")
    took = time.monotonic() - started
    # Backoffs of 100, 200, 400 ms with equal jitter: at least their halves, 350 ms in all.
    assert 0.35 <= took < 3.0
    err = info.value
    assert err.attempts == 4 and retries_logged(caplog) == 3
    assert f"127.0.0.1:{port}" in str(err) and "after 4 attempts" in str(err)
    assert "refused" in str(err).lower()
    assert isinstance(err, ConnectionError) and isinstance(err, ClientError)


def test_closed_port_without_retries_fails_at_once() -> None:
    kv = Client(port=free_port(), retries=0, backoff_base_ms=20_000, backoff_max_ms=20_000)
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="after 1 attempt:"):
        kv.ping()
    # A retry would have slept at least 10 s (half the first backoff) first.
    assert time.monotonic() - started < 5


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    import random

    rng = random.Random(7)
    for retry, ceiling in [(0, 20), (1, 40), (2, 80), (5, 640), (6, 1000), (60, 1000)]:
        for _ in range(50):
            assert ceiling / 2 <= backoff_ms(retry, 20, 1000, rng) <= ceiling


def test_get_is_retried_until_a_crashed_node_is_back(node: NodeProcess, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ringkv.client")
    # Retries for at least 18 s (the halves of the backoffs), past a slow restart of the node.
    kv = Client(port=node.resp_port, retries=40, backoff_base_ms=100, backoff_max_ms=1000)
    assert kv.set("k", "survives")
    node.kill()
    # The pooled connection is now dead and nothing listens: the GET below fails, backs off,
    # and succeeds once the restarted node (same port, same data) accepts connections. The
    # restart begins a moment after the GET, so its first attempts surely find nothing.
    restart = threading.Timer(0.3, node.start)
    restart.start()
    try:
        assert kv.get("k") == b"survives"
    finally:
        restart.join()
    assert retries_logged(caplog) >= 1


def test_incr_against_a_killed_node_is_not_retried_and_not_applied(node: NodeProcess, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ringkv.client")
    kv = Client(port=node.resp_port, retries=5, backoff_base_ms=20_000, backoff_max_ms=20_000)
    assert kv.incr("counter") == 1
    node.kill()
    started = time.monotonic()
    with pytest.raises((ResultUnknownError, ConnectionFailedError)) as info:
        kv.incr("counter")
    # A retry would have slept at least 10 s (half the first backoff) first.
    assert time.monotonic() - started < 5
    assert retries_logged(caplog) == 0
    if isinstance(info.value, ConnectionFailedError):
        assert info.value.attempts == 1
    node.start()
    assert kv.incr("counter") == 2  # the failed INCR left no trace


def test_incr_sent_to_a_paused_node_is_unknown_and_applied_exactly_once(node: NodeProcess) -> None:
    kv = Client(port=node.resp_port, timeout_ms=1000, retries=5, backoff_base_ms=10)
    assert kv.incr("counter") == 1
    pause(node)
    started = time.monotonic()
    with pytest.raises(ResultUnknownError) as info:
        kv.incr("counter")
    took = time.monotonic() - started
    assert 0.9 <= took < 4.0  # one timeout, not six (6 s)
    assert info.value.timed_out and "may or may not have been applied" in str(info.value)
    resume(node)
    # The request sat in the node's socket and runs when it wakes: applied once. Had the
    # client resent it, each copy would be waiting there too and the counter would pass 2.
    wait_until(lambda: kv.get("counter") == b"2", 30, "the INCR held by the paused node to run")
    time.sleep(0.3)  # a quiet moment in which a resent copy, had there been one, would also run
    assert kv.get("counter") == b"2"


def test_incr_cut_off_by_a_crash_is_unknown_and_lost(node: NodeProcess) -> None:
    kv = Client(port=node.resp_port, timeout_ms=10_000, retries=5)
    assert kv.incr("counter") == 1
    pause(node)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            kv.incr("counter")
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: unread_bytes_at(node.resp_port) > 0, 30, "the INCR to reach the stopped node's socket",
               interval_s=0.01)
    node.kill()  # the node dies without reading it: the connection breaks, no timeout
    caller.join(10)
    [err] = outcome
    assert isinstance(err, ResultUnknownError) and not err.timed_out
    node.start()
    assert kv.get("counter") == b"1"


def test_a_paused_node_makes_get_time_out_within_the_timeout(node: NodeProcess) -> None:
    kv = Client(port=node.resp_port, timeout_ms=1000, retries=3)
    kv.set("k", "v")
    pause(node)
    try:
        for client in (kv, Client(port=node.resp_port, timeout_ms=1000, retries=3)):  # pooled, fresh
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                client.get("k")
            assert 0.9 <= time.monotonic() - started < 3.5  # not retried: 4 x 1000 ms would be 4 s
            assert str(info.value).startswith("GET timed out after 1000 ms")
            assert isinstance(info.value, TimeoutError)
    finally:
        resume(node)
    assert kv.get("k") == b"v"  # the timed-out connection was dropped, a new one works


def test_server_errors_carry_the_nodes_message_and_leave_the_client_usable(node: NodeProcess) -> None:
    kv = Client(port=node.resp_port)
    kv.set("text", "abc")
    with pytest.raises(ServerError, match="not an integer") as info:
        kv.incr("text")
    assert "value is not an integer" in info.value.server_message
    assert kv.get("text") == b"abc"
