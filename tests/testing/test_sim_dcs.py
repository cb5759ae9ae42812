"""Datacenters in the simulator, as an engineer planning a three-datacenter cluster uses it: each
node sits in one datacenter and rack and every pair of nodes gets its delays; news and crashes
cross the WAN through the real gossip and phi modules within bounds, in every datacenter; a
datacenter cut off is seen and, after the heal, forgotten; the real ring puts each datacenter's
count of replicas in every preference list and keeps stand-ins at home; one seed replays one
history.

Seeded tests take their seeds from RINGKV_SIM_SEED when it is set, so a failure reported as
"replay with seed=N" reruns with `RINGKV_SIM_SEED=N pytest tests/testing/test_sim_dcs.py -k …`.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.cluster.phi import phi_of
from ringkv.cluster.ring import Ring
from ringkv.errors import ConfigError
from ringkv.testing.sim.datacenters import (
    join_movement,
    placement,
    push_pull_rounds,
    scenario_dc_crash,
    scenario_dc_partition,
    scenario_dc_quiet,
    scenario_dc_spread,
    sigmas_to_threshold,
    stand_ins,
)
from ringkv.testing.sim.events import EventQueue
from ringkv.testing.sim.network import NetworkConditions, SimulatedNetwork
from ringkv.testing.sim.topology import MAX_DATACENTERS, Topology, grid_locations
from ringkv.testing.simulator import Simulation, SimulationFailure, replay_on_failure

SMALL = dict(datacenters=3, nodes_per_dc=8)  # 24 nodes: a few tenths of a second a run


def seeds(*default: int) -> list[int]:
    """The seeds a test runs with: RINGKV_SIM_SEED if set (to replay one), else `default`."""
    chosen = os.environ.get("RINGKV_SIM_SEED")
    return [int(chosen)] if chosen else list(default)


def replay(seed: int, test: str):
    return replay_on_failure(
        seed, f"RINGKV_SIM_SEED={seed} pytest tests/testing/test_sim_dcs.py -k {test}"
    )


ranges = (
    st.tuples(st.floats(min_value=0.0, max_value=500.0), st.floats(min_value=0.0, max_value=500.0))
    .map(sorted)
    .map(tuple)
)


# --- the topology --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    datacenters=st.integers(1, 4),
    nodes_per_dc=st.integers(1, 6),
    racks=st.integers(1, 3),
    local=ranges,
    wan=ranges,
    dc1_dc2=st.none() | ranges,
)
def test_every_node_is_in_one_datacenter_and_every_pair_of_nodes_has_its_delays(
    datacenters, nodes_per_dc, racks, local, wan, dc1_dc2
):
    pair = {("dc2", "dc1"): dc1_dc2} if dc1_dc2 is not None and datacenters >= 2 else None
    t = Topology(grid_locations(datacenters, nodes_per_dc, racks), local, wan, pair)
    assert t.datacenters == tuple(f"dc{d}" for d in range(1, datacenters + 1))
    assert sorted(n for dc in t.datacenters for n in t.nodes_in(dc)) == sorted(t.nodes)
    assert t.nodes_in(*t.datacenters) == t.nodes
    assert len(t) == datacenters * nodes_per_dc
    for member in t.members():
        assert (member.dc, member.rack) == (t.dc_of(member.node_id), t.rack_of(member.node_id))
        assert member.rack in {f"r{k}" for k in range(1, racks + 1)}
    for a in t.nodes:
        for b in t.nodes:
            delay = t.delay_range_ms(a, b)
            assert delay == t.delay_range_ms(b, a)
            if t.same_dc(a, b):
                assert delay == local
            elif pair and {t.dc_of(a), t.dc_of(b)} == {"dc1", "dc2"}:
                assert delay == dc1_dc2
            else:
                assert delay == wan


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Topology({"a": "dc1/r1"}, local_ms=(2.0, 1.0)), "local_ms"),
        (lambda: Topology({"a": "dc1/r1"}, wan_ms=(-1.0, 5.0)), "wan_ms"),
        (lambda: Topology({"a": "dc1/r1"}, wan_ms=(1.0, math.nan)), "wan_ms"),
        (lambda: Topology({"a": "r1"}), "locations"),  # a rack without its datacenter
        (lambda: Topology({}), "locations"),
        (
            lambda: Topology({"a": "dc1/", "b": "dc2/"}, wan_ms_by_pair={("dc1", "dc9"): (1, 2)}),
            "wan_ms_by_pair",
        ),
        (
            lambda: Topology({"a": "dc1/", "b": "dc2/"}, wan_ms_by_pair={("dc1", "dc1"): (1, 2)}),
            "wan_ms_by_pair",
        ),
        (lambda: Topology({f"n{i}": f"dc{i}/" for i in range(MAX_DATACENTERS + 1)}), "locations"),
        (lambda: Topology.grid(3, 0), "nodes_per_dc"),
    ],
)
def test_a_topology_it_cannot_mean_is_refused_naming_the_field(build, field):
    with pytest.raises(ConfigError) as refused:
        build()
    assert refused.value.field == field


def test_messages_take_the_local_delay_within_a_datacenter_and_the_wan_delay_between_two():
    t = Topology(
        grid_locations(3, 2),
        local_ms=(0.5, 2.0),
        wan_ms=(30.0, 80.0),
        wan_ms_by_pair={("dc1", "dc3"): (100.0, 120.0)},
    )
    queue = EventQueue()
    sent_at: dict[int, float] = {}
    took: dict[tuple[str, str], list[float]] = {}
    network = SimulatedNetwork(
        NetworkConditions(topology=t),
        random.Random(3),
        queue,
        lambda src, dst, message, gen: took.setdefault((t.dc_of(src), t.dc_of(dst)), []).append(
            queue.now_ms - sent_at[message]
        ),
    )
    rng = random.Random(4)
    for i in range(3_000):
        sent_at[i] = queue.now_ms
        network.send(rng.choice(t.nodes), rng.choice(t.nodes), i, 1)
        queue.run_until(queue.now_ms + 1)
    queue.run_until(queue.now_ms + 200)
    assert sum(map(len, took.values())) == 3_000
    for (a, b), delays in took.items():
        lo, hi = (0.5, 2.0) if a == b else (100.0, 120.0) if {a, b} == {"dc1", "dc3"} else (30, 80)
        assert lo <= min(delays) and max(delays) <= hi, (a, b)
        assert max(delays) - min(delays) > (hi - lo) / 2, (a, b)  # jittered, not fixed


def test_one_datacenter_replays_the_history_of_the_same_plain_delays():
    # A topology draws its delays as the plain network does: with one datacenter it is the
    # same network, event for event, so no figure measured before topologies moved.
    t = Topology.grid(1, 12, local_ms=(1.0, 50.0))
    plain = Simulation(t.nodes, 5, NetworkConditions(loss=0.1, min_delay_ms=1, max_delay_ms=50))
    placed = Simulation(t.nodes, 5, NetworkConditions(loss=0.1, topology=t))
    for sim in (plain, placed):
        sim.run_for(10_000)
        sim.crash(t.nodes[4])
        sim.run_for(10_000)
    assert placed.trace_hash() == plain.trace_hash()


# --- gossip and failure detection across the WAN -------------------------------------------------


def test_the_same_seed_replays_the_same_history_across_datacenters_and_another_seed_another():
    first, again, other = (scenario_dc_crash(s, **SMALL) for s in (7, 7, 8))
    assert first.trace_hash == again.trace_hash
    assert first.figures == again.figures
    assert other.trace_hash != first.trace_hash


@pytest.mark.parametrize("seed", seeds(1, 2, 3))
def test_a_status_change_reaches_every_node_of_every_datacenter_within_4_log2_n_plus_4_rounds(
    seed,
):
    bound = 4 * math.log2(24) + 4
    f = scenario_dc_spread(seed, **SMALL, max_rounds=bound).figures
    with replay(seed, "status_change"):
        assert f["rounds"] == max(f["own_dc_rounds"], f["other_dcs_rounds"]) <= bound


@pytest.mark.parametrize("seed", seeds(1, 2))
def test_a_crash_is_detected_by_every_node_of_every_datacenter_within_20_s(seed):
    f = scenario_dc_crash(seed, **SMALL, max_detect_ms=20_000).figures
    with replay(seed, "crash_is_detected"):
        assert (f["own_observers"], f["other_observers"]) == (7, 16)
        for group in ("own", "other"):
            # Not before the acceptable pause plus a few intervals: nobody jumps to conclusions.
            assert 2_000 < f[f"{group}_detect_first_ms"] <= f[f"{group}_detect_all_ms"] <= 20_000


@pytest.mark.parametrize("seed", seeds(1))
def test_no_running_node_is_suspected_under_a_jittery_30_to_80_ms_wan(seed):
    f = scenario_dc_quiet(
        seed, **SMALL, run_ms=120_000, count_from_ms=30_000, max_false_suspicions=0
    ).figures
    assert f["own_dc_false"] == f["other_dc_false"] == 0


@pytest.mark.parametrize("seed", seeds(1))
def test_a_datacenter_cut_off_is_held_down_by_the_others_and_up_again_after_the_heal(seed):
    f = scenario_dc_partition(seed, **SMALL, max_detect_ms=40_000, max_heal_ms=10_000).figures
    with replay(seed, "cut_off"):
        assert f["cut_off"] == "dc3"
        assert f["all_up_after_heal_ms"] <= 10_000


def test_a_failing_datacenter_scenario_names_its_seed_and_the_command_that_replays_it():
    with pytest.raises(SimulationFailure) as failure:
        scenario_dc_spread(4242, datacenters=2, nodes_per_dc=4, max_rounds=0.1)
    message = str(failure.value)
    assert "in dc" in message  # says where the nodes that did not know are
    command = message.split("replay with seed=4242: ", 1)[1].splitlines()[0]
    assert command.startswith("python -m ringkv.testing.sim.datacenters run dc-spread --seed 4242")
    replayed = subprocess.run(
        [sys.executable, *command.split()[1:]], capture_output=True, text=True
    )
    assert replayed.returncode == 1
    assert "seed=4242" in replayed.stderr


def test_the_theory_the_report_compares_with():
    # phi reaches 8 some 5.2 standard deviations past mean + pause (cluster/phi's logistic).
    y = sigmas_to_threshold(8.0)
    assert 5.1 < y < 5.3
    assert phi_of(y, 0.0, 1.0) == pytest.approx(8.0, abs=1e-6)
    # Push-pull spread: the median node learns before the last, and larger clusters take longer.
    medians, lasts = zip(*(push_pull_rounds(n) for n in (10, 100, 1000)))
    assert all(m < last for m, last in zip(medians, lasts))
    assert list(lasts) == sorted(lasts)


# --- placement: the real ring, a count per datacenter --------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    datacenters=st.integers(1, 3),
    nodes_per_dc=st.integers(3, 6),
    racks=st.integers(1, 4),
    count=st.integers(1, 3),
)
def test_every_preference_list_holds_each_datacenters_count_on_distinct_racks(
    datacenters, nodes_per_dc, racks, count
):
    t = Topology.grid(datacenters, nodes_per_dc, racks)
    q = 128  # enough that every node owns partitions, so every node can be chosen
    ring = Ring(t.members(), q, {dc: count for dc in t.datacenters})
    for dc in placement(ring, t):
        assert dc.lists_with_count == q, dc
        assert dc.lists_rack_distinct == q, dc
        assert dc.load_mean == pytest.approx(count * q / nodes_per_dc)
    assert all(len(ring.preference_list(p)) == count * datacenters for p in range(q))


def test_a_stand_in_only_stands_in_for_a_replica_of_its_own_datacenter():
    t = Topology.grid(3, 8, racks_per_dc=3)
    ring = Ring(t.members(), 256, {"dc1": 3, "dc2": 3, "dc3": 3})
    one = stand_ins(ring, {t.nodes_in("dc2")[0]})
    assert one.partitions == 256
    assert one.stand_ins == len(ring.replica_partitions(t.nodes_in("dc2")[0])) > 0
    assert one.strays == 0
    # A whole datacenter down: nobody of the others stands in for it; its copies wait.
    whole = stand_ins(ring, set(t.nodes_in("dc3")))
    assert (whole.stand_ins, whole.strays, whole.holders) == (0, 0, 6 * 256)


def test_a_join_in_one_datacenter_takes_about_its_share_of_that_datacenters_replicas():
    t = Topology.grid(3, 8, racks_per_dc=3)
    moves = {x.dc: x for x in join_movement(t, 256, {"dc1": 3, "dc2": 3, "dc3": 3}, "dc1")}
    dc1 = moves["dc1"]
    assert dc1.ideal == pytest.approx(3 * 256 / 9)
    # At least the joiner's own share changes, and not the whole datacenter.
    assert dc1.ideal * 0.8 <= dc1.changed <= 256
    assert dc1.transfers >= dc1.changed
    assert moves["dc2"].ideal == moves["dc3"].ideal == 0.0


def test_the_simulators_command_runs_the_datacenter_scenarios_too():
    from ringkv.testing.sim.datacenters import scenario_dc_spread
    from ringkv.testing.simulator import run_scenario

    assert run_scenario("dc-spread", 3).figures == scenario_dc_spread(3).figures
