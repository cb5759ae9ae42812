"""Load generation: client processes, each an event loop running concurrent tasks, closed loop.

    with ClientPool(processes=3, clients=48) as pool:
        pool.connect(system.driver_spec())
        result = pool.run(Phase(workload="a", record_count=10_000, operations=20_000, ...))

Why processes: one Python process issuing requests saturates its core long before a server on
loopback does, and a saturated client measures itself. `clients` tasks in all are spread over
the processes; each process has its own connections. Processes are started once (spawn) and
given one phase at a time over a pipe; a phase starts in every process at once: each prepares,
says "ready", and waits for "go".

Each task runs the YCSB loop: draw an operation, send it, wait for the reply, record the
latency (microseconds, HdrHistogram, 3 significant digits), repeat, with no think time and no
target rate (YCSB's default; latencies are service times as a closed-loop client sees them).
A phase ends when its operations are done or, with a duration cap, when the cap passes.

Every process reports its CPU time and wall time for the phase: CPU close to wall means that
process used a whole core, and its figures may measure the client rather than the server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ringkv.bench.ycsb.drivers import DriverSpec
from ringkv.bench.ycsb.workloads import (
    INSERT,
    OPERATIONS,
    READ,
    SCAN,
    UPDATE,
    WORKLOADS,
    InsertSequence,
    OperationChooser,
)

HISTOGRAM_MAX_US = 60_000_000  # latencies above a minute are recorded as a minute
HISTOGRAM_DIGITS = 3
VALUE_POOL_BYTES = 1 << 16
MAX_ERROR_SAMPLES = 5
CONNECT_TIMEOUT_S = 60.0
PHASE_GRACE_S = 120.0  # how long past its cap (or its expected end) a phase may take to report
LOAD = "load"


@dataclass(frozen=True, slots=True)
class Phase:
    """What every client process runs next. `workload` is "a".."f", or LOAD (insert the records
    numbered 0..record_count-1). `operations` is the total over all processes."""

    workload: str
    record_count: int
    operations: int
    value_size: int = 100
    fields: int = 1
    duration_s: float | None = None
    seed: int = 1
    expected_new_keys: int = 0


@dataclass
class WorkerResult:
    """One process's share of a phase (histograms encoded, to cross the pipe)."""

    index: int
    histograms: dict[str, bytes]
    errors: dict[str, int]
    misses: dict[str, int]
    error_samples: list[str]
    operations: int
    started: float  # time.monotonic(), comparable across processes on one machine
    ended: float
    cpu_s: float
    inserted: int  # acknowledged inserts with no gap (the records it added)


@dataclass
class PhaseResult:
    phase: Phase
    workers: list[WorkerResult] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return max(w.ended for w in self.workers) - min(w.started for w in self.workers)

    @property
    def operations(self) -> int:
        return sum(w.operations for w in self.workers)

    def histograms(self) -> dict[str, Any]:
        """Per operation type, the processes' histograms merged."""
        from hdrh.histogram import HdrHistogram

        merged: dict[str, Any] = {}
        for w in self.workers:
            for op, encoded in w.histograms.items():
                h = merged.get(op)
                if h is None:
                    h = merged[op] = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
                h.decode_and_add(encoded)
        return {op: merged[op] for op in OPERATIONS if op in merged}

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers:
            for op, n in w.errors.items():
                out[op] = out.get(op, 0) + n
        return out

    def misses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers:
            for op, n in w.misses.items():
                out[op] = out.get(op, 0) + n
        return out

    def inserted_records(self, processes: int) -> int:
        """Records added with no gap below them: every process added at least min() of its own."""
        return processes * min(w.inserted for w in self.workers)


# ---------------------------------------------------------------------- inside a client process


class _Values:
    """Record values without a per-operation random draw of every byte: slices of one random
    printable pool at random offsets (YCSB's values are random printable bytes too)."""

    def __init__(self, size: int, rng: random.Random):
        self.size = size
        self.rng = rng
        pool_size = VALUE_POOL_BYTES + size
        self.pool = bytes(rng.randrange(33, 127) for _ in range(pool_size))

    def next(self) -> bytes:
        o = self.rng.randrange(VALUE_POOL_BYTES)
        return self.pool[o : o + self.size]


