"""Two datacenters on one machine, 40 ms apart each way (emulated_wan_delay_ms), three replicas in
each: LOCAL_QUORUM answers without waiting on the WAN, a write crosses it once per datacenter
(one relay), and with dc2 cut off dc1 keeps serving at LOCAL_QUORUM while EACH_QUORUM refuses,
naming dc2; after healing every replica in both datacenters holds every write
(docs/multi-dc.md)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import httpx
import pytest
import redis

from ringkv.client import Client
from ringkv.client.routing import RingMap
from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

# Four nodes in two datacenters, each on a rack of its own: n1, n2 in dc1 and n3, n4 in dc2.
FOUR_IN_TWO = ("dc1/r1", "dc1/r2", "dc2/r1", "dc2/r2")
pytestmark = pytest.mark.timeout(180)

WAN_DELAY_MS = 40  # each way: a round trip between the datacenters takes 80 ms more
DC1, DC2 = ("n1", "n2", "n3"), ("n4", "n5", "n6")


def _cluster(tmp_path) -> LocalCluster:
    cluster = LocalCluster(tmp_path, nodes=6, dc_replicas="dc1=3,dc2=3", partitions=16,
                           emulated_wan_delay_ms=WAN_DELAY_MS, fault_injection="true", gossip_interval_ms=200,
                           replica_timeout_ms=1000, anti_entropy_interval_ms=0)
    # Each node on a rack of its own in its datacenter: n1-n3 in dc1, n4-n6 in dc2.
    members = ",".join(f"{n.node_id}@{n.host}:{n.rpc_port}/{'dc1' if n.node_id in DC1 else 'dc2'}/r{i % 3}"
                       for i, n in enumerate(cluster.nodes))
    for n in cluster.nodes:
        n.settings["members"] = members
    return cluster


def _timed_ms(fn, times: int = 15) -> float:
    """The median duration of `fn()` over `times` calls, in ms."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def _local_copy(r: redis.Redis, key: str) -> list[bytes]:
    """The node's own copy: at LOCAL_ONE a replica answers from its store without a hop."""
    versions = r.execute_command("RINGKV.AT", "LOCAL_ONE", "RINGKV.GETV", key)
    return sorted(s[0] for s in versions[1]) if versions and versions[1] else []


def _cluster_stat(r: redis.Redis, name: str) -> int:
    return int(r.info("datacenters")[name])


