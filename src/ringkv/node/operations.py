"""Long operations of a node: started, then followed by id, surviving a restart.

A long operation (join, decommission, remove, repair, cleanup, backup, restore) is a coroutine
the registry runs as a task. It is given a `Progress` to report how far it is (units done of a
total, and a phase) and returns a result document. Callers get an `Operation` at once and
follow it by id: `Operations.get`, `Operations.list`, `Operations.wait`; `ringkv admin wait`,
RINGKV.ADMIN OPERATION and GET /api/v1/admin/operations/{id} do the same over the wire.

    ops = node.operations                      # one registry per node (node/node.py)
    async def run(progress: Progress) -> dict:
        progress.update(total=len(parts), phase="copying")
        for p in parts:
            ...
            progress.advance()                 # one unit done
        return {"files": n}                    # the result, JSON-able
    op = ops.start("backup", run, params={"to": path})
    op.id                                      # "n1.7": the node's id and a sequence number

State is kept in `<data_dir>/operations.json` (docs/operations.md gives its format), written
whenever an operation starts or finishes and at most once per `PERSIST_INTERVAL_MS` while one
makes progress. When the node restarts, every operation the file shows as running was cut off
by the stop: a kind registered with `resume_with` (a factory building the coroutine again from
the operation's params) resumes under the same id, where the work itself knows how to pick up
(a join's partitions already received are recorded in membership.json); any other becomes
`interrupted`, with an error saying to start it again.

Contract: `start` raises AdminConflictError while an operation of a conflicting kind runs
(the same kind, or a kind named in `conflicts`). One registry belongs to one event loop;
none of its methods blocks but for writing the small state file. The kept history is bounded
by `FINISHED_KEPT_MAX_COUNT` finished operations, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ringkv.clock import Clock
from ringkv.errors import AdminConflictError, AdminRequestError

log = logging.getLogger("ringkv.operations")

OPERATIONS_FILE = "operations.json"
FORMAT_VERSION = 1
PERSIST_INTERVAL_MS = 1000  # progress writes at most this often; start and finish always
FINISHED_KEPT_MAX_COUNT = 100  # finished operations kept for `list` and `get`, newest first

RUNNING = "running"
DONE = "done"
FAILED = "failed"
INTERRUPTED = "interrupted"  # the node stopped while it ran, and its kind cannot resume
STATES = (RUNNING, DONE, FAILED, INTERRUPTED)


@dataclass
class Operation:
    """One long operation, as `list` and `get` report it (`as_dict`)."""

    id: str
    kind: str
    node_id: str
    params: dict[str, Any]
    state: str = RUNNING
    unit: str = "partitions"
    done: int = 0
    total: int = 0
    phase: str = ""
    started_ms: int = 0
    updated_ms: int = 0
    finished_ms: int = 0
    result: dict[str, Any] | None = None
    error: str = ""
    resumed: int = 0  # how many restarts it was resumed after
    # Where the current run began (a resumed operation's rate counts from its resumption).
    _run_started_s: float = field(default=0.0, repr=False)
    _run_started_done: int = field(default=0, repr=False)
    _exception: BaseException | None = field(default=None, repr=False)  # for `wait_result`

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    def eta_s(self) -> float | None:
        """Seconds left at the rate of the current run; None before any unit is done."""
        if self.finished or self.total <= 0:
            return None
        moved = self.done - self._run_started_done
        elapsed = time.monotonic() - self._run_started_s
        if moved <= 0 or elapsed <= 0:
            return None
        return round(max(0, self.total - self.done) * elapsed / moved, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "node_id": self.node_id, "params": self.params,
                "state": self.state, "unit": self.unit, "done": self.done, "total": self.total,
                "phase": self.phase, "started_ms": self.started_ms, "updated_ms": self.updated_ms,
                "finished_ms": self.finished_ms, "eta_s": self.eta_s(), "result": self.result,
                "error": self.error, "resumed": self.resumed}

    def record(self) -> dict[str, Any]:
        """What the state file keeps of it (no ETA: it means nothing after a restart)."""
        doc = self.as_dict()
        del doc["eta_s"]
        return doc

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> Operation:
        names = ("id", "kind", "node_id", "params", "state", "unit", "done", "total", "phase", "started_ms",
                 "updated_ms", "finished_ms", "result", "error", "resumed")
        op = cls(**{k: doc[k] for k in names if k in doc})
        if op.state not in STATES:
            raise ValueError(f"operation {op.id}: unknown state {op.state!r}")
        return op


class Progress:
    """An operation's handle on its own progress, given to its coroutine."""

    def __init__(self, op: Operation, changed: Callable[[], None]):
        self._op = op
        self._changed = changed

    @property
    def operation_id(self) -> str:
        return self._op.id

    @property
    def params(self) -> dict[str, Any]:
        return self._op.params

    @property
    def done(self) -> int:
        return self._op.done

    def update(self, *, done: int | None = None, total: int | None = None, phase: str | None = None,
               unit: str | None = None) -> None:
        """Set any of: units done, units in all, the phase (a word: settling, moving...), the unit."""
        op = self._op
        if total is not None:
            op.total = max(0, total)
        if done is not None:
            op.done = max(0, done)
        if phase is not None:
            op.phase = phase
        if unit is not None:
            op.unit = unit
        self._changed()

    def advance(self, units: int = 1) -> None:
        """`units` more done."""
        self._op.done += units
        self._changed()


