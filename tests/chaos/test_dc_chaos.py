"""A cluster in two datacenters under the datacenter nemeses (docs/reliability.md,
"Datacenters"): `dc-partition` cuts one datacenter off from the other, `dc-kill` SIGKILLs
every node of one and starts them again. Four nodes, n1,n2 in dc1 and n3,n4 in dc2, two
replicas of each key in each datacenter, every client at LOCAL_QUORUM in one datacenter: each
datacenter must go on serving its clients while the other is cut off or down, nothing may
serve across the cut, and after healing the checkers must find no anomaly (no acknowledged
write lost, replicas converged, read-your-writes per client, CAS registers and counters
linearizable).

A failing run prints its seed, its history's path and the command that replays its schedule.
"""

from __future__ import annotations

import json

import pytest

from ringkv.chaos.runner import ChaosConfig, run
from ringkv.chaos.schedule import PROCESS_KINDS, make_schedule

NODES = ["n1", "n2", "n3", "n4"]
DATACENTERS = {"dc1": ("n1", "n2"), "dc2": ("n3", "n4")}
# Seed 5 in 12 s gives two faults, dc2's then dc1's, each 3-4 s long (pinned below). A
# datacenter's two nodes take about 4 s to start again on a loaded 2-core machine, which
# delays the second dc-kill; it still begins and ends before the load stops.
SEED = 5
DURATION_S = 12.0
FAULTS = {"hold_s": (2.0, 4.0), "gap_s": (1.0, 2.0)}
CLIENTS = 8  # two per workload, one in each datacenter
CONSENSUS_WRITES = ("incr", "cas", "cad")


def _run(tmp_path, nemesis: str, **kwargs):
    config = ChaosConfig(seed=SEED, nodes=4, dcs=2, replicas=2, duration_s=DURATION_S, nemesis=(nemesis,),
                         clients=CLIENTS, consistency="local_quorum", workdir=str(tmp_path / "chaos"),
                         **FAULTS, **kwargs)
    result = run(config, log=print)
    print(result.summary())
    doc = json.loads(result.history_path.read_text())
    return result, doc


def _assert_clean(result, doc) -> None:
    faults = result.stats["faults"]
    assert faults["applied"] == faults["begun"] == 2, faults  # applied, not only attempted
    assert result.anomalies == [], result.summary()
    for workload in result.config.workloads:
        done = [o for o in doc["ops"] if o["workload"] == workload and o["outcome"] == "ok"
                and o["f"] != "read" and o["process"] >= 0]
        # A consensus round needs replicas of both datacenters: those workloads make progress
        # only while neither is cut off or down, a few seconds of the twelve.
        assert len(done) > (5 if workload in ("counter", "cas-register") else 20), (workload, len(done))
    for workload in ("cas-register", "counter"):
        assert result.stats["linearizability"][workload]["ok"] is True, result.stats["linearizability"]


def _windows(doc, kind: str, ends_with: str):
    """(event, from, to) for each applied fault of `kind`: from when the nemesis saw it hold
    to its first `ends_with` action after that (the heal; the datacenter's nodes being
    started again)."""
    out = []
    for index, applied_s in doc["stats"]["faults"]["applied_at_s"]:
        event = doc["schedule"][index]
        if event["kind"] != kind:
            continue
        end_s = min(f["time_s"] for f in doc["faults"] if f["action"] == ends_with and f["time_s"] > applied_s
                    and set(f["nodes"]) & set(event["nodes"]))
        out.append((event, applied_s, end_s))
    return out


# A fault whose start waited for the one before it (a datacenter's nodes take seconds to start
# again under load) may begin after its scheduled end and last no time at all; what its window
# held is then judged only when it lasted this long. At least one window must.
MIN_WINDOW_S = 1.0


def _judged(windows: list) -> list:
    """The windows long enough to judge; fails when there is none (the run proved nothing)."""
    long_enough = [w for w in windows if w[2] - w[1] >= MIN_WINDOW_S]
    assert long_enough, [(w[0]["shape"], round(w[2] - w[1], 3)) for w in windows]
    return long_enough


def _within(doc, start_s: float, end_s: float) -> list[dict]:
    """The operations of the clients invoked and completed inside (start_s, end_s)."""
    return [o for o in doc["ops"] if o["process"] >= 0 and o["invoke_s"] > start_s
            and o["complete_s"] is not None and o["complete_s"] < end_s]


def _dc(node: str) -> str:
    return next(dc for dc, nodes in DATACENTERS.items() if node in nodes)


