"""Untrusted versions: a causal context a client hands back may name only what the key's
clock already knows, and every clock and record is bounded (docs/security.md).

The attacks of issue 13, as a plain client makes them: learn a key's actors from a read's
context, then send a context with counters near 2^64 (which locked the key: every later
write failed with an internal OverflowError), or contexts naming hundreds of invented actors
(which grew the record without bound). Each is refused with the same clear error, and the
key stays writable and readable, through redis-py and httpx, on one node and on a cluster.
"""

from __future__ import annotations

import base64

import httpx
import msgspec
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ringkv.errors import CorruptionError, InvalidContextError, LimitError
from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.probes import hears_everyone
from ringkv.testing.wait import wait_until
from ringkv.versioning import dvv
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import MAX_CLOCK_ACTORS, MAX_COUNTER, Dot
from ringkv.versioning.record import MAX_RECORD_SIBLINGS, MAX_SIBLINGS, DottedValue, Record

REFUSAL = "invalid causal context: it names versions this key never had; read the key again"
# A context past the bounds of every clock is refused before any key is looked at, saying so.
OVER_BOUNDS = (f"invalid causal context: it names versions this key never had (counters are 1..{MAX_COUNTER}, "
               f"at most {MAX_CLOCK_ACTORS} actors of at most 255 bytes); read the key again")


def refused(message: str) -> bool:
    return message in (REFUSAL, OVER_BOUNDS)


def context_of(clock: dict[bytes, int]) -> bytes:
    """A context as a client can forge one: the format byte and any msgpack map."""
    return bytes([dvv.CONTEXT_FORMAT_VERSION]) + msgspec.msgpack.encode(clock)


def actors_of(context: bytes) -> list[bytes]:
    return list(msgspec.msgpack.decode(context[1:]))


def poisoned(context: bytes) -> bytes:
    """The key's own actors with counters near 2^64."""
    return context_of({a: (1 << 64) - 2 for a in actors_of(context)})


def bloated(context: bytes, invented: int) -> bytes:
    """The key's own clock plus `invented` actors that never wrote it."""
    clock = msgspec.msgpack.decode(context[1:])
    clock.update({b"evil-%04d@%08x" % (i, i): 1 for i in range(invented)})
    return context_of(clock)


# --------------------------------------------------------------------------- the pure rules


def test_a_context_naming_only_what_the_clock_knows_is_accepted():
    clock = {b"a": 3, b"b": 1}
    for ctx in ({}, {b"a": 1}, {b"a": 3, b"b": 1}):
        dvv.check_known(clock, ctx)


@pytest.mark.parametrize("ctx", [{b"a": 4}, {b"c": 1}, {b"a": 1, b"c": 1}, {b"b": MAX_COUNTER}])
def test_a_context_naming_an_unknown_actor_or_a_higher_counter_is_refused(ctx):
    with pytest.raises(InvalidContextError, match="never had; read the key again"):
        dvv.check_known({b"a": 3, b"b": 1}, ctx)


def test_a_write_past_the_counter_limit_is_a_limit_error_not_an_overflow():
    stored = Record({b"a": MAX_COUNTER}, (DottedValue(Dot(b"a", MAX_COUNTER), b"v", 1),))
    with pytest.raises(LimitError, match="MAX_COUNTER"):
        rec.overwrite(stored, actor=b"a", value=b"w", timestamp=2)
    with pytest.raises(LimitError, match="MAX_COUNTER"):
        rec.apply_write(stored, actor=b"a", context=stored.clock, value=b"w", timestamp=2)
    # Another actor still writes it: the key is not locked by one full counter.
    new = rec.overwrite(stored, actor=b"b", value=b"w", timestamp=2)
    assert rec.decode_record(rec.encode_record(new)) == new


