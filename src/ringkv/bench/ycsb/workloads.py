"""The six YCSB core workloads and the operation stream one client process draws from them.

    chooser = OperationChooser(WORKLOADS["a"], record_count=10_000, inserts=seq, rng=rng)
    op, keynum, scan_length = chooser.next()

The workloads are YCSB's `workloads/workload[a-f]` files (CoreWorkload properties):

| workload | mix | request distribution |
|---|---|---|
| A update heavy | 50 % read, 50 % update | zipfian |
| B read mostly | 95 % read, 5 % update | zipfian |
| C read only | 100 % read | zipfian |
| D read latest | 95 % read, 5 % insert | latest |
| E short ranges | 95 % scan, 5 % insert | zipfian start key, scan length uniform 1..100 |
| F read-modify-write | 50 % read, 50 % read-modify-write | zipfian |

Inserts take new record numbers from an `InsertSequence`; reads, updates and scans choose
among the records whose inserts were acknowledged, as YCSB's `nextKeynum` does (a draw past
the last acknowledged record is drawn again). Several client processes insert at once: client
process p of P takes numbers base + p, base + p + P, ..., and publishes how many of its own
inserts form an acknowledged prefix in a shared array, so every process knows a bound below
which every record exists. Pure apart from that array, which is any mutable sequence of ints.
"""

from __future__ import annotations

import random
from collections.abc import MutableSequence
from dataclasses import dataclass

from ringkv.bench.ycsb.generators import (
    ScrambledZipfianGenerator,
    SkewedLatestGenerator,
    UniformGenerator,
)

READ = "READ"
UPDATE = "UPDATE"
INSERT = "INSERT"
SCAN = "SCAN"
RMW = "READ-MODIFY-WRITE"
OPERATIONS = (READ, UPDATE, INSERT, SCAN, RMW)

# YCSB's recommended order: the read-only and update workloads first on the loaded records,
# then D and E, which insert. Here E runs on the records D left rather than on a reload.
RUN_ORDER = ("a", "b", "c", "f", "d", "e")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str  # "a".."f"
    title: str
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    rmw: float = 0.0
    distribution: str = "zipfian"  # zipfian | latest | uniform
    max_scan_length: int = 100  # scan lengths are uniform in 1..max_scan_length

    def __post_init__(self) -> None:
        total = self.read + self.update + self.insert + self.scan + self.rmw
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"workload {self.name}: proportions add up to {total}, not 1")
        if self.distribution not in ("zipfian", "latest", "uniform"):
            raise ValueError(f"workload {self.name}: unknown distribution {self.distribution!r}")

    @property
    def label(self) -> str:
        return f"{self.name.upper()} ({self.title})"

    @property
    def mix(self) -> str:
        parts = [(self.read, "read"), (self.update, "update"), (self.insert, "insert"),
                 (self.scan, "scan"), (self.rmw, "read-modify-write")]
        return ", ".join(f"{p:.0%} {name}" for p, name in parts if p)

    def operations(self) -> tuple[str, ...]:
        """The operation types this workload measures (a read-modify-write also measures the
        read and the update it is made of, as YCSB does)."""
        ops = []
        if self.read or self.rmw:
            ops.append(READ)
        if self.update or self.rmw:
            ops.append(UPDATE)
        if self.insert:
            ops.append(INSERT)
        if self.scan:
            ops.append(SCAN)
        if self.rmw:
            ops.append(RMW)
        return tuple(ops)


WORKLOADS: dict[str, Workload] = {
    "a": Workload("a", "update heavy", read=0.5, update=0.5),
    "b": Workload("b", "read mostly", read=0.95, update=0.05),
    "c": Workload("c", "read only", read=1.0),
    "d": Workload("d", "read latest", read=0.95, insert=0.05, distribution="latest"),
    "e": Workload("e", "short ranges", scan=0.95, insert=0.05),
    "f": Workload("f", "read-modify-write", read=0.5, rmw=0.5),
}


