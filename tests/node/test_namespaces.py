"""Namespaces: parsing the configuration, what each storage key's N and policy are, and the
service view bound to one namespace."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.errors import ConfigError, UnknownNamespaceError
from ringkv.node.config import load_config
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import DEFAULT_NAME, Namespaces, format_namespaces, parse_namespaces
from ringkv.node.replica import Replica, storage_key
from ringkv.storage import Engine, Options
from ringkv.versioning.record import ConflictPolicy

names = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True).filter(lambda n: n != DEFAULT_NAME)
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