def test_two_datacenters_local_levels_relays_and_an_outage_of_one(tmp_path):
    with _cluster(tmp_path) as cluster:
        clients = {n.node_id: redis.Redis(port=n.resp_port) for n in cluster.nodes}
        n1, n4 = clients["n1"], clients["n4"]

        # LOCAL_QUORUM waits on dc1 only; QUORUM (4 of 6) needs a copy from dc2: one round trip more.
        local_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", "k", "v"))
        quorum_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "QUORUM", "SET", "k", "v"))
        read_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", "k"))
        assert quorum_ms >= 2 * WAN_DELAY_MS, (local_ms, quorum_ms)
        assert local_ms < WAN_DELAY_MS and read_ms < WAN_DELAY_MS, (local_ms, read_ms, quorum_ms)

        assert n4.info("datacenters")["datacenter"] == "dc2"
        assert n1.info("datacenters")["dc_replicas"] == {"dc1": 3, "dc2": 3}
        # One message crosses to dc2 per write, to a relay that sends it on to the others there.
        sent, relayed = _cluster_stat(n1, "relays_sent"), sum(_cluster_stat(clients[n], "relayed_writes") for n in DC2)
        crossed = _cluster_stat(n1, "emulated_wan_writes_sent")
        n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "relayed", "once")
        assert _cluster_stat(n1, "relays_sent") == sent + 1
        # One replica write crossed to dc2 for dc2's three replicas.
        assert _cluster_stat(n1, "emulated_wan_writes_sent") == crossed + 1
        assert sum(_cluster_stat(clients[n], "relayed_writes") for n in DC2) == relayed + 1
        for node in DC1 + DC2:
            assert _local_copy(clients[node], "relayed") == [b"once"], node

        # The levels by every way a client names them: HTTP's header and the Python client.
        http = cluster.nodes[3]
        reply = httpx.put(f"http://{http.host}:{http.http_port}/api/v1/keys/h", json={"value": "from-dc2"},
                          headers={"Consistency-Level": "LOCAL_QUORUM"}, timeout=10)
        assert reply.status_code < 300, reply.text
        assert n4.execute_command("RINGKV.AT", "LOCAL_ONE", "GET", "h") == b"from-dc2"
        with Client(port=cluster.nodes[4].resp_port, consistency="LOCAL_QUORUM") as kv:
            kv.set("c", "client")
            assert kv.get("c") == b"client"
            assert kv.get("h", consistency="EACH_QUORUM") == b"from-dc2"

        # dc2 cut off from dc1, both ways.
        for node in DC1:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC2)
        for node in DC2:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC1)
        n1.execute_command("RINGKV.CONSISTENCY", "LOCAL_QUORUM")
        during_ms = _timed_ms(lambda: n1.set("k", "v"))
        assert during_ms < WAN_DELAY_MS, (local_ms, during_ms)
        for i in range(20):
            assert n1.set(f"outage{i}", f"v{i}")
            assert n1.get(f"outage{i}") == f"v{i}".encode()
        # MSET and MGET at LOCAL_QUORUM wait on dc1 alone too (key by key).
        assert n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "MSET", "m1", "a", "m2", "b")
        assert n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "MGET", "m1", "m2") == [b"a", b"b"]
        with pytest.raises(redis.ResponseError, match="datacenter dc2: needed 2 replicas, 0 answered"):
            n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "each", "x")
        with pytest.raises(redis.ResponseError, match="datacenter dc2"):
            n1.execute_command("RINGKV.AT", "EACH_QUORUM", "GET", "k")
        # dc2 serves its own side at LOCAL_QUORUM too, and refuses QUORUM (it has 3 of 6).
        assert n4.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", "dc2-side", "w")
        with pytest.raises(redis.ResponseError, match="needed 4 replicas"):
            n4.execute_command("RINGKV.AT", "QUORUM", "SET", "dc2-side", "w")

        # Healed: the hints kept for dc2 (and dc1) are handed off, and every replica converges.
        for client in clients.values():
            client.execute_command("RINGKV.FAULT", "HEAL")
        expected = {f"outage{i}": [f"v{i}".encode()] for i in range(20)} | {"dc2-side": [b"w"], "m1": [b"a"]}
        deadline = time.monotonic() + 60
        missing: list = []
        while time.monotonic() < deadline:
            missing = [(node, key) for key, want in expected.items() for node in DC1 + DC2
                       if _local_copy(clients[node], key) != want]
            if not missing:
                break
            time.sleep(0.5)
        assert not missing, missing[:10]
        assert n1.execute_command("RINGKV.AT", "EACH_QUORUM", "GET", "dc2-side") == b"w"


def _dc2_replicas_of(r: redis.Redis, key: bytes) -> list[str]:
    """The key's dc2 replicas in preference order: the first is its writes' relay there."""
    doc = json.loads(r.execute_command("RINGKV.RING"))
    ids = [node["node_id"] for node in doc["nodes"]]
    return [ids[i] for i in RingMap(doc, "127.0.0.1").replicas_of(b"", key) if ids[i] in DC2]


