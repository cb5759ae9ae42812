"""Checks of the Redis data-type workloads (workloads.py `set-crdt` and `list-push`). Pure,
like checker.py: the history's operations and the state read after healing in, anomalies out.

Every data-type write runs on its key's consensus path (one Paxos round per command among the
key's replicas, node/consensus.py), so these histories must be linearizable. Two kinds of
check, one plain and explainable, one exhaustive:

set-crdt (sets `sc:<i>`: SADD and SREM of one element each; hashes `hc:<i>`: HSET of one field
to a new unique value, HDEL of one field):

    lost-add             an element whose last word was an acknowledged SADD is missing from
                         the final read at ALL. "Last word": the acknowledged operation on the
                         element that completed last, when no operation that may come after it
                         (an acknowledged one overlapping it, or any of unknown outcome, which
                         may take effect at any time after its invocation) would leave the
                         element otherwise.
    lost-remove          the same for an acknowledged SREM: the element is back.
    lost-field-write     a hash field whose last word was an acknowledged HSET does not hold
                         that value at the end.
    lost-field-delete    a field whose last word was an acknowledged HDEL is there at the end.
    phantom              a hash value, read during the run or at the end, that no HSET wrote
                         (failed ones excluded: the store said nothing was applied); a set
                         element outside the workload's pool.
    linearizability      the history of one element (or field) is not linearizable: its SADD
                         and SREM (HSET, HDEL) with the counts they answered (1 = it was absent
                         / present before) and the SERIAL reads, the one after healing
                         included, checked against `FieldModel`. Each write touches one
                         element, so each element is checked on its own (a whole read element
                         by element: weaker than checking it whole, never wrong).

list-push (lists `lp:<i>`: RPUSH of a new unique value, LPOP):

    lost-push            an acknowledged push is neither in the final list nor returned by an
                         acknowledged pop, and either a value pushed before it (completed
                         before it was invoked) is still in the final list, so it was never at
                         the head and cannot have been popped, or there are more such pushes
                         than pops of unknown outcome (each may have taken one).
    duplicated-push      a value twice in the final list, twice among the values pops returned,
                         in both, or twice in one read.
    phantom              a value read, popped or in the final list that no push wrote (failed
                         ones excluded), or popped before its push was invoked.
    push-order           the final list has a value before one whose push completed before its
                         own push was invoked (the per-client order of pushes is a case of it);
                         or an acknowledged pop returned a value while one pushed before it is
                         still in the list (a FIFO queue pops the older first).
    empty-pop            an acknowledged LPOP answered nil while a value whose push completed
                         before the pop was invoked is in the final list: it was there.
    linearizability      the key's history (RPUSH with the length it answered, LPOP with the
                         value, SERIAL reads) against `QueueModel`, the order of pushes pinned
                         by what reads showed next to each other (pushed_after), the
                         operations of unknown outcome nothing shows presumed void first
                         (queue_history, _check_queues).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from ringkv.chaos import linearizability as lin
from ringkv.chaos.checker import Anomaly, FinalRead
from ringkv.chaos.history import FAIL, OK, UNKNOWN, Op
from ringkv.chaos.workloads import SET_POOL_ELEMENTS, typed_kind

PRESENT = "+"  # the state of a set element that is in the set (FieldModel)


# ------------------------------------------------------------------ models


class _AnyReply:
    def __repr__(self) -> str:
        return "(any count)"


ANY_REPLY = _AnyReply()


class FieldModel(lin.Model):
    """One set element or hash field: None while absent, else its value (PRESENT for a set
    element).

        write(value) -> 1 if it was absent, else 0     SADD (value PRESENT), HSET
        remove       -> 1 if it was present, else 0    SREM, HDEL
        read         -> the value, or None

    A write's reply may be ANY_REPLY: any count (`_field_history` gives that to writes that
    overlap another write of the element; their effects are still ordered and checked).
    """

    name = "field"
    kinds = frozenset({"write", "remove", "read"})

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: lin.Operation) -> tuple[bool, Any]:
        if op.kind == "read":
            return op.returned_at is None or op.output == state, state
        if op.kind == "write":
            if op.returned_at is not None and op.output is not ANY_REPLY and op.output != (1 if state is None else 0):
                return False, state
            return True, op.input
        if op.returned_at is not None and op.output is not ANY_REPLY and op.output != (0 if state is None else 1):
            return False, state
        return True, None

    def observes(self, op: lin.Operation) -> bool:
        return op.kind == "read"

    def overwrites(self, op: lin.Operation) -> bool:
        return op.returned_at is None and op.kind in ("write", "remove")


class Snapshot(tuple):
    """A whole list as a read answered it: a tuple (equal to the model's state) that prints
    short, so that an explanation quoting a read of a long list stays readable."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = ", ".join(self[:3]) + (f", ... {self[-1]} ({len(self)} items)" if len(self) > 3 else "")
        return f"[{shown}]"


class QueueModel(lin.Model):
    """A list used as a FIFO queue. The state: the last value pushed (None before any) and the
    values in the list, a tuple.

        push((value, after)) -> the length after it   RPUSH (None: not checked); `after`, if
                                                       not None, must be the last value pushed
        pop                  -> the first value, or None   LPOP
        read                 -> the whole tuple            LRANGE 0 -1

    `after` is what reads showed right before the value (queue_history): a list holds its
    values in the order their pushes took effect, with no gap, so two values next to each
    other in a read were pushed one right after the other. It pins the order of pushes that
    the lengths they answered leave open (concurrent pushes with pops between them), which
    otherwise only the pops that reach them, maybe thousands of operations later, settle.
    """

    name = "queue"
    kinds = frozenset({"push", "pop", "read"})

    def init(self) -> Hashable:
        return (None, ())

    def step(self, state: Any, op: lin.Operation) -> tuple[bool, Any]:
        known = op.returned_at is not None
        last, items = state
        if op.kind == "read":
            return not known or op.output == items, state
        if op.kind == "push":
            value, after = op.input
            if after is not None and after != last:
                return False, state
            if known and op.output is not None and op.output != len(items) + 1:
                return False, state
            return True, (value, (*items, value))
        if known and op.output != (items[0] if items else None):
            return False, state
        return True, (last, items[1:])

    def observes(self, op: lin.Operation) -> bool:
        return op.kind == "read"

    def describe_state(self, state: Any) -> str:
        return repr(Snapshot(state[1]))


# ------------------------------------------------------------------ helpers


def _typed_ops(ops: Iterable[Op], workload: str, kind: str) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.workload == workload and typed_kind(op.key) == kind:
            out[op.key].append(op)
    return out


def _final_values(final: Mapping[str, FinalRead], key: str) -> list[str] | None:
    fr = final.get(key)
    return None if fr is None else fr.values


def _hash_map(items: Sequence[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _check_lin(history: list[lin.Operation], model: lin.Model, workload: str, max_steps: int,
               stats: dict[str, Any] | None) -> list[Anomaly]:
    if not history:
        return []
    started = time.monotonic()
    result = lin.check(history, model, max_steps=max_steps)
    if stats is not None:
        stats[workload] = {
            "keys": len(result.keys), "operations": sum(k.operations for k in result.keys),
            "steps": sum(k.steps for k in result.keys),
            "unknown_dropped": sum(k.unknown_dropped for k in result.keys),
            "seconds": round(time.monotonic() - started, 3), "ok": result.ok}
    out = []
    for k in result.failures:
        indices = [op.index for op in (k.culprit, *k.concurrent) if op is not None and op.index is not None]
        out.append(Anomaly("linearizability", " ".join(map(str, k.key)) if isinstance(k.key, tuple)
                           else str(k.key), k.explanation, indices))
    for k in result.undecided:
        out.append(Anomaly("linearizability-undecided", str(k.key), k.explanation))
    return out


# ------------------------------------------------------------------ set-crdt


# set-crdt's writes: those that set a value (a field's, a member's score), and all of them.
VALUED_WRITES = ("hset", "zadd")
CRDT_WRITES = ("sadd", "srem", "hset", "hdel", "zadd", "zrem")


def _effect(op: Op) -> str | None:
    """What a set-crdt write leaves in its element or field: PRESENT, the HSET's value, or
    None (removed)."""
    if op.f == "sadd":
        return PRESENT
    if op.f in VALUED_WRITES:
        return op.value[1]
    return None


def _target(op: Op) -> str:
    """The element or field a set-crdt write touches."""
    return op.value[0] if op.f in VALUED_WRITES else op.value


def last_word(writes: Sequence[Op]) -> tuple[Op | None, set[str | None]]:
    """Of one element's (or field's) writes, the acknowledged one that completed last, and
    every effect the element may have been left with: that one's and those of every write
    that may take effect after it (an acknowledged one overlapping it, any of unknown
    outcome). With no acknowledged write: the unknown ones' effects, and None (none of them
    took effect). Failed writes had no effect."""
    acked = [w for w in writes if w.outcome == OK]
    unknown = [w for w in writes if w.outcome == UNKNOWN]
    effects = {_effect(w) for w in unknown}
    if not acked:
        return None, effects | {None}
    last = max(acked, key=lambda w: w.complete_s)
    effects.add(_effect(last))
    effects |= {_effect(w) for w in acked if w is not last and w.complete_s > last.invoke_s}
    return last, effects


def _field_history(key: str, kops: Sequence[Op], universe: set[str], is_hash: bool) -> list[lin.Operation]:
    """Each element's operations for the linearizability search. Sets and hashes converge
    without consensus (docs/data-types.md): two replicas that each believe they are the first
    reachable one (a partition) may run two commands on one element at once, and each counts
    what it saw (two SREMs of one member both answer 1). So a write that overlaps another
    write of its element has its reply unchecked (ANY_REPLY); its effect is still ordered
    with the rest, and every reply of a write that overlaps none, and every SERIAL read, must
    fit one order."""
    out = []
    writes = [o for o in kops if o.outcome != FAIL and o.f in CRDT_WRITES]
    overlapped = _overlapping(writes)
    for o in kops:
        if o.outcome == FAIL:
            continue
        known = o.outcome == OK
        returned = o.complete_s if known else None
        if o.f in CRDT_WRITES:
            kind = "write" if o.f in ("sadd", *VALUED_WRITES) else "remove"
            reply = (ANY_REPLY if o.index in overlapped else o.result) if known else None
            out.append(lin.Operation(o.process, kind, _effect(o) if kind == "write" else None,
                                     reply, o.invoke_s, returned, (key, _target(o)), o.index))
        elif o.f == "read" and known and o.serial:
            state = _hash_map(o.result) if is_hash else dict.fromkeys(o.result, PRESENT)
            for e in sorted(universe):
                out.append(lin.Operation(o.process, "read", None, state.get(e), o.invoke_s, returned,
                                         (key, e), o.index))
    return out


def _overlapping(writes: Sequence[Op]) -> set[int]:
    """The indexes of writes that overlap in time another write of the same element (one of
    unknown outcome lasts to the end of the history)."""
    found: set[int] = set()
    by_target: dict[str, list[Op]] = defaultdict(list)
    for w in writes:
        by_target[_target(w)].append(w)
    for ws in by_target.values():
        ws.sort(key=lambda o: o.invoke_s)
        latest_end, latest = float("-inf"), None
        for w in ws:
            end = w.complete_s if w.outcome == OK else float("inf")
            if latest is not None and w.invoke_s < latest_end:
                found.update((w.index, latest.index))
            if end > latest_end:
                latest_end, latest = end, w
    return found


def check_set_crdt(ops: Sequence[Op], final: Mapping[str, FinalRead],
                   max_steps: int = lin.DEFAULT_MAX_STEPS,
                   stats: dict[str, Any] | None = None) -> list[Anomaly]:
    """The set-crdt workload's sets and hashes: last words kept, nothing invented, and each
    element's and field's history linearizable (`stats`, if given, gets the search's cost under
    "set-crdt" and the counts under "set-crdt-figures")."""
    anomalies: list[Anomaly] = []
    history: list[lin.Operation] = []
    figures: Counter[str] = Counter()
    pool = {f"e{i}" for i in range(SET_POOL_ELEMENTS)}
    for kind in ("set", "hash", "zset"):
        is_hash = kind != "set"  # a sorted set's member is checked as a field, its score as the value
        for key, kops in sorted(_typed_ops(ops, "set-crdt", kind).items()):
            writes = [o for o in kops if o.f != "read"]
            for o in writes:
                figures[f"{o.f} {o.outcome}"] += 1
            by_target: dict[str, list[Op]] = defaultdict(list)
            for w in writes:
                by_target[_target(w)].append(w)
            written = {w.value[1] for w in writes if w.f in VALUED_WRITES and w.outcome != FAIL}
            reads = [o for o in kops if o.f == "read" and o.outcome == OK]
            universe = set(by_target)
            for r in reads:
                seen = _hash_map(r.result) if is_hash else dict.fromkeys(r.result, PRESENT)
                universe |= seen.keys()
                ghosts = sorted(set(seen.values()) - written) if is_hash else sorted(set(seen) - pool)
                if ghosts:
                    anomalies.append(Anomaly("phantom", key, f"read {ghosts}, which no write that may have "
                                             "taken effect wrote", [r.index]))
            values = _final_values(final, key)
            if values is not None:
                state = _hash_map(values) if is_hash else dict.fromkeys(values, PRESENT)
                ghosts = sorted(set(state.values()) - written) if is_hash else sorted(set(state) - pool)
                if ghosts:
                    anomalies.append(Anomaly("phantom", key, f"final read has {ghosts}, which no write that "
                                             "may have taken effect wrote"))
                for target, tw in sorted(by_target.items()):
                    last, effects = last_word(tw)
                    if last is None or len(effects) != 1:
                        figures["undetermined"] += 1
                        continue
                    figures["determined"] += 1
                    expected, found = next(iter(effects)), state.get(target)
                    if found == expected:
                        continue
                    if is_hash:
                        what = "lost-field-write" if expected is not None else "lost-field-delete"
                    else:
                        what = "lost-add" if expected is not None else "lost-remove"
                    anomalies.append(Anomaly(
                        what, key,
                        f"{target}: the last acknowledged {last.f.upper()} (op {last.index}, "
                        f"{last.invoke_s:.3f}-{last.complete_s:.3f}s via {last.node}) left "
                        f"{'it absent' if expected is None else repr(expected)}, with no write "
                        f"overlapping or after it to change that; the final read has "
                        f"{'it absent' if found is None else repr(found)}",
                        [last.index]))
            history += _field_history(key, kops, universe, is_hash)
    if stats is not None and figures:
        stats["set-crdt-figures"] = {"determined": 0, "undetermined": 0, **dict(sorted(figures.items()))}
    return anomalies + _check_lin(history, FieldModel(), "set-crdt", max_steps, stats)


# ------------------------------------------------------------------ list-push


def check_list_push(ops: Sequence[Op], final: Mapping[str, FinalRead],
                    max_steps: int = lin.DEFAULT_MAX_STEPS,
                    stats: dict[str, Any] | None = None) -> list[Anomaly]:
    """The list-push workload's lists: no acknowledged push lost, duplicated or invented, the
    final list in push order, and each key's history linearizable (`stats`, if given, gets the
    search's cost under "list-push" and the counts under "list-push-figures")."""
    anomalies: list[Anomaly] = []
    histories: dict[str, tuple[list[lin.Operation], ...]] = {}
    figures: Counter[str] = Counter()
    for key, kops in sorted(_typed_ops(ops, "list-push", "list").items()):
        pushes = {o.value: o for o in kops if o.f == "push" and o.outcome != FAIL}
        pops = [o for o in kops if o.f == "pop" and o.outcome != FAIL]
        for o in kops:
            if o.f != "read":
                figures[f"{o.f} {o.outcome}"] += 1
        popped = [o for o in pops if o.outcome == OK and o.result is not None]
        for r in kops:
            if r.f == "read" and r.outcome == OK:
                ghosts = sorted(set(r.result) - pushes.keys())
                if ghosts:
                    anomalies.append(Anomaly("phantom", key, f"read {ghosts[:10]}, never pushed", [r.index]))
                twice = sorted(v for v, n in Counter(r.result).items() if n > 1)
                if twice:
                    anomalies.append(Anomaly("duplicated-push", key, f"read {twice[:10]} more than once",
                                             [r.index]))
        for o in popped:
            push = pushes.get(o.result)
            if push is None:
                anomalies.append(Anomaly("phantom", key, f"LPOP returned {o.result!r}, never pushed", [o.index]))
            elif o.complete_s < push.invoke_s:
                anomalies.append(Anomaly(
                    "phantom", key, f"LPOP returned {o.result!r} at {o.complete_s:.3f}s, before its "
                    f"push was invoked at {push.invoke_s:.3f}s", [o.index, push.index]))
        histories[key] = (queue_history(kops, presume=2), queue_history(kops, presume=1),
                          queue_history(kops, presume=0))
        values = _final_values(final, key)
        if values is None:
            continue
        figures["final items"] += len(values)
        in_final = set(values)
        counts = Counter(values) + Counter(o.result for o in popped)
        twice = sorted(v for v, n in counts.items() if n > 1)
        if twice:
            where = [o.index for o in popped if o.result in twice]
            anomalies.append(Anomaly(
                "duplicated-push", key, f"{len(twice)} values more than once in the final list and "
                f"the values pops returned: {twice[:10]}", where))
        ghosts = sorted(in_final - pushes.keys())
        if ghosts:
            anomalies.append(Anomaly("phantom", key, f"final list has {ghosts[:10]}, never pushed"))
        # The earliest completion of an acknowledged push still in the list, and where.
        acked_final = [(pushes[v].complete_s, pushes[v]) for v in values
                       if v in pushes and pushes[v].outcome == OK]
        oldest = min(acked_final, key=lambda t: t[0], default=None)
        # lost pushes
        gone = {o.result for o in popped}
        missing = [p for v, p in pushes.items() if p.outcome == OK and v not in in_final and v not in gone]
        # A missing push behind a value still in the list cannot have been popped; the others
        # may each have been taken by a pop of unknown outcome (which may take effect at any
        # time after its invocation), one each.
        stuck = [p for p in missing if oldest is not None and oldest[0] < p.invoke_s]
        free = [p for p in missing if not (oldest is not None and oldest[0] < p.invoke_s)]
        unknown_pops = sum(o.outcome == UNKNOWN for o in pops)
        if stuck:
            anomalies.append(Anomaly(
                "lost-push", key,
                f"{len(stuck)} acknowledged pushes neither in the final list nor popped, though "
                f"{oldest[1].value!r}, pushed before them (done {oldest[0]:.3f}s), is still in the "
                f"list, so they were never at its head: {[p.value for p in stuck][:10]}",
                [p.index for p in stuck]))
        if len(free) > unknown_pops:
            anomalies.append(Anomaly(
                "lost-push", key,
                f"{len(free)} acknowledged pushes neither in the final list nor popped, and only "
                f"{unknown_pops} pops of unknown outcome could have taken them: "
                f"{[p.value for p in free][:10]}", [p.index for p in free]))
        figures["missing, maybe taken by unknown pops"] += min(len(free), unknown_pops)
        # order in the final list: no value before one pushed wholly before it
        later_min: tuple[float, Op] | None = None
        for v in reversed(values):
            p = pushes.get(v)
            if p is None:
                continue
            if later_min is not None and later_min[0] < p.invoke_s:
                q = later_min[1]
                anomalies.append(Anomaly(
                    "push-order", key,
                    f"{v!r} (pushed {p.invoke_s:.3f}s by process {p.process}) is before {q.value!r} "
                    f"in the final list, though that push completed first ({q.complete_s:.3f}s, "
                    f"process {q.process})", [p.index, q.index]))
                break
            if p.outcome == OK and (later_min is None or p.complete_s < later_min[0]):
                later_min = (p.complete_s, p)
        if oldest is not None:
            for o in pops:
                if o.outcome != OK:
                    continue
                if o.result is None and oldest[0] < o.invoke_s:
                    anomalies.append(Anomaly(
                        "empty-pop", key,
                        f"LPOP answered nil at {o.complete_s:.3f}s while {oldest[1].value!r} "
                        f"(pushed by {oldest[0]:.3f}s) is in the final list", [o.index, oldest[1].index]))
                elif o.result in pushes and oldest[0] < pushes[o.result].invoke_s:
                    anomalies.append(Anomaly(
                        "push-order", key,
                        f"LPOP returned {o.result!r} while {oldest[1].value!r}, pushed before it "
                        f"(done {oldest[0]:.3f}s), is still in the final list",
                        [o.index, pushes[o.result].index, oldest[1].index]))
    if stats is not None and figures:
        stats["list-push-figures"] = dict(sorted(figures.items()))
    return anomalies + _check_queues(histories, max_steps, stats)


def _check_queues(histories: Mapping[str, tuple[list[lin.Operation], ...]], max_steps: int,
                  stats: dict[str, Any] | None) -> list[Anomaly]:
    """Each list against QueueModel, first presuming that no pop or push of unknown outcome
    whose effect nothing shows took effect, then that no such push did (queue_history): a
    linearization found so is one of the whole history, so that verdict stands. A key where
    neither finds one (or runs out of budget) is searched with every such operation pending,
    and that verdict stands."""
    anomalies: list[Anomaly] = []
    keys = sorted(histories)
    total: dict[str, Any] = {"keys": len(keys), "operations": 0, "steps": 0, "seconds": 0.0, "ok": True,
                             "searched_in_full": []}
    for level in (0, 1, 2):
        if not keys:
            break
        step: dict[str, Any] = {}
        found = _check_lin([op for k in keys for op in histories[k][level]], QueueModel(), "list-push",
                           max_steps if level == 2 else min(max_steps, PRESUMED_MAX_STEPS), step)
        total["operations"] = max(total["operations"], step["list-push"]["operations"])
        total["steps"] += step["list-push"]["steps"]
        total["seconds"] = round(total["seconds"] + step["list-push"]["seconds"], 3)
        if level == 2:
            anomalies, total["ok"], total["searched_in_full"] = found, step["list-push"]["ok"], keys
        keys = sorted({a.key for a in found})
    if stats is not None and histories:
        stats["list-push"] = total
    return anomalies


PRESUMED_MAX_STEPS = 1_000_000  # the first, presuming queue search, per key


def pushed_after(kops: Sequence[Op]) -> dict[str, str]:
    """For each value some acknowledged read showed right after another, that other one
    (QueueModel: the value pushed just before it). Reads that disagree (a value after two
    different ones) give it none; the order checks and the search report the reads."""
    out: dict[str, str] = {}
    disputed: set[str] = set()
    for o in kops:
        if o.f == "read" and o.outcome == OK:
            for a, b in itertools.pairwise(o.result):
                if out.setdefault(b, a) != a:
                    disputed.add(b)
    return {b: a for b, a in out.items() if b not in disputed}


def queue_history(kops: Sequence[Op], presume: int) -> list[lin.Operation]:
    """One list's operations for QueueModel: RPUSH with the length it answered, LPOP with the
    value, the reads at SERIAL (the one after healing included); failed ones left out.

    A push of unknown outcome whose value was seen (popped, read, in the final read) took
    effect before the first operation that saw it returned, and before any acknowledged push
    whose value a read showed after it returned: it becomes an operation with that interval
    (and no length to check) rather than one pending to the end of the history.

    `presume` 2: leave out the pops of unknown outcome and the pushes of unknown outcome whose
    value nothing ever saw, as if none took effect; 1: only those pushes; 0: nothing. Each such operation stays pending from its
    invocation to the end otherwise, and the search tries it at every step: a few of them
    over a long list exhaust the budget. A linearization without them is one of the whole
    history, so only a failure to find one needs the full search.
    """
    seen_at: dict[str, float] = {}
    acked_at = {o.value: o.complete_s for o in kops if o.f == "push" and o.outcome == OK}
    pred = pushed_after(kops)
    for o in kops:
        if o.outcome != OK:
            continue
        for v in (o.result if o.f == "read" else [o.result] if o.f == "pop" and o.result is not None else []):
            seen_at[v] = min(seen_at.get(v, o.complete_s), o.complete_s)
        if o.f == "read":
            # A list holds its values in the order their pushes took effect: a value before
            # an acknowledged push's took effect before that push returned.
            after = float("inf")
            for v in reversed(o.result):
                if after < seen_at[v]:
                    seen_at[v] = after
                after = min(after, acked_at.get(v, after))
    out = []
    for o in kops:
        if o.outcome == FAIL or (o.f == "read" and not (o.serial and o.outcome == OK)):
            continue
        known = o.outcome == OK
        if o.f == "read":
            out.append(lin.Operation(o.process, "read", None, Snapshot(o.result), o.invoke_s, o.complete_s,
                                     o.key, o.index))
        elif o.f == "pop":
            if known or presume < 2:
                out.append(lin.Operation(o.process, "pop", None, o.result if known else None, o.invoke_s,
                                         o.complete_s if known else None, o.key, o.index))
        elif known:
            out.append(lin.Operation(o.process, "push", (o.value, pred.get(o.value)), o.result, o.invoke_s,
                                     o.complete_s, o.key, o.index))
        elif o.value in seen_at:
            out.append(lin.Operation(o.process, "push", (o.value, pred.get(o.value)), None, o.invoke_s,
                                     max(seen_at[o.value], o.invoke_s), o.key, o.index))
        elif not presume:
            out.append(lin.Operation(o.process, "push", (o.value, None), None, o.invoke_s, None, o.key,
                                     o.index))
    return out


def check(ops: Sequence[Op], final: Mapping[str, FinalRead], max_steps: int = lin.DEFAULT_MAX_STEPS,
          stats: dict[str, Any] | None = None) -> list[Anomaly]:
    """Both workloads' checks (nothing when neither ran)."""
    return [*check_set_crdt(ops, final, max_steps, stats), *check_list_push(ops, final, max_steps, stats)]
