"""Configuring datacenters (docs/multi-dc.md): the per-datacenter counts in every form an
operator writes them, and each mistake refused with the setting it is about."""

from __future__ import annotations

import pytest

from ringkv.errors import ConfigError
from ringkv.node.config import load_config, parse_member

MEMBERS = "n1@127.0.0.1:9001/dc1/r1,n2@127.0.0.1:9002/dc1/r2,n3@127.0.0.1:9003/dc2/"


def test_a_toml_table_of_replicas_is_the_per_datacenter_count(tmp_path):
    path = tmp_path / "ringkv.toml"
    path.write_text(f'members = "{MEMBERS}"\nreplicas = {{ dc1 = 2, dc2 = 1 }}\n'
                    'read_consistency = "local_quorum"\nwrite_consistency = "each_quorum"\n')
    config = load_config(str(path), env={})
    assert config.dc_replication() == {"dc1": 2, "dc2": 1}
    assert config.replicas == 3 and config.ring_replication == {"dc1": 2, "dc2": 1}
    assert config.read_consistency == "local_quorum"


@pytest.mark.parametrize("env", [
    {"RINGKV_REPLICAS": "dc1=2,dc2=1"},
    {"RINGKV_DC_REPLICAS": "dc1=2, dc2=1"},
    {"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_REPLICAS": "3"},
])
def test_the_environment_names_them_as_a_string(env):
    config = load_config(None, env={"RINGKV_MEMBERS": MEMBERS, **env})
    assert config.dc_replication() == {"dc1": 2, "dc2": 1} and config.replicas == 3


@pytest.mark.parametrize("env, field, words", [
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=x"}, "dc_replicas", "entry 'dc2=x' is not dc=count"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc1=1"}, "dc_replicas", "'dc1' is listed twice"),
    ({"RINGKV_DC_REPLICAS": "dc1=0"}, "dc_replicas", "dc1: must be an integer in 1..16"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_REPLICAS": "4"}, "replicas", "must be the sum of dc_replicas (3)"),
    ({"RINGKV_DC_REPLICAS": "dc1=2", "RINGKV_NAMESPACES": "small:replicas=1"}, "namespaces",
     "small: replicas are counted per datacenter"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_NAMESPACES": "x:replicas=dc3=1"}, "namespaces",
     "x: replicas datacenter 'dc3' has no replicas in this cluster (dc_replicas names dc1, dc2)"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_NAMESPACES": "x:replicas=dc1=3"}, "namespaces",
     "x: replicas dc1: must be an integer in 0..2 (the cluster's count there), got 3"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_NAMESPACES": "x:replicas=dc1=0;dc2=0"}, "namespaces",
     "x: replicas at least one datacenter must hold a replica"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_NAMESPACES": "x:replicas=dc1=1;dc1=2"}, "namespaces",
     "x: replicas names datacenter 'dc1' twice"),
    ({"RINGKV_DC_REPLICAS": "dc1=2,dc2=1", "RINGKV_NAMESPACES": "x:replicas=dc1=one"}, "namespaces",
     "x: replicas entry 'dc1=one' is not dc=count"),
    ({"RINGKV_NAMESPACES": "x:replicas=dc1=1"}, "namespaces",
     "x: replicas counts per datacenter need the cluster's counted per datacenter (dc_replicas)"),
    ({"RINGKV_DC_REPLICAS": "dc1=2", "RINGKV_MEMBERS": "n1@127.0.0.1:9001/dc1/r1,n2@127.0.0.1:9002/r2"},
     "members", "n2 names no datacenter"),
    ({"RINGKV_READ_CONSISTENCY": "nearest"}, "read_consistency", "local_quorum, each_quorum"),
    ({"RINGKV_EMULATED_WAN_DELAY_MS": "20000"}, "emulated_wan_delay_ms", "0..10000"),
])
def test_mistakes_are_refused_naming_the_setting(env, field, words):
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"RINGKV_MEMBERS": MEMBERS, **env})
    assert caught.value.field == field
    assert words in str(caught.value)


def test_a_member_entry_carries_its_datacenter_and_rack():
    assert parse_member("n3@10.0.2.1:7381/dc2/r4").rack == "dc2/r4"
    assert parse_member("n3@10.0.2.1:7381/dc2/").rack == "dc2/"
    assert parse_member("n3@10.0.2.1:7381/r4").rack == "r4"
    with pytest.raises(ConfigError, match="node_id@host:port/dc/rack"):
        parse_member("n3@10.0.2.1:7381/dc2/r4/extra")


def test_a_namespace_counts_its_own_replicas_per_datacenter(tmp_path):
    path = tmp_path / "ringkv.toml"
    path.write_text(f'members = "{MEMBERS}"\nreplicas = {{ dc1 = 2, dc2 = 1 }}\n'
                    '[namespaces.thin]\nreplicas = { dc1 = 1, dc2 = 1 }\n'
                    '[namespaces.home]\nreplicas = { dc1 = 2, dc2 = 0 }\n'
                    '[namespaces.all]\nreplicas = { dc2 = 1, dc1 = 2 }\n')
    specs = load_config(str(path), env={}).namespace_specs()
    thin, home, every = specs.named("thin"), specs.named("home"), specs.named("all")
    assert (thin.replicas, thin.layout) == (2, (("dc1", 1), ("dc2", 1)))
    assert (home.replicas, home.layout) == (2, (("dc1", 2),))  # a datacenter of 0 holds none
    assert home.as_dict()["dc_replicas"] == {"dc1": 2}
    assert (every.replicas, every.layout) == (3, 3)  # the cluster's own counts: the whole list
    # The same as one string, as the environment gives it.
    same = load_config(None, env={"RINGKV_MEMBERS": MEMBERS, "RINGKV_DC_REPLICAS": "dc1=2,dc2=1",
                                  "RINGKV_NAMESPACES": "thin:replicas=dc1=1;dc2=1"}).namespace_specs()
    assert same.named("thin").layout == thin.layout


def test_the_ring_algorithm_is_a_setting_checked_by_name():
    assert load_config(None, env={}).ring_algorithm == "dithered"  # every cluster's until now
    assert load_config(None, env={"RINGKV_RING_ALGORITHM": "bounded"}).ring_algorithm == "bounded"
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"RINGKV_RING_ALGORITHM": "consistent"})
    assert caught.value.field == "ring_algorithm" and "bounded, dithered" in str(caught.value)


def test_digest_reads_are_off_unless_turned_on_and_the_setting_takes_only_a_boolean():
    assert load_config(None, env={}).read_digests is False
    assert load_config(None, env={"RINGKV_READ_DIGESTS": "true"}).read_digests is True
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"RINGKV_READ_DIGESTS": "sometimes"})
    assert caught.value.field == "read_digests"
