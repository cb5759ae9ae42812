"""Element keys (service/elements.py): where a collection's elements are stored, how they are
placed, and that a client can neither name them nor see them as keys."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.cluster.ring import token
from ringkv.errors import CommandError, CorruptionError
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore, check_storage_key
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import (
    Replica,
    element_storage_key,
    elements_range,
    record_storage_key,
    split_storage_key,
    storage_key,
)
from ringkv.service.elements import (
    check_element,
    element_key,
    elements_prefix,
    is_element_key,
    split_element_key,
)
from ringkv.service.limits import MAX_KEY_BYTES
from ringkv.storage import Engine, Options
from ringkv.versioning.record import KIND_CLEARED, Typed, apply_write, encode_record

user_keys = st.binary(max_size=60).filter(lambda k: not k.startswith(b"\x00\xff"))
namespaces = st.binary(max_size=12)


@given(user_keys, st.binary(max_size=60))
def test_an_element_key_splits_back_into_its_collection_key_and_element(key, element):
    ekey = element_key(key, element)
    assert is_element_key(ekey)
    assert split_element_key(ekey) == (key, element)
    assert ekey.startswith(elements_prefix(key))


@given(user_keys, user_keys, st.binary(max_size=20))
def test_no_element_of_one_collection_falls_in_the_run_of_another(a, b, element):
    # `a` = "x" and `b` = "xy": the length field keeps "xy"'s elements out of "x"'s run.
    assume(a != b)
    assert not element_key(b, element).startswith(elements_prefix(a))


@given(namespaces, user_keys, st.binary(max_size=40))
def test_an_element_is_placed_by_its_collection_key(namespace, key, element):
    skey = storage_key(namespace, key)
    eskey = element_storage_key(skey, element)
    assert eskey[:8] == skey[:8] == struct.pack(">Q", token(namespace, element_key(key, element)))
    assert record_storage_key(namespace, element_key(key, element)) == eskey
    assert split_storage_key(eskey) == (namespace, element_key(key, element))
    start, end = elements_range(skey)
    assert start <= eskey < end
    check_storage_key(eskey)  # what a replica checks before it stores a peer's record


@given(namespaces, user_keys, user_keys, st.binary(max_size=20), st.binary(max_size=20))
def test_the_elements_range_of_a_collection_holds_its_elements_only(namespace, a, b, x, y):
    assume(a != b)
    start, end = elements_range(storage_key(namespace, a))
    assert start <= element_storage_key(storage_key(namespace, a), x) < end
    other = element_storage_key(storage_key(namespace, b), y)
    assert not start <= other < end
    assert not start <= storage_key(namespace, a) < end  # nor the collection's own record


def test_a_collection_key_ending_in_ff_bytes_still_bounds_its_range():
    skey = storage_key(b"", b"k\xff\xff")
    start, end = elements_range(skey)
    assert start <= element_storage_key(skey, b"\xff" * 5) < end
    assert not start <= element_storage_key(storage_key(b"", b"k\xff\xff\x00"), b"") < end


def test_a_peer_record_under_the_wrong_token_for_its_collection_is_refused():
    eskey = element_storage_key(storage_key(b"", b"a"), b"m")
    wrong = storage_key(b"", b"b")[:8] + eskey[8:]
    with pytest.raises(CorruptionError):
        check_storage_key(wrong)


@pytest.mark.parametrize("key", [b"\x00\xff", b"\x00\xffe\x00\x01km", b"\x00\xffanything"])
def test_a_clients_key_in_the_reserved_space_is_refused_naming_the_bytes(key):
    with pytest.raises(CommandError, match="0x00 0xff"):
        storage_key(b"", key)


def test_keys_that_only_look_close_to_the_reserved_space_are_fine():
    for key in (b"\x00", b"\xff\x00", b"\x00\xfe", b"x\x00\xff"):
        assert split_storage_key(storage_key(b"", key)) == (b"", key)


def test_an_element_too_long_for_a_storage_key_is_refused_naming_the_limit():
    check_element(b"", b"k", b"m" * (MAX_KEY_BYTES - 6))
    with pytest.raises(CommandError, match=f"at most {MAX_KEY_BYTES} bytes"):
        check_element(b"", b"k", b"m" * (MAX_KEY_BYTES - 5))


def _element_record(value: bytes | None, ts: int = 1) -> bytes:
    return encode_record(apply_write(None, actor=b"n9", context=None, value=value, timestamp=ts))


def _removed(value: bytes) -> bytes:
    """A tombstone written over the record `_element_record(value)` (its context saw it)."""
    live = apply_write(None, actor=b"n9", context=None, value=value, timestamp=1)
    return encode_record(apply_write(live, actor=b"n9", context=live.context, value=None, timestamp=2))


def test_elements_are_bytes_of_their_namespace_but_no_keys_of_it(tmp_path):
    """DBSIZE, SCAN and KEYS (and RANDOMKEY, which samples SCAN) count and list keys: a collection's elements are
    records of the namespace (its byte quota counts them) but not keys of it. The counts
    are the same after a restart, which counts them again from disk."""

    async def main():
        clock = Clock()
        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"))
        kv = LocalService(store)
        await kv.set(b"plain", b"v")
        skey = storage_key(b"", b"coll")
        for i in range(50):
            store.apply_record(element_storage_key(skey, b"m%03d" % i), _element_record(b"x" * 10))
        store.apply_record(element_storage_key(skey, b"gone"), _element_record(None))
        assert store.dbsize(b"") == 1
        assert store.usage.keys(b"") == 1
        assert store.usage.bytes(b"") > 50 * 10
        assert await kv.keys(b"*") == [b"plain"]
        _, page = await kv.scan(0, 1000)
        assert page == [b"plain"]
        used = store.usage.bytes(b"")
        engine.close()

        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"))
        store.load()
        assert store.dbsize(b"") == 1
        assert (store.usage.keys(b""), store.usage.bytes(b"")) == (1, used)
        # An element deleted (a tombstone merged over it) gives its bytes back, no key.
        store.apply_record(element_storage_key(skey, b"m000"), _removed(b"x" * 10))
        assert store.dbsize(b"") == 1 and store.usage.bytes(b"") < used
        engine.close()

    asyncio.run(main())


def test_a_key_whose_record_holds_only_a_clear_marker_is_no_key(tmp_path):
    """A deleted collection's meta record keeps a clear marker (docs/formats/elements.md): DBSIZE,
    SCAN and GET see no key, and a value written over it counts again."""

    async def main():
        clock = Clock()
        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"))
        kv = LocalService(store)
        marker = apply_write(None, actor=b"n9", context=None, value=Typed(KIND_CLEARED, b"\x90"), timestamp=1)
        store.apply_record(storage_key(b"", b"gone"), encode_record(marker))
        assert store.dbsize(b"") == 0 and store.usage.keys(b"") == 0
        assert await kv.get(b"gone") is None and await kv.keys(b"*") == []
        await kv.set(b"gone", b"back")
        assert store.dbsize(b"") == 1 and await kv.get_value(b"gone") == b"back"
        engine.close()

    asyncio.run(main())
