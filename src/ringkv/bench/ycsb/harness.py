"""One benchmark run: for each system, start it, load the records, run the workloads in YCSB's
order, measure, stop it. The report (report.py) is written from the `BenchRun` this returns.

    run = run_benchmark(BenchConfig(records=10_000, operations=20_000), log=print)

Systems run one after the other, each alone on the machine with the same client processes.
Workloads run on one loaded data set in the order A, B, C, F, D, E (YCSB's recommended order,
except that E follows D on the records D added instead of on a reload); the inserts of D and E
grow the record count the next workload starts from.

Beside latencies, every phase measures CPU: each client process's CPU and wall time, the
servers' processes' CPU (process tree, /proc), and how busy the machine's cores were
(/proc/stat), so the report can say who used the cores: clients, servers or neither.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringkv.bench.ycsb.loadgen import LOAD, ClientPool, ClientPoolError, Phase, PhaseResult
from ringkv.bench.ycsb.systems import SYSTEMS
from ringkv.bench.ycsb.workloads import RUN_ORDER, WORKLOADS, expected_new_keys

DEFAULT_SYSTEMS = ("ringkv-cluster", "ringkv-node", "redis", "etcd")
CLIENT_SATURATION = 0.85  # a client process busy this share of its wall time is near a core's limit
MACHINE_SATURATION = 0.95
CLIENT_SHARE = 0.5  # on a saturated machine, clients using this share of the busy CPU limit the run

# Kinds of caveat. The first three are summed up per system in the report; the others are
# listed one by one.
CLIENT_CORE = "client-core"  # a client process used nearly a whole core
CLIENT_SHARE_KIND = "client-share"  # machine saturated, and the clients used most of it
OTHER_LOAD = "other-load"  # machine saturated by processes outside the benchmark
FAILED = "failed"
MISSED = "missed"
PHASE_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class BenchConfig:
    workloads: tuple[str, ...] = RUN_ORDER
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    records: int = 10_000
    operations: int = 20_000
    value_size: int = 100
    fields: int = 1
    clients: int = 48
    processes: int = 3
    duration_s: float | None = None
    consistency: str = "quorum"
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
        if self.records < 1 or self.operations < 1:
            raise ValueError("records and operations must be >= 1")
        if self.value_size < 1 or self.fields < 1:
            raise ValueError("value_size and fields must be >= 1")
        if self.consistency not in ("one", "quorum", "all"):
            raise ValueError(f"consistency must be one, quorum or all, got {self.consistency!r}")

    def ordered_workloads(self) -> list[str]:
        return [w for w in RUN_ORDER if w in self.workloads]


@dataclass
class Measurement:
    """One system running one phase (the load, or a workload)."""

    system: str
    workload: str  # LOAD or "a".."f"
    result: PhaseResult
    server_cpu_s: float
    machine_busy: float  # share of all cores' time not idle during the phase, 0..1
    cores: int
    histograms: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.histograms = self.result.histograms()

    @property
    def elapsed_s(self) -> float:
        return self.result.elapsed_s

    @property
    def throughput(self) -> float:
        return self.result.operations / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def client_loads(self) -> list[float]:
        """Each client process's CPU time over its wall time (1.0: a whole core)."""
        return [w.cpu_s / (w.ended - w.started) if w.ended > w.started else 0.0
                for w in self.result.workers]

    @property
    def client_cpu_s(self) -> float:
        return sum(w.cpu_s for w in self.result.workers)

    @property
    def other_cores(self) -> float:
        """Busy cores not used by the clients or the servers (the harness, other programs)."""
        if self.elapsed_s <= 0:
            return 0.0
        used = (self.client_cpu_s + self.server_cpu_s) / self.elapsed_s
        return max(self.machine_busy * self.cores - used, 0.0)


@dataclass(frozen=True)
class Caveat:
    kind: str
    system: str
    workload: str  # LOAD or "a".."f"
    detail: str  # a figure for the summed-up kinds, a sentence for the others

    def line(self) -> str:
        phase = "load" if self.workload == LOAD else f"workload {self.workload.upper()}"
        if self.kind in (FAILED, MISSED):
            return f"{self.system}, {phase}: {self.detail}"
        return f"{self.system}, {phase}: {self.kind} {self.detail}"


@dataclass
class SystemInfo:
    name: str
    version: str
    settings: str