class _Recorder:
    """Latency histograms, error and miss counts of one process for one phase."""

    def __init__(self):
        from hdrh.histogram import HdrHistogram

        self.hist = {op: HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS) for op in OPERATIONS}
        self.errors = dict.fromkeys(OPERATIONS, 0)
        self.misses = dict.fromkeys(OPERATIONS, 0)
        self.samples: list[str] = []

    def record(self, op: str, start_ns: int) -> None:
        us = (time.perf_counter_ns() - start_ns) // 1000
        self.hist[op].record_value(min(max(us, 1), HISTOGRAM_MAX_US))

    def error(self, op: str, exc: BaseException) -> None:
        self.errors[op] += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"{op}: {type(exc).__name__}: {exc}"[:300])


class _Worker:
    def __init__(self, index: int, processes: int, tasks: int, acked: Any):
        self.index = index
        self.processes = processes
        self.tasks = tasks
        self.acked = acked
        self.driver = None
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def connect(self, spec: DriverSpec) -> None:
        from ringkv.bench.ycsb.drivers import make_driver

        async def open_and_check():
            self.driver = make_driver(spec, self.tasks)
            # One request per address before anything is timed: connections made, and a
            # system that is not answering fails here rather than in the first phase.
            for t in range(min(self.tasks, len(spec.addresses))):
                await self.driver.session(t).read(b"ycsb-connect-check")

        self.loop.run_until_complete(asyncio.wait_for(open_and_check(), CONNECT_TIMEOUT_S))

    def close(self) -> None:
        if self.driver is not None:
            self.loop.run_until_complete(self.driver.close())
            self.driver = None

    def prepare(self, phase: Phase, share: int):
        # Its own stream per workload and process, the same for the same seed (str seeds hash
        # deterministically, unlike hash()).
        rng = random.Random(f"{phase.seed}/{phase.workload}/{self.index}")
        values = _Values(phase.value_size * phase.fields, rng)
        rec = _Recorder()
        if phase.workload == LOAD:
            keynums = iter(range(self.index, phase.record_count, self.processes))
            inserts = None
            chooser = None
            share = len(range(self.index, phase.record_count, self.processes))
        else:
            keynums = None
            inserts = InsertSequence(phase.record_count, self.index, self.processes, self.acked)
            chooser = OperationChooser(WORKLOADS[phase.workload], phase.record_count, inserts, rng,
                                       phase.expected_new_keys)
        return rng, values, rec, keynums, inserts, chooser, share

    def run(self, phase: Phase, prepared) -> WorkerResult:
        _rng, values, rec, keynums, inserts, chooser, share = prepared
        from ringkv.bench.ycsb.generators import key_name

        driver = self.driver
        remaining = share
        done = 0
        loop = self.loop
        go_deadline: float | None = None  # set when the phase starts, with a duration cap

        async def load_task(t: int) -> None:
            nonlocal done
            session = driver.session(t)
            for keynum in keynums:
                if go_deadline is not None and loop.time() >= go_deadline:
                    return
                start = time.perf_counter_ns()
                try:
                    await session.insert(key_name(keynum), values.next())
                except Exception as exc:
                    rec.error(INSERT, exc)
                    continue
                rec.record(INSERT, start)
                done += 1

        async def transaction_task(t: int) -> None:
            nonlocal remaining, done
            session = driver.session(t)
            while remaining > 0:
                if go_deadline is not None and loop.time() >= go_deadline:
                    return
                remaining -= 1
                op, keynum, length = chooser.next()
                key = key_name(keynum)
                start = time.perf_counter_ns()
                try:
                    if op == READ:
                        if not await session.read(key):
                            rec.misses[READ] += 1
                    elif op == UPDATE:
                        await session.update(key, values.next())
                    elif op == INSERT:
                        await session.insert(key, values.next())
                        inserts.acknowledge(keynum)
                    elif op == SCAN:
                        if not await session.scan(key, length):
                            rec.misses[SCAN] += 1
                    else:  # read-modify-write: each part measured too, as YCSB does
                        if not await session.read(key):
                            rec.misses[READ] += 1
                        rec.record(READ, start)
                        part = time.perf_counter_ns()
                        await session.update(key, values.next())
                        rec.record(UPDATE, part)
                except Exception as exc:
                    rec.error(op, exc)
                    continue
                rec.record(op, start)
                done += 1

        task = load_task if phase.workload == LOAD else transaction_task

        async def main() -> tuple[float, float]:
            nonlocal go_deadline
            if phase.duration_s is not None:
                go_deadline = loop.time() + phase.duration_s
            started = time.monotonic()
            await asyncio.gather(*(task(t) for t in range(self.tasks)))
            return started, time.monotonic()

        cpu0 = time.process_time()
        started, ended = loop.run_until_complete(main())
        cpu = time.process_time() - cpu0
        return WorkerResult(
            index=self.index,
            histograms={op: h.encode() for op, h in rec.hist.items() if h.get_total_count()},
            errors={op: n for op, n in rec.errors.items() if n},
            misses={op: n for op, n in rec.misses.items() if n},
            error_samples=rec.samples,
            operations=done,
            started=started,
            ended=ended,
            cpu_s=cpu,
            inserted=inserts.acknowledged if inserts is not None else done,
        )


