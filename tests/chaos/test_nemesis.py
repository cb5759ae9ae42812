"""The nemesis counts the faults that took effect, not those it tried: a fault whose
application fails is reported, with why, and never counted as applied (docs/reliability.md,
"Applied, not attempted")."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading

from ringkv.chaos.history import History
from ringkv.chaos.nemesis import Nemesis, process_stopped
from ringkv.chaos.schedule import FaultEvent, partition_sides
from ringkv.testing.launcher import LocalCluster, datacenter_layout


def test_faults_on_nodes_that_never_answer_are_counted_as_not_applied(tmp_path):
    # A cluster whose processes were never started: every RINGKV.FAULT is refused by the
    # kernel (nothing listens), every SIGSTOP has no process to stop.
    cluster = LocalCluster(tmp_path, nodes=3)
    blocked = partition_sides("isolate", ["n1", "n2", "n3"], random.Random(1))
    schedule = [
        FaultEvent(0.0, 0.2, "partition", ("n1", "n2", "n3"), "isolate", tuple(sorted(blocked.items()))),
        FaultEvent(0.3, 0.4, "skew", ("n2",), skew_ms=5_000),
        FaultEvent(0.5, 0.6, "pause", ("n3",)),
    ]
    history = History()
    lines: list[str] = []
    nemesis = Nemesis(cluster, history, schedule, log=lines.append)
    nemesis.run(threading.Event())

    assert (nemesis.begun, nemesis.applied) == (3, 0)
    reasons = dict((e.kind, why) for e, why in nemesis.not_applied())
    assert reasons["partition"] == reasons["skew"] == "its nodes never took it while it lasted"
    assert reasons["pause"] == "FaultNotApplied: n3 was not running"
    assert sum(line.startswith("nemesis: NOT APPLIED") for line in lines) == 3
    recorded = [f for f in history.faults if f.action == "not-applied"]
    assert len(recorded) == 3 and not any(f.ok for f in recorded)
    # Why the commands failed is in the history too.
    assert any(f.action == "sync" and not f.ok and "Connection refused" in (f.error or "")
               for f in history.faults)


def test_datacenter_faults_on_nodes_that_never_answer_are_counted_as_not_applied(tmp_path):
    cluster = LocalCluster(tmp_path, nodes=4, locations=datacenter_layout(4, 2))
    assert cluster.datacenters == {"dc1": ["n1", "n2"], "dc2": ["n3", "n4"]}
    assert f"n3@127.0.0.1:{cluster.node('n3').rpc_port}/dc2/r1" in cluster.members.split(",")
    blocked = {"n1": ("n3", "n4"), "n2": ("n3", "n4"), "n3": ("n1", "n2"), "n4": ("n1", "n2")}
    schedule = [
        FaultEvent(0.0, 0.2, "dc-partition", ("n1", "n2"), "dc1", tuple(sorted(blocked.items()))),
        FaultEvent(0.3, 0.4, "dc-kill", ("n3", "n4"), "dc2"),
    ]
    lines: list[str] = []
    nemesis = Nemesis(cluster, History(), schedule, log=lines.append)
    nemesis.run(threading.Event())

    assert lines[0].endswith("dc-partition dc1: n1,n2 -x- n3,n4")
    assert (nemesis.begun, nemesis.applied) == (2, 0)
    reasons = dict((e.label(), why) for e, why in nemesis.not_applied())
    assert reasons == {"dc-partition/dc1": "its nodes never took it while it lasted",
                       "dc-kill/dc2": "FaultNotApplied: n3 was not running"}


def test_a_paused_process_shows_as_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not process_stopped(proc.pid)
        proc.send_signal(signal.SIGSTOP)
        for _ in range(100):
            if process_stopped(proc.pid):
                break
            threading.Event().wait(0.01)
        assert process_stopped(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not process_stopped(proc.pid)
