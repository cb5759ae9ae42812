"""Sibling-aware calls of `ringkv.client` against a real `ringkv serve`: `get_versions`,
`put_versioned`, `delete_versioned`, and `get(key, resolver=...)`, which merges concurrent
writes with the application's rule and writes the merge back.

The scenario: two application instances read the same shopping cart and each adds an item with
the context it read. Neither saw the other's write, so the node keeps both as siblings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from ringkv.client import (
    AsyncClient,
    Client,
    ConnectionFailedError,
    ResultUnknownError,
    ServerError,
    Sibling,
    Versions,
    commands,
)
from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("client-siblings") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def kv(node: NodeProcess) -> Iterator[Client]:
    redis.Redis(port=node.resp_port).flushall()
    with Client(port=node.resp_port) as client:
        yield client


@pytest.fixture
def other(node: NodeProcess) -> Iterator[Client]:
    with Client(port=node.resp_port) as client:
        yield client


def union(values: list[bytes]) -> bytes:
    """The cart's merge rule: the set union of comma-separated items, sorted."""
    items = {item for value in values for item in value.split(b",") if item}
    return b",".join(sorted(items))


def add_items_concurrently(a: Client, b: Client, key: str = "cart") -> None:
    """Both instances read the cart "apple", then each adds an item with what it read."""
    a.set(key, "apple")
    seen_a, seen_b = a.get_versions(key), b.get_versions(key)
    assert seen_a.context == seen_b.context is not None
    a.put_versioned(key, b"apple,bread", seen_a.context)
    b.put_versioned(key, b"apple,milk", seen_b.context)


def test_concurrent_writes_with_one_context_become_siblings(kv: Client, other: Client) -> None:
    add_items_concurrently(kv, other)
    versions = kv.get_versions("cart")
    assert isinstance(versions, Versions) and versions.context
    assert sorted(versions.values) == [b"apple,bread", b"apple,milk"]
    assert all(isinstance(s, Sibling) and s.timestamp > 0 and s.ttl_ms == -1 for s in versions.siblings)
    # Without a resolver, get answers the node's deterministic winner: the newest write.
    newest = max(versions.siblings, key=lambda s: s.timestamp).value
    assert {kv.get("cart") for _ in range(3)} | {other.get("cart") for _ in range(3)} == {newest}


def test_the_resolver_merges_the_siblings_and_writes_the_merge_back(kv: Client, other: Client) -> None:
    add_items_concurrently(kv, other)
    calls: list[list[bytes]] = []

    def resolver(values: list[bytes]) -> bytes:
        calls.append(sorted(values))
        return union(values)

    assert kv.get("cart", resolver) == b"apple,bread,milk"
    assert calls == [[b"apple,bread", b"apple,milk"]]
    after = other.get_versions("cart")
    assert after.values == [b"apple,bread,milk"]
    assert other.get("cart") == b"apple,bread,milk"
    # One sibling left: the resolver is not called again.
    assert kv.get("cart", resolver=resolver) == b"apple,bread,milk"
    assert len(calls) == 1


def test_the_resolver_is_not_called_for_one_value_or_a_missing_key(kv: Client) -> None:
    def never(values: list[bytes]) -> bytes:
        raise AssertionError("called without siblings")

    assert kv.get("missing", never) is None
    assert kv.get_versions("missing") == Versions(None, [])
    kv.set("one", "v")
    assert kv.get("one", never) == b"v"


def test_a_merged_context_resolves_and_a_blind_write_adds_a_sibling(kv: Client, other: Client) -> None:
    add_items_concurrently(kv, other)
    context = kv.get_versions("cart").context
    new_context = kv.put_versioned("cart", "apple,bread,milk", context)
    assert isinstance(new_context, bytes) and new_context != context
    after = kv.get_versions("cart")
    assert after.context == new_context and after.values == [b"apple,bread,milk"]
    kv.put_versioned("cart", "eggs")  # blind
    assert sorted(kv.get_versions("cart").values) == [b"apple,bread,milk", b"eggs"]


def test_delete_versioned_with_the_context_leaves_nothing_live(kv: Client, other: Client) -> None:
    add_items_concurrently(kv, other)
    after = kv.delete_versioned("cart", kv.get_versions("cart").context)
    assert kv.get_versions("cart") == Versions(after, [])
    assert kv.get("cart") is None
    assert kv.get("cart", union) is None
    assert kv.exists("cart") == 0


