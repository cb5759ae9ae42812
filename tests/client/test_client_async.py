"""`AsyncClient` under asyncio.run: the same calls, errors and retry rules as `Client`."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from ringkv.client import (
    AsyncClient,
    ConnectionFailedError,
    RequestTimeoutError,
    ResultUnknownError,
    ServerError,
)
from ringkv.errors import ClosedError
from ringkv.testing.launcher import NodeProcess, free_port
from ringkv.testing.wait import wait_until_async


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("aclient") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def port(node: NodeProcess) -> int:
    redis.Redis(port=node.resp_port).flushall()
    return node.resp_port


def test_every_call_works_and_returns_bytes(port: int) -> None:
    async def scenario() -> None:
        async with AsyncClient(port=port) as kv:
            assert await kv.ping()
            assert await kv.set("greeting", "héllo", ttl_s=60)
            assert await kv.get(b"greeting") == "héllo".encode()
            assert 59 < await kv.ttl("greeting") <= 60
            assert await kv.persist("greeting") and await kv.ttl("greeting") is None
            assert await kv.expire("greeting", 60)
            assert await kv.set("greeting", "x", if_not_exists=True) is False
            assert await kv.incr("n", 2) == 2
            assert await kv.incr_float("f", 0.5) == 0.5
            assert await kv.append("log", b"\xff") == 1
            await kv.mset({"a": "1", "b": "2"})
            assert await kv.mget(["a", "missing", "b"]) == [b"1", None, b"2"]
            assert await kv.exists("a", "b", "missing") == 2
            assert await kv.delete("a", "missing") == 1
            assert await kv.dbsize() == 5
            assert (await kv.info("keyspace"))["keyspace"]["db0"]["keys"] == 5
            with pytest.raises(ServerError, match="not an integer"):
                await kv.incr("greeting")
        with pytest.raises(ClosedError):
            await kv.get("a")

    asyncio.run(scenario())


def test_scan_iter_yields_every_key_once_while_calls_overlap(port: int) -> None:
    keys = {f"k{i}".encode() for i in range(500)}

    async def scenario() -> list[bytes]:
        # More concurrent calls than connections: callers wait for a pooled one.
        async with AsyncClient(port=port, max_connections=4) as kv:
            await asyncio.gather(*(kv.set(k, b"v") for k in keys))
            return [k async for k in kv.scan_iter(count=33)]

    seen = asyncio.run(scenario())
    assert len(seen) == len(keys) and set(seen) == keys


def test_closed_port_fails_after_the_retries() -> None:
    closed = free_port()

    async def scenario() -> tuple[ConnectionFailedError, float]:
        kv = AsyncClient(port=closed, retries=2, backoff_base_ms=100)
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as info:
            await kv.get("k")
        return info.value, time.monotonic() - started

    err, took = asyncio.run(scenario())
    assert err.attempts == 3 and f"127.0.0.1:{closed}" in str(err)
    assert 0.15 <= took < 3.0  # backoffs of 100 and 200 ms, at least half of each


def test_a_paused_node_times_out_get_and_leaves_incr_unknown(tmp_path) -> None:
    n = NodeProcess(tmp_path / "n1", http_enabled="false", sync="always").start()

    async def scenario() -> None:
        async with AsyncClient(port=n.resp_port, timeout_ms=1000, retries=3) as kv:
            assert await kv.incr("counter") == 1
            os.kill(n.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(RequestTimeoutError, match="GET timed out after 1000 ms"):
                    await kv.get("counter")
                with pytest.raises(ResultUnknownError):
                    await kv.incr("counter")
                # Two timeouts, no retries: a retried GET alone would take 4 s.
                assert time.monotonic() - started < 3.9
            finally:
                os.kill(n.proc.pid, signal.SIGCONT)

            async def counter_is_2() -> bool:
                return await kv.get("counter") == b"2"

            await wait_until_async(counter_is_2, 30, "the INCR held by the paused node to run")
            await asyncio.sleep(0.3)  # a quiet moment in which a resent copy would also run
            assert await kv.get("counter") == b"2"  # the unanswered INCR ran once

    try:
        asyncio.run(scenario())
    finally:
        n.kill()
