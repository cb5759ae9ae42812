"""Namespace quotas, the pure parts (node/quotas.py): the token bucket, the accounting of keys
and bytes, what a write adds, the cluster estimate from the members' counts, the refusals and
their messages, and the settings checked at start."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import ConfigError, QuotaExceededError
from ringkv.node.config import load_config
from ringkv.node.namespaces import Namespaces
from ringkv.node.quotas import (
    NamespaceUsage,
    QuotaGate,
    TokenBucket,
    growth,
    live_bytes,
    remote_usage,
    write_growth,
)
from ringkv.node.replica import storage_key
from ringkv.versioning.record import ConflictPolicy, apply_write

PARTITIONS = 16


# ---------------------------------------------------------------------- token bucket


@given(rate=st.integers(1, 1000), steps=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 20)), max_size=60))
def test_a_bucket_never_admits_more_than_its_burst_plus_its_rate(rate, steps):
    bucket = TokenBucket(rate, rate, now_ms=0)
    now = admitted = 0
    for wait_ms, asked in steps:
        now += wait_ms
        for _ in range(asked):
            admitted += bucket.take(now)
    # One second's worth at once, then the rate: never more.
    assert admitted <= rate + rate * now / 1000 + 1e-9


@given(rate=st.integers(1, 500))
def test_an_emptied_bucket_refills_at_its_rate(rate):
    bucket = TokenBucket(rate, rate, now_ms=0)
    while bucket.take(0):
        pass
    assert not bucket.take(0)
    assert bucket.take(1000 / rate + 1e-6)  # one token's time later, one more request


def test_a_bucket_refuses_a_rate_of_zero():
    with pytest.raises(ValueError, match="rate_per_s > 0"):
        TokenBucket(0, 1, 0)


# ---------------------------------------------------------------------- keys and bytes

ACTORS = (b"a1", b"b2", b"c3")
values = st.one_of(st.none(), st.binary(max_size=40))


@st.composite
def histories(draw):
    """Writes (key index, actor, value or None, blind?) applied to a few keys."""
    return draw(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(ACTORS), values, st.booleans(),
                                   st.sampled_from(list(ConflictPolicy))), max_size=40))


@given(histories())
@settings(max_examples=150)
def test_counts_kept_change_by_change_equal_the_counts_of_what_is_held(history):
    """NamespaceUsage fed each change's growth equals a recount of the final records."""
    usage = NamespaceUsage(PARTITIONS)
    records: dict[bytes, object] = {}
    for clock, (i, actor, value, blind, policy) in enumerate(history, start=1):
        skey = storage_key(b"ns", b"key%d" % i)
        old = records.get(skey)
        new = apply_write(old, actor=actor, context=None if blind or old is None else old.clock, value=value,
                          timestamp=clock, policy=policy)
        records[skey] = new
        usage.add(skey, *growth(old, new, len(skey) - 9 - skey[8]))
    live = [(s, r) for s, r in records.items() if any(x.value is not None for x in r.siblings)]
    assert usage.keys(b"ns") == len(live)
    assert usage.bytes(b"ns") == sum(live_bytes(r, len(s) - 9 - s[8]) for s, r in live)
    assert sum(usage.partition_bytes_by_name().get("ns", [0])) == usage.bytes(b"ns")


@given(histories(), st.sampled_from(ACTORS), st.binary(max_size=40), st.booleans())
@settings(max_examples=150)
def test_what_a_write_adds_is_never_underestimated_before_it_is_made(history, actor, value, replaces):
    """The check before a write (write_growth) counts at least what the write then adds."""
    old = None
    clock = 0
    for _, a, v, blind, policy in history:
        clock += 1
        old = apply_write(old, actor=a, context=None if blind or old is None else old.clock, value=v,
                          timestamp=clock, policy=policy)
    new = apply_write(old, actor=actor, context=old.clock if replaces and old is not None else None, value=value,
                      timestamp=clock + 1, policy=ConflictPolicy.SIBLINGS)
    keys, nbytes = growth(old, new, 5)
    est_keys, est_bytes = write_growth(old, value, 5, replaces)
    assert est_keys >= keys
    assert est_bytes >= nbytes


