"""Load generation for the consistency benchmark: YCSB's client pool (bench/ycsb/loadgen.py:
spawned processes, a phase sent to all, "ready", then "go" to all at once, the same timeouts
and errors) running this benchmark's loops.

    with ClientPool(processes=3, clients=48) as pool:
        pool.connect({"ringkv": spec, "etcd": spec})      # both stay connected: runs alternate
        result = pool.run(Phase("ringkv", CAS, 20_000, prefix=b"r1"), timeout_s=3600)

Every task is a closed loop (next request when the reply arrives, no think time) over keys
chosen by its test; its latencies go to one HdrHistogram (microseconds, 3 digits) per process:

| test | keys | one timed step | not timed (before "go") |
|---|---|---|---|
| write | uniform over `keys` keys | SET / Put | |
| incr | one key per task | INCR, checked: each answer is the last plus one | |
| cas | one key per task | CAS with the version the last CAS answered | read the version once |
| read | one key per task (the CAS loop's key) | linearizable GET | write the key if it has no value |
| contended | task i on hot key i mod `hot_keys` | CAS with the version the last CAS answered | read the version once |
| ping | (probe only) | PING | |

A step's outcome is `applied`, `refused` (a CAS whose version had changed: it answers the
current version, which the next step uses) or `gave-up` (ringkv answered that other proposers
kept winning: nothing applied); every one is timed. An exception is a failure: counted, its
message sampled, not timed; a CAS loop reads the version again after one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ringkv.bench.consistency.sessions import ContendedError, Sessions
from ringkv.bench.ycsb import loadgen as ycsb_loadgen
from ringkv.bench.ycsb.drivers import DriverSpec
from ringkv.bench.ycsb.loadgen import (
    CONNECT_TIMEOUT_S,
    HISTOGRAM_DIGITS,
    HISTOGRAM_MAX_US,
    MAX_ERROR_SAMPLES,
)

WRITE, INCR, CAS, READ, CONTENDED, PING = "write", "incr", "cas", "read", "contended", "ping"
APPLIED, REFUSED, GAVE_UP = "applied", "refused", "gave-up"
OUTCOMES = (APPLIED, REFUSED, GAVE_UP)


@dataclass(frozen=True, slots=True)
class Phase:
    """One test on one system. `operations` is the total over all processes (ClientPool.run
    splits it); `prefix` makes the per-task keys of one repeat fresh."""

    system: str  # "ringkv" | "etcd"
    test: str
    operations: int
    duration_s: float | None = None
    prefix: bytes = b"c"
    keys: int = 100_000
    hot_keys: int = 4
    value_size: int = 64
    seed: int = 1


@dataclass
class WorkerResult:
    """One process's share of a phase (the histogram encoded, to cross the pipe)."""

    index: int
    histogram: bytes | None
    outcomes: dict[str, int]
    errors: dict[str, int]  # {test: failed operations}, as ycsb's PhaseResult.errors() sums them
    error_samples: list[str]
    operations: int  # steps that got an answer (any outcome)
    started: float  # time.monotonic(), comparable across processes on one machine
    ended: float
    cpu_s: float


class PhaseResult(ycsb_loadgen.PhaseResult):
    """ycsb's PhaseResult (elapsed time, operations, errors) over this benchmark's workers."""

    def histograms(self) -> dict[str, Any]:
        from hdrh.histogram import HdrHistogram

        merged = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
        for w in self.workers:
            if w.histogram is not None:
                merged.decode_and_add(w.histogram)
        return {self.phase.test: merged}

    def outcomes(self) -> dict[str, int]:
        return {o: sum(w.outcomes.get(o, 0) for w in self.workers) for o in OUTCOMES}

    def misses(self) -> dict[str, int]:
        return {}

    def error_samples(self) -> list[str]:
        return sorted({s for w in self.workers for s in w.error_samples})


# ---------------------------------------------------------------------- inside a client process


def _value(size: int, n: int) -> bytes:
    return b"%0*d" % (size, n)  # distinct per write, no random draw per operation


