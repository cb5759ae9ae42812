"""What the simulated clients did and saw, and the checks over it (docs/simulator.md).

Every client operation is recorded with its invocation and completion (virtual ms, and a
sequence number that orders events at the same ms) and its result. Two checks:

- `lost_writes`: no write acknowledged at QUORUM is lost. For every acknowledged write, every
  successful read that *started* after the acknowledgement *completed* returns a record whose
  clock covers the write's dot (`versioning/dvv.covers`): the write is a sibling there, or was
  superseded by a write that saw it. A write acknowledged with a stand-in's help (sloppy
  quorum: the stand-in keeps it as a hint, not readable) is only promised to reads marked
  `final`, which run after the hints were delivered: Dynamo's sloppy quorum gives up R + W > N
  while replicas are down, and that is by design, not a loss.
- `divergent`: the replicas of a key hold different records.

Failed and unknown writes promise nothing (they may or may not be stored); failed reads
return nothing to check.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringkv.versioning.dvv import Dot, covers
from ringkv.versioning.record import Record

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ringkv.testing.sim.kv import KvSimulation, ReadResult, WriteResult


@dataclass
class Op:
    """One client operation, from invocation to completion."""

    index: int
    client: int
    kind: str  # "write" or "read"
    key: bytes
    contact: str
    level: str  # "quorum" or "all"
    value: bytes | None
    invoked_ms: float
    invoked_seq: int
    final: bool = False  # a read of the liveness phase, after the hints were delivered
    completed_ms: float | None = None
    completed_seq: int | None = None
    status: str | None = None  # "ok", "failed", "unknown"; None while in flight
    dot: Dot | None = None
    sloppy: bool = False
    coordinator: str = ""
    record: Record | None = None
    error: str = ""

    def describe(self) -> str:
        what = f"{self.kind} #{self.index} of {self.key.decode('latin-1')}"
        if self.kind == "write":
            what += f" = {self.value.decode('latin-1')}" if self.value is not None else ""
            if self.dot is not None:
                what += f" (dot {self.dot.actor.decode()}:{self.dot.counter}"
                what += f", coordinated by {self.coordinator}" if self.coordinator else ""
                what += ", with a stand-in's ack)" if self.sloppy else ")"
        else:
            what += f" at {self.level}"
        done = (
            "in flight"
            if self.completed_ms is None
            else f"completed {self.completed_ms:.1f} ms: {self.status}"
        )
        return (
            f"{what} by client {self.client} via {self.contact}, invoked {self.invoked_ms:.1f} "
            f"ms, {done}" + (f" ({self.error})" if self.error else "")
        )


class History:
    """The operations of one run, in invocation order."""

    __slots__ = ("_seq", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._seq = itertools.count()

    def invoke(self, client: int, kind: str, key: bytes, contact: str, now_ms: float, *,
               value: bytes | None = None, level: str = "quorum", final: bool = False) -> Op:
        op = Op(len(self.ops), client, kind, key, contact, level, value, now_ms, next(self._seq),
                final=final)
        self.ops.append(op)
        return op

    def complete(self, op: Op, result: WriteResult | ReadResult, now_ms: float) -> None:
        if op.completed_ms is not None:
            raise AssertionError(f"completed twice: {op.describe()}")
        op.completed_ms = now_ms
        op.completed_seq = next(self._seq)
        op.status = result.status
        op.error = result.error
        if op.kind == "write":
            op.dot = result.dot
            op.sloppy = result.sloppy
            op.coordinator = result.coordinator
        else:
            op.record = result.record

    def in_flight(self) -> list[Op]:
        return [op for op in self.ops if op.completed_ms is None]

    def count(self, kind: str, status: str | None = None) -> int:
        return sum(1 for op in self.ops if op.kind == kind and (status is None or op.status == status))


def lost_writes(history: History, limit: int = 5, *, sloppy_promised: bool = False) -> list[str]:
    """Acknowledged writes that a later successful read did not see (at most `limit`
    reports), each naming the write and the read. `sloppy_promised` holds the writes
    acknowledged through stand-ins to every later read too, which sloppy quorum does not
    promise (the check then fails: that is what it is for)."""
    by_key: dict[bytes, tuple[list[Op], list[Op]]] = {}
    for op in history.ops:
        if op.status != "ok":
            continue
        writes, reads = by_key.setdefault(op.key, ([], []))
        (writes if op.kind == "write" else reads).append(op)
    out: list[str] = []
    for writes, reads in by_key.values():
        for read in reads:
            clock = None if read.record is None else read.record.clock
            for write in writes:
                if write.completed_seq >= read.invoked_seq:
                    continue
                if write.sloppy and not (read.final or sloppy_promised):
                    continue
                if clock is None or not covers(clock, write.dot):
                    seen = "no record" if clock is None else f"clock {_clock(clock)}"
                    out.append(f"lost write: {write.describe()}\n  not seen by {read.describe()}, "
                               f"which returned {seen}")
                    if len(out) >= limit:
                        return out
    return out


def divergent(sim: KvSimulation, keys: Iterable[bytes]) -> dict[bytes, dict[str, Record | None]]:
    """Keys whose replicas (the key's preference list) do not all hold the same record, with
    what each holds."""
    out = {}
    for key in keys:
        pref, _ = sim.placement(key)
        held = {node: sim.stores[node].records.get(key) for node in pref}
        first = held[pref[0]]
        if any(r != first for r in held.values()):
            out[key] = held
    return out


def describe_divergence(key: bytes, held: dict[str, Record | None]) -> str:
    parts = [f"{node}: {'no record' if r is None else _clock(r.clock)}" for node, r in held.items()]
    return f"{key.decode('latin-1')} -> " + "; ".join(parts)


def _clock(clock: dict[bytes, int]) -> str:
    return "{" + ", ".join(f"{a.decode()}:{c}" for a, c in sorted(clock.items())) + "}"