def test_deletes_add_nothing():
    old = apply_write(None, actor=b"a", context=None, value=b"v" * 10, timestamp=1)
    assert write_growth(old, None, 3, True) == (0, 0)
    assert growth(old, apply_write(old, actor=b"a", context=old.clock, value=None, timestamp=2), 3) == (-1, -13)


# ---------------------------------------------------------------------- the cluster estimate


@given(st.lists(st.integers(0, 50), min_size=PARTITIONS, max_size=PARTITIONS), st.integers(0, 3))
def test_the_estimate_is_exact_when_every_replica_agrees(per_partition, me_index):
    """Every replica of a partition holds the same keys: own count + remote_usage = total."""
    nodes = ["n0", "n1", "n2", "n3"]
    me = nodes[me_index]
    prefs = [tuple(nodes[(p + j) % 4] for j in range(2)) for p in range(PARTITIONS)]
    counts = {n: ([per_partition[p] if n in prefs[p] else 0 for p in range(PARTITIONS)],
                  [7 * per_partition[p] if n in prefs[p] else 0 for p in range(PARTITIONS)])
              for n in nodes if n != me}
    own = sum(per_partition[p] for p in range(PARTITIONS) if me in prefs[p])
    keys, nbytes = remote_usage(me, prefs, counts)
    assert own + keys == sum(per_partition)
    assert nbytes == 7 * keys


def test_a_partition_whose_replicas_never_answered_counts_nothing():
    assert remote_usage("me", [("a", "b")], {}) == (0, 0)
    assert remote_usage("me", [("a", "b")], {"b": ([4], [40])}) == (4, 40)


# ---------------------------------------------------------------------- refusals


def _gate(members: int = 1, **quota) -> tuple[QuotaGate, list[float]]:
    namespaces = Namespaces(3, "siblings", "sessions:" + ":".join(f"{k}={v}" for k, v in quota.items()))
    now = [0.0]
    gate = QuotaGate(namespaces, NamespaceUsage(PARTITIONS), members=members, monotonic_ms=lambda: now[0])
    return gate, now


def _fill(gate: QuotaGate, keys: int, nbytes_each: int = 0) -> None:
    for i in range(keys):
        gate.usage.add(storage_key(b"sessions", b"k%d" % i), 1, nbytes_each)


def test_a_new_key_over_max_keys_is_refused_with_the_count_and_the_limit():
    gate, _ = _gate(max_keys=5)
    _fill(gate, 5)
    with pytest.raises(QuotaExceededError) as refused:
        gate.check(b"sessions", 1, 10)
    assert str(refused.value) == "quota exceeded: namespace sessions holds 5 keys, max_keys=5"
    assert (refused.value.namespace, refused.value.quota, refused.value.limit, refused.value.status) == (
        "sessions", "max_keys", 5, 429)
    assert gate.refusals == {("sessions", "max_keys"): 1}


def test_overwrites_and_deletes_pass_a_full_namespace():
    gate, _ = _gate(max_keys=5, max_bytes=100)
    _fill(gate, 5, 20)  # 5 keys, 100 bytes: both full
    gate.check(b"sessions", 0, 0)  # an overwrite of the same size
    gate.check(b"sessions", 0, -7)  # a shorter value
    gate.check(b"sessions", -1, -20)  # a delete
    with pytest.raises(QuotaExceededError, match=r"^quota exceeded: namespace sessions holds 100 bytes, "
                                                 r"max_bytes=100 \(this write adds 1\)$"):
        gate.check(b"sessions", 0, 1)


def test_other_namespaces_and_the_default_are_not_limited_by_sessions_quota():
    gate, _ = _gate(max_keys=1)
    _fill(gate, 1)
    gate.check(b"", 1, 1000)
    gate.admit(b"")