def test_a_clock_stops_at_max_clock_actors():
    clock = {b"a%03d" % i: 1 for i in range(MAX_CLOCK_ACTORS)}
    stored = Record(clock, (DottedValue(Dot(b"a000", 1), b"v", 1),))
    with pytest.raises(LimitError, match="MAX_CLOCK_ACTORS"):
        rec.overwrite(stored, actor=b"new", value=b"w", timestamp=2)
    # An actor already in the clock keeps writing.
    assert rec.overwrite(stored, actor=b"a001", value=b"w", timestamp=2).clock[b"a001"] == 2


def test_blind_writes_stop_adding_siblings_at_max_siblings_and_a_context_resolves_them():
    record = None
    for i in range(MAX_SIBLINGS):
        record = rec.apply_write(record, actor=b"a", context=None, value=b"%d" % i, timestamp=i + 1)
    assert len(record.siblings) == MAX_SIBLINGS
    with pytest.raises(LimitError, match="MAX_SIBLINGS"):
        rec.apply_write(record, actor=b"a", context=None, value=b"x", timestamp=99)
    resolved = rec.apply_write(record, actor=b"a", context=record.clock, value=b"x", timestamp=99)
    assert [s.value for s in resolved.siblings] == [b"x"]


def test_a_merge_over_the_record_bounds_is_refused_where_it_would_be_stored():
    many = tuple(DottedValue(Dot(b"a", i + 1), b"", 1) for i in range(MAX_RECORD_SIBLINGS + 1))
    with pytest.raises(LimitError, match="MAX_RECORD_SIBLINGS"):
        rec.check_storable(Record({b"a": MAX_RECORD_SIBLINGS + 1}, many))


# --------------------------------------------------------------------------- decoding bounds

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.binary(max_size=40)
    | st.text(max_size=10) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=20) | st.integers(-9, 1 << 40), inner,
                                                                max_size=5),
    max_leaves=30,
)
huge_clocks = st.dictionaries(st.binary(max_size=300), st.integers(-5, (1 << 64) - 1), max_size=200)


@given(st.binary(max_size=2000))
def test_no_bytes_make_decode_context_raise_anything_but_its_error(data):
    try:
        clock = dvv.decode_context(data)
    except InvalidContextError:
        return
    assert len(clock) <= MAX_CLOCK_ACTORS and all(1 <= c <= MAX_COUNTER for c in clock.values())


@given(huge_clocks | msgpack_values)
def test_no_msgpack_makes_decode_context_accept_a_clock_over_its_bounds(doc):
    data = context_of(doc) if not isinstance(doc, float) else b"\x01" + msgspec.msgpack.encode(doc)
    try:
        clock = dvv.decode_context(data)
    except InvalidContextError:
        return
    assert len(clock) <= MAX_CLOCK_ACTORS
    assert all(len(a) <= dvv.MAX_ACTOR_BYTES and 1 <= c <= MAX_COUNTER for a, c in clock.items())


def _record_doc(clock, siblings):
    return b"\x01" + msgspec.msgpack.encode([clock, siblings])


sibling_docs = st.lists(
    st.tuples(st.tuples(st.binary(max_size=300), st.integers(-1, (1 << 64) - 1)),
              st.none() | st.binary(max_size=20), st.integers(-1, (1 << 64) - 1), st.integers(-1, (1 << 64) - 1)),
    max_size=5)


@given(st.binary(max_size=2000) | st.builds(_record_doc, huge_clocks, sibling_docs)
       | st.builds(_record_doc, msgpack_values, msgpack_values))
def test_no_bytes_make_decode_record_raise_anything_but_corruption_or_exceed_a_bound(data):
    try:
        record = rec.decode_record(data)
    except CorruptionError:
        return
    assert len(record.clock) <= MAX_CLOCK_ACTORS and len(record.siblings) <= MAX_RECORD_SIBLINGS
    assert all(1 <= c <= MAX_COUNTER for c in record.clock.values())
    assert all(1 <= s.dot.counter <= MAX_COUNTER for s in record.siblings)
    rec.check_storable(record)
    assert rec.decode_record(rec.encode_record(record)) == record


