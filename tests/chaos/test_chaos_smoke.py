"""Short chaos runs against real `ringkv serve` processes, one per nemesis, each with a fixed
seed and every workload (register and set with deletes on the Dynamo path, counter and
cas-register on the consensus path): a cluster under load and faults, healed and repaired,
must show no anomaly in its history, and every fault the schedule began must have taken
effect (docs/reliability.md). One more run plants a bug in the clients, and the checkers
must catch it. The longer run is `ringkv chaos --duration-s 120 ...`, and the combined runs
here are marked slow (RINGKV_TEST_FULL=1).

A failing run prints its seed, its history's path and the command that replays its schedule.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from ringkv.chaos.runner import ChaosConfig, run
from ringkv.cli import main
from ringkv.cluster.ring import Member, Ring

SMOKE_DURATION_S = 8.0
# Shorter faults than a default run, so each smoke run has three: seed 14 gives, on 3 nodes,
# kills of n3, n2, n3; pauses of n3, n2, n3; a bridge, halves and an isolated node; skews of
# +21 s and -8 s on n1 and +5 s on n2 (tests/chaos/test_schedule.py pins the replay). A
# rolling restart of three nodes takes the nemesis about 8 s on a loaded 2-core machine (each
# node takes 2-4 s to start), so the restart run has one: n3, n2, n1, each stopped by SIGTERM.
SMOKE_FAULTS = {"hold_s": (1.5, 3.0), "gap_s": (0.5, 1.5)}
SMOKE_CLIENTS = 8  # two per workload
# A kill is a kill and a restart: on a loaded machine the third may not begin in time.
MIN_FAULTS = {"kill": 2, "pause": 3, "partition": 3, "skew": 3, "restart": 1}


def _run(tmp_path, log, **kwargs):
    config = ChaosConfig(workdir=str(tmp_path / "chaos"), **kwargs)
    result = run(config, log=log)
    print(result.summary())
    return result


def _assert_clean(result, min_faults: int = 1) -> None:
    s = result.stats
    faults = s["faults"]
    # Applied, not attempted: a fault that never took effect proves nothing.
    assert faults["applied"] == faults["begun"] >= min_faults, faults
    assert s["ok"] > 100, s  # the cluster served the load, not just failed it
    assert result.anomalies == [], result.summary()
    # Every workload made progress, and the consensus ones were checked for linearizability.
    doc = json.loads(result.history_path.read_text())
    for workload in result.config.workloads:
        done = [o for o in doc["ops"] if o["workload"] == workload and o["outcome"] == "ok"
                and o["f"] != "read" and o["process"] >= 0]
        assert len(done) > 20, (workload, len(done))
    for workload in ("cas-register", "counter"):
        assert s["linearizability"][workload]["ok"] is True, s["linearizability"]


@pytest.mark.timeout(150)
# In CI's short mode kill and restart run alone; pause, partition and skew run together in
# tests/chaos/test_sessions_chaos.py (kill, pause, partition, skew in one run) and each alone
# with RINGKV_TEST_FULL=1.
@pytest.mark.parametrize("nemesis", ["kill", pytest.param("pause", marks=pytest.mark.slow),
                                     pytest.param("partition", marks=pytest.mark.slow),
                                     pytest.param("skew", marks=pytest.mark.slow), "restart"])
def test_one_nemesis_leaves_no_anomaly(tmp_path, nemesis):
    # The kill run's clients are token-aware (each request to one of its key's replicas, the
    # one it goes to killed now and then); the others' talk to a node of their own.
    token_aware = nemesis == "kill"
    nodes = 4 if token_aware else 3
    result = _run(tmp_path, print, seed=14, nodes=nodes, duration_s=SMOKE_DURATION_S,
                  nemesis=(nemesis,), clients=SMOKE_CLIENTS, token_aware=token_aware, **SMOKE_FAULTS)
    _assert_clean(result, min_faults=MIN_FAULTS[nemesis])
    assert result.history_path.exists()
    doc = json.loads(result.history_path.read_text())
    if token_aware:
        # Routed by key: nearly every request went to one of its key's three replicas (of four
        # nodes); the rest went on through another node after a replica did not answer.
        ring = Ring([Member(f"n{i + 1}") for i in range(nodes)], result.config.partitions, 3)
        ops = [o for o in doc["ops"] if o["process"] >= 0]
        on_replica = sum(o["node"] in ring.preference_list(ring.partition_for_key(b"", o["key"].encode()))
                         for o in ops)
        assert on_replica >= 0.9 * len(ops), (on_replica, len(ops))
    deletes = [o for o in doc["ops"] if o["f"] in ("delete", "cad") and o["outcome"] == "ok"]
    assert deletes, "the workloads delete"


@pytest.mark.timeout(150)
def test_a_planted_bug_is_caught(tmp_path):
    # Every tenth write of each client is recorded as acknowledged and never sent: what a
    # store that acknowledges and drops writes would look like. Every checker must see it.
    result = _run(tmp_path, print, seed=14, nodes=3, duration_s=6, nemesis=("partition",),
                  clients=SMOKE_CLIENTS, lie_every=10, **SMOKE_FAULTS)
    found = {a.kind for a in result.anomalies}
    assert {"lost-write", "lost-element", "counter", "linearizability"} <= found, result.summary()
    unlinearizable = {a.key.split(":")[0] for a in result.anomalies if a.kind == "linearizability"}
    assert unlinearizable == {"cas", "ctr", "hctr"}, result.summary()  # hctr: HINCRBY counters
    assert "--plant-lost-writes 10" in result.config.command()


def _netns_unavailable() -> str | None:
    from ringkv.chaos.netns import unavailable

    return unavailable()


NETNS_MISSING = _netns_unavailable()


@pytest.mark.timeout(180)
@pytest.mark.skipif(NETNS_MISSING is not None, reason=f"network namespaces: {NETNS_MISSING}")
def test_real_network_faults_leave_no_anomaly(tmp_path):
    # Each node in its own network namespace; seed 4 gives, on 3 nodes in 10 s: 28 % loss on
    # n2 overlapping 6 % on n3, n2 slowed to 32 kbit/s, and a bridge partition made by iptables
    # (n2 and n3 cut from each other, n1 reaching both).
    result = _run(tmp_path, print, seed=4, nodes=3, duration_s=10, nemesis=("partition", "loss", "slow"),
                  clients=SMOKE_CLIENTS, **SMOKE_FAULTS)
    _assert_clean(result, min_faults=4)
    kinds = result.stats["fault_kinds"]
    assert kinds.get("loss") == 2 and kinds.get("slow") == 1 and kinds.get("partition/bridge") == 1, kinds
    doc = json.loads(result.history_path.read_text())
    applied = [f for f in doc["faults"] if f["action"] in ("loss", "slow", "partition", "restore", "heal")]
    assert applied and all(f["ok"] for f in applied), applied
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("rkv") == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_faults_counters_are_exact(tmp_path):
    result = _run(tmp_path, print, seed=21, nodes=3, duration_s=10, nemesis=())
    assert result.anomalies == [], result.summary()
    for key, c in result.stats["counters"].items():
        assert c["unknown"] == 0 and c["final"] == [str(c["ok"])], (key, c)
    assert result.stats["faults"]["begun"] == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_combined_nemeses_on_three_nodes_leave_no_anomaly(tmp_path):
    nemesis = ("kill", "pause", "partition", "skew", "restart") + (("disk",) if os.geteuid() == 0 else ())
    result = _run(tmp_path, print, seed=22, nodes=3, duration_s=60, nemesis=nemesis)
    _assert_clean(result, min_faults=8)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_combined_nemeses_on_five_nodes_leave_no_anomaly(tmp_path):
    result = _run(tmp_path, print, seed=22, nodes=5, duration_s=60,
                  nemesis=("kill", "pause", "partition", "skew", "restart"), clients=8)
    _assert_clean(result, min_faults=8)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(os.geteuid() != 0, reason="the disk nemesis mounts a tmpfs per node (root)")
def test_full_disk_leaves_no_anomaly(tmp_path):
    result = _run(tmp_path, print, seed=23, nodes=3, duration_s=20, nemesis=("disk",))
    _assert_clean(result)


def test_chaos_command_refuses_an_unknown_nemesis():
    out = CliRunner().invoke(main, ["chaos", "--nemesis", "kill,flood", "--duration-s", "1"])
    assert out.exit_code == 2
    assert "unknown nemesis flood" in out.output
