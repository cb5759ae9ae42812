"""What must hold in a chaos run's history and in the state read after healing. Pure: takes
the operations and the final state, returns anomalies; docs/reliability.md explains each.

    lost-write        register: an acknowledged write is neither in the final read (at ALL)
                      nor an ancestor of a value that is. A write's descendants are the writes
                      and deletes sent with a context whose read saw it (and theirs, and so
                      on): a value may only disappear by being replaced by a write or a delete
                      that saw it.
    lost-element      set: an acknowledged element is missing from the union of the final
                      read's siblings (concurrent adds must survive as siblings), and no
                      delete of the set saw it.
    resurrected       register, set: a value an acknowledged delete replaced (one of the
                      siblings its read saw) is in the final read or in a replica's copy
                      after healing, repair, hinted handoff and anti-entropy.
    phantom           a value or element read (during the run or at the end) that no
                      operation ever tried to write.
    read-your-writes  a process on a STRICT QUORUM connection (R + W > N, no stand-ins) read a
                      key after its own acknowledged write to it completed, and saw neither
                      that write nor a descendant (register), or not the element (set), unless
                      a delete that saw it came in between; or, after its own acknowledged
                      delete, still saw a value that delete replaced. In a session (a run at
                      `session`), the same per session rather than per strict process.
    session-read-your-writes
                      in a session, a read answered a version whose clock does not descend the
                      clock an earlier acknowledged write of the session answered for the key
                      (RINGKV.PUTV and DELV answer the clock they left).
    session-monotonic-reads
                      in a session, a read answered a version whose clock does not descend
                      that of an earlier read of the session of the key: it went back.
    divergence        after healing and repair, the replicas of a key hold different versions.
    final-read        the final read at ALL failed after healing (a liveness failure).
    counter           the final value is outside [acknowledged, acknowledged + unknown] (the
                      sums of the increments), or siblings remain, or two acknowledged
                      increments answered the same value. Counters run on the consensus path
                      (docs/consistency.md): no exemption.
    linearizability   the cas-register or counter history (its SERIAL reads, CAS, CAD, INCR
                      and INCRBY, and the SERIAL read after healing) has no linearization
                      (chaos/linearizability.py; the detail is its explanation).
    linearizability-undecided
                      the search ran out of budget on a key: neither verdict. Reported, so that
                      a check that did not finish never passes for one that did.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ringkv.chaos import linearizability as lin
from ringkv.chaos.history import FAIL, OK, UNKNOWN, Op
from ringkv.chaos.workloads import SESSION_ERROR, set_elements
from ringkv.versioning import dvv

LINEARIZABLE_WORKLOADS = ("cas-register", "counter")


@dataclasses.dataclass
class Anomaly:
    kind: str
    key: str
    detail: str
    ops: list[int] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        ops = f" (ops {', '.join(map(str, self.ops[:10]))}{' ...' if len(self.ops) > 10 else ''})" if self.ops else ""
        return f"{self.kind} {self.key}: {self.detail}{ops}"


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


def _copy_values(replicas: Mapping[str, Mapping[str, Any]] | None, key: str) -> dict[str, set[str]]:
    """Each node's copy of `key` as its set of sibling values (runner._local_copies' form)."""
    out = {}
    for node, copy in ((replicas or {}).get(key) or {}).items():
        if isinstance(copy, Mapping):
            out[node] = {s[0] for s in copy.get("siblings", ())}
    return out


def descendants(writes: Sequence[Op]) -> dict[str, set[str]]:
    """For each register value, every value (or delete token) written by a chain of writes
    each of which saw the previous one."""
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


def _resurrected(key: str, deletes: Sequence[Op], final: FinalRead | None,
                 copies: Mapping[str, set[str]], as_text=lambda v: v) -> list[Anomaly]:
    """Values an acknowledged delete replaced that are back after healing."""
    out = []
    present = set(final.values) if final is not None and final.values is not None else set()
    for d in deletes:
        if d.outcome != OK:
            continue
        gone = set(d.observed or ())
        back = sorted(gone & present)
        where = {n: sorted(gone & values) for n, values in sorted(copies.items()) if gone & values}
        if back or where:
            places = ([f"the final read ({[as_text(v) for v in back]})"] if back else []) + \
                     [f"{n}'s copy" for n in where]
            out.append(Anomaly(
                "resurrected", key,
                f"delete {d.value} (ok at {d.complete_s:.3f}s) replaced "
                f"{[as_text(v) for v in sorted(gone)][:5]}, yet {' and '.join(places)} still "
                "hold it after healing and repair", [d.index]))
    return out


# ------------------------------------------------------------------ registers


def check_registers(ops: Sequence[Op], final: Mapping[str, FinalRead],
                    read_your_writes: bool = True,
                    replicas: Mapping[str, Mapping[str, Any]] | None = None) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, kops in sorted(_by_key(ops, "register").items()):
        writes = [o for o in kops if o.f == "write"]
        deletes = [o for o in kops if o.f == "delete" and o.outcome != FAIL]
        written = {w.value for w in writes}
        # A write never sent changed nothing, so it replaced nothing either.
        desc = descendants([o for o in (*writes, *deletes) if o.outcome != FAIL])
        delete_of = {d.value: d for d in deletes}
        reads = [o for o in kops if o.f == "read" and o.outcome == OK]
        # Phantoms: anything read that was never written.
        for r in reads:
            ghosts = [v for v in r.result if v not in written]
            if ghosts:
                anomalies.append(Anomaly("phantom", key, f"read {ghosts} never written", [r.index]))
        if read_your_writes:
            anomalies.extend(_ryw_registers(key, kops, desc, delete_of))
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
            later = desc.get(w.value, set())
            if w.value not in present and not (later & present) and not (later & delete_of.keys()):
                anomalies.append(Anomaly(
                    "lost-write", key,
                    f"acknowledged write {w.value!r} (done at {w.complete_s:.3f}s) is neither in "
                    f"the final read {sorted(present)} nor replaced by a write or delete that saw it",
                    [w.index]))
        anomalies.extend(_resurrected(key, deletes, fr, _copy_values(replicas, key)))
    return anomalies


def _ryw_registers(key: str, kops: Sequence[Op], desc: Mapping[str, set[str]],
                   delete_of: Mapping[str, Op]) -> list[Anomaly]:
    out = []
    for pops in _strict_processes(kops):
        last_write: Op | None = None
        own_deletes: list[Op] = []
        for o in pops:
            if o.f == "read" and o.outcome == OK:
                seen = set(o.result)
                out.extend(_deleted_but_seen(key, o, own_deletes, seen))
                if last_write is not None and o.invoke_s > last_write.complete_s:
                    later = desc.get(last_write.value, set())
                    # A delete that saw the write, sent before the read ended, may have
                    # removed it and all its descendants.
                    deleted = any(delete_of[t].invoke_s < o.complete_s for t in later & delete_of.keys())
                    if not deleted and not ({last_write.value} | later) & seen:
                        out.append(Anomaly(
                            "read-your-writes", key,
                            f"process {o.process} wrote {last_write.value!r} (ok at "
                            f"{last_write.complete_s:.3f}s), then read {o.result} at {o.invoke_s:.3f}s",
                            [last_write.index, o.index]))
            if o.f == "write" and o.outcome == OK:
                last_write = o
            if o.f == "delete" and o.outcome == OK:
                last_write = None  # what it must see now is only what the delete left
                own_deletes.append(o)
    return out


def _strict_processes(kops: Sequence[Op]) -> list[list[Op]]:
    """The operations of each process on a STRICT connection, and of each session (its
    processes together: a session outlives a lost reply), in invocation order."""
    by_process: dict[int | str, list[Op]] = defaultdict(list)
    for o in kops:
        if o.session is not None:
            by_process[o.session].append(o)
        elif o.strict:
            by_process[o.process].append(o)
    return [sorted(p, key=lambda o: o.invoke_s) for p in by_process.values()]


def _deleted_but_seen(key: str, read: Op, own_deletes: Sequence[Op], seen: set[str]) -> list[Anomaly]:
    """A process's read still showing a value its own acknowledged delete replaced."""
    out = []
    for d in own_deletes:
        still = sorted(set(d.observed or ()) & seen)
        if still and d.complete_s < read.invoke_s:
            shown = [v if len(v) < 40 else v[:37] + "..." for v in still]
            out.append(Anomaly(
                "read-your-writes", key,
                f"process {read.process} deleted {shown} ({d.value}, ok at {d.complete_s:.3f}s), "
                f"then read them at {read.invoke_s:.3f}s", [d.index, read.index]))
    return out


