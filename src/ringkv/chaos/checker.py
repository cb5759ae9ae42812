"""What must hold in a chaos run's history and in the state read after healing. Pure: takes
the operations and the final state, returns anomalies; docs/reliability.md explains each.

    lost-write        register: an acknowledged write is neither in the final read (at ALL)
                      nor an ancestor of a value that is. A write's descendants are the writes
                      sent with a context whose read saw it (and theirs, and so on): a value
                      may only disappear by being replaced by a write that saw it.
    lost-element      set: an acknowledged element is missing from the union of the final
                      read's siblings (concurrent adds must survive as siblings).
    phantom           a value or element read (during the run or at the end) that no
                      operation ever tried to write.
    read-your-writes  a process on a STRICT QUORUM connection (R + W > N, no stand-ins) read a
                      key after its own acknowledged write to it completed, and saw neither
                      that write nor a descendant (register), or not the element (set).
    divergence        after healing and repair, the replicas of a key hold different versions.
    final-read        the final read at ALL failed after healing (a liveness failure).
    counter           the final value is not what the acknowledged INCRs allow: with no
                      faults, exactly the acknowledged count (plus at most the unknown ones);
                      under faults, within [acknowledged, acknowledged + unknown]. Below the
                      range is the documented read-modify-write caveat (two serializers at once
                      keep siblings, docs/cluster.md) when the run shows its traces: siblings,
                      or two acknowledged INCRs that answered the same value; the anomaly then
                      says so in `known`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ringkv.chaos.history import OK, UNKNOWN, Op
from ringkv.chaos.workloads import set_elements

RMW_CAVEAT = "docs/cluster.md 'Read-modify-write commands': two serializers at once"


@dataclasses.dataclass
class Anomaly:
    kind: str
    key: str
    detail: str
    ops: list[int] = dataclasses.field(default_factory=list)
    known: str | None = None  # a documented limitation this matches, if any

    def describe(self) -> str:
        ops = f" (ops {', '.join(map(str, self.ops[:10]))}{' ...' if len(self.ops) > 10 else ''})" if self.ops else ""
        known = f" [known: {self.known}]" if self.known else ""
        return f"{self.kind} {self.key}: {self.detail}{ops}{known}"


@dataclasses.dataclass
class FinalRead:
    """The state of one key read at ALL after healing: the siblings' values, or the error."""

    values: list[str] | None
    error: str | None = None


def _by_key(ops: Iterable[Op], workload: str) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.workload == workload:
            out[op.key].append(op)
    return out


def descendants(writes: Sequence[Op]) -> dict[str, set[str]]:
    """For each register value, every value written (whatever the outcome) by a chain of
    writes each of which saw the previous one."""
    children: dict[str, set[str]] = defaultdict(set)
    for w in writes:
        for seen in w.observed or ():
            children[seen].add(w.value)
    closure: dict[str, set[str]] = {}

    def walk(v: str) -> set[str]:
        if v in closure:
            return closure[v]
        out: set[str] = set()
        stack = list(children.get(v, ()))
        while stack:
            c = stack.pop()
            if c in out:
                continue
            out.add(c)
            stack.extend(children.get(c, ()))
        closure[v] = out
        return out

    for w in writes:
        walk(w.value)
    return closure


def check_registers(ops: Sequence[Op], final: Mapping[str, FinalRead],
                    read_your_writes: bool = True) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, kops in sorted(_by_key(ops, "register").items()):
        writes = [o for o in kops if o.f == "write"]
        written = {w.value for w in writes}
        desc = descendants(writes)
        reads = [o for o in kops if o.f == "read" and o.outcome == OK]
        # Phantoms: anything read that was never written.
        for r in reads:
            ghosts = [v for v in r.result if v not in written]
            if ghosts:
                anomalies.append(Anomaly("phantom", key, f"read {ghosts} never written", [r.index]))
        fr = final.get(key)
        if fr is None or fr.values is None:
            continue  # reported by check_final_reads
        present = set(fr.values)
        ghosts = sorted(present - written)
        if ghosts:
            anomalies.append(Anomaly("phantom", key, f"final read has {ghosts}, never written"))
        for w in writes:
            if w.outcome != OK:
                continue
            if w.value not in present and not (desc.get(w.value, set()) & present):
                anomalies.append(Anomaly(
                    "lost-write", key,
                    f"acknowledged write {w.value!r} (done at {w.complete_s:.3f}s) is neither in "
                    f"the final read {sorted(present)} nor replaced by a write that saw it",
                    [w.index]))
        if read_your_writes:
            anomalies.extend(_ryw_registers(key, kops, desc))
    return anomalies


def _ryw_registers(key: str, kops: Sequence[Op], desc: Mapping[str, set[str]]) -> list[Anomaly]:
    out = []
    by_process: dict[int, list[Op]] = defaultdict(list)
    for o in kops:
        if o.strict:
            by_process[o.process].append(o)
    for pops in by_process.values():
        last_ok: Op | None = None
        for o in sorted(pops, key=lambda o: o.invoke_s):
            if o.f == "read" and o.outcome == OK and last_ok is not None \
                    and o.invoke_s > last_ok.complete_s:
                accepted = {last_ok.value} | desc.get(last_ok.value, set())
                if not accepted & set(o.result):
                    out.append(Anomaly(
                        "read-your-writes", key,
                        f"process {o.process} wrote {last_ok.value!r} (ok at "
                        f"{last_ok.complete_s:.3f}s), then read {o.result} at {o.invoke_s:.3f}s",
                        [last_ok.index, o.index]))
            if o.f == "write" and o.outcome == OK:
                last_ok = o
    return out