def test_an_each_quorum_write_does_not_wait_on_the_slowest_replica_behind_its_relay(tmp_path):
    """EACH_QUORUM needs 2 of dc2's 3 copies: the relay answers once it and one more hold the
    write, without waiting for a third replica that has stopped answering (before any failure
    detector notices, a wait would last the whole replica timeout); the stopped one gets the
    write once it runs again."""
    with _cluster(tmp_path) as cluster:
        nodes = {n.node_id: n for n in cluster.nodes}
        clients = {n.node_id: redis.Redis(port=n.resp_port, socket_timeout=20) for n in cluster.nodes}
        n1 = clients["n1"]
        order = _dc2_replicas_of(n1, b"slow-key")
        relay, slow = order[0], order[-1]
        assert n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "slow-key", "before")
        early = _cluster_stat(clients[relay], "relays_answered_early")
        os.kill(nodes[slow].proc.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            assert n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "slow-key", "while-stopped")
            took_ms = (time.perf_counter() - started) * 1000
        finally:
            os.kill(nodes[slow].proc.pid, signal.SIGCONT)
        # Two WAN crossings and the relay's hop; far below the 1,000 ms replica timeout that
        # waiting for the stopped replica would have cost.
        assert took_ms < 600, took_ms
        assert _cluster_stat(clients[relay], "relays_answered_early") == early + 1
        # The relay's send to the stopped replica completes (or becomes a hint) once it runs.
        wait_until(lambda: _local_copy(clients[slow], "slow-key") == [b"while-stopped"], timeout_s=30,
                   what=f"{slow} holding the write its relay answered before it")
        for node in DC1 + DC2:
            assert _local_copy(clients[node], "slow-key") == [b"while-stopped"], node


def test_anti_entropy_across_datacenters_keeps_to_its_bandwidth_bound(tmp_path):
    """dc2 misses 100 writes of 1 KB (hints expire at once, so only anti-entropy repairs them);
    a repair pushes them to dc2's three replicas (300 KB) at 50 KB/s: about six seconds, where
    the same repair within a datacenter takes a fraction of one."""
    rate = 50_000
    cluster = _cluster(tmp_path)
    for n in cluster.nodes:
        n.settings.update(anti_entropy_wan_bytes_per_s=str(rate), max_hint_window_ms="1", emulated_wan_delay_ms="0")
    with cluster:
        clients = {n.node_id: redis.Redis(port=n.resp_port) for n in cluster.nodes}
        n1 = clients["n1"]
        for node in DC1:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC2)
        for node in DC2:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC1)
        value = "x" * 1000
        for i in range(100):
            n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", f"ae{i}", value)
        for client in clients.values():
            client.execute_command("RINGKV.FAULT", "HEAL")
        started = time.monotonic()
        summary = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=60).execute_command("RINGKV.REPAIR")
        took = time.monotonic() - started
        assert b'"error_count": 0' in summary, summary
        assert took >= 300_000 / rate * 0.8, took
        assert float(n1.info("datacenters")["anti_entropy_wan_waited_s"]) >= 3
        for node in DC2:
            assert _local_copy(clients[node], "ae99") == [value.encode()], node