# ------------------------------------------------------------------ sets


def check_sets(ops: Sequence[Op], final: Mapping[str, FinalRead],
               read_your_writes: bool = True,
               replicas: Mapping[str, Mapping[str, Any]] | None = None) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, kops in sorted(_by_key(ops, "set").items()):
        adds = [o for o in kops if o.f == "add"]
        deletes = [o for o in kops if o.f == "delete" and o.outcome != FAIL]
        attempted = {a.value for a in adds}
        # Which deletes saw each element: any of them may have taken it away.
        deleted_by: dict[str, list[Op]] = defaultdict(list)
        for d in deletes:
            for e in set_elements(d.observed or ()):
                deleted_by[e].append(d)
        for r in kops:
            if r.f == "read" and r.outcome == OK:
                ghosts = sorted(set_elements(r.result) - attempted)
                if ghosts:
                    anomalies.append(Anomaly("phantom", key, f"read elements {ghosts} never added",
                                             [r.index]))
        if read_your_writes:
            anomalies.extend(_ryw_sets(key, kops, deleted_by))
        fr = final.get(key)
        if fr is None or fr.values is None:
            continue
        present = set_elements(fr.values)
        ghosts = sorted(present - attempted)
        if ghosts:
            anomalies.append(Anomaly("phantom", key, f"final read has elements {ghosts}, never added"))
        lost = [a for a in adds if a.outcome == OK and a.value not in present and a.value not in deleted_by]
        if lost:
            anomalies.append(Anomaly(
                "lost-element", key,
                f"{len(lost)} acknowledged elements missing from the final read: "
                f"{[a.value for a in lost][:20]}", [a.index for a in lost]))
        # A set's sibling values are unique (each add writes one new element), so a value
        # a delete replaced can only come back by being resurrected.
        anomalies.extend(_resurrected(key, deletes, fr, _copy_values(replicas, key),
                                      as_text=lambda v: v if len(v) < 40 else v[:37] + "..."))
    return anomalies