@dataclass
class BenchRun:
    config: BenchConfig
    command: str
    started: float
    machine: dict[str, str]
    systems: dict[str, SystemInfo] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    caveats: list[Caveat] = field(default_factory=list)
    ended: float = 0.0

    def get(self, system: str, workload: str) -> Measurement | None:
        for m in self.measurements:
            if m.system == system and m.workload == workload:
                return m
        return None


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies over all cores since boot, from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def machine_info() -> dict[str, str]:
    from ringkv.bench.server import _cpu_model

    def version_of(package: str) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(package)
        except PackageNotFoundError:
            return "?"

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "clients": (f"redis-py {version_of('redis')}, hiredis {version_of('hiredis')}, "
                    f"aiohttp {version_of('aiohttp')}, uvloop {version_of('uvloop')}, "
                    f"hdrhistogram {version_of('hdrhistogram')}"),
        "load": ", ".join(f"{x:.2f}" for x in load),
        "date": time.strftime("%Y-%m-%d"),
    }


def _measure(pool: ClientPool, system: Any, phase: Phase) -> tuple[PhaseResult, float, float]:
    cpu0 = system.server_cpu_s()
    m0 = _cpu_times()
    result = pool.run(phase, PHASE_TIMEOUT_S)
    m1 = _cpu_times()
    server_cpu = system.server_cpu_s() - cpu0
    busy = 0.0
    if m0 and m1 and m1[1] > m0[1]:
        busy = (m1[0] - m0[0]) / (m1[1] - m0[1])
    return result, server_cpu, busy


def _check(run: BenchRun, m: Measurement) -> list[Caveat]:
    """What the reader must be warned of next to this phase's figures."""
    found = []
    loads = m.client_loads()
    if loads and max(loads) >= CLIENT_SATURATION:
        found.append(Caveat(CLIENT_CORE, m.system, m.workload, f"{max(loads):.0%}"))
    busy_cores = m.machine_busy * m.cores
    client_cores = m.client_cpu_s / m.elapsed_s if m.elapsed_s > 0 else 0.0
    if m.machine_busy >= MACHINE_SATURATION and client_cores >= CLIENT_SHARE * busy_cores:
        found.append(Caveat(CLIENT_SHARE_KIND, m.system, m.workload,
                            f"{client_cores / busy_cores:.0%}"))
    if m.machine_busy >= MACHINE_SATURATION and m.other_cores >= 0.25 * m.cores:
        found.append(Caveat(OTHER_LOAD, m.system, m.workload, f"{m.other_cores:.2f}"))
    errors = m.result.errors()
    if errors:
        samples = sorted({s for w in m.result.workers for s in w.error_samples})[:3]
        found.append(Caveat(FAILED, m.system, m.workload,
                            f"failed operations {errors} (e.g. {'; '.join(samples)})"))
    misses = m.result.misses()
    if misses.get("READ"):
        found.append(Caveat(MISSED, m.system, m.workload,
                            f"{misses['READ']} reads found no record, though every key read had "
                            "been inserted and acknowledged"))
    run.caveats.extend(found)
    return found


def run_benchmark(config: BenchConfig, command: str = "", log: Callable[[str], None] = print,
                  tmp_root: str | None = None) -> BenchRun:
    run = BenchRun(config, command, time.time(), machine_info())
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-ycsb-", dir=tmp_root) as tmp, \
            ClientPool(config.processes, config.clients) as pool:
        for name in config.systems:
            cls = SYSTEMS[name]
            reason = cls.unavailable_reason()
            if reason:
                run.skipped[name] = reason
                log(f"{name}: skipped ({reason})")
                continue
            log(f"{name}: starting")
            with cls(Path(tmp), config.consistency) as system:
                run.systems[name] = SystemInfo(name, system.version(), system.settings())
                pool.connect(system.driver_spec())
                try:
                    records = config.records
                    for w in (LOAD, *config.ordered_workloads()):
                        if w == LOAD:  # never capped: the workloads need every record
                            phase = Phase(LOAD, records, records, config.value_size,
                                          config.fields, None, config.seed)
                        else:
                            phase = Phase(w, records, config.operations, config.value_size,
                                          config.fields, config.duration_s, config.seed,
                                          expected_new_keys(WORKLOADS[w], config.operations))
                        result, server_cpu, busy = _measure(pool, system, phase)
                        m = Measurement(name, phase.workload, result, server_cpu, busy, cores)
                        run.measurements.append(m)
                        for caveat in _check(run, m):
                            log(f"WARNING {caveat.line()}")
                        if phase.workload != LOAD:
                            records += result.inserted_records(config.processes)
                        log(f"{name} {phase.workload}: {m.throughput:,.0f} ops/s over "
                            f"{m.elapsed_s:.1f} s, clients at "
                            f"{', '.join(f'{x:.0%}' for x in m.client_loads())} of a core, "
                            f"server {server_cpu / m.elapsed_s:.2f} cores, machine {busy:.0%} busy")
                except BaseException:
                    with contextlib.suppress(ClientPoolError):  # keep the first error
                        pool.disconnect()
                    raise
                pool.disconnect()
    run.ended = time.time()
    if hasattr(os, "getloadavg"):
        run.machine["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return run