def test_the_estimate_adds_what_other_members_hold():
    gate, _ = _gate(max_keys=10)
    _fill(gate, 4)
    gate.remote[b"sessions"] = (6, 0)
    assert gate.estimate(b"sessions") == (10, 0)
    with pytest.raises(QuotaExceededError, match="holds 10 keys, max_keys=10"):
        gate.check(b"sessions", 1, 1)


def test_a_batch_is_checked_as_a_whole():
    gate, _ = _gate(max_keys=3)
    _fill(gate, 2)
    assert not gate.batch_upper_bound(b"sessions", [(b"a", b"1"), (b"b", b"2")])
    gate.check_batch(b"sessions", [(b"k0", b"x"), (b"new", b"y")], [b"old", None])  # one new key: fits
    with pytest.raises(QuotaExceededError):
        gate.check_batch(b"sessions", [(b"a", b"1"), (b"b", b"2")], [None, None])


def test_requests_over_the_rate_are_refused_and_the_rate_refills():
    gate, now = _gate(max_requests_per_s=50)
    for _ in range(50):
        gate.admit(b"sessions")
    with pytest.raises(QuotaExceededError) as refused:
        gate.admit(b"sessions")
    assert str(refused.value) == "quota exceeded: namespace sessions at 50 requests/s, max_requests_per_s=50"
    now[0] += 100  # a tenth of a second: 5 more
    for _ in range(5):
        gate.admit(b"sessions")
    with pytest.raises(QuotaExceededError):
        gate.admit(b"sessions")
    assert gate.refusals[("sessions", "max_requests_per_s")] == 2


def test_each_node_admits_its_share_of_the_rate():
    gate, _ = _gate(members=3, max_requests_per_s=300)
    for _ in range(100):
        gate.admit(b"sessions")
    with pytest.raises(QuotaExceededError, match=r"at 100 requests/s on this node, its share of "
                                                 r"max_requests_per_s=300 over 3 nodes"):
        gate.admit(b"sessions")


def test_a_refusal_passed_on_by_another_node_keeps_its_type():
    original = QuotaExceededError("sessions", "max_keys", 5, "namespace sessions holds 5 keys, max_keys=5")
    again = QuotaExceededError.from_message(str(original))
    assert again is not None and (again.namespace, again.quota, again.limit, str(again)) == (
        "sessions", "max_keys", 5, str(original))
    assert QuotaExceededError.from_message("ERR something else") is None


def test_info_shows_each_namespace_with_a_quota():
    gate, _ = _gate(max_keys=5)
    _fill(gate, 2, 10)
    info = gate.info()
    assert info["ns_sessions"] == ("keys=2,bytes=20,max_keys=5,max_bytes=0,max_requests_per_s=0,requests=0,"
                                   "refused_keys=0,refused_bytes=0,refused_requests=0")


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(("overrides", "message"), [
    ({"namespaces": "sessions:max_keys=-1"},
     "namespaces: sessions: max_keys must be an integer in 0..4611686018427387904 (0: no limit), got '-1'"),
    ({"namespaces": "sessions:max_bytes=lots"}, "namespaces: sessions: max_bytes must be an integer"),
    ({"max_requests_per_s": -5}, "max_requests_per_s: must be an integer"),
    ({"quota_refresh_interval_ms": 0}, "quota_refresh_interval_ms: must be >= 1"),
])
def test_a_bad_quota_stops_the_node_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError) as refused:
        load_config(env={}, overrides=overrides)
    assert str(refused.value).startswith(message)


def test_quotas_come_from_namespace_tables_and_top_level_settings(tmp_path):
    path = tmp_path / "ringkv.toml"
    path.write_text('max_keys = 1000\n[namespaces.sessions]\nreplicas = 1\nmax_keys = 5\nmax_bytes = 4096\n'
                    'max_requests_per_s = 500\n')
    specs = load_config(str(path), env={}).namespace_specs()
    assert (specs.default.max_keys, specs.default.max_bytes) == (1000, 0)
    sessions = specs.named("sessions")
    assert (sessions.max_keys, sessions.max_bytes, sessions.max_requests_per_s) == (5, 4096, 500)
    assert sessions.as_dict()["max_keys"] == 5
