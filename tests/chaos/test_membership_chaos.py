"""Membership changes as a nemesis (chaos/nemesis.py, `membership`): nodes decommissioned or
removed, their data wiped, and joining again as new nodes of the same id, while other faults
run and the workloads go on. The usual checkers must find no anomaly."""

from __future__ import annotations

import pytest

from ringkv.chaos.runner import ChaosConfig, run
from ringkv.chaos.schedule import make_schedule

NODES = ["n1", "n2", "n3"]
# Seed 7 on 3 nodes over 36 s: n1 killed and removed (1-6 s), skews of n3 and n1, n3
# decommissioned (18.5-22.9 s) while n1 is skewed, more skews; each node joins again, empty,
# at its fault's end. A change and its join hold the nemesis 10-20 s on a loaded machine, so
# later faults start late: the run is long enough for both changes to begin.
SEED, DURATION_S = 7, 36.0
FAULTS = {"hold_s": (4.0, 7.0), "gap_s": (1.0, 2.0)}


def test_the_membership_schedule_replays_and_keeps_one_change_at_a_time():
    events = make_schedule(SEED, NODES, DURATION_S, ["membership", "skew", "partition"], **FAULTS)
    changes = [(e.shape, e.nodes) for e in events if e.kind == "membership"]
    assert changes == [("remove", ("n1",)), ("decommission", ("n3",))]
    for e in events:
        on = [o for o in events if o.kind == "membership" and o.start_s <= e.start_s < o.end_s]
        assert len(on) <= 1


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_joins_decommissions_and_removals_among_other_faults_leave_no_anomaly(tmp_path):
    config = ChaosConfig(workdir=str(tmp_path / "chaos"), seed=SEED, nodes=3, duration_s=DURATION_S,
                         nemesis=("membership", "skew", "partition"), clients=8,
                         settings={"membership_settle_ms": 1000}, **FAULTS)
    result = run(config, log=print)
    print(result.summary())
    assert result.anomalies == [], result.summary()
    kinds = result.stats["fault_kinds"]
    assert kinds.get("membership/decommission", 0) >= 1 and kinds.get("membership/remove", 0) >= 1, kinds
    assert result.stats["ok"] > 100, result.stats