def check_sets(ops: Sequence[Op], final: Mapping[str, FinalRead],
               read_your_writes: bool = True) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, kops in sorted(_by_key(ops, "set").items()):
        adds = [o for o in kops if o.f == "add"]
        attempted = {a.value for a in adds}
        for r in kops:
            if r.f == "read" and r.outcome == OK:
                ghosts = sorted(set_elements(r.result) - attempted)
                if ghosts:
                    anomalies.append(Anomaly("phantom", key, f"read elements {ghosts} never added",
                                             [r.index]))
        if read_your_writes:
            anomalies.extend(_ryw_sets(key, kops))
        fr = final.get(key)
        if fr is None or fr.values is None:
            continue
        present = set_elements(fr.values)
        ghosts = sorted(present - attempted)
        if ghosts:
            anomalies.append(Anomaly("phantom", key, f"final read has elements {ghosts}, never added"))
        lost = [a for a in adds if a.outcome == OK and a.value not in present]
        if lost:
            anomalies.append(Anomaly(
                "lost-element", key,
                f"{len(lost)} acknowledged elements missing from the final read: "
                f"{[a.value for a in lost][:20]}", [a.index for a in lost]))
    return anomalies


def _ryw_sets(key: str, kops: Sequence[Op]) -> list[Anomaly]:
    out = []
    by_process: dict[int, list[Op]] = defaultdict(list)
    for o in kops:
        if o.strict:
            by_process[o.process].append(o)
    for pops in by_process.values():
        acked: list[Op] = []
        for o in sorted(pops, key=lambda o: o.invoke_s):
            if o.f == "read" and o.outcome == OK and acked:
                seen = set_elements(o.result)
                missing = [a for a in acked if a.complete_s < o.invoke_s and a.value not in seen]
                if missing:
                    out.append(Anomaly(
                        "read-your-writes", key,
                        f"process {o.process} read at {o.invoke_s:.3f}s without its acknowledged "
                        f"elements {[a.value for a in missing]}",
                        [*(a.index for a in missing), o.index]))
            if o.f == "add" and o.outcome == OK:
                acked.append(o)
    return out


def counter_bounds(ops: Sequence[Op]) -> dict[str, dict[str, Any]]:
    """Per counter key: acknowledged and unknown INCRs, and the acknowledged results."""
    out: dict[str, dict[str, Any]] = {}
    for key, kops in sorted(_by_key(ops, "counter").items()):
        incrs = [o for o in kops if o.f == "incr"]
        out[key] = {
            "ok": sum(o.outcome == OK for o in incrs),
            "unknown": sum(o.outcome == UNKNOWN for o in incrs),
            "failed": sum(o.outcome not in (OK, UNKNOWN) for o in incrs),
            "results": [o.result for o in incrs if o.outcome == OK],
            "ok_ops": [o.index for o in incrs if o.outcome == OK],
        }
    return out


def check_counters(ops: Sequence[Op], final: Mapping[str, FinalRead], faults: bool) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, b in counter_bounds(ops).items():
        fr = final.get(key)
        if fr is None or fr.values is None:
            continue
        values = [int(v) for v in fr.values]
        duplicates = len(b["results"]) - len(set(b["results"]))
        lo, hi = b["ok"], b["ok"] + b["unknown"]
        if not values:
            if lo > 0:
                anomalies.append(Anomaly("counter", key, f"missing at the end, {lo} INCRs acknowledged"))
            continue
        value = max(values)
        traces = []
        if len(values) > 1:
            traces.append(f"siblings {values}")
        if duplicates:
            traces.append(f"{duplicates} acknowledged INCRs answered a value another one did")
        if not faults and (len(values) > 1 or duplicates):
            anomalies.append(Anomaly("counter", key, "with no faults: " + "; ".join(traces)))
        if value > hi:
            anomalies.append(Anomaly(
                "counter", key, f"final {value} above acknowledged {lo} + unknown {b['unknown']}: "
                "an increment applied twice or invented"))
        elif value < lo:
            anomalies.append(Anomaly(
                "counter", key,
                f"final {value} below the {lo} acknowledged INCRs ({lo - value} lost)"
                + (f"; {'; '.join(traces)}" if traces else ""),
                known=RMW_CAVEAT if faults and traces else None))
    return anomalies


def check_final_reads(final: Mapping[str, FinalRead]) -> list[Anomaly]:
    return [Anomaly("final-read", key, f"read at ALL failed after healing: {fr.error}")
            for key, fr in sorted(final.items()) if fr.values is None]


def check_convergence(replicas: Mapping[str, Mapping[str, Any]]) -> list[Anomaly]:
    """`replicas`: key -> {node: what that node's own copy holds (any comparable form)}."""
    out = []
    for key, copies in sorted(replicas.items()):
        distinct = {repr(v) for v in copies.values()}
        if len(distinct) > 1:
            out.append(Anomaly("divergence", key, f"replicas differ after repair: {dict(copies)}"))
    return out


def check(ops: Sequence[Op], final: Mapping[str, FinalRead],
          replicas: Mapping[str, Mapping[str, Any]], faults: bool,
          read_your_writes: bool = True) -> list[Anomaly]:
    """Every check over one run. `faults`: whether any fault was injected; `read_your_writes`:
    whether the clients' levels promise it (R + W > N: not at ONE)."""
    return [
        *check_final_reads(final),
        *check_convergence(replicas),
        *check_registers(ops, final, read_your_writes),
        *check_sets(ops, final, read_your_writes),
        *check_counters(ops, final, faults),
    ]