def _ryw_sets(key: str, kops: Sequence[Op], deleted_by: Mapping[str, list[Op]]) -> list[Anomaly]:
    out = []
    for pops in _strict_processes(kops):
        acked: list[Op] = []
        own_deletes: list[Op] = []
        for o in pops:
            if o.f == "read" and o.outcome == OK:
                out.extend(_deleted_but_seen(key, o, own_deletes, set(o.result)))
                seen = set_elements(o.result)
                missing = [a for a in acked if a.complete_s < o.invoke_s and a.value not in seen
                           and not any(d.invoke_s < o.complete_s for d in deleted_by.get(a.value, ()))]
                if missing:
                    out.append(Anomaly(
                        "read-your-writes", key,
                        f"process {o.process} read at {o.invoke_s:.3f}s without its acknowledged "
                        f"elements {[a.value for a in missing]}",
                        [*(a.index for a in missing), o.index]))
            if o.f == "add" and o.outcome == OK:
                acked.append(o)
            if o.f == "delete" and o.outcome == OK:
                own_deletes.append(o)
    return out


# ------------------------------------------------------------------ sessions


def _clock(context: str | None) -> dict[bytes, int]:
    """The version vector of a context as the history records it (hex; None: no record)."""
    return dict(dvv.decode_context(bytes.fromhex(context))) if context else {}


def check_sessions(ops: Sequence[Op]) -> list[Anomaly]:
    """Each session's reads against what it wrote and read before, by clocks: an acknowledged
    read of a key must answer a clock descending every clock the session's earlier
    acknowledged writes (read-your-writes) and reads (monotonic reads) of the key answered.
    Operations of unknown outcome or failed require nothing (the client never learned their
    answer, nor the token after them); a refused session read is not a stale one."""
    anomalies: list[Anomaly] = []
    by_session: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.session is not None and o.outcome == OK and o.f in ("read", "write", "add", "delete"):
            by_session[o.session].append(o)
    for session, sops in sorted(by_session.items()):
        # per key: the operations whose clocks later reads must descend, with those clocks
        seen: dict[str, list[tuple[Op, dict[bytes, int]]]] = defaultdict(list)
        for o in sorted(sops, key=lambda o: o.invoke_s):
            clock = _clock(o.context)
            if o.f == "read":
                behind = [(e, c) for e, c in seen[o.key] if not dvv.descends(clock, c)]
                writes = [e for e, _ in behind if e.f != "read"]
                for kind, culprits in (("session-read-your-writes", writes),
                                       ("session-monotonic-reads", [e for e, _ in behind if e.f == "read"])):
                    if not culprits:
                        continue
                    last = culprits[-1]
                    what = "wrote" if kind == "session-read-your-writes" else "read"
                    anomalies.append(Anomaly(
                        kind, o.key,
                        f"session {session} {what} version {_show_clock(_clock(last.context))} "
                        f"(op {last.index}, ok at {last.complete_s:.3f}s via {last.node}), then read "
                        f"{_show_clock(clock)} {o.result} at {o.invoke_s:.3f}s via {o.node}, which does "
                        "not descend it", [*(e.index for e in culprits), o.index]))
            if o.context is not None:
                # What the session now holds for the key subsumes what this clock descends.
                seen[o.key] = [(e, c) for e, c in seen[o.key] if not dvv.descends(clock, c)]
                seen[o.key].append((o, clock))
    return anomalies