def test_a_record_over_each_bound_does_not_decode():
    sib = [[b"a", 1], b"v", 1, 0]
    for clock, siblings, bound in (
        ({b"a": MAX_COUNTER + 1}, [[[b"a", MAX_COUNTER + 1], b"v", 1, 0]], str(MAX_COUNTER)),
        ({b"a%03d" % i: 1 for i in range(MAX_CLOCK_ACTORS)} | {b"a": 1}, [sib], str(MAX_CLOCK_ACTORS)),
        ({b"a": 2000}, [[[b"a", i + 1], b"", 1, 0] for i in range(MAX_RECORD_SIBLINGS + 1)],
         str(MAX_RECORD_SIBLINGS)),
    ):
        with pytest.raises(CorruptionError, match=bound):
            rec.decode_record(_record_doc(clock, siblings))


# --------------------------------------------------------------------------- one node


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with NodeProcess(tmp_path_factory.mktemp("untrusted") / "n1") as n:
        yield n


def test_a_poisoned_context_is_refused_and_the_key_stays_writable_over_resp(node):
    r = redis.Redis(port=node.resp_port, socket_timeout=10)
    r.set("acct", "100")
    context, _ = r.execute_command("RINGKV.GETV", "acct")
    for command in (("RINGKV.PUTV", "acct", "x", "CONTEXT", poisoned(context)),
                    ("RINGKV.DELV", "acct", "CONTEXT", poisoned(context)),
                    ("RINGKV.CAS", "acct", poisoned(context), "x"),
                    ("RINGKV.PUTV", "acct", "x", "CONTEXT", context_of({b"n1@00000000": 5}))):
        with pytest.raises(redis.ResponseError) as err:
            r.execute_command(*command)
        assert refused(str(err.value)), (command, str(err.value))
    # Counters past the bound do not even decode: the error says which bound.
    with pytest.raises(redis.ResponseError) as err:
        r.execute_command("RINGKV.PUTV", "acct", "x", "CONTEXT", context_of({actors_of(context)[0]: 1 << 63}))
    assert str(err.value) == OVER_BOUNDS
    assert r.get("acct") == b"100"
    assert r.set("acct", "101") and r.incr("acct") == 102
    context, _siblings = r.execute_command("RINGKV.GETV", "acct")
    assert r.execute_command("RINGKV.PUTV", "acct", "103", "CONTEXT", context)
    assert r.get("acct") == b"103"


def test_bloating_the_clock_with_invented_actors_is_refused_and_the_record_stays_small(node):
    r = redis.Redis(port=node.resp_port, socket_timeout=10)
    r.set("bloat", "x")
    for _ in range(40):
        context, _ = r.execute_command("RINGKV.GETV", "bloat")
        with pytest.raises(redis.ResponseError) as err:
            r.execute_command("RINGKV.PUTV", "bloat", "y", "CONTEXT", bloated(context, 100))
        assert str(err.value) == REFUSAL
    # More actors than a clock may hold do not decode at all.
    with pytest.raises(redis.ResponseError) as err:
        r.execute_command("RINGKV.PUTV", "bloat", "y", "CONTEXT", bloated(context, MAX_CLOCK_ACTORS + 1))
    assert str(err.value) == OVER_BOUNDS
    context, siblings = r.execute_command("RINGKV.GETV", "bloat")
    assert len(context) < 64 and siblings[0][0] == b"x"
    assert r.execute_command("RINGKV.PUTV", "bloat", "z", "CONTEXT", context)
    assert r.get("bloat") == b"z"