def test_the_schedule_cuts_off_and_kills_whole_datacenters():
    for kind in ("dc-partition", "dc-kill"):
        events = make_schedule(SEED, NODES, DURATION_S, [kind], datacenters=DATACENTERS, **FAULTS)
        assert [(e.kind, e.shape, e.nodes) for e in events] == [
            (kind, "dc2", ("n3", "n4")), (kind, "dc1", ("n1", "n2"))]
    for seed in range(50):
        events = make_schedule(seed, NODES, 40, ["dc-partition", "dc-kill", "partition", "kill", "pause", "restart"],
                               datacenters=DATACENTERS)
        for e in events:
            on = [o for o in events if o.start_s <= e.start_s < o.end_s and o is not e]
            if e.kind == "dc-partition":
                inside, outside = set(DATACENTERS[e.shape]), set(NODES) - set(DATACENTERS[e.shape])
                assert set(e.nodes) == inside
                assert e.blocked_map() == {**{n: tuple(sorted(outside)) for n in inside},
                                           **{n: tuple(sorted(inside)) for n in outside}}
                assert not [o for o in on if o.kind in ("partition", "dc-partition")]
            if e.kind == "dc-kill":
                assert e.nodes == DATACENTERS[e.shape]
                assert not [o for o in on if o.kind in (*PROCESS_KINDS, "dc-kill")]
            if e.kind in PROCESS_KINDS:
                assert not [o for o in on if o.kind == "dc-kill"]


def test_datacenter_nemeses_need_datacenters():
    # Without datacenters the schedule makes no such fault, and a run refuses them.
    assert make_schedule(SEED, NODES, DURATION_S, ["dc-partition", "dc-kill"]) == []
    with pytest.raises(ValueError, match="dc-kill nemesis needs datacenters: --dcs 2 or more"):
        run(ChaosConfig(nodes=4, nemesis=("dc-kill",)))
    with pytest.raises(ValueError, match="--replicas 3 per datacenter, but dc2 has 2 nodes"):
        run(ChaosConfig(nodes=4, dcs=2, replicas=3, nemesis=("dc-partition",)))


@pytest.mark.timeout(150)
def test_each_datacenter_serves_at_local_quorum_while_cut_off_from_the_other(tmp_path):
    # With 5 ms each way between the datacenters (emulated_wan_delay_ms): the delay and the
    # partition in one node's transport. (More makes the repair after healing slower: 20 ms
    # took it from under a second to 22 s.)
    result, doc = _run(tmp_path, "dc-partition", wan_delay_ms=5)
    _assert_clean(result, doc)
    assert result.stats["fault_kinds"] == {"dc-partition/dc2": 1, "dc-partition/dc1": 1}
    windows = _windows(doc, "dc-partition", "heal")
    assert len(windows) == 2
    for event, start_s, end_s in _judged(windows):
        inside = _within(doc, start_s, end_s)
        # Each side went on writing through its own datacenter's replicas...
        for dc in DATACENTERS:
            local_writes = [o for o in inside if o["outcome"] == "ok" and o["f"] in ("write", "add", "delete")
                            and _dc(o["node"]) == dc]
            assert local_writes, (event["shape"], dc)
        # ...and no consensus round, which needs 3 of the 4 replicas, got across the cut.
        across = [o for o in inside if o["f"] in CONSENSUS_WRITES and o["outcome"] == "ok"]
        assert across == [], (event["shape"], across[:3])


@pytest.mark.slow  # the CI run keeps the dc-partition run; this one with RINGKV_TEST_FULL=1
@pytest.mark.timeout(150)
def test_a_killed_datacenter_comes_back_and_the_other_served_meanwhile(tmp_path):
    result, doc = _run(tmp_path, "dc-kill")
    _assert_clean(result, doc)
    assert result.stats["fault_kinds"] == {"dc-kill/dc2": 1, "dc-kill/dc1": 1}
    windows = _windows(doc, "dc-kill", "dc-start")
    assert len(windows) == 2
    for event, start_s, end_s in windows:
        killed = set(event["nodes"])
        # Every node of the datacenter was killed, and answered again after its start.
        kills = {n for f in doc["faults"] if f["action"] == "kill" and f["time_s"] <= start_s for n in f["nodes"]}
        starts = {n for f in doc["faults"] if f["action"] == "start" and f["ok"] and f["time_s"] > end_s
                  for n in f["nodes"]}
        assert killed <= kills and killed <= starts, (event, kills, starts)
    for event, start_s, end_s in _judged(windows):
        killed = set(event["nodes"])
        inside = _within(doc, start_s, end_s)
        assert not [o for o in inside if o["outcome"] == "ok" and o["node"] in killed]
        # The other datacenter's clients went on writing there.
        live_writes = [o for o in inside if o["outcome"] == "ok" and o["f"] in ("write", "add", "delete")]
        assert live_writes and all(o["node"] not in killed for o in live_writes), event["shape"]
