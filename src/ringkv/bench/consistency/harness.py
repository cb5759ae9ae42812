"""One run of the consistency benchmark: both systems up at once, the tests alternating
between them, repeated; with the counters, CPU figures, unloaded probe and profile the report
quotes. report.py writes the markdown from the `BenchRun` this returns.

    run = run_benchmark(BenchConfig(operations=20_000, repeats=3), command, log=print)

Order. Each repeat runs the tests in the order write, incr, cas, read, contended (read reads
the keys cas wrote; each repeat has fresh per-task keys); within a test, the systems take
turns, and who goes first rotates from one repeat to the next, so neither always runs on a
warmer (or more tired) machine. Both systems stay up for the whole run: the one not measured
idles (heartbeats, gossip), which the CPU table counts as "other".

Measured per phase: the clients' latencies and outcomes (loadgen.py), each client process's
CPU, the system's server CPU (process tree) and the machine's busy share (ycsb's harness
does the same), and for ringkv the consensus counters of `INFO ringkv` on every node, before
and after, as deltas summed over the nodes.

After the repeats: with `probe_operations`, one client (one process, one task) runs each test
again, so latencies are round trips without queueing; with `profile_dir`, one more INCR phase
with the full clients runs under py-spy (profile.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringkv.bench.consistency.loadgen import (
    CAS,
    CONTENDED,
    INCR,
    PING,
    READ,
    WRITE,
    ClientPool,
    Phase,
)
from ringkv.bench.ycsb.harness import Measurement, _measure, machine_info
from ringkv.bench.ycsb.loadgen import ClientPoolError
from ringkv.bench.ycsb.systems import EtcdCluster, RingkvCluster, RingkvClusterToken, System
from ringkv.hotpath import PURE_ENV

SYSTEMS = ("ringkv", "etcd")
TESTS = (WRITE, INCR, CAS, READ, CONTENDED)
PROBE_TESTS = (PING, WRITE, INCR, CAS, READ)
# What each test is called on each system (None: the system has no such operation).
OPERATION = {
    "ringkv": {PING: "PING", WRITE: "SET", INCR: "INCR", CAS: "CAS", READ: "SERIAL GET",
               CONTENDED: "CAS (contended)"},
    "etcd": {PING: None, WRITE: "Put", INCR: None, CAS: "CAS (Txn)", READ: "GET (linearizable)",
             CONTENDED: "CAS (Txn, contended)"},
}
# INFO ringkv fields kept per phase (the node's cluster stats; summed over the nodes).
COUNTERS = ("paxos_commands", "paxos_reads", "paxos_leased", "paxos_chosen", "paxos_retries",
            "paxos_stale_leases", "forwarded", "writes", "reads")
PHASE_TIMEOUT_S = 3600.0
PROFILED_TEST = INCR


RINGKV_CLIENTS = ("redis-py", "token-aware")


@dataclass(frozen=True)
class BenchConfig:
    systems: tuple[str, ...] = SYSTEMS
    operations: int = 20_000
    duration_s: float | None = 30.0
    repeats: int = 3
    processes: int = 3
    clients: int = 48
    keys: int = 100_000
    hot_keys: int = 4
    value_size: int = 64
    probe_operations: int = 1_000
    profile_dir: str | None = None
    seed: int = 1
    ringkv_client: str = "redis-py"  # or "token-aware": ringkv's own client (sessions.py)

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or "ringkv" not in self.systems:
            raise ValueError(f"systems must include ringkv and be among {', '.join(SYSTEMS)}; "
                             f"got {', '.join(self.systems)}")
        for name in ("operations", "repeats", "processes", "clients", "keys", "hot_keys", "value_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clients < self.processes:
            raise ValueError(f"clients ({self.clients}) must be at least processes ({self.processes})")
        if self.ringkv_client not in RINGKV_CLIENTS:
            raise ValueError(f"ringkv_client must be one of {', '.join(RINGKV_CLIENTS)}, got {self.ringkv_client!r}")
        if self.probe_operations < 0:
            raise ValueError(f"probe_operations must be >= 0, got {self.probe_operations}")

    def phase(self, system: str, test: str, repeat: int, operations: int | None = None,
              duration_s: float | None = None) -> Phase:
        return Phase(system, test, self.operations if operations is None else operations,
                     self.duration_s if operations is None else duration_s,
                     b"r%d" % repeat, self.keys, self.hot_keys, self.value_size, self.seed)


@dataclass
class PhaseMeasurement(Measurement):
    """ycsb's Measurement (throughput, client and server CPU) of one test on one system, with
    the repeat it belongs to and, for ringkv, its consensus counters."""

    repeat: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def test(self) -> str:
        return self.workload

    @property
    def histogram(self) -> Any:
        return self.histograms[self.test]


@dataclass
class BenchRun:
    config: BenchConfig
    command: str
    started: float
    machine: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    measurements: list[PhaseMeasurement] = field(default_factory=list)
    probes: list[PhaseMeasurement] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    ended: float = 0.0

    def of(self, system: str, test: str) -> list[PhaseMeasurement]:
        """The measurements of one test on one system, in repeat order."""
        return [m for m in self.measurements if m.system == system and m.test == test]

    def probe(self, system: str, test: str) -> PhaseMeasurement | None:
        return next((m for m in self.probes if m.system == system and m.test == test), None)


class ClusterCounters:
    """`INFO ringkv` of every node of a RingkvCluster, read from this (the parent) process."""

    def __init__(self, addresses: tuple[tuple[str, int], ...]):
        import redis

        self.clients = [redis.Redis(host=h, port=p, protocol=2, socket_timeout=10) for h, p in addresses]

    def read(self) -> dict[str, int]:
        total = dict.fromkeys(COUNTERS, 0)
        for c in self.clients:
            info = c.info("ringkv")
            for name in COUNTERS:
                total[name] += int(info.get(f"cluster_{name}", 0))
        return total

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _start(name: str, root: Path, ringkv_client: str = "redis-py") -> System:
    ringkv = RingkvClusterToken if ringkv_client == "token-aware" else RingkvCluster
    system: System = ringkv(root) if name == "ringkv" else EtcdCluster(root)
    reason = system.unavailable_reason()
    if reason:
        raise RuntimeError(f"{name} cannot run here: {reason}")
    return system


def _profiled(config: BenchConfig, tmp: Path, log: Callable[[str], None]) -> list[str]:
    """One more INCR phase, with the same clients, on a cluster of its own whose nodes run the
    Python source (RINGKV_PURE=1): py-spy reads Python frames and sees nothing inside the
    compiled modules (docs/compiled.md), where the measured nodes spend most of their time."""
    from ringkv.bench.consistency.profile import Recording, summarise

    system = RingkvClusterToken(tmp / "profiled") if config.ringkv_client == "token-aware" \
        else RingkvCluster(tmp / "profiled")
    system.node_env = {PURE_ENV: "1"}
    with system, ClientPool(config.processes, config.clients) as pool:
        pool.connect({"ringkv": system.driver_spec()})
        pids = {f"n{i + 1}": pid for i, pid in enumerate(system.pids())}
        phase = config.phase("ringkv", PROFILED_TEST, config.repeats + 2)
        with Recording(config.profile_dir, PROFILED_TEST, pids) as rec:
            result, _, _ = _measure(pool, system, phase)
        log(f"profiled ringkv {OPERATION['ringkv'][PROFILED_TEST]} on Python-source nodes: "
            f"{result.operations / max(result.elapsed_s, 1e-9):,.0f} ops/s")
        pool.disconnect()
    return summarise(rec.paths, OPERATION["ringkv"][PROFILED_TEST])


def _rotated(systems: tuple[str, ...], repeat: int) -> list[str]:
    k = repeat % len(systems)
    return list(systems[k:] + systems[:k])


def _describe(m: PhaseMeasurement) -> str:
    outcomes = m.result.outcomes()
    h = m.histogram
    extra = f", refused {outcomes['refused']:,}" if outcomes["refused"] else ""
    extra += f", gave up {outcomes['gave-up']:,}" if outcomes["gave-up"] else ""
    failed = sum(m.result.errors().values())
    extra += f", FAILED {failed:,} (e.g. {m.result.error_samples()[:1]})" if failed else ""
    return (f"{m.throughput:,.0f} ops/s, p50 {h.get_value_at_percentile(50) / 1000:.2f} ms, "
            f"p99 {h.get_value_at_percentile(99) / 1000:.2f} ms over {m.elapsed_s:.1f} s{extra}; "
            f"clients at {', '.join(f'{x:.0%}' for x in m.client_loads())} of a core, server "
            f"{m.server_cpu_s / max(m.elapsed_s, 1e-9):.2f} cores, machine {m.machine_busy:.0%} busy")


def run_benchmark(config: BenchConfig, command: str = "", log: Callable[[str], None] = print,
                  tmp_root: str | None = None) -> BenchRun:
    run = BenchRun(config, command, time.time(), machine_info())
    cores = os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ringkv-bench-consistency-",
                                                                   dir=tmp_root)))
        systems: dict[str, System] = {}
        for name in config.systems:
            log(f"{name}: starting")
            systems[name] = stack.enter_context(_start(name, tmp, config.ringkv_client))
            run.versions[name] = systems[name].version()
            run.settings[name] = systems[name].settings()
        counters = ClusterCounters(systems["ringkv"].addresses())
        stack.callback(counters.close)
        specs = {name: s.driver_spec() for name, s in systems.items()}

        def measure(pool: ClientPool, phase: Phase, repeat: int) -> PhaseMeasurement:
            system = systems[phase.system]
            before = counters.read() if phase.system == "ringkv" else {}
            result, server_cpu, busy = _measure(pool, system, phase)
            after = counters.read() if phase.system == "ringkv" else {}
            return PhaseMeasurement(phase.system, phase.test, result, server_cpu, busy, cores,
                                    repeat=repeat, counters={k: after[k] - before[k] for k in after})

        pool = stack.enter_context(ClientPool(config.processes, config.clients))
        pool.connect(specs)
        try:
            for repeat in range(config.repeats):
                for test in TESTS:
                    for name in _rotated(config.systems, repeat):
                        if OPERATION[name][test] is None:
                            continue
                        m = measure(pool, config.phase(name, test, repeat), repeat)
                        run.measurements.append(m)
                        log(f"repeat {repeat + 1} {name} {OPERATION[name][test]}: {_describe(m)}")
        except BaseException:
            with contextlib.suppress(ClientPoolError):  # keep the first error
                pool.disconnect()
            raise
        pool.disconnect()

        if config.probe_operations:
            with ClientPool(1, 1) as probe:
                probe.connect(specs)
                for name in config.systems:
                    for test in PROBE_TESTS:
                        if OPERATION[name][test] is None:
                            continue
                        # Its own keys (repeat number past the run's), one task: no queueing.
                        phase = config.phase(name, test, config.repeats + 1, config.probe_operations)
                        m = measure(probe, phase, config.repeats + 1)
                        run.probes.append(m)
                        log(f"probe {name} {OPERATION[name][test]}: {_describe(m)}")
                probe.disconnect()

        if config.profile_dir:
            run.profile = _profiled(config, tmp, log)
    run.ended = time.time()
    if hasattr(os, "getloadavg"):
        run.machine["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return run