def test_a_resolved_merge_of_expiring_values_keeps_the_latest_expiry(kv: Client) -> None:
    kv.put_versioned("session", "a", ttl_s=30)
    kv.put_versioned("session", "b", ttl_ms=60_000)
    assert kv.get("session", union) == b"a,b"
    (merged,) = kv.get_versions("session").siblings
    assert 58_000 < merged.ttl_ms <= 60_000
    # A value without expiry among them: the merge does not expire.
    kv.put_versioned("session", "c")
    assert kv.get("session", union) == b"a,b,c"
    assert kv.get_versions("session").siblings[0].ttl_ms == -1


def test_a_garbage_context_is_a_server_error_and_an_empty_one_is_refused_before_sending(kv: Client) -> None:
    kv.set("k", "v")
    with pytest.raises(ServerError) as info:
        kv.put_versioned("k", "w", b"garbage")
    assert info.value.server_message.startswith("invalid causal context: ")
    with pytest.raises(ServerError, match="invalid causal context"):
        kv.delete_versioned("k", b"\x01\xff")
    with pytest.raises(ValueError, match="context is empty"):
        kv.put_versioned("k", "w", b"")
    with pytest.raises(TypeError, match="context must be bytes or str"):
        kv.put_versioned("k", "w", 5)  # type: ignore[arg-type]
    assert kv.get_versions("k").values == [b"v"]


def test_a_resolver_returning_something_other_than_bytes_writes_nothing(kv: Client, other: Client) -> None:
    add_items_concurrently(kv, other)
    with pytest.raises(TypeError, match="the resolver's result must be bytes or str, got NoneType"):
        kv.get("cart", lambda values: None)
    assert len(kv.get_versions("cart").siblings) == 2


def test_sibling_aware_writes_are_not_idempotent_reads_are() -> None:
    assert commands.get_versions("k").idempotent is True
    assert commands.put_versioned("k", "v").idempotent is False
    assert commands.put_versioned("k", "v", b"\x01\x80").idempotent is False
    assert commands.delete_versioned("k", b"\x01\x80").idempotent is False
    assert commands.put_versioned("k", "v", b"ctx", ttl_s=1.5).args == (
        b"RINGKV.PUTV", b"k", b"v", b"CONTEXT", b"ctx", b"PX", 1500,
    )


def test_put_versioned_against_a_killed_node_is_not_retried(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ringkv.client")
    node = NodeProcess(tmp_path / "n1", http_enabled="false").start()
    try:
        kv = Client(port=node.resp_port, retries=5, backoff_base_ms=20_000, backoff_max_ms=20_000)
        context = kv.put_versioned("k", "v")
        node.kill()
        started = time.monotonic()
        with pytest.raises((ResultUnknownError, ConnectionFailedError)):
            kv.put_versioned("k", "w", context)
        # A retry would have slept at least 10 s (half the first backoff) first.
        assert time.monotonic() - started < 5
        assert not [r for r in caplog.records if "retry" in r.getMessage()]
        kv.close()
    finally:
        node.stop()


def test_siblings_survive_a_crash_and_the_resolver_merges_them_after(tmp_path) -> None:
    node = NodeProcess(tmp_path / "n1", http_enabled="false").start()
    try:
        with Client(port=node.resp_port) as a, Client(port=node.resp_port) as b:
            add_items_concurrently(a, b)
            before = a.get_versions("cart")
        node.kill()
        node.start()
        with Client(port=node.resp_port) as kv:
            assert kv.get_versions("cart") == before
            assert kv.get("cart", union) == b"apple,bread,milk"
            assert kv.get_versions("cart").values == [b"apple,bread,milk"]
    finally:
        node.stop()


def test_async_client_resolves_with_a_sync_or_async_resolver(kv: Client, other: Client, node: NodeProcess) -> None:
    async def async_union(values: list[bytes]) -> bytes:
        await asyncio.sleep(0)
        return union(values)

    async def scenario() -> None:
        async with AsyncClient(port=node.resp_port) as akv:
            add_items_concurrently(kv, other)
            versions = await akv.get_versions("cart")
            assert sorted(versions.values) == [b"apple,bread", b"apple,milk"]
            assert await akv.get("cart", async_union) == b"apple,bread,milk"
            assert (await akv.get_versions("cart")).values == [b"apple,bread,milk"]
            await akv.put_versioned("cart", "apple,tea", versions.context)  # a stale context
            assert await akv.get("cart", union) == b"apple,bread,milk,tea"
            context = (await akv.get_versions("cart")).context
            await akv.delete_versioned("cart", context)
            assert await akv.get("cart") is None

    asyncio.run(scenario())
