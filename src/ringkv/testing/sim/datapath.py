"""The data-path scenario (`kv`): clients read and write a few keys through a 5-node cluster
while nodes crash and restart and the network loses, delays, duplicates, reorders and
partitions; then, faults off, the cluster must deliver every hint and converge. One seed
gives one history (docs/simulator.md, "The data-path scenario").

    python -m ringkv.testing.simulator run kv --seed 7
    python -m ringkv.testing.simulator run kv --seed 7 --bug ack-early    # must fail

Safety phase: `clients` clients each run `ops` operations one after the other (a write or a
QUORUM read of one of `keys` keys, 50/50, sent to a node picked at random; a think time of
0-`think_ms` between them), while a fault every 200-1000 ms (with `faults`) crashes a node
(at most a minority down at once), restarts one, splits the network in two or heals it.

Liveness phase: faults off (heal, no loss or duplication, every node restarted). Within
`max_settle_ms` every node must hold every other up and every hint must be delivered. Then:
1. hinted handoff alone converged the replicas of every key, but keys whose write a crash
   cut short (its coordinator died before every replica answered: the node keeps hints only
   then, so those are lost with it; anti-entropy, not simulated, is what heals them);
2. a read of every key at ALL succeeds, and after its read repair every replica of every key
   holds the same record;
3. over the whole history, no acknowledged write is lost (sim/history.lost_writes); the ALL
   reads must also see the writes acknowledged through stand-ins.

Parameters that break things on purpose, for the tests that prove the checks can fail:
`bug` (sim/kv.Bug: "ack-early", "drop-writes", "hint-race", "digest-echo") and `promise_sloppy=1` (hold
writes acknowledged through stand-ins to every later QUORUM read, which Dynamo's sloppy
quorum does not promise).
"""

from __future__ import annotations

import random

from ringkv.cluster.quorum import ConsistencyLevel
from ringkv.testing.sim.history import History, Op, describe_divergence, divergent, lost_writes
from ringkv.testing.sim.kv import Bug, KvSettings, KvSimulation, ReadResult, WriteResult
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.simulator import ScenarioResult

FAULT_EVERY_MS = (200.0, 1000.0)  # uniform gap between two faults
# An operation ends within a forward timeout (3 replica timeouts) or a write's replica and
# stand-in timeouts; clients that have not finished long after that are stuck: a bug.
CLIENT_SLACK_MS = 30_000.0


