"""Hot keys on a real cluster (docs/hot-keys.md): each node names the keys it coordinates most
(RINGKV.HOTKEYS, INFO, /metrics, `ringkv hotkeys`); with hot_reads = "spread", a zipfian
read load at ONE spreads its hot keys' reads over their replicas, one replica per read; with
hot_cache_ms, a coordinator answers them from a cache no older than that, and never hides a
write made through it.

Four nodes, N = 3. Every key of the load carries one hash tag, so all of them have the same
three replicas and the fourth node, which coordinates every request, is a replica of none:
what each replica serves is then exactly what the coordinator asked of it."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time

import httpx
import pytest
import redis

from ringkv.cluster.ring import DEFAULT_PARTITIONS, Member, Ring
from ringkv.testing.launcher import LocalCluster

TAG = "{hot}"
KEYS = [f"{TAG}k{i}" for i in range(1000)]
NAMESPACES = "spread:hot_reads=spread,cached:hot_cache_ms=300,plain"


def _zipf(rng: random.Random, n: int, s: float = 0.99) -> list[str]:
    weights = [1 / (rank ** s) for rank in range(1, len(KEYS) + 1)]
    return rng.choices(KEYS, weights=weights, k=n)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("hotkeys"), nodes=4, replicas=3, namespaces=NAMESPACES).start()
    yield c
    c.stop()


def _roles(cluster: LocalCluster, namespace: str) -> tuple[int, list[int]]:
    """(index of the node that holds no replica of the tag's keys, the indexes of those that do)."""
    ring = Ring([Member(n.node_id) for n in cluster.nodes], DEFAULT_PARTITIONS, 3)
    replicas = set(ring.preference_list(ring.partition_for_key(namespace.encode(), TAG.encode())))
    holders = [i for i, n in enumerate(cluster.nodes) if n.node_id in replicas]
    [outside] = [i for i, n in enumerate(cluster.nodes) if n.node_id not in replicas]
    return outside, holders


def _replica_reads(node) -> int:
    info = redis.Redis(port=node.resp_port).info("ringkv")
    return int(info["cluster_replica_reads"])


def _client(node, namespace: str) -> redis.Redis:
    r = redis.Redis(port=node.resp_port, single_connection_client=True)
    r.execute_command("RINGKV.NAMESPACE", namespace)
    r.execute_command("RINGKV.CONSISTENCY", "READ", "ONE", "WRITE", "ALL")  # reads at ONE see every write
    return r


def _served(cluster, holders: list[int], reads) -> list[int]:
    """Replica reads each of `holders` served while `reads` ran."""
    before = [_replica_reads(cluster.nodes[i]) for i in holders]
    reads()
    return [_replica_reads(cluster.nodes[i]) - b for i, b in zip(holders, before, strict=True)]


def _load(cluster, namespace: str, reads: int) -> tuple[list[int], list[int]]:
    """Write the keys, then `reads` zipfian reads at ONE through the node outside the replica
    set, then as many reads of the hottest key alone: what each replica served in each."""
    outside, holders = _roles(cluster, namespace)
    r = _client(cluster.nodes[outside], namespace)
    for key in KEYS:  # (a pipeline would take another connection, in another namespace)
        r.set(key, key)

    def zipfian():
        for key in _zipf(random.Random(1), reads):
            assert r.get(key) == key.encode()

    def hottest():
        for _ in range(reads // 4):
            assert r.get(KEYS[0]) == KEYS[0].encode()

    return _served(cluster, holders, zipfian), _served(cluster, holders, hottest)


def test_spread_reads_of_hot_keys_go_to_one_replica_each_evenly(cluster):
    reads = 6000
    plain, plain_hottest = _load(cluster, "plain", reads)
    spread, spread_hottest = _load(cluster, "spread", reads)
    # Without spreading, a read at ONE asks one replica (read_fanout = "quorum", the default:
    # R of them): the key's first in preference order, so one replica serves every read of
    # the hottest key. (With read_fanout = "all" each replica served every read.)
    assert reads * 0.97 <= sum(plain) <= reads * 1.03, plain
    assert max(plain_hottest) >= reads // 4 * 0.97, plain_hottest
    # With it, a hot key's read asks one replica too, but the next in turn: the zipfian load
    # costs its replicas no more in all...
    assert sum(spread) <= 1.03 * sum(plain), (spread, plain)
    # ...and the hottest key's reads are shared evenly, each served once.
    hottest = sum(spread_hottest)
    assert hottest < reads // 4 * 1.1, spread_hottest
    for share in spread_hottest:
        assert 0.28 < share / hottest < 0.39, spread_hottest
    outside, _ = _roles(cluster, "spread")
    info = redis.Redis(port=cluster.nodes[outside].resp_port).info("ringkv")
    assert int(info["cluster_hot_reads_spread"]) >= reads // 4


def test_the_coordinator_names_its_hottest_keys(cluster):
    outside, _ = _roles(cluster, "spread")
    node = cluster.nodes[outside]
    r = redis.Redis(port=node.resp_port)
    doc = json.loads(r.execute_command("RINGKV.HOTKEYS", "COUNT", "5"))
    assert doc["node_id"] == node.node_id and len(doc["keys"]) == 5
    top = doc["keys"][0]
    assert top["key"] == KEYS[0] and top["hot"] is True  # the zipfian rank 1
    assert base64.b64decode(top["key_base64"]) == KEYS[0].encode()
    assert top["reads"] > 0 and top["per_s"] > 0
    info = r.info("hotkeys")
    assert info["hotkeys_hot"] >= 1 and info["hotkey_0"]["key"] == KEYS[0]
    # /metrics: the most requested key, by rank, namespace and key.
    metrics = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics").text
    assert f'ringkv_hot_key_requests_per_second{{key="{KEYS[0]}",namespace=' in metrics
    # the HTTP admin API answers the same document.
    got = httpx.get(f"http://127.0.0.1:{node.http_port}/api/v1/admin/hotkeys", params={"count": 3}).json()
    assert [k["key"] for k in got["keys"]][:1] == [KEYS[0]] and len(got["keys"]) == 3
    # Bad input: a precise error, and the node carries on.
    with pytest.raises(redis.ResponseError, match=r"COUNT must be an integer in 1\.\.4096"):
        r.execute_command("RINGKV.HOTKEYS", "COUNT", "0")
    with pytest.raises(redis.ResponseError, match="expected no argument, or COUNT n"):
        r.execute_command("RINGKV.HOTKEYS", "NOW")
    assert r.ping()


def test_ringkv_hotkeys_adds_up_every_members_summary(cluster):
    outside, _ = _roles(cluster, "spread")
    node = cluster.nodes[0]
    out = subprocess.run([sys.executable, "-m", "ringkv.cli", "hotkeys", "--port", str(node.resp_port),
                          "--count", "3", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted(doc["nodes_asked"]) == sorted(n.node_id for n in cluster.nodes) and not doc["nodes_missed"]
    assert doc["keys"][0]["key"] == KEYS[0]
    assert cluster.nodes[outside].node_id in doc["keys"][0]["nodes"]


def test_the_hot_cache_is_bounded_in_staleness_and_never_hides_a_write_made_through_it(cluster):
    outside, holders = _roles(cluster, "cached")
    via = _client(cluster.nodes[outside], "cached")
    other = _client(cluster.nodes[holders[0]], "cached")
    key = KEYS[0]
    via.set(key, "v0")
    for _ in range(2000):  # make it hot at `via`
        via.get(key)
    # Summed over the replicas: a read at ONE asks only one of them (read_fanout = "quorum").
    served = sum(_replica_reads(cluster.nodes[i]) for i in holders)
    for _ in range(200):
        assert via.get(key) == b"v0"
    # Answered from the cache: hardly any reached the replicas (one refill per 300 ms at most).
    assert sum(_replica_reads(cluster.nodes[i]) for i in holders) - served < 50
    # A write through `via` is read back through it at once.
    via.set(key, "v1")
    assert via.get(key) == b"v1"
    # A write through another node is seen within hot_cache_ms (300) plus a read's time.
    other.set(key, "v2")
    written = time.monotonic()
    while via.get(key) != b"v2":
        assert time.monotonic() - written < 0.3 + 0.5, "the cache kept a stale value past hot_cache_ms"
        time.sleep(0.01)
    # Reads at QUORUM never use the cache.
    other.set(key, "v3")
    via.execute_command("RINGKV.CONSISTENCY", "READ", "QUORUM")
    assert via.get(key) == b"v3"