OperationRun = Callable[[Progress], Awaitable[dict[str, Any] | None]]
Resumer = Callable[[dict[str, Any]], OperationRun]


class Operations:
    """A node's long operations (see the module docstring)."""

    def __init__(self, node_id: str, data_dir: str | None, clock: Clock, *,
                 finished_kept_max_count: int = FINISHED_KEPT_MAX_COUNT):
        self.node_id = node_id
        self.path = os.path.join(data_dir, OPERATIONS_FILE) if data_dir else None
        self.clock = clock
        self.finished_kept_max_count = finished_kept_max_count
        self._ops: dict[str, Operation] = {}  # by id, in start order
        self._tasks: dict[str, asyncio.Task] = {}
        self._finished_events: dict[str, asyncio.Event] = {}
        self._resumers: dict[str, Resumer] = {}
        self._next_seq = 1
        self._persisted_ms = 0
        self._closing = False
        self._load()

    # ------------------------------------------------------------------ state file

    def _load(self) -> None:
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path) as f:
                doc = json.load(f)
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {doc.get('version')!r}, this node reads {FORMAT_VERSION}")
            ops = [Operation.from_record(r) for r in doc["operations"]]
            self._next_seq = int(doc["next_seq"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The history of operations is worth less than a node that starts: say so, go on.
            log.warning("cannot read %s (%s): the history of long operations starts empty", self.path, exc)
            return
        self._ops = {op.id: op for op in ops}

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"version": FORMAT_VERSION, "node_id": self.node_id, "next_seq": self._next_seq,
               "operations": [op.record() for op in self._ops.values()]}
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write %s (%s): operations continue, their state may not survive a restart",
                        self.path, exc)
        self._persisted_ms = self.clock.now_ms()

    def _progressed(self, op: Operation) -> None:
        op.updated_ms = self.clock.now_ms()
        if op.updated_ms - self._persisted_ms >= PERSIST_INTERVAL_MS:
            self._save()

    # ------------------------------------------------------------------ starting

    def resume_with(self, kind: str, resumer: Resumer) -> None:
        """Operations of `kind` found running at start resume: `resumer(params)` builds the
        coroutine again (register before `resume_interrupted`)."""
        self._resumers[kind] = resumer

    def resume_interrupted(self) -> list[Operation]:
        """Deal with the operations the last process left running (call once, with the loop
        running): resume the kinds that can, mark the others interrupted. Returns them."""
        left = [op for op in self._ops.values() if op.state == RUNNING]
        for op in left:
            resumer = self._resumers.get(op.kind)
            if resumer is None:
                op.state = INTERRUPTED
                op.finished_ms = op.updated_ms = self.clock.now_ms()
                op.error = (f"the node stopped while this {op.kind} ran ({op.done} of {op.total} {op.unit} "
                            f"done); it does not resume by itself: start it again")
                log.warning("operation %s (%s) was interrupted by a restart", op.id, op.kind)
            else:
                op.resumed += 1
                op.updated_ms = self.clock.now_ms()
                log.info("resuming operation %s (%s) after a restart, %d of %d %s done before",
                         op.id, op.kind, op.done, op.total, op.unit)
                self._launch(op, resumer(op.params))
        if left:
            self._trim()
            self._save()
        return left

    def running(self, kinds: Iterable[str] | None = None) -> list[Operation]:
        wanted = None if kinds is None else set(kinds)
        return [op for op in self._ops.values() if not op.finished and (wanted is None or op.kind in wanted)]

    def check_free(self, kind: str, conflicts: Iterable[str] = ()) -> None:
        """AdminConflictError, naming it, while an operation of `kind` or `conflicts` runs."""
        busy = self.running([kind, *conflicts])
        if busy:
            other = busy[0]
            raise AdminConflictError(
                f"{other.kind} {other.id} is running on {self.node_id} ({other.done} of {other.total} "
                f"{other.unit} done): wait for it (`ringkv admin wait {other.id}`) before starting a {kind}")

    def start(self, kind: str, run: OperationRun, *, params: dict[str, Any] | None = None,
              unit: str = "partitions", conflicts: Iterable[str] = ()) -> Operation:
        """Run `run(progress)` as operation `kind`; the Operation (state running) at once.
        AdminConflictError while one of `kind` or of `conflicts` runs on this node."""
        self.check_free(kind, conflicts)
        now = self.clock.now_ms()
        op = Operation(f"{self.node_id}.{self._next_seq}", kind, self.node_id, dict(params or {}),
                       unit=unit, started_ms=now, updated_ms=now)
        self._next_seq += 1
        self._ops[op.id] = op
        self._launch(op, run)
        self._trim()
        self._save()
        log.info("operation %s (%s) started%s", op.id, kind, f" with {op.params}" if op.params else "")
        return op

    def _launch(self, op: Operation, run: OperationRun) -> None:
        op._run_started_s = time.monotonic()
        op._run_started_done = op.done
        self._finished_events[op.id] = asyncio.Event()
        progress = Progress(op, lambda: self._progressed(op))
        self._tasks[op.id] = asyncio.create_task(self._run(op, run, progress), name=f"ringkv-op-{op.id}")

    async def _run(self, op: Operation, run: OperationRun, progress: Progress) -> None:
        try:
            result = await run(progress)
        except asyncio.CancelledError:
            if self._closing:
                # The node is stopping: the file keeps it running, so the next start resumes
                # it or reports it interrupted.
                self._save()
                raise
            op.state, op.error = FAILED, "cancelled"
        except Exception as exc:  # the operation's own failure: reported, never raised here
            op.state, op.error = FAILED, str(exc) or type(exc).__name__
            op._exception = exc
            if not isinstance(exc, (AdminConflictError, AdminRequestError)):
                log.exception("operation %s (%s) failed", op.id, op.kind)
        else:
            op.state, op.result = DONE, result or {}
            if op.total and op.done < op.total:
                op.done = op.total
        op.finished_ms = op.updated_ms = self.clock.now_ms()
        self._tasks.pop(op.id, None)
        self._trim()
        log.info("operation %s (%s) %s%s", op.id, op.kind, op.state, f": {op.error}" if op.error else "")
        self._save()
        event = self._finished_events.pop(op.id, None)
        if event is not None:
            event.set()

    def _trim(self) -> None:
        finished = [op for op in self._ops.values() if op.finished]
        for op in finished[:max(0, len(finished) - self.finished_kept_max_count)]:
            del self._ops[op.id]

    # ------------------------------------------------------------------ following

    def get(self, op_id: str) -> Operation:
        op = self._ops.get(op_id)
        if op is None:
            raise AdminRequestError(
                f"no operation {op_id!r} on {self.node_id} (it keeps the last {self.finished_kept_max_count} "
                f"finished ones; `ringkv admin operations` lists them)")
        return op

    def list(self, running_only: bool = False) -> list[Operation]:
        """Newest first."""
        ops = reversed(list(self._ops.values()))
        return [op for op in ops if not (running_only and op.finished)]

    async def wait(self, op_id: str, timeout_s: float | None = None) -> Operation:
        """The operation once finished, or as it stands after `timeout_s`."""
        op = self.get(op_id)
        event = self._finished_events.get(op_id)
        if event is not None and not op.finished:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return op

    async def wait_result(self, op_id: str) -> dict[str, Any]:
        """Wait for the operation to finish and answer its result, or raise what it raised
        (for callers that asked for it synchronously: RINGKV.REPAIR without ASYNC)."""
        op = await self.wait(op_id)
        if op.state == DONE:
            return op.result or {}
        if op._exception is not None:
            raise op._exception
        raise AdminConflictError(f"operation {op.id} ({op.kind}) {op.state}: {op.error}")

    async def close(self) -> None:
        """Stop every running operation (the node stops): they stay running in the file."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._save()
