"""The deterministic simulator, as a developer chasing a gossip bug uses it: one seed replays one
history exactly, news and crashes spread through the real gossip and phi modules in bounded
virtual time, partitions, loss and duplication do what they should, and a failure names the
seed and the command that replays it.

Seeded tests take their seeds from RINGKV_SIM_SEED when it is set, so a failure reported as
"replay with seed=N" reruns with `RINGKV_SIM_SEED=N pytest tests/testing/test_simulator.py -k …`.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest

from ringkv.cluster.gossip import NodeStatus, known_members
from ringkv.node.messages import GossipSyn
from ringkv.testing.sim.events import EventQueue
from ringkv.testing.sim.network import NetworkConditions, SimulatedNetwork
from ringkv.testing.simulator import (
    GossipSettings,
    Simulation,
    SimulationFailure,
    replay_on_failure,
    run_scenario,
)

LOSSY = NetworkConditions(loss=0.1, min_delay_ms=1.0, max_delay_ms=50.0, duplication=0.05)


def seeds(*default: int) -> list[int]:
    """The seeds a test runs with: RINGKV_SIM_SEED if set (to replay one), else `default`."""
    chosen = os.environ.get("RINGKV_SIM_SEED")
    return [int(chosen)] if chosen else list(default)


def replay(seed: int, test: str):
    return replay_on_failure(
        seed, f"RINGKV_SIM_SEED={seed} pytest tests/testing/test_simulator.py -k {test}"
    )


# --- determinism ---------------------------------------------------------------------------------


def lossy_run(seed: int) -> Simulation:
    sim = Simulation(12, seed, LOSSY)
    sim.run_for(8_000)
    sim.crash(sim.members[3])
    sim.partition(sim.members[:5])
    sim.run_for(6_000)
    sim.heal()
    sim.restart(sim.members[3])
    sim.run_for(6_000)
    return sim


def test_the_same_seed_replays_the_same_history_and_another_seed_another():
    first, again, other = lossy_run(11), lossy_run(11), lossy_run(12)
    assert first.trace_hash() == again.trace_hash()
    assert first.queue.processed == again.queue.processed
    assert [n.membership.states() for n in first.nodes.values()] == [
        n.membership.states() for n in again.nodes.values()
    ]
    assert other.trace_hash() != first.trace_hash()


def test_a_replay_in_another_process_with_other_string_hashing_gives_the_same_trace():
    # Python salts str hashes per process: a set iterated in hash order would change the
    # history from one process to the next. The replay command must not depend on it.
    here = run_scenario("convergence", 3, nodes=12)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringkv.testing.simulator",
            "run",
            "convergence",
            "--seed",
            "3",
            "--nodes",
            "12",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout
    assert f"trace sha256: {here.trace_hash}" in out


def test_the_simulated_node_gossips_with_the_members_the_gossiper_would():
    # The simulated node keeps cluster/gossip.known_members up to date from its merges rather
    # than rebuilding it every round; the round itself (plan_round) is the node's. The two
    # sets must be the same through crashes, restarts and partitions.
    sim = lossy_run(11)
    for node in sim.nodes.values():
        assert node._known == known_members(node.membership, node.seeds), node.node_id


# --- news and crashes ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", seeds(1, 2, 3))
def test_without_loss_a_status_change_reaches_all_50_nodes_within_4_log2_n_plus_4_rounds(seed):
    n = 50
    result = run_scenario("propagation", seed, nodes=n, max_rounds=4 * math.log2(n) + 4)
    assert result.figures["rounds"] <= 4 * math.log2(n) + 4


@pytest.mark.parametrize("seed", seeds(1, 2))
def test_a_crashed_node_is_held_down_by_all_others_within_30_s_and_up_again_after_restart(seed):
    result = run_scenario("crash", seed, nodes=20, max_detect_ms=30_000, max_recover_ms=10_000)
    with replay(seed, "crashed"):
        # Not before the acceptable pause plus a few intervals: nobody jumps to conclusions.
        assert result.figures["detect_first_ms"] > 2_000


def test_a_restart_is_a_new_generation_and_messages_to_the_old_one_are_lost():
    sim = Simulation(5, 21)
    sim.run_for(5_000)
    victim = sim.members[2]
    old = sim.nodes[victim].generation
    sim.crash(victim)
    # A syn on its way to the old incarnation when it died: lost with its connection.
    sim.network.send(sim.members[0], victim, GossipSyn([]), old)
    sim.run_for(20)
    new = sim.restart(victim)
    sim.run_for(1)
    assert new.generation > old
    assert new.membership.get(sim.members[0]) is None  # learnt nothing from the old syn
    assert sim.run_until(
        lambda: all(
            n.membership.get(victim).generation == new.generation for n in sim.nodes.values()
        ),
        timeout_ms=10_000,
    ), sim.replay_hint()


# --- partitions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", seeds(1, 2))
def test_each_side_of_a_partition_holds_the_other_down_and_after_the_heal_everyone_is_up(seed):
    # With probing of unreachable members, as the node does (next test).
    result = run_scenario(
        "partition",
        seed,
        nodes=16,
        max_detect_ms=40_000,
        max_heal_ms=15_000,
        probe_unreachable=1,
    )
    assert result.figures["sides"] == (8, 8)


def test_with_the_nodes_own_rules_two_sides_of_a_healed_partition_find_each_other_again():
    # Found by this simulator: every member is a seed, and choose_peers adds a seed only if
    # none was drawn, so a node held down was never gossiped with and two sides of a healed
    # partition never heard from each other again. node/gossiper.py now probes a member held
    # down now and then (Cassandra's rule), as the simulated node does by default.
    run_scenario("partition", 1, nodes=8, max_detect_ms=40_000, max_heal_ms=30_000, probe_unreachable=1)
    with pytest.raises(SimulationFailure):
        run_scenario("partition", 1, nodes=8, max_detect_ms=40_000, max_heal_ms=30_000, probe_unreachable=0)


def test_a_single_node_cut_off_finds_its_way_back_through_the_seeds():
    sim = Simulation(8, 31)
    sim.run_for(15_000)
    loner = sim.members[5]
    sim.partition([loner])
    assert sim.run_until(lambda: sim.all_suspect(loner), timeout_ms=40_000), sim.replay_hint()
    sim.heal()
    assert sim.run_until(sim.nobody_suspected, timeout_ms=10_000), sim.replay_hint()


# --- loss and duplication ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", seeds(1, 2, 3))
def test_loss_and_duplication_do_not_keep_the_cluster_from_converging(seed):
    result = run_scenario("convergence", seed, nodes=30, loss=0.1, duplication=0.05, max_ms=60_000)
    with replay(seed, "converging"):
        assert result.figures["copies_lost"] > 0
        assert result.figures["duplicated"] > 0


def test_jittered_delays_reorder_and_loss_and_duplication_happen_at_their_rates():
    queue = EventQueue()
    arrived: list[int] = []
    network = SimulatedNetwork(
        NetworkConditions(loss=0.1, min_delay_ms=1, max_delay_ms=50, duplication=0.05),
        random.Random(5),
        queue,
        lambda src, dst, message, gen: arrived.append(message),
    )
    for i in range(10_000):
        network.send("a", "b", i, 1)
        queue.run_until(queue.now_ms + 1)
    queue.run_until(queue.now_ms + 100)
    assert 400 < network.duplicated < 600
    assert 900 < network.copies_lost < 1200
    assert len(arrived) == 10_000 + network.duplicated - network.copies_lost
    assert arrived != sorted(arrived)  # reordered


def test_messages_do_not_cross_a_partition_even_if_it_began_while_they_were_in_flight():
    queue = EventQueue()
    arrived: list[str] = []
    network = SimulatedNetwork(
        NetworkConditions(min_delay_ms=10, max_delay_ms=10),
        random.Random(1),
        queue,
        lambda src, dst, message, gen: arrived.append(message),
    )
    network.send("a", "b", "in flight", 1)
    network.partition([["a"], ["b"]])
    network.send("a", "b", "sent across", 1)
    network.send("b", "c", "also across", 1)  # c is in no group: the rest, on its own
    queue.run_until(100)
    network.heal()
    network.send("a", "b", "after the heal", 1)
    queue.run_until(200)
    assert arrived == ["after the heal"]
    assert network.dropped_by_partition == 3


def test_events_due_at_the_same_time_run_in_the_order_they_were_scheduled():
    queue = EventQueue()
    order: list[str] = []
    queue.schedule(5.0, order.append, "second at 5")
    queue.schedule(1.0, order.append, "first")
    queue.schedule(5.0, order.append, "third at 5")
    queue.run_until(10.0)
    assert order == ["first", "second at 5", "third at 5"]
    assert queue.now_ms == 10.0
    with pytest.raises(ValueError):
        queue.schedule(9.0, order.append, "the past")


# --- failures say how to replay ------------------------------------------------------------------


def test_a_failing_scenario_names_its_seed_and_the_command_that_replays_it():
    with pytest.raises(SimulationFailure) as failure:
        run_scenario("propagation", 4242, nodes=10, max_rounds=0.1)
    message = str(failure.value)
    assert "seed=4242" in message
    command = message.split("replay with seed=4242: ", 1)[1].splitlines()[0]
    assert command.startswith("python -m ringkv.testing.simulator run propagation --seed 4242")
    # ... and that command does replay the failure.
    replayed = subprocess.run(
        [sys.executable, *command.split()[1:]], capture_output=True, text=True
    )
    assert replayed.returncode == 1
    assert "knew" in replayed.stderr and "seed=4242" in replayed.stderr


def test_an_assertion_about_a_simulation_is_reported_with_its_seed():
    with (
        pytest.raises(SimulationFailure, match=r"replay with seed=77: rerun me"),
        replay_on_failure(77, "rerun me"),
    ):
        assert 1 + 1 == 3, "arithmetic broke"


def test_suspicions_of_running_nodes_are_counted_as_false_ones():
    # No acceptable pause and phi 1 (a 10 % chance of a late heartbeat): a hair trigger that
    # fires on ordinary jitter, with every node running.
    twitchy = GossipSettings(acceptable_pause_ms=0.0, phi_threshold=1.0)
    sim = Simulation(10, 9, LOSSY, twitchy, record_suspicions=True)
    sim.run_for(30_000)
    suspicions = sim.suspicions()
    assert suspicions, sim.replay_hint()
    assert all(s.subject_was_running for s in suspicions)
    assert all(s.until_ms is None or s.since_ms < s.until_ms for s in suspicions)
    assert sim.nodes[sim.members[0]].membership.local.status is NodeStatus.NORMAL
