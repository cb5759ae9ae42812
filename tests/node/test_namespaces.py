"""Namespaces: parsing the configuration, what each storage key's N and policy are, the
service view bound to one namespace, and the compaction strategy of each (its column family in
the engine, the expiry the engine reads in its records, and changing it on a running node)."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.errors import AdminRequestError, ConfigError, UnknownNamespaceError
from ringkv.node.config import load_config
from ringkv.node.expiry_filter import ExpiredRecordFilter, RecordExpiry
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import DEFAULT_NAME, Namespaces, format_namespaces, parse_namespaces
from ringkv.node.node import NodeAdmin
from ringkv.node.replica import Replica, storage_key
from ringkv.storage import Engine, Options
from ringkv.storage.strategies import Leveled, Tiered, TimeWindow
from ringkv.testing.wait import wait_until
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import Dot
from ringkv.versioning.record import ConflictPolicy

# Names starting with "__" are reserved for the system namespace: refused, as
# test_names_starting_with_two_underscores_are_reserved_for_the_system checks.
names = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True).filter(
    lambda n: n != DEFAULT_NAME and not n.startswith("__"))
specs = st.dictionaries(names, st.fixed_dictionaries(
    {}, optional={"replicas": st.integers(1, 16), "conflict_policy": st.sampled_from(["siblings", "lww"])}),
    max_size=8)


@given(specs)
def test_a_toml_table_and_its_string_form_give_the_same_namespaces(table):
    text = format_namespaces(table)
    assert dict(parse_namespaces(text)) == {k: {f: str(v) for f, v in fields.items()} for k, fields in table.items()}
    ns = Namespaces(3, "siblings", text)
    assert len(ns) == len(table) + 1
    for name, fields in table.items():
        spec = ns.named(name)
        assert spec.replicas == fields.get("replicas", 3)
        assert spec.conflict_policy.value == fields.get("conflict_policy", "siblings")
    assert ns.max_replicas == max([3] + [f.get("replicas", 3) for f in table.values()])


@given(specs, st.binary(max_size=40))
def test_every_storage_key_gets_the_n_and_policy_of_its_namespace(table, key):
    ns = Namespaces(3, "siblings", format_namespaces(table))
    for spec in ns:
        skey = storage_key(spec.stored, key)
        assert ns.of_skey(skey) is spec
        assert ns.replicas_of_skey(skey) == spec.replicas
        assert ns.policy_of_skey(skey) is spec.conflict_policy
    # Data of a namespace no longer configured falls back to the default namespace's rules.
    assert ns.of_skey(storage_key(b"\x00gone", key)) is ns.default


@pytest.mark.parametrize("text, message", [
    ("a:replicas=0", "replicas must be an integer in 1..16, got '0'"),
    ("a:replicas=17", "replicas must be an integer in 1..16"),
    ("a:replicas=two", "got 'two'"),
    ("a:conflict_policy=newest", "conflict_policy must be siblings or lww, got 'newest'"),
    ("a:weight=3", "expected name:replicas=N:conflict_policy=siblings|lww"),
    ("a:replicas", "expected name:replicas=N"),
    ("bad name:replicas=1", "must be 1..64 letters"),
    ("default:replicas=1", "'default' is defined twice"),
    ("a:replicas=1,a:replicas=2", "'a' is defined twice"),
])
def test_a_bad_namespace_setting_is_refused_naming_what_is_wrong(text, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"namespaces": text})
    assert info.value.field == "namespaces"
    assert message in str(info.value)


def test_too_many_namespaces_are_refused():
    text = ",".join(f"n{i}:replicas=1" for i in range(64))
    with pytest.raises(ConfigError, match="at most 64 namespaces"):
        Namespaces(3, "siblings", text)


@pytest.mark.parametrize("name", ["__", "__system", "__mine"])
def test_names_starting_with_two_underscores_are_reserved_for_the_system(name):
    with pytest.raises(ConfigError, match="names starting with '__' are reserved"):
        Namespaces(3, "siblings", f"{name}:replicas=1")


def test_namespaces_load_from_a_toml_table(tmp_path):
    path = tmp_path / "ringkv.toml"
    path.write_text('replicas = 2\n[namespaces.sessions]\nreplicas = 3\nconflict_policy = "lww"\n'
                    "[namespaces.cache]\nreplicas = 1\n")
    cfg = load_config(str(path), env={})
    assert cfg.ring_replicas == 3
    by_name = {s.name: s for s in cfg.namespace_specs()}
    assert by_name["default"].replicas == 2
    assert by_name["sessions"].conflict_policy is ConflictPolicy.LWW
    assert by_name["cache"].replicas == 1 and by_name["cache"].conflict_policy is ConflictPolicy.SIBLINGS
    path.write_text("[namespaces.sessions]\nreplica = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'replica'"):
        load_config(str(path), env={})


def test_an_unknown_namespace_is_refused_naming_the_configured_ones():
    ns = Namespaces(3, "siblings", "sessions:replicas=2")
    assert ns.named("default") is ns.named("") is ns.named(b"") is ns.default
    with pytest.raises(ValueError, match="unknown namespace 'nope'; this cluster has: default, sessions"):
        ns.named("nope")


def test_a_view_keeps_each_namespace_apart_and_applies_its_policy(tmp_path):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            namespaces = Namespaces(1, "siblings", "lww_ns:conflict_policy=lww")
            local = LocalService(LocalStore(Replica(engine, b"a1"), Clock(), namespaces=namespaces))
            lww = local.in_namespace("lww_ns")
            assert lww.namespace.name == "lww_ns" and lww.in_namespace("default").namespace is namespaces.default
            with pytest.raises(UnknownNamespaceError, match="unknown namespace 'nope'"):
                local.in_namespace("nope")
            await local.put(b"k", b"default value")
            await lww.put(b"k", b"lww value")
            assert await local.get_value(b"k") == b"default value"
            assert await lww.get_value(b"k") == b"lww value"
            assert await local.dbsize() == 1 and await lww.dbsize() == 1
            assert await lww.scan(0, 100) == (0, [b"k"])
            # Two blind writes: siblings by default, one value under lww.
            await local.put_versioned(b"s", b"one", None)
            await local.put_versioned(b"s", b"two", None)
            await lww.put_versioned(b"s", b"one", None)
            await lww.put_versioned(b"s", b"two", None)
            assert len((await local.get_versions(b"s")).siblings) == 2
            assert [v.value for v in (await lww.get_versions(b"s")).siblings] == [b"two"]
            # A view at other levels stays in its namespace.
            assert await lww.at("one", "one").get_value(b"k") == b"lww value"
            assert await lww.delete([b"k"]) == 1
            assert await local.get_value(b"k") == b"default value"
        finally:
            engine.close()

    asyncio.run(main())


# ------------------------------------------------------------------ compaction per namespace


def test_a_namespace_with_a_compaction_gets_a_family_of_its_own_with_that_strategy(tmp_path):
    path = tmp_path / "ringkv.toml"
    path.write_text('compaction = "leveled"\n'
                    '[namespaces.metrics]\ncompaction = "time_window"\ncompaction_window_s = 60\n'
                    '[namespaces.events]\ncompaction = "tiered"\ncompaction_min_merge_runs = 6\n'
                    "[namespaces.cache]\nreplicas = 1\n")
    ns = load_config(str(path), env={}).namespace_specs()
    default, families, router = ns.engine_families()
    assert default == Leveled()
    assert families == {"metrics": TimeWindow(window_ms=60_000), "events": Tiered(min_merge_runs=6)}
    assert ns.named("metrics").as_dict()["compaction_window_s"] == 60
    assert ns.family_of(ns.named("cache")) == ns.family_of(ns.default) == "default"
    for name, family in (("metrics", "metrics"), ("events", "events"), ("cache", "default"), ("default", "default")):
        assert router(storage_key(ns.named(name).stored, b"user:42")) == family
    assert router(b"short") == "default"
    assert pickle.loads(pickle.dumps(router)).description == router.description


def test_namespaces_without_a_compaction_leave_the_engine_one_family():
    assert Namespaces(3, "siblings", "cache:replicas=1").engine_families() == (Leveled(), {}, None)
    assert Namespaces(3, "siblings", "", compaction="tiered").engine_families()[0] == Tiered()


@pytest.mark.parametrize("text, message", [
    ("m:compaction=fifo", "m: compaction must be one of leveled, tiered, time_window, got 'fifo'"),
    ("m:compaction_window_s=60", "m: compaction_window_s needs a compaction"),
    ("m:compaction=tiered:compaction_window_s=60", "compaction_window_s is a setting of time_window compaction, not of tiered"),
    ("m:compaction=tiered:compaction_min_merge_runs=1", "m: compaction_min_merge_runs must be an integer >= 2, got 1"),
    ("m:compaction=time_window:compaction_window_s=0", "m: compaction_window_s must be an integer >= 1"),
    ("m:compaction=time_window:compaction_ttl_rule=fast", "m: compaction_ttl_rule must be 'safe' or 'aggressive'"),
    ("m:compaction=tiered:compaction_max_runs=many", "m: compaction_max_runs must be an integer, got 'many'"),
])
def test_a_bad_compaction_setting_is_refused_naming_it(text, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"namespaces": text})
    assert info.value.field == "namespaces" and message in str(info.value)


def test_a_top_level_compaction_setting_of_another_strategy_is_refused():
    with pytest.raises(ConfigError, match="compaction_window_s is a setting of time_window compaction, not of leveled"):
        load_config(None, env={}, overrides={"compaction_window_s": 60})


HOUR_MS = 3_600_000


class FixedClock(Clock):
    __slots__ = ("ms",)

    def __init__(self, ms: int) -> None:
        super().__init__()
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


def test_a_time_window_namespace_drops_its_expired_window_as_a_file_and_keeps_the_rest(tmp_path):
    """A metrics namespace with a 10-minute TTL beside a default namespace without TTLs: once
    every metric of a window has expired, its table is deleted unread; nothing else goes."""
    clock = FixedClock(1_700_000_000_000)
    ns = Namespaces(1, "siblings", "metrics:compaction=time_window:compaction_window_s=60")
    _, families, router = ns.engine_families()
    options = Options(background="thread", families=families, family_router=router, now_ms=clock.now_ms,
                      compaction_filter=ExpiredRecordFilter(0, clock), expiry_of=RecordExpiry(0, clustered=False))
    with Engine.open(str(tmp_path / "engine"), options) as engine:
        replica = Replica(engine, b"a1", clock)
        for i in range(100):
            replica.write(b"metrics", b"cpu:%03d" % i, b"0.5", context=None, expire_at_ms=clock.ms + 10 * 60_000)
            replica.write(b"", b"user:%03d" % i, b"kept", context=None)
        engine.flush()
        clock.ms += 60_000
        replica.write(b"metrics", b"cpu:later", b"0.7", context=None, expire_at_ms=clock.ms + 10 * 60_000)
        engine.flush()
        assert engine.stats()["families"]["metrics"]["tables"] == 2
        clock.ms += 9 * 60_000 + 1  # the first window's metrics have expired, the later one not
        wait_until(lambda: engine.stats()["expired_tables_dropped"] == 1, 10, "the expired window to go")
        stats = engine.stats()
        assert stats["families"]["metrics"]["tables"] == 1 and stats["compaction_bytes_read"] == 0
        assert replica.read(b"metrics", b"cpu:000") is None
        assert replica.read(b"metrics", b"cpu:later") is not None
        assert replica.read(b"", b"user:099") is not None


@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=3)), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=3),
       st.integers(0, 12), st.booleans())
def test_record_expiry_says_when_the_compaction_filter_starts_dropping_a_record(siblings, now_step, clustered):
    """On a node of one, a positive answer t means: the filter keeps the record before t and
    drops it from t on; in a cluster, tombstones answer -t (only the filter may say)."""
    grace_ms = 2 * HOUR_MS
    base = 1_700_000_000_000
    record = rec.Record({b"a": len(siblings)}, tuple(
        rec.DottedValue(Dot(b"a", i + 1), value, (base + ts * HOUR_MS) << 16, base + exp * HOUR_MS if exp else 0)
        for i, (value, ts, exp) in enumerate(siblings)))
    data = rec.encode_record(record)
    t = RecordExpiry(grace_ms, clustered)(b"k" * 9, data)
    keep = ExpiredRecordFilter(grace_ms, FixedClock(base + now_step * HOUR_MS), 1024 if clustered else None)
    if t == 0:
        assert keep(b"k" * 9, data), "a record that never expires on its own is never dropped"
    elif t > 0:
        assert keep(b"k" * 9, data) == (base + now_step * HOUR_MS < t)
    else:
        assert clustered and any(s.value is None for s in record.siblings)
        if base + now_step * HOUR_MS < -t:
            assert keep(b"k" * 9, data), "dropped before its grace ended"


def test_set_compaction_changes_a_namespace_tree_on_the_running_engine(tmp_path):
    ns = Namespaces(1, "siblings", "events:compaction=tiered,cache:replicas=1")
    _, families, router = ns.engine_families()
    with Engine.open(str(tmp_path), Options(background="thread", families=families, family_router=router,
                                            expiry_of=RecordExpiry(0, clustered=False))) as engine:
        admin = NodeAdmin(SimpleNamespace(store=SimpleNamespace(namespaces=ns), engine=engine))
        answer = admin.set_compaction("events", "time_window", {"compaction_window_s": "120"})
        assert answer == {"namespace": "events", "family": "events", "compaction": "time_window",
                          "window_ms": 120_000, "min_merge_tables": 4, "ttl_rule": "safe"}
        assert engine.families["events"]["compaction"] == "time_window"
        assert admin.set_compaction("default", "tiered")["family"] == "default"
        with pytest.raises(AdminRequestError, match="shares the default namespace's LSM tree"):
            admin.set_compaction("cache", "tiered")
        with pytest.raises(AdminRequestError, match="unknown namespace 'nope'"):
            admin.set_compaction("nope", "tiered")
        with pytest.raises(AdminRequestError, match="compaction_window_s is a setting of time_window"):
            admin.set_compaction("events", "tiered", {"compaction_window_s": "60"})
        assert engine.families["events"]["compaction"] == "time_window", "a refused change changes nothing"
