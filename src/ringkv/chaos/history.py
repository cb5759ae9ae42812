"""The history of a chaos run: one entry per client operation, one per fault action.

An operation is recorded when it is invoked and completed with one of three outcomes:

    ok       the node acknowledged it
    fail     it certainly had no effect: never sent (no connection), or a read that failed
    unknown  it may or may not have taken effect: the reply was lost (timeout, connection
             dropped after sending), or the node answered a write with an error, which in a
             Dynamo-style store means "not acknowledged", not "not written" (docs/cluster.md)

Times are seconds since the start of the run on this machine's monotonic clock, so the order
of an operation's completion and another's invocation is real-time order. Values are text
(the workloads only write UTF-8). Safe to append to from many threads.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"


@dataclasses.dataclass(slots=True)
class Op:
    """One client operation.

    `f` is what it did:

        read    RINGKV.GETV (or GET at SERIAL for a counter); `result` the sibling values
        write   a register's RINGKV.PUTV; `value` the new value
        add     a set's RINGKV.PUTV; `value` the new element
        delete  RINGKV.DELV with a read's context (register, set); `value` a unique token
                naming the delete, so it can be a register write's descendant
        incr    INCR or INCRBY; `value` the increment, `result` the new value
        cas     RINGKV.CAS; `value` [expected version or None, new value], `result`
                [applied, version]: the new version when applied, else the current one
        cad     RINGKV.CAD; `value` the expected version, `result` whether it deleted
        sadd    SADD of one element (set-crdt); `value` the element, `result` 1 if added
        srem    SREM of one element; `value` the element, `result` 1 if removed
        hset    HSET of one field; `value` [field, new unique value], `result` 1 if new
        hdel    HDEL of one field; `value` the field, `result` 1 if removed
        push    RPUSH of one value (list-push); `value` it, `result` the length after it
        pop     LPOP; `result` the value popped, None for nil

    A read of a set-crdt or list-push key (SMEMBERS, HGETALL, LRANGE 0 -1) records in
    `result` what workloads.typed_result makes of the reply.

    A write, add or delete carries in `observed` the sibling values of the read whose
    context it was sent with (None: a blind write with no context). `node` is the node the
    request went to; `strict` whether the connection refused stand-ins (RINGKV.CONSISTENCY
    QUORUM STRICT); `serial` whether a read ran at SERIAL (on the key's consensus path:
    linearizable). Versions are the hex of the causal context a read or RINGKV.CAS answered
    (the encoding is canonical: one clock, one text); a cas-register read records in
    `version` the version it answered (None: no live value).

    In a session (a run at consistency `session`: every client's connection reads and writes
    at ONE in a session of its own, chaos/workloads.py), `session` names it (one per client,
    kept across reconnections, node moves and new process ids) and `context` is the hex of
    the causal context the operation answered: a read's, or the one a RINGKV.PUTV or DELV
    answered. The session checks compare these clocks (checker.check_sessions).
    """

    index: int
    process: int
    workload: str
    f: str
    key: str
    value: Any
    invoke_s: float
    node: str
    strict: bool
    observed: list[str] | None = None
    complete_s: float | None = None
    outcome: str | None = None
    result: Any = None
    error: str | None = None
    serial: bool = False
    version: str | None = None
    session: str | None = None
    context: str | None = None


@dataclasses.dataclass(slots=True)
class FaultAction:
    """One thing the nemesis did: `action` is kill, stop (SIGTERM), start, pause, resume,
    partition, heal, skew, unskew, fill, free, loss, slow, restore (the end of loss or
    slowness), restart (a rolling restart begins), dc-kill and dc-start (a datacenter's
    nodes are killed; they are being started again, each then `start` once it answers), sync
    (faults re-applied to a node), or not-applied (a fault that did not take effect, `detail`
    naming it); `ok` False with `error` when it could not be done."""

    time_s: float
    action: str
    nodes: list[str]
    detail: str = ""
    ok: bool = True
    error: str | None = None


class History:
    """Operations and fault actions of one run, in invocation order."""

    def __init__(self, started: float | None = None):
        self.started = time.monotonic() if started is None else started
        self.ops: list[Op] = []
        self.faults: list[FaultAction] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.started, 6)

    def invoke(self, process: int, workload: str, f: str, key: str, value: Any, node: str,
               strict: bool, observed: list[str] | None = None, serial: bool = False,
               session: str | None = None) -> Op:
        with self._lock:
            op = Op(len(self.ops), process, workload, f, key, value, self.now(), node, strict,
                    observed, serial=serial, session=session)
            self.ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, result: Any = None, error: str | None = None) -> Op:
        op.complete_s = self.now()
        op.outcome = outcome
        op.result = result
        op.error = error
        return op

    def fault(self, action: str, nodes: list[str], detail: str = "", ok: bool = True,
              error: str | None = None) -> FaultAction:
        entry = FaultAction(self.now(), action, list(nodes), detail, ok, error)
        with self._lock:
            self.faults.append(entry)
        return entry


def save(path: str | Path, doc: dict[str, Any], history: History) -> Path:
    """Write the run's document with the history's operations and fault actions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = dict(doc)
    body["faults"] = [dataclasses.asdict(f) for f in history.faults]
    body["ops"] = [dataclasses.asdict(op) for op in history.ops]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=None, separators=(",", ":")))
    tmp.replace(path)
    return path


def load_ops(path: str | Path) -> tuple[dict[str, Any], list[Op]]:
    """A saved run: its document and its operations (for checking a history again)."""
    doc = json.loads(Path(path).read_text())
    ops = [Op(**o) for o in doc.get("ops", [])]
    return doc, ops