def _start_joining_n5(tmp_path, cluster: LocalCluster, settings: dict) -> NodeProcess:
    """n5 started with `ringkv admin join` into dc2 (rack r3), n1 its seed; ready, not joined yet."""
    n5 = NodeProcess(tmp_path / "n5", node_id="n5", **settings, **cluster.secret_settings)
    n5.settings["members"] = cluster.members.split(",")[0] + f",n5@127.0.0.1:{n5.rpc_port}/dc2/r3"
    n5.proc = subprocess.Popen(
        [sys.executable, "-m", "ringkv.cli", "admin", "join", "--node-id", "n5",
         "--data-dir", str(n5.data_dir), "--resp-port", str(n5.resp_port),
         "--http-port", str(n5.http_port), "--rpc-port", str(n5.rpc_port)],
        env={**os.environ, **{f"RINGKV_{k.upper()}": str(v) for k, v in n5.settings.items()}},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        n5.wait_ready()
    except BaseException:
        n5.stop()
        raise
    return n5


def _status(port: int) -> dict:
    return json.loads(redis.Redis(port=port, socket_timeout=30).execute_command("RINGKV.STATUS"))


def test_a_node_joins_one_datacenter_and_takes_its_share_of_that_datacenters_copies(tmp_path):
    """Two copies in each of two datacenters of two nodes; n5 joins dc2 and takes about a third
    of dc2's copies, dc1 keeps every key twice, and no key is lost."""
    settings = dict(dc_replicas="dc1=2,dc2=2", partitions=64, gossip_interval_ms=200, membership_settle_ms=1000,
                    replica_timeout_ms=2000)
    cluster = LocalCluster(tmp_path, nodes=4, locations=FOUR_IN_TWO, **settings)
    with cluster:
        ports = [n.resp_port for n in cluster.nodes]
        r1 = redis.Redis(port=ports[0])
        keys = {f"k{i}": f"v{i}" for i in range(300)}
        for key, value in keys.items():
            r1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", key, value)
        n5 = _start_joining_n5(tmp_path, cluster, settings)
        try:
            everyone = [*ports, n5.resp_port]
            wait_until(lambda: all(_status(p)["membership"]["ring"] == ["n1", "n2", "n3", "n4", "n5"]
                                   and not _status(p)["membership"]["pending"] for p in everyone), 90,
                       "n5 to join and every node to learn it", interval_s=0.5)
            assert redis.Redis(port=n5.resp_port).info("datacenters")["datacenter"] == "dc2"
            r5 = redis.Redis(port=n5.resp_port)
            for key, value in keys.items():
                assert r5.execute_command("RINGKV.AT", "EACH_QUORUM", "GET", key) == value.encode(), key
            held: dict = {}

            def settled() -> bool:
                held.clear()
                held.update({n["node_id"]: n["keys"] for n in _status(ports[0])["nodes"]})
                return (held.get("n1") == held.get("n2") == len(keys)
                        and held.get("n3", 0) + held.get("n4", 0) + held.get("n5", 0) >= 2 * len(keys))
            wait_until(settled, 60, lambda: f"dc1 to hold every key twice and dc2 twice: {held}", interval_s=0.5)
            assert {n["node_id"]: n["datacenter"] for n in _status(ports[0])["nodes"]} == {
                "n1": "dc1", "n2": "dc1", "n3": "dc2", "n4": "dc2", "n5": "dc2"}
            # n5 holds about a third of dc2's copies (2 of 3 nodes hold each key there).
            assert 0.4 * len(keys) <= held["n5"] <= 0.95 * len(keys), held
        finally:
            n5.stop()


def test_namespaces_with_their_own_counts_per_datacenter_keep_them_through_repair_and_a_join(tmp_path):
    """Two datacenters of two nodes, two copies in each; "thin" keeps one copy per datacenter
    and "home" two in dc1 and none in dc2. Repairs copy nothing outside a namespace's replicas,
    a node joining dc2 takes only what dc2 holds (no "home" key), and after cleanup every key
    is where its namespace's counts put it."""
    settings = dict(dc_replicas="dc1=2,dc2=2", partitions=64, gossip_interval_ms=200, membership_settle_ms=1000,
                    replica_timeout_ms=2000, anti_entropy_interval_ms=0,
                    namespaces="thin:replicas=dc1=1;dc2=1,home:replicas=dc1=2")
    cluster = LocalCluster(tmp_path, nodes=4, locations=FOUR_IN_TWO, **settings)
    keys = [f"k{i}" for i in range(100)]
    with cluster:
        ports = [n.resp_port for n in cluster.nodes]

        def conn(port: int, namespace: str) -> redis.Redis:
            r = redis.Redis(port=port, socket_timeout=60, single_connection_client=True)
            assert r.execute_command("RINGKV.NAMESPACE", namespace) == b"OK"
            return r

        assert conn(ports[0], "default").execute_command("RINGKV.NAMESPACES") == [
            [b"default", 4, b"siblings"], [b"thin", 2, b"siblings"], [b"home", 2, b"siblings"]]
        first = cluster.nodes[0]
        listed = httpx.get(f"http://{first.host}:{first.http_port}/api/v1/namespaces", timeout=30).json()
        assert {ns["name"]: ns.get("dc_replicas") for ns in listed["namespaces"]} == {
            "default": None, "thin": {"dc1": 1, "dc2": 1}, "home": {"dc1": 2}}
        thin, home = conn(ports[0], "thin"), conn(ports[2], "home")  # "home" written from dc2
        for key in keys:
            assert thin.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", key, "t") == b"OK"
            assert home.set(key, "h") is True
        held: dict = {}

        def holding(dc1: int, dc2: int, nodes=ports) -> bool:
            held.clear()
            held.update({n["node_id"]: n["keys"] for n in _status(nodes[0])["nodes"]})
            return (held.get("n1", 0) + held.get("n2", 0) == dc1
                    and held.get("n3", 0) + held.get("n4", 0) + held.get("n5", 0) == dc2)

        # dc1: one copy of each "thin" key and two of each "home" key; dc2: one "thin" copy.
        wait_until(lambda: holding(300, 100), 30, lambda: f"300 copies in dc1, 100 in dc2: {held}", interval_s=0.3)
        # "home" has no replica in dc2: a read local to dc2 says so; one in dc1 answers.
        with pytest.raises(redis.ResponseError, match="dc2"):
            conn(ports[3], "home").execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", keys[0])
        assert conn(ports[1], "home").execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", keys[0]) == b"h"
        for port in ports:  # anti-entropy between every pair of replicas copies nothing across
            assert json.loads(redis.Redis(port=port, socket_timeout=60).execute_command("RINGKV.REPAIR"))[
                "error_count"] == 0
        assert holding(300, 100), held

        n5 = _start_joining_n5(tmp_path, cluster, settings)
        try:
            everyone = [*ports, n5.resp_port]
            wait_until(lambda: all(_status(p)["membership"]["ring"] == ["n1", "n2", "n3", "n4", "n5"]
                                   and not _status(p)["membership"]["pending"] for p in everyone), 90,
                       "n5 to join and every node to learn it", interval_s=0.5)
            for port in everyone:
                redis.Redis(port=port, socket_timeout=60).execute_command("RINGKV.ADMIN", "CLEANUP")
            assert holding(300, 100, everyone), held
            assert held["n5"] > 0, held  # n5 took its share of dc2's "thin" copies
            thin5 = conn(n5.resp_port, "thin")
            for key in keys:
                assert thin5.execute_command("RINGKV.AT", "LOCAL_ONE", "GET", key) == b"t", key
        finally:
            n5.stop()


def test_spread_reads_of_a_hot_key_stay_in_the_coordinators_datacenter(tmp_path):
    """hot_reads = "spread" across two datacenters 40 ms apart: a hot key's reads at ONE take
    turns over dc1's replicas only, never a replica across the WAN."""
    settings = dict(dc_replicas="dc1=2,dc2=2", partitions=16, emulated_wan_delay_ms=WAN_DELAY_MS,
                    gossip_interval_ms=200, namespaces="hot:hot_reads=spread")
    cluster = LocalCluster(tmp_path, nodes=4, locations=FOUR_IN_TWO, **settings)
    with cluster:
        r1 = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=30, single_connection_client=True)
        assert r1.execute_command("RINGKV.NAMESPACE", "hot") == b"OK"
        r1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "k", "v")
        for _ in range(200):  # k becomes hot on n1
            assert r1.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"v"

        def served() -> list[int]:
            return [int(redis.Redis(port=n.resp_port).info("ringkv")["cluster_replica_reads"]) for n in cluster.nodes]

        before, spread_before = served(), int(r1.info("ringkv")["cluster_hot_reads_spread"])
        took = []
        for _ in range(100):
            started = time.perf_counter()
            assert r1.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"v"
            took.append((time.perf_counter() - started) * 1000)
        after = served()
        assert int(r1.info("ringkv")["cluster_hot_reads_spread"]) - spread_before == 100
        # Nothing across the WAN: dc2's nodes serve only the cluster's own background reads
        # (the users' directory, a few a second), where half the spread reads went before.
        assert (after[2] - before[2]) + (after[3] - before[3]) <= 5, (before, after)
        assert after[1] - before[1] >= 40, (before, after)  # n2 takes its turns, n1 the others
        assert statistics.median(took) < WAN_DELAY_MS, took
