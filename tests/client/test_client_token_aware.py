"""Token-aware routing: a client that knows the ring sends each keyed request to one of the
key's replicas (client/routing.py), so no replica read crosses the network on its behalf; it
prefers its datacenter's replicas, steps around a replica it cannot reach, and a client
without it still talks to its one node."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ringkv.client import AsyncClient, Client
from ringkv.client.routing import (
    DOWN_HOLD_MS,
    PROPOSED,
    RingMap,
    Router,
    routing_key,
    runs_on_proposer,
)
from ringkv.cluster.ring import partition_of, token
from ringkv.errors import ConfigError
from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

# Four nodes in two datacenters, each on a rack of its own: n1, n2 in dc1 and n3, n4 in dc2.
FOUR_IN_TWO = ("dc1/r1", "dc1/r2", "dc2/r1", "dc2/r2")
pytestmark = pytest.mark.timeout(180)


def _doc(partitions: int, nodes: list[tuple[str | None, str | None]], replicas: list[list[int]]) -> dict:
    return {"namespace": "default", "partitions": partitions, "token_rule": "...",
            "nodes": [{"node_id": f"n{i}", "resp": resp, "datacenter": dc, "up": True}
                      for i, (resp, dc) in enumerate(nodes)], "replicas": replicas}


@st.composite
def maps(draw):
    partitions = draw(st.sampled_from([1, 2, 8, 64]))
    count = draw(st.integers(1, 6))
    nodes = [(draw(st.one_of(st.none(), st.just(f"10.0.0.{i}:7379"))), draw(st.sampled_from([None, "dc1", "dc2"])))
             for i in range(count)]
    replicas = [draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=count, unique=True))
                for _ in range(partitions)]
    return _doc(partitions, nodes, replicas)


def _routed(doc: dict, key: bytes, dc: str | None, down: set[int]) -> tuple[Router, RingMap, list[int]]:
    """A router that fetched `doc` and holds the nodes `down` down; the key's replicas it may
    reach, in preference order."""
    router = Router(None, "127.0.0.1", dc)
    router.fetched(doc, 0)
    ring = RingMap(doc, "127.0.0.1")
    for i in down:
        if i < len(ring.addresses) and ring.addresses[i] is not None:
            router.held_down(ring.addresses[i], 0)
    replicas = doc["replicas"][partition_of(token(b"", key), doc["partitions"])]
    return router, ring, [i for i in replicas if ring.addresses[i] is not None and i not in down]


@given(maps(), st.binary(min_size=1, max_size=20), st.sampled_from([None, "dc1", "dc2"]),
       st.sets(st.integers(0, 5)))
def test_a_request_goes_to_one_of_its_keys_replicas_that_is_not_held_down(doc, key, dc, down):
    router, ring, reachable = _routed(doc, key, dc, down)
    target = router.target("GET", (b"GET", key), 1)
    if not reachable:
        assert target is None
        return
    assert target in {ring.addresses[i] for i in reachable}
    local = [i for i in reachable if ring.datacenters[i] == dc]
    if dc and local:
        assert target in {ring.addresses[i] for i in local}
    # Held down for DOWN_HOLD_MS only.
    assert router.target("GET", (b"GET", key), DOWN_HOLD_MS + 1) is not None


# What a node runs on the key's proposer, and what it runs on any replica.
ON_PROPOSER = [
    ("INCR", (b"INCR", b"k")), ("RINGKV.CAS", (b"RINGKV.CAS", b"k", b"", b"v")), ("DEL", (b"DEL", b"k")),
    ("SET", (b"SET", b"k", b"v", b"nx")), ("SET", (b"SET", b"k", b"v", b"EX", b"5", b"GET")),
    ("SET", (b"SET", b"k", b"v", b"IFEQ", b"old")), ("GETEX", (b"GETEX", b"k", b"PX", b"50")),
    ("HSET", (b"HSET", b"k", b"f", b"v")), ("LPUSH", (b"LPUSH", b"k", b"a")), ("RENAME", (b"RENAME", b"k", b"j")),
]
ANY_REPLICA = [
    ("GET", (b"GET", b"k")), ("SET", (b"SET", b"k", b"v")), ("SET", (b"SET", b"k", b"NX")),
    ("SET", (b"SET", b"k", b"v", b"EX", b"5")), ("GETEX", (b"GETEX", b"k")), ("HGET", (b"HGET", b"k", b"f")),
    ("RINGKV.PUTV", (b"RINGKV.PUTV", b"k", b"", b"v")), ("LRANGE", (b"LRANGE", b"k", b"0", b"-1")),
]


def test_what_runs_on_the_proposer_is_told_from_the_command_and_its_options():
    for command, args in ON_PROPOSER:
        assert runs_on_proposer(command, args), args
    for command, args in ANY_REPLICA:
        assert not runs_on_proposer(command, args), args
        assert runs_on_proposer(command, args, serial=True), args  # a read at SERIAL
    assert {"HSET", "SADD", "ZADD", "LPUSH", "SMOVE", "RENAME"} <= PROPOSED
    assert not {"HGET", "SMEMBERS", "ZRANGE", "LRANGE", "GET", "SET", "RINGKV.PUTV"} & PROPOSED
    # Routed by the first key, also where a count comes first; malformed: not routed.
    assert routing_key("LMPOP", (b"LMPOP", b"2", b"a", b"b", b"LEFT")) == b"a"
    assert routing_key("SINTERCARD", (b"SINTERCARD", b"2", b"a", b"b")) == b"a"
    assert routing_key("LMPOP", (b"LMPOP", 2, b"a", b"b", b"LEFT")) == b"a"  # a count given as an int
    assert routing_key("ZUNIONSTORE", (b"ZUNIONSTORE", b"d", b"x")) is None


@given(maps(), st.binary(min_size=1, max_size=20), st.sampled_from([None, "dc1", "dc2"]),
       st.sets(st.integers(0, 5)), st.sampled_from([*ON_PROPOSER, ("GET", "serial")]))
def test_a_command_for_the_proposer_goes_to_the_first_reachable_replica_in_preference_order(doc, key, dc, down,
                                                                                         request):
    # As a node of the client's datacenter would pick (node/forwarding.py): its datacenter's
    # first reachable replica when it has one, else the first reachable replica.
    router, ring, reachable = _routed(doc, key, dc, down)
    command, args = request
    serial = args == "serial"
    args = (command.encode(), key, *(() if serial else args[2:]))
    target = router.target(command, args, 1, serial)
    if not reachable:
        assert target is None
        return
    local = [i for i in reachable if dc and ring.datacenters[i] == dc]
    assert target == ring.addresses[(local or reachable)[0]]
    assert all(router.target(command, args, 1, serial) == target for _ in range(5))  # never at random


def test_keyless_requests_stay_on_the_clients_node_and_a_wildcard_address_takes_its_host():
    router = Router(None, "db.example")
    router.fetched(_doc(1, [("0.0.0.0:7001", None)], [[0]]), 0)
    assert router.target("GET", (b"GET", b"k"), 1) == ("db.example", 7001)
    for command in ("SCAN", "DBSIZE", "INFO", "PING"):
        assert router.target(command, (command.encode(), b"0"), 1) is None


def test_a_malformed_map_is_refused_and_one_missing_an_address_is_fetched_again_soon():
    router = Router(None, "127.0.0.1", refresh_ms=10_000)
    router.should_fetch(0)
    router.fetched(_doc(4, [("127.0.0.1:7001", None)], [[0], [1], [0], [0]]), 0)  # node 1 does not exist
    assert router.map is None and "malformed" in router.last_error and router.due_ms == 10_000
    router.fetched(_doc(3, [("127.0.0.1:7001", None)], [[0]] * 3), 0)  # not a power of two
    assert router.map is None
    router.fetched(_doc(2, [("127.0.0.1:7001", None), (None, None)], [[0, 1], [1, 0]]), 0)
    assert router.map is not None and router.due_ms == 1_000  # n1's address not gossiped yet
    assert not router.should_fetch(999) and router.should_fetch(1_000)


def test_routing_options_are_checked():
    with pytest.raises(ConfigError, match="datacenter"):
        Client(datacenter="dc1")  # without token_aware
    with pytest.raises(ConfigError, match="ring_refresh_ms"):
        Client(token_aware=True, ring_refresh_ms=5)


def _counter(node, name: str) -> float:
    text = httpx.get(f"http://{node.host}:{node.http_port}/metrics", timeout=30).text
    return float(re.search(rf"^ringkv_cluster_{name}_total (\S+)", text, re.M).group(1))


def _replica_reads(cluster) -> int:
    return int(sum(_counter(n, "replica_reads") for n in cluster.nodes))


def test_token_aware_clients_read_and_write_on_a_replica_of_each_key(tmp_path):
    """Four nodes, one copy of each key: a token-aware client's reads do not ask another node
    for a replica (each goes to the key's one replica), a plain client's mostly do. (The
    nodes' own background reads, the users' directory, add a few a second.)"""
    keys = [f"k{i}" for i in range(120)]
    with LocalCluster(tmp_path, nodes=4, replicas=1, partitions=64) as cluster:
        port = cluster.nodes[0].resp_port
        with Client("127.0.0.1", port, token_aware=True, ring_refresh_ms=200) as kv:
            # Until every node's address has gossiped, a key may go to the client's node.
            wait_until(lambda: kv.set("warm", "up") and kv.routing["nodes"] == 4
                       and kv._router.map is not None and None not in kv._router.map.addresses,
                       30, "a ring map with every node's address", interval_s=0.1)
            before = _replica_reads(cluster)
            for key in keys:
                assert kv.set(key, key) is True
            assert [kv.get(key) for key in keys] == [k.encode() for k in keys]
            assert _replica_reads(cluster) - before < len(keys) // 10
            assert kv.routing["routed"] >= 2 * len(keys) and kv.routing["last_error"] is None

        async def through_async() -> dict:
            async with AsyncClient("127.0.0.1", port, token_aware=True) as akv:
                assert [await akv.get(k) for k in keys] == [k.encode() for k in keys]
                return akv.routing

        before = _replica_reads(cluster)
        assert asyncio.run(through_async())["routed"] == len(keys)
        assert _replica_reads(cluster) - before < len(keys) // 10

        with Client("127.0.0.1", port) as plain:
            assert plain.routing is None
            before = _replica_reads(cluster)
            assert [plain.get(k) for k in keys] == [k.encode() for k in keys]
            # About three keys in four live on the other three nodes.
            assert _replica_reads(cluster) - before >= len(keys) // 2


def test_a_replica_that_cannot_be_reached_is_stepped_around_and_the_datacenter_is_preferred(tmp_path):
    """Two datacenters of two nodes, two copies in each: a client in dc2 sends its keys to
    dc2's replicas; with one of them killed, its requests go on (to the other, or through
    the client's node) and none fails."""
    settings = dict(dc_replicas="dc1=1,dc2=2", partitions=32, gossip_interval_ms=200, replica_timeout_ms=1000)
    cluster = LocalCluster(tmp_path, nodes=4, locations=FOUR_IN_TWO, **settings)
    keys = [f"k{i}" for i in range(60)]
    with cluster:
        doc = json.loads(redis.Redis(port=cluster.nodes[0].resp_port).execute_command("RINGKV.RING"))
        assert [n["datacenter"] for n in doc["nodes"]] == ["dc1", "dc1", "dc2", "dc2"]
        assert all(len(r) == 3 for r in doc["replicas"])
        with Client("127.0.0.1", cluster.nodes[0].resp_port, token_aware=True, datacenter="dc2",
                    consistency="ONE", ring_refresh_ms=200) as kv:
            wait_until(lambda: kv.set("warm", "up") and kv._router.map is not None
                       and None not in kv._router.map.addresses, 30, "every node's address", interval_s=0.1)
            dc2 = {("127.0.0.1", n.resp_port) for n in cluster.nodes[2:]}
            assert all(kv._router.target("GET", (b"GET", k.encode()), time.monotonic() * 1000) in dc2 for k in keys)
            for key in keys:
                kv.set(key, key)
            cluster.nodes[3].kill()
            assert [kv.get(k) for k in keys] == [k.encode() for k in keys]
            assert ("127.0.0.1", cluster.nodes[3].resp_port) in kv._router.down_until_ms


def test_a_token_aware_client_sends_consensus_commands_to_the_proposer_so_none_is_forwarded(tmp_path):
    """Three nodes, three copies of each key: every node is a replica, and a consensus command
    runs on the key's first replica. A token-aware client sends it there, so no node forwards
    one (the nodes' `forwarded` counters stay put); a plain client on n1 has two keys in three
    forwarded. Every command below took a consensus round (`paxos_commands`, `paxos_reads`), so
    the client's list of such commands matches what the nodes do."""
    keys = [f"c{i}" for i in range(30)]

    def counters() -> tuple[int, int]:
        forwarded = proposed = 0
        for n in cluster.nodes:
            info = redis.Redis(port=n.resp_port).info("ringkv")
            forwarded += int(info["cluster_forwarded"])
            proposed += int(info["cluster_paxos_commands"]) + int(info["cluster_paxos_reads"])
        return forwarded, proposed

    def workload(kv) -> int:
        for key in keys:
            assert kv.incr(key) == 1
            assert kv.set(key + ":nx", "v", if_not_exists=True) is True
            assert kv.cas(key + ":nx", kv.cas(key + ":nx", None, "x").version, "w").success
            assert kv.get(key, consistency="SERIAL") == b"1"
            assert kv.hincrby(key + ":h", "f", 2) == 2  # a round of the field's own record
            assert kv.delete(key + ":h") == 1
        return 6 * len(keys) + len(keys)  # the refused CAS above is a round too

    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=64) as cluster:
        port = cluster.nodes[0].resp_port
        with Client("127.0.0.1", port, token_aware=True, ring_refresh_ms=200, retries=0) as kv:
            wait_until(lambda: kv.set("warm", "up") and kv._router.map is not None
                       and None not in kv._router.map.addresses, 30, "every node's address", interval_s=0.1)
            forwarded, proposed = counters()
            rounds = workload(kv)
            after = counters()
            assert after[0] - forwarded == 0
            assert after[1] - proposed == rounds
        keys = [f"p{i}" for i in range(30)]
        with Client("127.0.0.1", port, retries=0) as plain:
            forwarded, proposed = counters()
            rounds = workload(plain)
            after = counters()
            assert after[1] - proposed == rounds
            assert after[0] - forwarded >= rounds // 3  # about 2 in 3 keys have another first replica