def _worker_main(index: int, processes: int, tasks: int, conn: Connection, acked: Any) -> None:
    """A client process: obeys ("connect", spec), ("phase", Phase, share) then ("go",),
    ("close",) and ("exit",); answers ("ok", payload) or ("error", traceback)."""
    worker = _Worker(index, processes, tasks, acked)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg[0] == "connect":
                worker.connect(msg[1])
                conn.send(("ok", None))
            elif msg[0] == "phase":
                phase, share = msg[1], msg[2]
                prepared = worker.prepare(phase, share)
                conn.send(("ready", None))
                go = conn.recv()
                if go[0] != "go":
                    raise RuntimeError(f"expected go, got {go!r}")
                conn.send(("ok", worker.run(phase, prepared)))
            elif msg[0] == "close":
                worker.close()
                conn.send(("ok", None))
            elif msg[0] == "exit":
                worker.close()
                return
            else:
                raise ValueError(f"unknown message {msg[0]!r}")
        except Exception:
            conn.send(("error", traceback.format_exc()))


# ---------------------------------------------------------------------- the parent's side


class ClientPoolError(RuntimeError):
    """A load-generator process did not answer, exited or failed; the message says which and how."""


class ClientPool:
    """`processes` client processes running `clients` concurrent tasks in all."""

    def __init__(self, processes: int, clients: int):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if clients < processes:
            raise ValueError(f"clients ({clients}) must be at least processes ({processes}): "
                             "every process runs one task or more")
        self.processes = processes
        self.clients = clients
        self.tasks = [clients // processes + (1 if i < clients % processes else 0)
                      for i in range(processes)]
        ctx = multiprocessing.get_context("spawn")  # no inherited sockets, loops or threads
        self.acked = ctx.RawArray("q", processes)
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(i, processes, self.tasks[i], child, self.acked),
                            name=f"ycsb-client-{i}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def _recv(self, i: int, timeout_s: float) -> tuple[str, Any]:
        conn = self.conns[i]
        if not conn.poll(timeout_s):
            raise ClientPoolError(f"client process {i} did not answer within {timeout_s:.0f} s")
        try:
            kind, payload = conn.recv()
        except EOFError:
            raise ClientPoolError(f"client process {i} exited with {self.procs[i].exitcode}") from None
        if kind == "error":
            raise ClientPoolError(f"client process {i} failed:\n{payload}")
        return kind, payload

    def _send(self, i: int, msg: tuple) -> None:
        try:
            self.conns[i].send(msg)
        except OSError:
            self.procs[i].join(1)
            raise ClientPoolError(f"client process {i} is gone (exit code {self.procs[i].exitcode}); "
                                  "its error is on stderr above") from None

    def _all(self, msg: tuple, timeout_s: float) -> list[Any]:
        for i in range(self.processes):
            self._send(i, msg)
        return [self._recv(i, timeout_s)[1] for i in range(self.processes)]

    def connect(self, spec: DriverSpec) -> None:
        self._all(("connect", spec), CONNECT_TIMEOUT_S + 30)

    def disconnect(self) -> None:
        self._all(("close",), 60)

    def run(self, phase: Phase, timeout_s: float) -> PhaseResult:
        """Run a phase in every process at once. `timeout_s` bounds the wait for results."""
        shares = [phase.operations // self.processes + (1 if i < phase.operations % self.processes else 0)
                  for i in range(self.processes)]
        for i, share in enumerate(shares):
            self._send(i, ("phase", phase, share))
        for i in range(self.processes):
            self._recv(i, 60)  # ready
        for i in range(self.processes):
            self._send(i, ("go",))
        if phase.duration_s is not None:
            timeout_s = min(timeout_s, phase.duration_s + PHASE_GRACE_S)
        deadline = time.monotonic() + timeout_s
        result = PhaseResult(phase)
        for i in range(self.processes):
            _, w = self._recv(i, max(deadline - time.monotonic(), 1.0))
            result.workers.append(w)
        return result

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("exit",))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
