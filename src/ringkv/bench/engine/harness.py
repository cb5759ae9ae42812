"""The parent of a storage-engine benchmark run: a worker process per system and repeat, in an
order rotated between repeats, and their figures gathered in a `BenchRun` for the report.

    run = run_benchmark(BenchConfig(spec, repeats, systems, dir, out, memtable_bytes, command),
                        console)

A worker is `python -m ringkv.bench.engine --worker JOB` (`worker_main`): it reads its job
(system, workload spec, directories) from the JSON file JOB, runs `measure.run_sequence` and
writes the result as JSON where the job says. Each system runs in a process of its own, so
its peak RSS is its own and no system's caches warm another's; a worker that fails fails the
run, with the end of its stderr.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ringkv.bench.engine.adapters import ADAPTERS, ANCHOR
from ringkv.bench.engine.machine import filesystem_of, src_root
from ringkv.bench.engine.measure import run_sequence, status_kib
from ringkv.bench.engine.strategies import STRATEGY_ADAPTERS, TtlSpec, run_ttl_sequence
from ringkv.bench.engine.workload import Workload, WorkloadSpec

TTL_PREFIX = "ttl-"  # the TTL workload's runs are named ttl-<strategy>


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    spec: WorkloadSpec
    repeats: int
    systems: tuple[str, ...]
    dir: Path | None
    out: Path | None
    memtable_bytes: int | None
    command: str
    # Compaction strategies (strategies.py): the systems that run the main workload with each,
    # and the TTL workload's spec and strategies (None: not run).
    strategy_systems: tuple[str, ...] = ()
    ttl: TtlSpec | None = None
    ttl_strategies: tuple[str, ...] = ()


@dataclasses.dataclass
class BenchRun:
    config: BenchConfig
    # results[system][repeat]; every system ran once per repeat, so index r pairs runs that
    # were minutes apart on the same machine.
    results: dict[str, list[dict[str, Any]]]
    skipped: dict[str, str]
    started: datetime.datetime
    finished: datetime.datetime
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    fs_type: str

    @property
    def systems(self) -> list[str]:
        return [s for s in self.config.systems if s in self.results]

    @property
    def strategy_systems(self) -> list[str]:
        return [s for s in self.config.strategy_systems if s in self.results]

    @property
    def ttl_runs(self) -> list[str]:
        return [TTL_PREFIX + s for s in self.config.ttl_strategies if TTL_PREFIX + s in self.results]

    def ops(self, system: str, phase: str) -> list[float]:
        return [r["phases"][phase]["ops_per_s"] for r in self.results[system]]

    def ratios(self, system: str, phase: str) -> list[float] | None:
        """Per-repeat ratios to the anchor measured in the same repeat."""
        if ANCHOR not in self.results:
            return None
        return [
            mine["phases"][phase]["ops_per_s"] / anchor["phases"][phase]["ops_per_s"]
            for mine, anchor in zip(self.results[system], self.results[ANCHOR])
        ]


def worker_main(spec_path: Path) -> None:
    """Entry point of a child: run one system once and write its figures as JSON."""
    job = json.loads(spec_path.read_text())
    if "ttl" in job:
        result = run_ttl_sequence(job["system"][len(TTL_PREFIX):], TtlSpec(**job["ttl"]), Path(job["root"]))
        result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        Path(job["result_path"]).write_text(json.dumps(result))
        return
    spec = WorkloadSpec(**job["workload"])
    workload = Workload(spec)
    # The workload lives for the whole run: take it out of the cyclic GC's view so full
    # collections during timed loops do not walk a million list slots (same for every system).
    gc.collect()
    gc.freeze()
    baseline_rss_kib = status_kib("self", "VmRSS")
    adapter = {**ADAPTERS, **STRATEGY_ADAPTERS}[job["system"]](job["memtable_bytes"], spec.live_user_bytes)
    result = run_sequence(adapter, workload, Path(job["root"]))
    result["baseline_rss_kib"] = baseline_rss_kib
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(job["result_path"]).write_text(json.dumps(result))


def _run_worker(system: str, config: BenchConfig, repeat: int, root: Path) -> dict[str, Any]:
    run_dir = root / f"{system}-r{repeat + 1}"
    run_dir.mkdir(parents=True)
    job_path = root / f"{system}-r{repeat + 1}.job.json"
    result_path = root / f"{system}-r{repeat + 1}.result.json"
    job: dict[str, Any] = {
        "system": system,
        "workload": dataclasses.asdict(config.spec),
        "memtable_bytes": config.memtable_bytes,
        "root": str(run_dir),
        "result_path": str(result_path),
    }
    if system.startswith(TTL_PREFIX):
        job["ttl"] = dataclasses.asdict(config.ttl)
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    adapter = {**ADAPTERS, **STRATEGY_ADAPTERS}.get(system)
    env.update(adapter.environment if adapter is not None else {})
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(src_root()), env.get("PYTHONPATH", "")) if p
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ringkv.bench.engine", "--worker", str(job_path)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise click.ClickException(
                f"{system} (repeat {repeat + 1}) failed with exit status {proc.returncode}:\n{tail}"
            )
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        job_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)


def run_benchmark(config: BenchConfig, console: Console) -> BenchRun:
    skipped: dict[str, str] = {}
    systems = []
    adapters = {**ADAPTERS, **STRATEGY_ADAPTERS}
    for system in (*config.systems, *config.strategy_systems):
        reason = adapters[system].unavailable_reason()
        if reason is None:
            systems.append(system)
        else:
            skipped[system] = reason
            console.print(f"[yellow]skipping {system}: {reason}[/yellow]")
    if config.ttl is not None and ADAPTERS["ringkv"].unavailable_reason() is None:
        systems += [TTL_PREFIX + s for s in config.ttl_strategies]
    if not systems:
        raise click.ClickException("no system to measure: none of them imports")

    if config.dir is None:
        root = Path(tempfile.mkdtemp(prefix="ringkv-bench-"))
    else:
        config.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="ringkv-bench-", dir=config.dir))
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    try:
        for repeat in range(config.repeats):
            # Rotate the order so no system always runs first (cold machine) or last.
            shift = repeat % len(systems)
            for system in systems[shift:] + systems[:shift]:
                t0 = time.perf_counter()
                console.print(f"repeat {repeat + 1}/{config.repeats}: {system} ...", end=" ")
                results[system].append(_run_worker(system, config, repeat, root))
                console.print(f"done in {time.perf_counter() - t0:.1f} s")
        fs_type = filesystem_of(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BenchRun(
        config,
        results,
        skipped,
        started,
        datetime.datetime.now(datetime.UTC),
        load_before,
        os.getloadavg(),
        fs_type,
    )