def _show_clock(clock: Mapping[bytes, int]) -> str:
    return "{" + ", ".join(f"{a.decode('utf-8', 'replace')}:{n}" for a, n in sorted(clock.items())) + "}"


def session_stats(ops: Sequence[Op]) -> dict[str, int]:
    """How the sessions fared: their operations, acknowledged reads, and reads and writes the
    cluster refused with a session error (allowed: an error, never a stale answer)."""
    sops = [o for o in ops if o.session is not None]
    nodes: dict[str, list[str]] = defaultdict(list)
    for o in sops:
        nodes[o.session].append(o.node)
    return {
        "sessions": len(nodes),
        "ops": len(sops),
        "reads_ok": sum(o.f == "read" and o.outcome == OK for o in sops),
        "session_errors": sum(SESSION_ERROR in (o.error or "") for o in sops),
        # how many times a session's next operation went to another node than its last
        "moves": sum(a != b for path in nodes.values() for a, b in itertools.pairwise(path)),
    }


# ------------------------------------------------------------------ counters


def counter_bounds(ops: Sequence[Op]) -> dict[str, dict[str, Any]]:
    """Per counter key: the sums of the acknowledged and unknown increments (`ok`,
    `unknown`), how many operations each, and the acknowledged results."""
    out: dict[str, dict[str, Any]] = {}
    for key, kops in sorted(_by_key(ops, "counter").items()):
        incrs = [o for o in kops if o.f == "incr"]
        out[key] = {
            "ok": sum(int(o.value) for o in incrs if o.outcome == OK),
            "unknown": sum(int(o.value) for o in incrs if o.outcome == UNKNOWN),
            "ok_ops": sum(o.outcome == OK for o in incrs),
            "unknown_ops": sum(o.outcome == UNKNOWN for o in incrs),
            "failed_ops": sum(o.outcome not in (OK, UNKNOWN) for o in incrs),
            "results": [o.result for o in incrs if o.outcome == OK],
            "ok_indices": [o.index for o in incrs if o.outcome == OK],
        }
    return out


def check_counters(ops: Sequence[Op], final: Mapping[str, FinalRead]) -> list[Anomaly]:
    anomalies: list[Anomaly] = []
    for key, b in counter_bounds(ops).items():
        fr = final.get(key)
        if fr is None or fr.values is None:
            continue
        values = [int(v) for v in fr.values]
        lo, hi = b["ok"], b["ok"] + b["unknown"]
        results = b["results"]
        if len(results) != len(set(results)):
            seen: dict[int, int] = {}
            twice = []
            for r, i in zip(results, b["ok_indices"], strict=True):
                if r in seen:
                    twice += [seen[r], i]
                seen.setdefault(r, i)
            anomalies.append(Anomaly(
                "counter", key, f"{len(results) - len(set(results))} acknowledged increments "
                "answered a value another one also answered", twice))
        if not values:
            if lo > 0:
                anomalies.append(Anomaly("counter", key, f"missing at the end, {lo} acknowledged"))
            continue
        if len(values) > 1:
            anomalies.append(Anomaly("counter", key, f"siblings {values} in the final read"))
        value = max(values)
        if value > hi:
            anomalies.append(Anomaly(
                "counter", key, f"final {value} above acknowledged {lo} + unknown {b['unknown']}: "
                "an increment applied twice or invented"))
        elif value < lo:
            anomalies.append(Anomaly(
                "counter", key,
                f"final {value} below the {lo} acknowledged ({lo - value} lost; "
                f"{b['ok_ops']} increments acknowledged, {b['unknown_ops']} unknown)"))
    return anomalies


# ------------------------------------------------------------------ linearizability


