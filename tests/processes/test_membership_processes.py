"""Joining, decommissioning and removing nodes under a read and write load, with real
processes: no read of an acknowledged key returns not-found, no acknowledged write is lost, and
at the end every partition has N replicas holding its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.probes import hears_everyone, nodes_down
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, membership_settle_ms=1000,
                replica_timeout_ms=2000)


class Load:
    """Writers and readers through the given ports: every write that was acknowledged is
    read back later; a not-found or wrong value for such a key is an anomaly."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.acked: dict[str, str] = {}
        self.anomalies: list[str] = []
        self.errors = 0
        self.reads = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._writer, args=(i,)) for i in range(2)]
        self._threads += [threading.Thread(target=self._reader, args=(i,)) for i in range(2)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _client(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.ports[i % len(self.ports)], socket_timeout=10)

    def _writer(self, w: int) -> None:
        r = self._client(w)
        n = 0
        while not self._stop.is_set():
            key, value = f"w{w}-{n}", f"v{n}"
            try:
                if r.set(key, value):
                    with self._lock:
                        self.acked[key] = value
            except redis.RedisError:
                self.errors += 1
            n += 1
            time.sleep(0.002)  # pacing: a steady load, not a flood that starves the nodes

    def _reader(self, i: int) -> None:
        r = self._client(i + 1)
        while not self._stop.is_set():
            with self._lock:
                items = list(self.acked.items())[-200:]
            for key, value in items[:: max(1, len(items) // 20)]:
                try:
                    got = r.get(key)
                except redis.RedisError:
                    self.errors += 1
                    continue
                self.reads += 1
                if got != value.encode():
                    self.anomalies.append(f"{key}: read {got!r}, acknowledged {value!r}")
            time.sleep(0.01)  # pacing, as the writers


def _status(port: int) -> dict:
    return json.loads(redis.Redis(port=port).execute_command("RINGKV.STATUS"))


def _local_status(port: int) -> str:
    return json.loads(redis.Redis(port=port).execute_command("RINGKV.ADMIN", "STATUS"))["local_status"]


def _settled_on(ports: list[int], ring: list[str]) -> bool:
    """Every node at `ports` has `ring` as its ring and no membership change pending."""
    for port in ports:
        membership = _status(port)["membership"]
        if membership["ring"] != ring or membership["pending"]:
            return False
    return True


def _replicas_hold_everything(cluster_ports: list[int], keys: dict[str, str]) -> list[str]:
    """Each key at ALL through one node: every replica in the ring answers with it."""
    r = redis.Redis(port=cluster_ports[0], socket_timeout=30)
    bad = []
    for key, value in keys.items():
        got = r.execute_command("RINGKV.AT", "ALL", "GET", key)
        if got != value.encode():
            bad.append(f"{key}: {got!r}")
    return bad


def test_join_then_decommission_under_load(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        ports = [n.resp_port for n in cluster.nodes]
        r1 = redis.Redis(port=ports[0])
        for i in range(200):
            r1.set(f"pre{i}", "p")
        n4 = NodeProcess(tmp_path / "n4", node_id="n4", **SETTINGS, **cluster.secret_settings)
        n4.settings["members"] = cluster.nodes[0].settings["members"].split(",")[0] + f",n4@127.0.0.1:{n4.rpc_port}"
        with Load(ports) as load:
            out = subprocess.Popen(
                [sys.executable, "-m", "ringkv.cli", "admin", "join", "--node-id", "n4",
                 "--data-dir", str(n4.data_dir), "--resp-port", str(n4.resp_port),
                 "--http-port", str(n4.http_port), "--rpc-port", str(n4.rpc_port)],
                env={**os.environ, **{f"RINGKV_{k.upper()}": str(v) for k, v in n4.settings.items()}},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            n4.proc = out
            n4.wait_ready()
            wait_until(lambda: _local_status(n4.resp_port) == "normal", 60, "n4 finished joining",
                       interval_s=0.2)
            wait_until(lambda: _settled_on([*ports, n4.resp_port], ["n1", "n2", "n3", "n4"]), 30,
                       "every node to learn that n4 is normal", interval_s=0.2)
            # Now n2 leaves, still under load.
            doc = json.loads(redis.Redis(port=ports[1], socket_timeout=120).execute_command(
                "RINGKV.ADMIN", "DECOMMISSION"))
            assert doc["status"] == "left" and doc["errors"] == 0
            wait_until(lambda: _settled_on([ports[0], ports[2], n4.resp_port], ["n1", "n3", "n4"]), 30,
                       "every remaining node to learn that n2 has left", interval_s=0.2)
            reads_after_leave = load.reads + 50
            wait_until(lambda: load.reads >= reads_after_leave, 30,
                       "the load to read on through the ring without n2", interval_s=0.2)
        assert load.anomalies == []
        assert load.reads > 50 and len(load.acked) > 100
        cluster.nodes[1].stop()
        status = _status(ports[0])
        assert status["membership"]["ring"] == ["n1", "n3", "n4"]
        in_ring = [n for n in status["nodes"] if n["in_ring"]]
        # Every partition has N=3 replicas: with 3 nodes left, each holds all 64.
        assert all(n["replica_partitions"] == 64 for n in in_ring)
        expected = {f"pre{i}": "p" for i in range(200)} | load.acked
        assert _replicas_hold_everything([ports[0]], expected) == []
        # And each of them holds every key itself (3 nodes, N=3), n4 included: at once, or once
        # the read repairs of the reads at ALL above and any hint of a write that went to a
        # stand-in while n2 left have landed.
        want = dict.fromkeys(["n1", "n3", "n4"], len(expected))
        counts: dict = {}

        def every_node_holds_every_key() -> bool:
            counts.clear()
            counts.update({n["node_id"]: n["keys"] for n in _status(ports[0])["nodes"] if n["in_ring"]})
            return counts == want

        wait_until(every_node_holds_every_key, 30, lambda: f"every node to hold {len(expected)} keys: {counts}",
                   interval_s=0.5)
        n4.stop()


def test_remove_a_dead_node_rebuilds_its_partitions_from_the_other_replicas(tmp_path):
    with LocalCluster(tmp_path, nodes=4, **SETTINGS) as cluster:
        r1 = redis.Redis(port=cluster.nodes[0].resp_port)
        keys = {f"k{i}": f"v{i}" for i in range(200)}
        for k, v in keys.items():
            r1.set(k, v)
        wait_until(lambda: hears_everyone(r1), 30, "n1 hears every member")
        cluster.nodes[3].kill()
        # remove refuses a node that is still heard from: wait until n1 holds n4 down.
        wait_until(lambda: "n4" in nodes_down(r1), 30, "n1 holds n4 down")
        out = subprocess.run(
            [sys.executable, "-m", "ringkv.cli", "admin", "remove", "n4", "--port",
             str(cluster.nodes[0].resp_port), "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        moves: list[dict] = []

        def rebuilt() -> bool:
            st = _status(cluster.nodes[0].resp_port)
            moves[:] = [s["membership"]["move"] for s in (_status(n.resp_port) for n in cluster.nodes[:3])]
            return st["membership"]["ring"] == ["n1", "n2", "n3"] and all(
                m["partitions_done"] >= m["partitions_total"] for m in moves)

        wait_until(rebuilt, 60, lambda: f"the rebuild of n4's partitions to finish: {moves}", interval_s=0.3)
        # Every key is on all three remaining replicas, each holding it itself.
        assert _replicas_hold_everything([cluster.nodes[0].resp_port], keys) == []
        st = _status(cluster.nodes[0].resp_port)
        assert {n["node_id"]: n.get("keys") for n in st["nodes"] if n["in_ring"]} == dict.fromkeys(
            ["n1", "n2", "n3"], 200)


# CI's short mode leaves it out: HTTP admission also runs in test_http_admin_processes.py (20 s).
@pytest.mark.slow
def test_a_joining_node_given_its_seed_over_http_joins(tmp_path):
    import httpx

    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        r1 = redis.Redis(port=cluster.nodes[0].resp_port)
        for i in range(50):
            r1.set(f"h{i}", "v")
        n4 = NodeProcess(tmp_path / "n4", node_id="n4", join="true", **SETTINGS, **cluster.secret_settings)
        n4.settings["members"] = f"n4@127.0.0.1:{n4.rpc_port}"  # knows nobody yet
        with n4:
            base = f"http://127.0.0.1:{n4.http_port}/api/v1/admin/cluster"
            # A few gossip rounds in which a node that knows nobody could wrongly settle for a
            # ring of itself: it must still be joining after them.
            r4 = redis.Redis(port=n4.resp_port)
            wait_until(lambda: r4.info("ringkv")["gossip_rounds"] >= 5, 30, "5 gossip rounds on n4")
            assert httpx.get(base + "/status").json()["membership"]["local_status"] == "joining"
            bad = httpx.post(base + "/nodes", json={"seeds": ["not a member"]})
            assert bad.status_code == 400 and "node_id@host:port" in bad.json()["detail"]
            seed = cluster.nodes[0].settings["members"].split(",")[0]
            ok = httpx.post(base + "/nodes", json={"seeds": [seed]})
            assert ok.status_code == 200 and ok.json()["seeds"] == ["n1"]
            wait_until(lambda: httpx.get(base + "/status").json()["membership"]["local_status"] == "normal",
                       60, "n4 finished joining", interval_s=0.3)
            again = httpx.post(base + "/nodes", json={"seeds": [seed]})
            assert again.status_code == 409
            wait_until(lambda: _status(cluster.nodes[0].resp_port)["membership"]["ring"] == ["n1", "n2", "n3", "n4"],
                       30, "n1 to learn that n4 is normal", interval_s=0.2)


# CI's short mode leaves it out: an edge of decommission (30 s).
@pytest.mark.slow
def test_a_decommission_that_cannot_hand_over_is_cancelled_and_the_node_stays(tmp_path):
    # With n4 down, the partitions n4 would take over from n2 cannot move: leaving anyway
    # could take the only up-to-date copy of a key with it.
    with LocalCluster(tmp_path, nodes=4, **SETTINGS) as cluster:
        r1 = redis.Redis(port=cluster.nodes[0].resp_port)
        for i in range(100):
            r1.set(f"d{i}", "v")

        def n4_seen_by_n2_as(state: str) -> bool:
            return any(n["node_id"] == "n4" and n.get("detector") == state
                       for n in _status(cluster.nodes[1].resp_port)["nodes"])

        # n2 has heard n4's gossip: n4 was a live member
        wait_until(lambda: n4_seen_by_n2_as("up"), 30, "n2 to hear from n4", interval_s=0.2)
        cluster.nodes[3].kill()
        wait_until(lambda: n4_seen_by_n2_as("down"), 30, "n2 to detect n4 down", interval_s=0.3)
        out = subprocess.run(
            [sys.executable, "-m", "ringkv.cli", "admin", "decommission", "--timeout-ms", "120000", "--port",
             str(cluster.nodes[1].resp_port), "--json"], capture_output=True, text=True, timeout=150)
        assert out.returncode != 0
        assert "decommission cancelled" in out.stdout + out.stderr and "stays in the ring" in out.stdout + out.stderr
        # n2 is normal again at once; n1 learns it by gossip.
        wait_until(lambda: _settled_on([cluster.nodes[0].resp_port, cluster.nodes[1].resp_port],
                                       ["n1", "n2", "n3", "n4"]), 30,
                   "n1 and n2 to hold n2 as a normal member again", interval_s=0.2)
        assert all(r1.get(f"d{i}") == b"v" for i in range(100))
