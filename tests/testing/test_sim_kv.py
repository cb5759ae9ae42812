"""The data path in the deterministic simulator, as a developer chasing a lost write uses it:
thousands of seeded runs of reads and writes through cluster/plans.py under crashes,
partitions, loss, duplication and reordering; every run must lose no acknowledged write and
converge once the faults stop; deliberately broken variants must be caught; and a failure
names the seed and the command that replays it.

Seeded tests take their seeds from RINGKV_SIM_SEED when it is set, so a failure reported as
"replay with seed=N" reruns with `RINGKV_SIM_SEED=N pytest tests/testing/test_sim_kv.py -k …`
(or directly: `python -m ringkv.testing.simulator run kv --seed N`).

CI cost, measured on the 2-core dev box (Python 3.11, others' jobs running, load 5-7): about
7 ms of CPU per seed of the short runs, so the 2,000 seeds take 15-18 s of wall time and the
whole module about 20 s. The slow test (5,000 longer runs) took 213 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ringkv.cluster.quorum import ConsistencyLevel
from ringkv.testing.sim.history import History, lost_writes
from ringkv.testing.sim.kv import KvSettings, KvSimulation, ReadResult, WriteResult
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.simulator import SimulationFailure, run_scenario

CI_SEEDS = 2000
CI_STRICT_SEEDS = 500  # of which run with STRICT writes (no stand-ins)
SLOW_SEEDS = 5_000


def seeds(default: range) -> list[int]:
    """The seeds a test runs with: RINGKV_SIM_SEED if set (to replay one), else `default`."""
    chosen = os.environ.get("RINGKV_SIM_SEED")
    return [int(chosen)] if chosen else list(default)


def first_failure(within: int, **params: object) -> tuple[int, SimulationFailure] | None:
    for seed in range(within):
        try:
            run_scenario("kv", seed, **params)
        except SimulationFailure as failure:
            return seed, failure
    return None


# --- the property, over thousands of seeds -------------------------------------------------------


def test_no_acknowledged_write_is_lost_and_every_replica_converges_over_2000_seeds():
    started = time.process_time()
    for seed in seeds(range(CI_SEEDS)):
        # The node's default (stand-ins for failed replicas) for most seeds, STRICT for the rest.
        sloppy = 0 if seed >= CI_SEEDS - CI_STRICT_SEEDS else 1
        result = run_scenario("kv", seed, sloppy=sloppy)
        assert result.figures["writes_acked"] + result.figures["writes_failed"] > 0
    print(f"{CI_SEEDS} seeds of kv in {time.process_time() - started:.1f} s of CPU")


DC_SEEDS = 1000


def test_across_two_datacenters_each_quorum_writes_are_seen_by_local_quorum_reads_over_1000_seeds():
    """8 nodes in 2 datacenters, 3 copies in each; writes at EACH_QUORUM, reads at LOCAL_QUORUM
    in the contact's datacenter (R + W > each datacenter's N): no acknowledged write lost,
    under the same crashes, partitions and loss."""
    totals: dict[str, int] = {}
    for seed in seeds(range(DC_SEEDS)):
        for name, value in run_scenario("kv", seed, nodes=8, dcs=2).figures.items():
            if isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
    for figure in ("crashes", "partitions", "stand_ins", "hints_delivered", "writes_failed"):
        assert totals[figure] > 0, figure
    assert totals["writes_acked"] > totals["writes_failed"]


def test_each_quorum_acknowledged_one_replica_short_in_each_datacenter_is_caught():
    found = first_failure(100, nodes=8, dcs=2, bug="ack-early")
    assert found is not None, "EACH_QUORUM short of one ack per datacenter went unnoticed for 100 seeds"
    assert "lost write" in str(found[1])


@pytest.mark.slow
def test_no_acknowledged_write_is_lost_over_5000_longer_runs():
    # 4 clients x 30 operations on 4 keys: about 22 ms of CPU a seed, 2 minutes in all.
    for seed in seeds(range(SLOW_SEEDS)):
        run_scenario("kv", seed, clients=4, ops=30, keys=4, sloppy=seed % 4 != 0)


def test_the_runs_do_meet_the_faults_they_are_meant_to_survive():
    # A check that never meets a crash, a stand-in or a hint proves little.
    totals: dict[str, int] = {}
    for seed in range(100):
        for name, value in run_scenario("kv", seed).figures.items():
            if isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
    for figure in ("crashes", "partitions", "stand_ins", "hints_delivered", "read_repairs",
                   "digest_mismatches", "writes_acked_through_stand_ins", "writes_failed", "writes_unknown",
                   "keys_cut_short_by_crashes"):
        assert totals[figure] > 0, figure
    assert totals["writes_acked"] > totals["writes_failed"] + totals["writes_unknown"]


# --- deliberately broken variants must be caught -------------------------------------------------


def test_a_write_acknowledged_after_w_minus_1_acks_is_reported_lost_within_100_seeds():
    found = first_failure(100, bug="ack-early")
    assert found is not None, "acknowledging after W-1 acks went unnoticed for 100 seeds"
    seed, failure = found
    assert "lost write" in str(failure)
    assert f"--seed {seed} " in str(failure) and "--bug ack-early" in str(failure)


def test_a_replica_that_drops_every_tenth_write_is_caught_within_100_seeds():
    assert first_failure(100, bug="drop-writes") is not None


def test_a_replica_that_answers_digest_asks_with_the_digest_it_was_sent_is_caught_within_100_seeds():
    # Digest reads count a replica toward R by its digest: one that claims to match whatever it
    # is sent lets a stale copy stand for the record, so a read misses a write or read repair
    # skips a replica.
    found = first_failure(100, bug="digest-echo")
    assert found is not None, "a replica echoing the coordinator's digest went unnoticed for 100 seeds"


def test_without_digest_reads_no_acknowledged_write_is_lost_either():
    for seed in seeds(range(300)):
        assert run_scenario("kv", seed, digests=0).figures["digest_mismatches"] == 0


def test_hint_delivery_that_removes_a_hint_changed_in_flight_loses_a_miss():
    # node/handoff.HintDelivery sends a hint, awaits the ack, then deletes the key: a miss
    # merged into the hint meanwhile is deleted with it, and hinted handoff never delivers
    # it. Found by this simulator; the simulated delivery removes only what it sent.
    found = first_failure(300, bug="hint-race")
    assert found is not None
    assert "hinted handoff did not converge" in str(found[1])


def test_a_write_acknowledged_through_a_stand_in_may_be_missed_by_a_quorum_read_until_its_hint_lands():
    # Sloppy quorum gives up R + W > N while replicas are down (Dynamo's choice): the
    # checker promises such writes only to the reads after the hints are delivered. Held to
    # every read, it reports a loss: the same client can write at QUORUM, be answered OK, and
    # read at QUORUM without seeing it.
    found = first_failure(300, promise_sloppy=1)
    assert found is not None
    assert "with a stand-in's ack" in str(found[1])


# --- the checker itself --------------------------------------------------------------------------


def test_a_quorum_read_started_after_an_acknowledged_write_must_see_it():
    sim = KvSimulation(5, 3, NetworkConditions(min_delay_ms=1, max_delay_ms=1), kv=KvSettings())
    history = History()
    key = b"k"
    pref, _ = sim.placement(key)
    w = history.invoke(0, "write", key, pref[0], sim.now_ms, value=b"v")
    sim.client_write(pref[0], key, b"v", lambda result: history.complete(w, result, sim.now_ms))
    sim.run_for(100)
    assert w.status == "ok"
    r = history.invoke(1, "read", key, pref[1], sim.now_ms)
    sim.client_read(pref[1], key, ConsistencyLevel.QUORUM, lambda result: history.complete(r, result, sim.now_ms))
    sim.run_for(100)
    assert lost_writes(history) == []
    # The same read, had it returned the key's record before the write:
    r.record = None
    (report,) = lost_writes(history)
    assert report.startswith("lost write: write #0 of k = v") and "which returned no record" in report


@pytest.mark.parametrize(("settings", "answered_ms", "speculative"), [
    # R replicas asked; the silent one is overtaken by a speculative retry after 60 ms
    (KvSettings(), (60, 70), 1),
    # no retry in time: its 500 ms timeout asks the next
    (KvSettings(speculate_after_ms=10_000), (500, 510), 0),
    # every replica asked from the start
    (KvSettings(read_fanout="all"), (0, 10), 0),
])
def test_a_quorum_read_whose_first_replica_is_silent_answers_from_the_next(settings, answered_ms, speculative):
    sim = KvSimulation(5, 3, NetworkConditions(min_delay_ms=1, max_delay_ms=1), kv=settings)
    key = b"k"
    pref, _ = sim.placement(key)
    writes: list[WriteResult] = []
    sim.client_write(pref[0], key, b"v", writes.append)
    sim.run_for(100)
    assert [w.status for w in writes] == ["ok"]
    sim.crash(pref[1])  # the first replica a QUORUM read through pref[0] asks; not yet suspected
    reads: list[tuple[float, ReadResult]] = []
    started = sim.now_ms
    sim.client_read(pref[0], key, ConsistencyLevel.QUORUM, lambda result: reads.append((sim.now_ms, result)))
    sim.run_for(1000)
    ((at, result),) = reads
    assert result.status == "ok" and result.record.siblings[0].value == b"v"
    assert answered_ms[0] <= at - started <= answered_ms[1]
    assert sim.stats().speculative_reads == speculative


def test_a_read_that_started_before_the_write_was_acknowledged_promises_nothing():
    history = History()
    r = history.invoke(1, "read", b"k", "n1", 0.0)
    w = history.invoke(0, "write", b"k", "n0", 0.0, value=b"v")
    history.complete(w, WriteResult("ok", dot=None), 1.0)
    history.complete(r, ReadResult("ok", None), 2.0)
    assert lost_writes(history) == []


def test_a_crashed_contact_answers_its_client_unknown_and_keeps_what_it_acknowledged():
    sim = KvSimulation(5, 4, NetworkConditions(min_delay_ms=5, max_delay_ms=5), kv=KvSettings())
    key = b"k"
    pref, _ = sim.placement(key)
    results: list[WriteResult] = []
    sim.client_write(pref[0], key, b"v1", results.append)
    sim.run_for(50)
    assert [r.status for r in results] == ["ok"]
    sim.client_write(pref[0], key, b"v2", results.append)
    sim.crash(pref[0])  # before any replica answered
    assert results[1].status == "unknown"
    assert sim.stores[pref[0]].records[key].siblings[0].value == b"v2"  # its own log survives
    assert key in sim.excused  # its hints died with it
    sim.restart(pref[0])
    sim.run_for(50)
    assert sim.stores[pref[0]].records[key].siblings[0].value == b"v2"


# --- determinism and replay ----------------------------------------------------------------------


def test_the_same_seed_replays_the_same_history_in_another_process():
    here = run_scenario("kv", 5)
    assert run_scenario("kv", 5).trace_hash == here.trace_hash
    assert run_scenario("kv", 6).trace_hash != here.trace_hash
    out = subprocess.run(
        [sys.executable, "-m", "ringkv.testing.simulator", "run", "kv", "--seed", "5"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "4321"},
    ).stdout
    assert f"trace sha256: {here.trace_hash}" in out


def test_a_lost_write_names_its_seed_and_the_command_that_replays_it():
    seed, failure = first_failure(100, bug="ack-early")
    message = str(failure)
    command = message.split(f"replay with seed={seed}: ", 1)[1].splitlines()[0]
    assert command.startswith(f"python -m ringkv.testing.simulator run kv --seed {seed}")
    replayed = subprocess.run([sys.executable, *command.split()[1:]], capture_output=True, text=True)
    assert replayed.returncode == 1
    assert "lost write" in replayed.stderr and f"seed={seed}" in replayed.stderr
    assert message.split("\n")[0] in replayed.stderr