def cas_register_history(ops: Iterable[Op]) -> list[lin.Operation]:
    """A cas-register history for `lin.VersionedRegisterModel`: SERIAL reads as
    read -> (value, version), RINGKV.CAS as cas((expected, new value, new version)) -> applied,
    RINGKV.CAD as cas((expected, None, None)) -> deleted (the key then has no live value and,
    as RINGKV.CAS sees it, no version). Reads at QUORUM are not linearizable on this path and
    are left out, as are failed operations. The version a CAS of unknown outcome made is
    taken from a read that saw its (unique) value, a SERIAL read first; one no read saw gets
    an `UnseenVersion`, equal to nothing else."""
    ops = [o for o in ops if o.workload == "cas-register" and o.outcome != FAIL]
    version_of: dict[tuple[str, str], str] = {}
    for serial in (True, False):
        for o in ops:
            if o.f == "read" and o.outcome == OK and o.serial == serial and len(o.result) == 1:
                version_of.setdefault((o.key, o.result[0]), o.version)
    out = []
    for o in ops:
        known = o.outcome == OK
        returned = o.complete_s if known else None
        if o.f == "read":
            if not (known and o.serial):
                continue
            values = list(o.result)
            value: Any = None if not values else values[0] if len(values) == 1 else tuple(sorted(values))
            out.append(lin.Operation(o.process, "read", None, (value, o.version if values else None),
                                     o.invoke_s, returned, o.key, o.index))
        elif o.f == "cas":
            expected, new = o.value
            if known:
                applied, version = o.result
                made = version if applied else None
            else:
                applied = None
                made = version_of.get((o.key, new), lin.UnseenVersion(o.index))
            out.append(lin.Operation(o.process, "cas", (expected, new, made), applied,
                                     o.invoke_s, returned, o.key, o.index))
        elif o.f == "cad":
            out.append(lin.Operation(o.process, "cas", (o.value, None, None),
                                     bool(o.result) if known else None, o.invoke_s, returned,
                                     o.key, o.index))
    return out


def counter_history(ops: Iterable[Op]) -> list[lin.Operation]:
    """A counter history for `lin.CounterModel`: INCR and INCRBY, and the SERIAL reads."""
    return lin.from_chaos([o for o in ops if o.f != "read" or o.serial], "counter")


def check_linearizable(ops: Sequence[Op], max_steps: int = lin.DEFAULT_MAX_STEPS,
                       stats: dict[str, Any] | None = None) -> list[Anomaly]:
    """Each cas-register and counter key's history against its model; `stats` (if given)
    gets, per workload, the keys and operations checked and the search's cost."""
    anomalies: list[Anomaly] = []
    for workload, history, model in (
            ("cas-register", cas_register_history(ops), lin.VersionedRegisterModel()),
            ("counter", counter_history(ops), lin.CounterModel())):
        if not history:
            continue
        started = time.monotonic()
        result = lin.check(history, model, max_steps=max_steps)
        if stats is not None:
            stats[workload] = {
                "keys": len(result.keys), "operations": sum(k.operations for k in result.keys),
                "steps": sum(k.steps for k in result.keys),
                "unknown_dropped": sum(k.unknown_dropped for k in result.keys),
                "seconds": round(time.monotonic() - started, 3), "ok": result.ok}
        for k in result.failures:
            indices = [op.index for op in (k.culprit, *k.concurrent) if op is not None and op.index is not None]
            anomalies.append(Anomaly("linearizability", str(k.key), k.explanation, indices))
        for k in result.undecided:
            anomalies.append(Anomaly("linearizability-undecided", str(k.key), k.explanation))
    return anomalies


# ------------------------------------------------------------------ the rest


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
          replicas: Mapping[str, Mapping[str, Any]], read_your_writes: bool = True,
          max_steps: int = lin.DEFAULT_MAX_STEPS, stats: dict[str, Any] | None = None) -> list[Anomaly]:
    """Every check over one run. `read_your_writes`: whether the clients' levels promise it
    (R + W > N: not at ONE); `max_steps`: the linearizability search's budget per key;
    `stats` (if given) gets the linearizability check's cost under "linearizability"."""
    lin_stats: dict[str, Any] = {}
    anomalies = [
        *check_final_reads(final),
        *check_convergence(replicas),
        *check_registers(ops, final, read_your_writes, replicas),
        *check_sets(ops, final, read_your_writes, replicas),
        *check_counters(ops, final),
        *check_linearizable(ops, max_steps, lin_stats),
        *check_sessions(ops),
    ]
    if stats is not None:
        stats["linearizability"] = lin_stats
    return anomalies