class _Worker:
    def __init__(self, index: int, first_task: int, tasks: int):
        self.index = index
        self.first_task = first_task  # global number of this process's task 0
        self.tasks = tasks
        self.sessions: dict[str, Sessions] = {}
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def connect(self, specs: dict[str, DriverSpec]) -> None:
        async def open_and_check() -> None:
            for name, spec in specs.items():
                self.sessions[name] = Sessions(spec.kind, spec.addresses, self.tasks, spec.options)
                await self.sessions[name].check()

        self.loop.run_until_complete(asyncio.wait_for(open_and_check(), CONNECT_TIMEOUT_S))

    def close(self) -> None:
        for s in self.sessions.values():
            self.loop.run_until_complete(s.close())
        self.sessions.clear()

    def _key(self, phase: Phase, gid: int) -> bytes:
        if phase.test == CONTENDED:
            return b"%s:hot:%d" % (phase.prefix, gid % phase.hot_keys)
        kind = b"incr" if phase.test == INCR else b"cas"  # the read loop reads the CAS keys
        return b"%s:%s:%d" % (phase.prefix, kind, gid)

    def prepare(self, phase: Phase) -> list[Any]:
        """Each task's starting state, read before the phase is timed: a CAS loop's version;
        for a read loop, its key written if it has no value."""
        sessions = self.sessions[phase.system]

        async def start(t: int) -> Any:
            gid = self.first_task + t
            s = sessions[gid]
            key = self._key(phase, gid)
            if phase.test in (CAS, CONTENDED):
                return await s.version(key)
            if phase.test == READ and not await s.read(key):
                await s.cas(key, await s.version(key), _value(phase.value_size, 0))
            return None

        return self.loop.run_until_complete(asyncio.gather(*(start(t) for t in range(self.tasks))))

    def run(self, phase: Phase, share: int, state: list[Any]) -> WorkerResult:
        from hdrh.histogram import HdrHistogram

        hist = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
        outcomes = dict.fromkeys(OUTCOMES, 0)
        errors = 0
        samples: list[str] = []
        sessions = self.sessions[phase.system]
        rng = random.Random(f"{phase.seed}/{phase.system}/{phase.test}/{phase.prefix!r}/{self.index}")
        loop = self.loop
        remaining = share
        deadline = None if phase.duration_s is None else loop.time() + phase.duration_s
        test = phase.test
        size = phase.value_size

        def failed(exc: BaseException) -> None:
            nonlocal errors
            errors += 1
            if len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"{phase.system} {test}: {type(exc).__name__}: {exc}"[:300])

        async def task(t: int) -> None:
            nonlocal remaining
            gid = self.first_task + t
            s = sessions[gid]
            key = self._key(phase, gid)
            version = state[t]
            last = None  # the last INCR answer
            n = 0
            while remaining > 0 and (deadline is None or loop.time() < deadline):
                remaining -= 1
                n += 1
                outcome = APPLIED
                start = time.perf_counter_ns()
                try:
                    if test == WRITE:
                        await s.write(b"w:%d" % rng.randrange(phase.keys), _value(size, n))
                    elif test == INCR:
                        value = await s.incr(key)
                        expected, last = (None if last is None else last + 1), value
                        if expected is not None and value != expected:
                            raise AssertionError(f"INCR answered {value} where {expected} was due: "
                                                 "an increment was lost or applied twice")
                    elif test in (CAS, CONTENDED):
                        applied, version = await s.cas(key, version, _value(size, n))
                        if not applied:
                            outcome = REFUSED
                    elif test == READ:
                        if not await s.read(key):
                            raise LookupError(f"a linearizable read of {key!r} found no value, "
                                              "though it was written before the phase")
                    elif test == PING:
                        await s.ping()
                    else:
                        raise ValueError(f"unknown test {test!r}")
                except ContendedError:
                    outcome = GAVE_UP
                except Exception as exc:
                    failed(exc)
                    last = None  # an INCR that failed may have been applied: a new baseline
                    if test in (CAS, CONTENDED):
                        try:
                            version = await s.version(key)
                        except Exception as again:
                            failed(again)
                    continue
                us = (time.perf_counter_ns() - start) // 1000
                hist.record_value(min(max(us, 1), HISTOGRAM_MAX_US))
                outcomes[outcome] += 1

        async def main() -> tuple[float, float]:
            started = time.monotonic()
            await asyncio.gather(*(task(t) for t in range(self.tasks)))
            return started, time.monotonic()

        cpu0 = time.process_time()
        started, ended = loop.run_until_complete(main())
        cpu = time.process_time() - cpu0
        return WorkerResult(
            index=self.index,
            histogram=hist.encode() if hist.get_total_count() else None,
            outcomes=outcomes,
            errors={test: errors} if errors else {},
            error_samples=samples,
            operations=sum(outcomes.values()),
            started=started,
            ended=ended,
            cpu_s=cpu,
        )


def _worker_main(index: int, first_task: int, tasks: int, conn: Connection) -> None:
    """A client process, speaking ycsb's pool protocol: ("connect", specs), ("phase", Phase,
    share) then ("go",), ("close",), ("exit",); answers ("ok", payload) or ("error", traceback)."""
    worker = _Worker(index, first_task, tasks)
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
                state = worker.prepare(phase)
                conn.send(("ready", None))
                go = conn.recv()
                if go[0] != "go":
                    raise RuntimeError(f"expected go, got {go!r}")
                conn.send(("ok", worker.run(phase, share, state)))
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


class ClientPool(ycsb_loadgen.ClientPool):
    """ycsb's ClientPool with this benchmark's worker in its processes. Its constructor is not
    called because it starts YCSB's worker; this one sets the attributes its methods use
    (processes, clients, tasks, conns, procs)."""

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
        self.conns: list[Connection] = []
        self.procs = []
        first = 0
        for i in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(i, first, self.tasks[i], child),
                            name=f"consistency-client-{i}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
            first += self.tasks[i]

    def run(self, phase: Phase, timeout_s: float) -> PhaseResult:
        result = super().run(phase, timeout_s)
        return PhaseResult(result.phase, result.workers)
