"""The hint store: durable, one merged hint per key and target, bounded, windowed."""

from __future__ import annotations

import asyncio

import pytest

from ringkv.errors import PeerUnavailableError
from ringkv.node.handoff import HintDelivery, HintStore
from ringkv.node.messages import ReplicaPut
from ringkv.node.replica import storage_key
from ringkv.versioning.dvv import Dot
from ringkv.versioning.record import DottedValue, Record, decode_record, encode_record


def rec(actor: bytes, n: int, value: bytes) -> bytes:
    return encode_record(Record({actor: n}, (DottedValue(Dot(actor, n), value, n),)))


def test_hints_survive_a_restart_and_merge_per_key(tmp_path):
    store = HintStore(str(tmp_path))
    k = storage_key(b"", b"k")
    assert store.add("n3", k, rec(b"a", 1, b"x"))
    assert store.add("n3", k, rec(b"b", 1, b"y"))  # concurrent: both kept, one hint
    assert store.add("n2", k, rec(b"a", 1, b"x"))
    assert store.pending() == 2 and store.pending("n3") == 1
    store.close()
    store = HintStore(str(tmp_path))
    assert sorted(store.targets()) == ["n2", "n3"]
    [(skey, _created, data)] = store.batch("n3")
    assert skey == k
    assert sorted(s.value for s in decode_record(data).siblings) == [b"x", b"y"]
    store.close()


def test_flushall_drops_every_hint_but_the_system_namespaces(tmp_path):
    # A hint delivered after FLUSHALL would bring its flushed key back.
    store = HintStore(str(tmp_path))
    system = storage_key(b"__system", b"user:alice")
    store.add("n2", storage_key(b"", b"a"), rec(b"a", 1, b"x"))
    store.add("n3", storage_key(b"", b"a"), rec(b"a", 1, b"x"))
    store.add("n3", storage_key(b"tenant", b"b"), rec(b"a", 1, b"y"))
    store.add("n3", system, rec(b"a", 1, b"z"))
    assert store.forget(b"__system") == 3
    assert store.pending() == 1 and store.pending("n2") == 0 and store.pending("n3") == 1
    assert [skey for skey, _, _ in store.batch("n3")] == [system]
    store.close()
    again = HintStore(str(tmp_path))  # and it stays forgotten
    assert again.pending() == 1 and again.targets() == ["n3"]
    again.close()


def test_a_full_store_drops_new_hints_and_counts_them(tmp_path):
    store = HintStore(str(tmp_path), max_hints=2)
    assert store.add("n3", storage_key(b"", b"a"), rec(b"a", 1, b"1"))
    assert store.add("n3", storage_key(b"", b"b"), rec(b"a", 1, b"1"))
    assert not store.add("n3", storage_key(b"", b"c"), rec(b"a", 1, b"1"))
    assert store.stats["hints_dropped_full"] == 1
    assert store.add("n3", storage_key(b"", b"a"), rec(b"a", 2, b"2"))  # an existing hint still merges
    store.close()


def test_delivery_sends_removes_and_backs_off_on_failure(tmp_path):
    store = HintStore(str(tmp_path))
    for i in range(5):
        store.add("n3", storage_key(b"", b"k%d" % i), rec(b"a", 1, b"v"))
    sent: list[ReplicaPut] = []
    up = {"n3": False}

    async def call(node, body, timeout_ms):
        if not up[node]:
            raise PeerUnavailableError(node, "connection refused")
        sent.append(body)

    async def scenario():
        delivery = HintDelivery(store, call)
        assert await delivery.deliver_round() == 0
        assert store.pending("n3") == 5
        up["n3"] = True
        assert await delivery.deliver_round() == 0  # still backing off
        delivery.poke()
        assert await delivery.deliver_round() == 5

    asyncio.run(scenario())
    assert store.pending() == 0 and len(sent) == 5
    assert {b.skey for b in sent} == {storage_key(b"", b"k%d" % i) for i in range(5)}
    store.close()


@pytest.mark.parametrize("window_ms", [1])
def test_hints_past_the_window_are_dropped_not_sent(tmp_path, window_ms):
    store = HintStore(str(tmp_path), max_hint_window_ms=window_ms)
    store.add("n3", storage_key(b"", b"k"), rec(b"a", 1, b"v"))
    sent = []

    async def call(node, body, timeout_ms):
        sent.append(body)

    async def scenario():
        await asyncio.sleep(0.01)  # ten times the window: the hint is surely past it
        await HintDelivery(store, call).deliver_round()

    asyncio.run(scenario())
    assert sent == [] and store.stats["hints_expired"] == 1 and store.pending() == 0
    store.close()


def test_a_miss_merged_into_a_hint_while_it_is_delivered_is_sent_too(tmp_path):
    # Delivery awaits the target's ack; a write the target misses meanwhile merges into the
    # same hint. Removing the hint after the ack would drop that newer write unsent (the
    # simulator's `hint-race` variant found this).
    store = HintStore(str(tmp_path))
    k = storage_key(b"", b"k")
    store.add("n3", k, rec(b"a", 1, b"first"))
    sent: list[bytes] = []

    async def call(node, body, timeout_ms):
        if not sent:
            store.add("n3", k, rec(b"a", 2, b"second"))  # missed while the first was in flight
        sent.append(body.record)

    asyncio.run(HintDelivery(store, call).deliver_round())
    assert [s.value for r in sent for s in decode_record(r).siblings] == [b"first", b"second"]
    assert store.pending() == 0
    store.close()
