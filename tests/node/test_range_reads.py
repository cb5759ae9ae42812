"""Quorum reads of a collection's element range (node/range_reads.py) over three real replica
stores whose copies differ: pages merge key by key, every key comes once, in order, whatever
page size each replica answers with; replicas asked that held less get the merge back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import CommandError, PeerUnavailableError, QuorumError
from ringkv.node.assembly import CLUSTER_STATS
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import ReplicaGetRange, ReplicaPut
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.range_reads import read_range, read_range_page
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import Replica, element_storage_key, elements_range, storage_key
from ringkv.node.replica_calls import Liveness, ReplicaCalls
from ringkv.storage import Engine, Options
from ringkv.versioning.record import apply_write, decode_record, encode_record, merge

NODES = ("n1", "n2", "n3")


class Net:
    """The transport of n1: each peer answers from its own store, at once; `down` ones fail."""

    def __init__(self, stores: dict[str, LocalStore]):
        self.stores = stores
        self.down: set[str] = set()
        self.asked: list[str] = []

    def _answer(self, node: str, body):
        if node in self.down:
            raise PeerUnavailableError(node, "connection refused")
        self.asked.append(node)
        if type(body) is ReplicaGetRange:
            return read_range_page(self.stores[node], body)
        if type(body) is ReplicaPut:
            self.stores[node].apply_record(body.skey, body.record)
            return None
        raise AssertionError(f"unexpected {body!r}")

    def start_call(self, node, body, timeout_ms, on_done=None):
        fut = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(self._answer(node, body))
        except Exception as exc:  # handed to the caller as the call's failure
            fut.set_exception(exc)
        if on_done is not None:
            fut.add_done_callback(on_done)
        return fut

    async def call(self, node, body, timeout_ms):
        return self._answer(node, body)


@contextlib.contextmanager
def _cluster():
    """Three replica stores of one 3-node ring (every key on all three) and n1's read path."""
    root = tempfile.mkdtemp()
    engines = {n: Engine.open(f"{root}/{n}", Options()) for n in NODES}
    try:
        clock = Clock()
        namespaces = Namespaces(3, "siblings")
        stores = {n: LocalStore(Replica(engines[n], n.encode(), clock), clock, namespaces=namespaces) for n in NODES}
        net = Net(stores)
        placement = Placement("n1", Ring([Member(n) for n in NODES], 64, 3), namespaces)
        stats = dict.fromkeys(CLUSTER_STATS, 0)
        path = ReadPath(placement, ReplicaCalls("n1", net, Liveness(), 1000), stores["n1"], stats)
        yield path, stores, net
    finally:
        for engine in engines.values():
            engine.close()
        shutil.rmtree(root, ignore_errors=True)


# A few versions of one element's record, related as writes would relate them: v1; v2 written
# over v1; a tombstone over v2; w, concurrent with all of them (another actor, no context).
_V1 = apply_write(None, actor=b"a", context=None, value=b"one", timestamp=10)
_V2 = apply_write(_V1, actor=b"a", context=_V1.context, value=b"two", timestamp=20)
_GONE = apply_write(_V2, actor=b"a", context=_V2.context, value=None, timestamp=30)
_W = apply_write(None, actor=b"b", context=None, value=b"other", timestamp=15)
VERSIONS = [None, _V1, _V2, _GONE, _W]

COLLECTION = storage_key(b"", b"coll")
START, END = elements_range(COLLECTION)


async def _read_all(path, r: int, page: int) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    after = None
    while True:
        got = await read_range(path, START, END, after, r, max_records=page)
        out.extend(got.records)
        if got.after is None:
            return out
        assert got.records, "a page that is not the last one made no progress"
        after = got.after


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(holdings=st.lists(st.tuples(*[st.sampled_from(range(len(VERSIONS)))] * 3), min_size=0, max_size=25),
       r=st.sampled_from([2, 3]), page=st.integers(1, 6))
def test_pages_merge_every_element_once_in_order_and_repair_the_replicas_asked(holdings, r, page):
    with _cluster() as (path, stores, _net):
        expected: dict[bytes, bytes] = {}
        asked = NODES[:r]  # n1 reads itself first, then the others in preference order
        for i, versions in enumerate(holdings):
            skey = element_storage_key(COLLECTION, b"m%02d" % i)
            seen = None
            for node, v in zip(NODES, versions, strict=True):
                record = VERSIONS[v]
                if record is None:
                    continue
                stores[node].apply_record(skey, encode_record(record))
                if node in asked:
                    seen = record if seen is None else merge(seen, record)
            if seen is not None:
                expected[skey] = encode_record(seen)
        # Records of other keys around the range are no part of it.
        stores["n2"].apply_record(COLLECTION, encode_record(_V1))
        stores["n3"].apply_record(element_storage_key(storage_key(b"", b"coll2"), b"m00"), encode_record(_V1))

        async def main():
            got = await _read_all(path, r, page)
            for _ in range(3):
                await asyncio.sleep(0)  # background repairs
            return got

        got = asyncio.run(main())
        assert [k for k, _ in got] == sorted(expected)
        assert {k: decode_record(v) for k, v in got} == {k: decode_record(v) for k, v in expected.items()}
        for node in asked:
            for skey, record in expected.items():
                assert decode_record(stores[node].engine.get(skey)) == decode_record(record), node


def test_a_replica_that_fails_is_replaced_by_the_next_and_too_few_is_a_quorum_error():
    with _cluster() as (path, stores, net):
        skey = element_storage_key(COLLECTION, b"m")
        stores["n3"].apply_record(skey, encode_record(_V2))

        async def main():
            net.down.add("n2")
            page = await read_range(path, START, END, None, 2)
            assert [k for k, _ in page.records] == [skey] and page.after is None
            assert "n3" in net.asked
            net.down.add("n3")
            with pytest.raises(QuorumError, match=r"needed 2 replicas, 1 answered: n2 .*unavailable.*; n3 "):
                await read_range(path, START, END, None, 2)

        asyncio.run(main())


def test_a_replica_refuses_a_range_that_spans_tokens_or_a_bad_after():
    with _cluster() as (_path, stores, _net):
        other = next(storage_key(b"", b"k%d" % i) for i in range(100) if storage_key(b"", b"k%d" % i)[:8] != START[:8])
        with pytest.raises(CommandError, match="under one token"):
            read_range_page(stores["n1"], ReplicaGetRange(START, other, None, 10, 10))
        with pytest.raises(CommandError, match="`after` must lie in"):
            read_range_page(stores["n1"], ReplicaGetRange(START, END, END + b"x", 10, 10))