class InsertSequence:
    """Record numbers for one client process's inserts, and what is known to be acknowledged.

    Process `index` of `processes` inserts base + index + i * processes for i = 0, 1, ...
    `acked[index]` is how many of them, from i = 0 on with no gap, were acknowledged; every
    record below `last_acknowledged() + 1` therefore exists (YCSB's AcknowledgedCounter, spread
    over processes). Inserts that finish out of order wait in `_done` until the gap closes.
    """

    __slots__ = ("_done", "_next", "acked", "base", "index", "processes")

    def __init__(self, base: int, index: int, processes: int, acked: MutableSequence[int]):
        if not 0 <= index < processes:
            raise ValueError(f"process index {index} out of 0..{processes - 1}")
        self.base = base
        self.index = index
        self.processes = processes
        self.acked = acked
        self.acked[index] = 0
        self._next = 0
        self._done: set[int] = set()

    def next(self) -> int:
        i = self._next
        self._next += 1
        return self.base + self.index + i * self.processes

    def acknowledge(self, keynum: int) -> None:
        i = (keynum - self.base - self.index) // self.processes
        done = self._done
        done.add(i)
        n = self.acked[self.index]
        while n in done:
            done.discard(n)
            n += 1
        self.acked[self.index] = n

    def last_acknowledged(self) -> int:
        """The highest record number below which (inclusive) every record exists."""
        return self.base + self.processes * min(self.acked[: self.processes]) - 1

    @property
    def acknowledged(self) -> int:
        return self.acked[self.index]


class OperationChooser:
    """Draws (operation, record number, scan length) for one client process, as YCSB's
    CoreWorkload.doTransaction does. Single-threaded: one per process, shared by its tasks."""

    __slots__ = ("_inserts", "_keys", "_last_ack", "_rng", "_scan_lengths", "_thresholds", "workload")

    def __init__(self, workload: Workload, record_count: int, inserts: InsertSequence,
                 rng: random.Random, expected_new_keys: int = 0):
        if record_count < 1:
            raise ValueError("a workload needs at least one loaded record")
        self.workload = workload
        self._rng = rng
        self._inserts = inserts
        self._last_ack = inserts.last_acknowledged
        w = workload
        cumulative = 0.0
        thresholds = []
        for p, op in ((w.read, READ), (w.update, UPDATE), (w.insert, INSERT), (w.scan, SCAN), (w.rmw, RMW)):
            if p:
                cumulative += p
                thresholds.append((cumulative, op))
        self._thresholds = tuple(thresholds)
        if w.distribution == "latest":
            self._keys = SkewedLatestGenerator(self._last_ack, rng)
        elif w.distribution == "zipfian":
            # YCSB sizes the zipfian over the records expected by the end (inserts with a fudge
            # factor of 2) and redraws past the last acknowledged one.
            self._keys = ScrambledZipfianGenerator(0, record_count + expected_new_keys, rng)
        else:
            self._keys = UniformGenerator(0, record_count - 1, rng)
        self._scan_lengths = UniformGenerator(1, w.max_scan_length, rng)

    def next_keynum(self) -> int:
        last = self._last_ack()
        keys = self._keys
        while True:
            k = keys.next()
            if 0 <= k <= last:
                return k

    def next(self) -> tuple[str, int, int]:
        u = self._rng.random()
        op = self._thresholds[-1][1]
        for threshold, name in self._thresholds:
            if u < threshold:
                op = name
                break
        if op == INSERT:
            return op, self._inserts.next(), 0
        if op == SCAN:
            return op, self.next_keynum(), self._scan_lengths.next()
        return op, self.next_keynum(), 0


def expected_new_keys(workload: Workload, operations: int) -> int:
    """YCSB's `expectednewkeys`: operations x insert proportion x 2 (its fudge factor)."""
    return int(operations * workload.insert * 2.0)
