"""The consensus scenario (`consensus`): clients run INCRs, compare-and-sets, overwrites and
SERIAL reads on a few keys through per-key Paxos on a 5-node cluster while nodes crash and
restart and the network loses, delays, duplicates, reorders and partitions; every history
must be linearizable (docs/simulator.md, "The consensus scenario").

    python -m ringkv.testing.simulator run consensus --seed 7
    python -m ringkv.testing.simulator run consensus --seed 7 --bug forget-promises   # must fail

Keys: `counters` counter keys (INCR by 1, and SERIAL reads) and `registers` register keys
(SET IFEQ as a compare-and-set against the value the client last saw, SET NX when it saw
none; SET ... GET as an overwrite; SERIAL reads). Each of `clients` clients runs `ops`
operations one after the other, each on a random key, sent to a random node, 0-`think_ms`
apart, while a fault every 200-1000 ms (with `faults`) crashes a node (at most a minority
down at once), restarts one, splits the network in two or heals it.

Liveness phase: faults off (heal, no loss or duplication, every node restarted); once every
node holds every other up, a SERIAL read of every key from a random node must succeed.

The history: every operation with its invocation and completion (virtual ms, and a sequence
number that orders events at the same ms). What a client was told decides what the checker
may assume: done (the result is known), not applied ("nothing was applied": too few
acceptors answered, or contended, or the node was down: the operation is left out), or
unknown (the node crashed under it, or "may or may not have been applied": it may take
effect at any time after its invocation, or never). The checks:

1. the history of every key is linearizable (chaos/linearizability.check: CounterModel for
   the counters, RegisterModel with cas for the registers); a SERIAL read that finds
   siblings returns them all, which no register state equals (a linearizable register has
   one value);
2. for every counter: the INCRs acknowledged <= its final value <= the INCRs acknowledged
   plus those of unknown outcome (nothing is lost, nothing applied twice or from nowhere).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ringkv.chaos.linearizability import CounterModel, Operation, RegisterModel, check
from ringkv.cluster.paxos import Outcome
from ringkv.node.commands import IncrBy, Set
from ringkv.testing.sim.consensus import SERIAL, Bug, ConsensusSettings, ConsensusSimulation
from ringkv.testing.sim.kv import EPOCH_MS
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.simulator import ScenarioResult
from ringkv.versioning import record as rec

CLIENT_SLACK_MS = 30_000.0
MAX_LIN_STEPS = 1_000_000  # per key: a history of a few dozen operations takes a few hundred


@dataclass
class SerialOp:
    """One client operation, from invocation to completion, as the checker's models see it:
    `kind` incr, read, write or cas; `input` the delta, the value written, or (expected,
    new); `output` the new count, the value read, or whether the cas swapped."""

    index: int
    client: int
    key: bytes
    model: str  # "counter" or "register"
    kind: str
    input: Any
    contact: str
    invoked_ms: float
    invoked_seq: int
    final: bool = False
    completed_ms: float | None = None
    completed_seq: int | None = None
    status: str | None = None  # "ok", "failed" (not applied), "unknown"; None in flight
    output: Any = None
    error: str = ""

    def describe(self) -> str:
        arg = "" if self.input is None else f"({self.input!r})"
        done = "in flight" if self.completed_ms is None else f"completed {self.completed_ms:.1f} ms: {self.status}"
        out = f" -> {self.output!r}" if self.status == "ok" else ""
        return (f"#{self.index} {self.kind}{arg} of {self.key.decode('latin-1')}{out} by client {self.client} via "
                f"{self.contact}, invoked {self.invoked_ms:.1f} ms, {done}" + (f" ({self.error})" if self.error else ""))

    def operation(self) -> Operation | None:
        """The checker's view: None for an operation that had no effect (not applied) or a
        read that returned nothing."""
        if self.status == "failed" or (self.kind == "read" and self.status != "ok"):
            return None
        returned = self.completed_seq if self.status == "ok" else None
        output = self.output if self.status == "ok" else None
        return Operation(self.client, self.kind, self.input, output, self.invoked_seq, returned, self.key, self.index)


class SerialHistory:
    __slots__ = ("_seq", "ops")

    def __init__(self) -> None:
        self.ops: list[SerialOp] = []
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def invoke(self, client: int, key: bytes, model: str, kind: str, input: Any, contact: str, now_ms: float,
               *, final: bool = False) -> SerialOp:
        op = SerialOp(len(self.ops), client, key, model, kind, input, contact, now_ms, self._next(), final=final)
        self.ops.append(op)
        return op

    def complete(self, op: SerialOp, status: str, output: Any, now_ms: float, error: str = "") -> None:
        if op.completed_ms is not None:
            raise AssertionError(f"completed twice: {op.describe()}")
        op.completed_ms = now_ms
        op.completed_seq = self._next()
        op.status = status
        op.output = output
        op.error = error

    def in_flight(self) -> list[SerialOp]:
        return [op for op in self.ops if op.completed_ms is None]

    def count(self, status: str, kind: str | None = None) -> int:
        return sum(1 for op in self.ops if op.status == status and (kind is None or op.kind == kind))


def read_output(model: str, encoded: bytes | None, now_ms: int) -> Any:
    """What a SERIAL read returns to its client: the value (an int for a counter), None when
    the key has none; all of them, sorted in a tuple, when the record holds siblings."""
    if encoded is None:
        return None
    record = rec.decode_record(encoded)
    values = [s.value for s in record.siblings if s.is_live(now_ms)]
    if model == "counter":
        values = [int(v) for v in values]
    if len(record.siblings) > 1:
        return tuple(sorted(values, key=repr))
    return values[0] if values else None


def linearizability_failures(history: SerialHistory) -> list[str]:
    """One paragraph per key whose history is not linearizable (or too hard to decide)."""
    out = []
    for model_name, model in (("counter", CounterModel()), ("register", RegisterModel())):
        ops = [o for o in (op.operation() for op in history.ops if op.model == model_name) if o is not None]
        if not ops:
            continue
        result = check(ops, model, max_steps=MAX_LIN_STEPS)
        if result.ok is not True:
            out.append(result.describe())
    return out


def counter_failures(history: SerialHistory, finals: dict[bytes, int]) -> list[str]:
    """Counters whose final value is not between the INCRs acknowledged and those plus the
    INCRs of unknown outcome."""
    out = []
    for key, final in finals.items():
        incrs = [op for op in history.ops if op.key == key and op.kind == "incr"]
        acked = sum(op.input for op in incrs if op.status == "ok")
        unknown = sum(op.input for op in incrs if op.status == "unknown")
        if not acked <= final <= acked + unknown:
            out.append(f"counter {key.decode()}: final value {final}, but {acked} acknowledged and {unknown} of "
                       f"unknown outcome (not applied: {sum(op.input for op in incrs if op.status == 'failed')})")
    return out


def scenario_consensus(
    seed: int,
    nodes: int = 5,
    clients: int = 3,
    ops: int = 10,
    counters: int = 1,
    registers: int = 1,
    loss: float = 0.05,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 30.0,
    duplication: float = 0.02,
    think_ms: float = 100.0,
    faults: int = 1,
    min_fault_gap_ms: float = 200.0,
    max_fault_gap_ms: float = 1000.0,
    bug: str = "none",
    max_settle_ms: float = 60_000.0,
) -> ScenarioResult:
    """Consensus commands and SERIAL reads under faults, every history checked for
    linearizability; see the module docstring."""
    params = dict(nodes=nodes, clients=clients, ops=ops, counters=counters, registers=registers, loss=loss,
                  min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms, duplication=duplication,
                  think_ms=think_ms, faults=faults, min_fault_gap_ms=min_fault_gap_ms,
                  max_fault_gap_ms=max_fault_gap_ms, bug=bug, max_settle_ms=max_settle_ms)
    network = NetworkConditions(loss=loss, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms,
                                duplication=duplication)
    settings = ConsensusSettings(bug=Bug(bug))
    sim = ConsensusSimulation(nodes, seed, network, consensus=settings, keep_trace=40)
    history = SerialHistory()
    keys = [(f"c{i}".encode(), "counter") for i in range(counters)]
    keys += [(f"r{i}".encode(), "register") for i in range(registers)]
    if not keys:
        raise ValueError("need at least one counter or register key")
    # The clients' choices come from their own stream, so that a fault does not change what
    # the clients do (sim.rng drives the faults).
    client_rng = random.Random(sim.rng.getrandbits(64))
    members = sim.members
    left = [ops] * clients
    last_seen: dict[tuple[int, bytes], Any] = {}  # what each client last saw of each register
    partitions = 0
    faults_on = bool(faults)

    def fail(message: str) -> None:
        sim.fail(message, "consensus", **params)

    def submit(client: int, key: bytes, model: str, kind: str, input: Any, contact: str, *, final: bool = False):
        if kind == "incr":
            command = IncrBy(input)
        elif kind == "write":
            command = Set(input, return_old=True)
        elif kind == "cas":
            expected, new = input
            command = Set(new, condition="nx") if expected is None else Set(new, condition="ifeq", match=expected)
        else:
            command = SERIAL
        op = history.invoke(client, key, model, kind, input, contact, sim.now_ms, final=final)
        sim.client_submit(contact, key, command, lambda outcome: finished(op, outcome))
        return op

    def next_op(client: int) -> None:
        if left[client] == 0:
            return
        left[client] -= 1
        key, model = client_rng.choice(keys)
        contact = client_rng.choice(members)
        x = client_rng.random()
        if model == "counter":
            kind, input = ("incr", 1) if x < 0.7 else ("read", None)
        elif x < 0.4:
            kind, input = "cas", (last_seen.get((client, key)), f"c{client}-{ops - left[client]}".encode())
        elif x < 0.65:
            kind, input = "write", f"c{client}-{ops - left[client]}".encode()
        else:
            kind, input = "read", None
        submit(client, key, model, kind, input, contact)

    def finished(op: SerialOp, outcome: Outcome | str | None) -> None:
        now = sim.now_ms
        if outcome is None:
            history.complete(op, "unknown", None, now, f"{op.contact} crashed")
        elif isinstance(outcome, str):
            history.complete(op, "failed", None, now, outcome)
        elif outcome.kind == "done":
            result = outcome.result
            if op.kind == "read":
                output = read_output(op.model, result, EPOCH_MS + int(now))
            elif op.kind == "cas":
                output = bool(result[0])
            else:
                output = None if op.kind == "write" else result
            history.complete(op, "ok", output, now)
            if op.model == "register":
                seen = {"read": output, "write": op.input}.get(op.kind)
                if op.kind == "cas":
                    seen = op.input[1] if output else result[1]
                if not isinstance(seen, tuple):
                    last_seen[(op.client, op.key)] = seen
        elif outcome.kind == "unknown":
            history.complete(op, "unknown", None, now, outcome.detail or f"may or may not, ballot {outcome.ballot}")
        else:  # unavailable, contended: nothing was applied
            history.complete(op, "failed", None, now, f"{outcome.kind}: {outcome.detail}")
        if op.client >= 0:
            sim.queue.schedule(now + client_rng.uniform(0.0, think_ms), next_op, op.client)

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
        sim.queue.schedule(sim.now_ms + sim.rng.uniform(min_fault_gap_ms, max_fault_gap_ms), fault)

    for client in range(clients):
        sim.queue.schedule(client_rng.uniform(0.0, think_ms), next_op, client)
    if faults:
        sim.queue.schedule(sim.rng.uniform(min_fault_gap_ms, max_fault_gap_ms), fault)

    # -- safety phase: faults on, until every client has run its operations
    budget_ms = ops * clients * (settings.longest_command_ms() + think_ms) + CLIENT_SLACK_MS
    if not sim.run_until(lambda: not any(left) and not history.in_flight(), timeout_ms=budget_ms):
        stuck = "\n  ".join(op.describe() for op in history.in_flight())
        fail(f"clients still waiting after {budget_ms:g} ms:\n  {stuck}")
    safety_ms = sim.now_ms
    crashes = sim.crashes

    # -- liveness phase: faults off; a SERIAL read of every key succeeds
    faults_on = False
    sim.heal()
    sim.network.conditions = NetworkConditions(min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms)
    for node in members:
        if not sim.nodes[node].running:
            sim.restart(node)
    if not sim.run_until(lambda: sim.nobody_suspected() and sim.idle(), timeout_ms=max_settle_ms):
        fail(f"{max_settle_ms:g} ms after the faults stopped, nodes still suspected each other "
             f"(nobody suspected: {sim.nobody_suspected()}, idle: {sim.idle()})")
    final = [submit(-1, key, model, "read", None, sim.rng.choice(members), final=True) for key, model in keys]
    if not sim.run_until(lambda: not history.in_flight(), timeout_ms=max_settle_ms):
        fail("the SERIAL reads of the liveness phase did not finish")
    failed = [op for op in final if op.status != "ok"]
    if failed:
        fail("a SERIAL read failed with every node up and no faults:\n  " + "\n  ".join(op.describe() for op in failed))

    problems = linearizability_failures(history)
    finals = {op.key: op.output or 0 for op in final if op.model == "counter" and not isinstance(op.output, tuple)}
    problems += counter_failures(history, finals)
    if problems:
        fail("\n".join(problems))
    stats = sim.stats()
    return ScenarioResult(
        "consensus",
        seed,
        sim.trace_hash(),
        {
            "ops_ok": history.count("ok") - len(final),
            "ops_not_applied": history.count("failed"),
            "ops_unknown": history.count("unknown"),
            "incrs_ok": history.count("ok", "incr"),
            "cas_swapped": sum(1 for op in history.ops if op.kind == "cas" and op.status == "ok" and op.output),
            "crashes": crashes,
            "partitions": partitions,
            "chosen": stats.chosen,
            "leased": stats.leased,
            "stale_leases": stats.stale_leases,
            "leased_completed_later": stats.leased_completed_later,
            "retries": stats.retries,
            "timeouts": stats.timeouts,
            "connections_lost": stats.connections_lost,
            "queued": stats.queued,
            "safety_ms": safety_ms,
        },
        sim.now_ms,
        sim.queue.processed,
    )