def test_blind_writes_past_max_siblings_are_refused_and_a_read_context_resolves_them(node):
    r = redis.Redis(port=node.resp_port, socket_timeout=10)
    for i in range(MAX_SIBLINGS):
        r.execute_command("RINGKV.PUTV", "crowd", str(i))
    with pytest.raises(redis.ResponseError, match=f"MAX_SIBLINGS={MAX_SIBLINGS}"):
        r.execute_command("RINGKV.PUTV", "crowd", "one too many")
    context, siblings = r.execute_command("RINGKV.GETV", "crowd")
    assert len(siblings) == MAX_SIBLINGS
    r.execute_command("RINGKV.PUTV", "crowd", "merged", "CONTEXT", context)
    assert [s[0] for s in r.execute_command("RINGKV.GETV", "crowd")[1]] == [b"merged"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_poisoned_context_is_refused_over_http_and_the_key_stays_writable(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1", timeout=10) as http:
        assert http.put("/keys/doc", json={"value": "v1"}).status_code == 200
        context = base64.b64decode(http.get("/keys/doc/versions").json()["context"])
        for method, path, kwargs in (
            ("PUT", "/keys/doc/versions", {"json": {"value": "x", "context": b64(poisoned(context))}}),
            ("PUT", "/keys/doc/versions", {"json": {"value": "x", "context": b64(bloated(context, 100))}}),
            ("DELETE", "/keys/doc/versions", {"params": {"context": b64(poisoned(context))}}),
            ("POST", "/keys/doc/cas", {"json": {"expected_version": b64(poisoned(context)), "new_value": "x"}}),
        ):
            answer = http.request(method, path, **kwargs)
            assert answer.status_code == 400, (method, path, answer.text)
            detail = answer.json()["detail"]
            assert detail.startswith("it names versions this key never had") and detail.endswith("read the key again")
        # If-Match compares entity tags (RFC 9110): a made-up one is not the key's version.
        answer = http.put("/keys/doc", json={"value": "x"}, headers={"If-Match": f'"{b64(poisoned(context))}"'})
        assert answer.status_code == 412 and answer.json()["current_context"] == b64(context)
        assert http.get("/keys/doc").json()["value"] == "v1"
        assert http.put("/keys/doc", json={"value": "v2"}).status_code == 200
        context = http.get("/keys/doc/versions").json()["context"]
        assert http.put("/keys/doc/versions", json={"value": "v3", "context": context}).status_code == 200
        assert http.get("/keys/doc").json()["value"] == "v3"


# --------------------------------------------------------------------------- a 3-node cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # No background anti-entropy: a replica that missed a write stays behind until a client's
    # context makes its executor catch up.
    c = LocalCluster(tmp_path_factory.mktemp("untrusted-cluster"), nodes=3, fault_injection=True,
                     anti_entropy_interval_ms=0, replica_timeout_ms=300, gossip_interval_ms=200).start()
    yield c
    c.stop()


def cluster_clients(cluster) -> list[redis.Redis]:
    return [redis.Redis(port=n.resp_port, socket_timeout=10) for n in cluster.nodes]


def test_attacks_on_a_cluster_are_refused_on_every_node(cluster):
    clients = cluster_clients(cluster)
    clients[0].set("shared", "v0")
    context, _ = clients[0].execute_command("RINGKV.GETV", "shared")
    assert len(actors_of(context)) == 1
    for r in clients:
        for attack in (poisoned(context), bloated(context, 100)):
            for command in (("RINGKV.PUTV", "shared", "x", "CONTEXT", attack),
                            ("RINGKV.CAS", "shared", attack, "x")):
                with pytest.raises(redis.ResponseError) as err:
                    r.execute_command(*command)
                assert refused(str(err.value)), (command, str(err.value))
    for i, r in enumerate(clients):
        r.set("shared", f"v{i + 1}")
        assert clients[(i + 1) % 3].get("shared") == f"v{i + 1}".encode()
    with httpx.Client(base_url=f"http://127.0.0.1:{cluster.nodes[1].http_port}/api/v1", timeout=10) as http:
        answer = http.put("/keys/shared/versions", json={"value": "x", "context": b64(poisoned(context))})
        assert answer.status_code == 400 and "never had" in answer.json()["detail"]
        current = http.get("/keys/shared/versions").json()["context"]
        assert http.put("/keys/shared/versions", json={"value": "v9", "context": current}).status_code == 200
    assert clients[2].get("shared") == b"v9"


def test_a_context_read_from_a_replica_ahead_of_the_executor_is_accepted(cluster):
    """n3 misses a write (n1 and n3 cannot talk); a client reads it through n1 and writes with
    that context through n3, which knows less than the context names: n3 catches up from the
    replica it can reach and takes the write, which replaces what the client saw."""
    n1, n2, n3 = cluster_clients(cluster)
    wait_until(lambda: all(hears_everyone(r) for r in (n1, n2, n3)), 30, "every node to hear every node")
    n1.execute_command("RINGKV.FAULT", "PARTITION", "n3")
    n3.execute_command("RINGKV.FAULT", "PARTITION", "n1")
    try:
        n1.set("ahead", "seen-by-n1-and-n2")  # at QUORUM: n1 and n2
        context, siblings = n1.execute_command("RINGKV.GETV", "ahead")
        assert [s[0] for s in siblings] == [b"seen-by-n1-and-n2"]
        new_context = n3.execute_command("RINGKV.PUTV", "ahead", "written-via-n3", "CONTEXT", context)
        # The write replaced the version the context saw: no sibling of it is left.
        _, siblings = n2.execute_command("RINGKV.GETV", "ahead")
        assert [s[0] for s in siblings] == [b"written-via-n3"]
        assert dvv.descends(dvv.decode_context(new_context), dvv.decode_context(context))
        # A context naming more than any replica has is still refused after the catch-up.
        with pytest.raises(redis.ResponseError) as err:
            n3.execute_command("RINGKV.PUTV", "ahead", "x", "CONTEXT", bloated(new_context, 1))
        assert str(err.value) == REFUSAL
    finally:
        n1.execute_command("RINGKV.FAULT", "HEAL")
        n3.execute_command("RINGKV.FAULT", "HEAL")


# --------------------------------------------------------------------------- records from peers


def test_records_from_a_peer_are_checked_before_anything_is_stored(tmp_path):
    """What ReplicaPut, ReplicaPutMany, hints and read repair hand to the store: a storage key
    under another key's token, a record past a bound, or garbage, is refused and not stored."""
    from ringkv.clock import Clock
    from ringkv.node.local_store import LocalStore
    from ringkv.node.namespaces import Namespaces
    from ringkv.node.replica import Replica, storage_key
    from ringkv.storage import Engine, Options

    engine = Engine.open(str(tmp_path / "engine"), Options())
    try:
        store = LocalStore(Replica(engine, b"a1"), Clock(), namespaces=Namespaces(1, "siblings"))
        good = _record_doc({b"peer": 1}, [[[b"peer", 1], b"v", 1, 0]])
        skey = storage_key(b"", b"k")
        # Another key's token in front of this key: it would sit where no read or repair looks.
        forged = storage_key(b"", b"other")[:8] + skey[8:]
        bloated = _record_doc({b"a%03d" % i: 1 for i in range(MAX_CLOCK_ACTORS + 1)}, [[[b"a000", 1], b"v", 1, 0]])
        locked = _record_doc({b"peer": MAX_COUNTER + 1}, [[[b"peer", MAX_COUNTER + 1], b"v", 1, 0]])
        for bad_skey, data in ((forged, good), (skey, bloated), (skey, locked), (skey, b"\x01garbage"),
                               (b"short", good)):
            with pytest.raises(CorruptionError):
                store.apply_record(bad_skey, data)
            with pytest.raises(CorruptionError):
                store.apply_records([(skey, good), (bad_skey, data)])  # all or nothing
        assert _empty(engine)
        # The key stays writable by peers and clients alike.
        store.apply_record(skey, good)
        assert store.replica.read_skey(skey).clock == {b"peer": 1}
    finally:
        engine.close()


def _empty(engine) -> bool:
    with engine.scan() as it:
        return next(iter(it), None) is None