def scenario_kv(
    seed: int,
    nodes: int = 5,
    clients: int = 3,
    ops: int = 10,
    keys: int = 3,
    loss: float = 0.05,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 30.0,
    duplication: float = 0.02,
    think_ms: float = 100.0,
    faults: int = 1,
    sloppy: int = 1,
    bug: str = "none",
    promise_sloppy: int = 0,
    max_settle_ms: float = 60_000.0,
    dcs: int = 0,
    digests: int = 1,
) -> ScenarioResult:
    """Reads and writes under faults, then convergence; see the module docstring."""
    params = dict(nodes=nodes, clients=clients, ops=ops, keys=keys, loss=loss,
                  min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms, duplication=duplication,
                  think_ms=think_ms, faults=faults, sloppy=sloppy, bug=bug,
                  promise_sloppy=promise_sloppy, max_settle_ms=max_settle_ms, dcs=dcs, digests=digests)
    network = NetworkConditions(loss=loss, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms,
                                duplication=duplication)
    sim = KvSimulation(nodes, seed, network, kv=KvSettings(sloppy=bool(sloppy), bug=Bug(bug), dcs=dcs,
                                                         read_digests=bool(digests)),
                       keep_trace=40)
    # With datacenters: writes at EACH_QUORUM, reads at LOCAL_QUORUM (R + W > each one's N).
    read_level = ConsistencyLevel.LOCAL_QUORUM if dcs else ConsistencyLevel.QUORUM
    history = History()
    key_names = [f"k{i}".encode() for i in range(keys)]
    # The clients' choices come from their own stream, so that adding a fault does not change
    # what the clients do (sim.rng drives the faults).
    client_rng = random.Random(sim.rng.getrandbits(64))
    members = sim.members
    left = [ops] * clients
    partitions = 0
    faults_on = bool(faults)

    def fail(message: str) -> None:
        sim.fail(message, "kv", **params)

    def next_op(client: int) -> None:
        if left[client] == 0:
            return
        left[client] -= 1
        key = client_rng.choice(key_names)
        contact = client_rng.choice(members)
        if client_rng.random() < 0.5:
            value = f"c{client}-{ops - left[client]}".encode()
            op = history.invoke(client, "write", key, contact, sim.now_ms, value=value)
            sim.client_write(contact, key, value, lambda result: finished(op, result))
        else:
            op = history.invoke(client, "read", key, contact, sim.now_ms)
            sim.client_read(contact, key, read_level, lambda result: finished(op, result))

    def finished(op: Op, result: WriteResult | ReadResult) -> None:
        history.complete(op, result, sim.now_ms)
        if op.client >= 0:
            sim.queue.schedule(sim.now_ms + client_rng.uniform(0.0, think_ms), next_op, op.client)

    def fault() -> None:
        nonlocal partitions
        if not faults_on:
            return
        running = sim.running()
        down = [n for n in members if n not in running]
        x = sim.rng.random()
        if down and x < 0.35:
            sim.restart(sim.rng.choice(down))
        elif x < 0.6 and len(down) < (len(members) - 1) // 2:
            sim.crash(sim.rng.choice(running))
        elif sim.network.partitioned and x < 0.85:
            sim.heal()
        elif not sim.network.partitioned and x < 0.85:
            shuffled = list(members)
            sim.rng.shuffle(shuffled)
            cut = sim.rng.randint(1, len(shuffled) - 1)
            sim.partition(sorted(shuffled[:cut]), sorted(shuffled[cut:]))
            partitions += 1
        sim.queue.schedule(sim.now_ms + sim.rng.uniform(*FAULT_EVERY_MS), fault)

    for client in range(clients):
        sim.queue.schedule(client_rng.uniform(0.0, think_ms), next_op, client)
    if faults:
        sim.queue.schedule(sim.rng.uniform(*FAULT_EVERY_MS), fault)

    # -- safety phase: faults on, until every client has run its operations
    budget_ms = ops * (3 * sim.kv.replica_timeout_ms * sim.kv.forward_timeouts + think_ms) + CLIENT_SLACK_MS
    if not sim.run_until(lambda: not any(left) and not history.in_flight(), timeout_ms=budget_ms):
        stuck = "\n  ".join(op.describe() for op in history.in_flight())
        fail(f"clients still waiting after {budget_ms:g} ms:\n  {stuck}")
    safety_ms = sim.now_ms
    crashes = sim.crashes

    # -- liveness phase: faults off; every hint delivered, every replica converged
    faults_on = False
    sim.heal()
    sim.network.conditions = NetworkConditions(min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms)
    for node in members:
        if not sim.nodes[node].running:
            sim.restart(node)

    def settled() -> bool:
        return sim.hints_pending() == 0 and sim.idle() and sim.nobody_suspected()

    if not sim.run_until(settled, timeout_ms=max_settle_ms):
        fail(f"{max_settle_ms:g} ms after the faults stopped, {sim.hints_pending()} hints were "
             f"still pending (nobody suspected: {sim.nobody_suspected()}, idle: {sim.idle()})")
    settle_ms = sim.now_ms - safety_ms
    written = sorted({op.key for op in history.ops if op.kind == "write"})
    stuck = divergent(sim, [k for k in written if k not in sim.excused])
    if stuck:
        detail = "\n  ".join(describe_divergence(k, held) for k, held in stuck.items())
        fail(f"hinted handoff did not converge the replicas of {len(stuck)} keys:\n  {detail}")
    excused_divergent = len(divergent(sim, written))

    final = []
    for key in written:
        contact = sim.rng.choice(members)
        op = history.invoke(-1, "read", key, contact, sim.now_ms, level="all", final=True)
        final.append(op)
        sim.client_read(contact, key, ConsistencyLevel.ALL, lambda result, op=op: finished(op, result))
    if not sim.run_until(lambda: not history.in_flight() and sim.idle(), timeout_ms=max_settle_ms):
        fail("the reads at ALL of the liveness phase did not finish")
    failed = [op for op in final if op.status != "ok"]
    if failed:
        fail("a read at ALL failed with every node up and no faults:\n  "
             + "\n  ".join(op.describe() for op in failed))
    apart = divergent(sim, written)
    if apart:
        detail = "\n  ".join(describe_divergence(k, held) for k, held in apart.items())
        fail(f"after a read at ALL and its read repair, replicas still differ:\n  {detail}")

    lost = lost_writes(history, sloppy_promised=bool(promise_sloppy))
    if lost:
        fail("\n".join(lost))
    stats = sim.stats()
    return ScenarioResult(
        "kv",
        seed,
        sim.trace_hash(),
        {
            "writes_acked": sum(1 for op in history.ops if op.kind == "write" and op.status == "ok"),
            "writes_acked_through_stand_ins": sum(1 for op in history.ops if op.sloppy and op.status == "ok"),
            "writes_failed": history.count("write", "failed"),
            "writes_unknown": history.count("write", "unknown"),
            "reads_ok": history.count("read", "ok") - len(final),
            "reads_failed": history.count("read", "failed") + history.count("read", "unknown"),
            "crashes": crashes,
            "partitions": partitions,
            "stand_ins": stats.stand_ins,
            "hints_delivered": stats.hints_delivered,
            "read_repairs": stats.read_repairs,
            "digest_mismatches": stats.digest_mismatches,
            "keys_cut_short_by_crashes": len(sim.excused),
            "keys_healed_only_by_read_repair": excused_divergent,
            "safety_ms": safety_ms,
            "settle_ms": settle_ms,
        },
        sim.now_ms,
        sim.queue.processed,
    )
