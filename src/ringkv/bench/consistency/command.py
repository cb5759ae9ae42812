"""`ringkv bench consistency`: run the consistency benchmark and write its report.

Only click and the standard library are imported here; the benchmark's modules (and redis-py,
aiohttp, hdrhistogram) load when the command runs, so `ringkv --help` stays fast.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

ALL_SYSTEMS = "ringkv,etcd"


@click.command("consistency")
@click.option("--systems", default=ALL_SYSTEMS, show_default=True,
              help="Comma-separated: ringkv (always) and etcd. Leaving etcd out skips the CAS target.")
@click.option("--operations", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Operations per phase (one test on one system, over all clients).")
@click.option("--duration-s", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Stop a phase after this many seconds even if operations remain (0: no cap).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Rounds of every test on every system; the report quotes medians.")
@click.option("--processes", default=3, show_default=True, type=click.IntRange(1, 64),
              help="Client processes generating the load.")
@click.option("--clients", default=48, show_default=True, type=click.IntRange(min=1),
              help="Concurrent tasks in all (closed loop), spread over the client processes.")
@click.option("--keys", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Keys SET and Put choose from (uniformly).")
@click.option("--hot-keys", default=4, show_default=True, type=click.IntRange(min=1),
              help="Keys the contended CAS test puts every task on.")
@click.option("--value-size", default=64, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Bytes per value written.")
@click.option("--probe-operations", default=1_000, show_default=True, type=click.IntRange(min=0),
              help="Operations per test with one client and no queueing, after the repeats (0: none).")
@click.option("--profile-dir", default=None,
              help="Also run one INCR phase under py-spy on the ringkv nodes; keep the profiles here.")
@click.option("--ringkv-client", type=click.Choice(["redis-py", "token-aware"]), default="redis-py", show_default=True,
              help="What ringkv's tasks talk through: redis-py, one client per node (a consensus command "
                   "sent to a node that is not the key's proposer is forwarded there), or ringkv's own "
                   "token-aware asyncio client (each one sent to the key's proposer).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the SET/Put key choices.")
@click.option("--note", default="",
              help="A line printed at the top of the report (e.g. that it is a smoke run).")
@click.option("--out", default="docs/benchmarks/consistency.md", show_default=True,
              help="The markdown report; '-' prints it and writes no file.")
def consistency(systems: str, operations: int, duration_s: float, repeats: int, processes: int,
                clients: int, keys: int, hot_keys: int, value_size: int, probe_operations: int,
                profile_dir: str | None, ringkv_client: str, seed: int, note: str, out: str) -> None:
    """Measure ringkv's consensus path (INCR, CAS, SERIAL GET) against etcd's compare-and-swap,
    both started here on loopback, and write a report with the issue's two targets.

    A benchmark, not a test: the figures depend on the machine and on what else runs on it.
    """
    from ringkv.bench import BenchDependencyError, require

    names = tuple(dict.fromkeys(s.strip().lower() for s in systems.split(",") if s.strip()))
    unknown = [n for n in names if n not in ALL_SYSTEMS.split(",")]
    if unknown or "ringkv" not in names:
        raise click.BadParameter(f"expected ringkv and optionally etcd, got {systems!r}",
                                 param_hint="--systems")
    if clients < processes:
        raise click.BadParameter(f"--clients ({clients}) must be at least --processes ({processes})")
    try:
        require("hdrhistogram", *(("aiohttp",) if "etcd" in names else ()))
    except BenchDependencyError as exc:
        raise click.ClickException(str(exc)) from None
    from ringkv.bench.consistency.harness import BenchConfig, run_benchmark
    from ringkv.bench.consistency.profile import py_spy
    from ringkv.bench.consistency.report import render
    from ringkv.bench.ycsb.systems import EtcdCluster

    if "etcd" in names and EtcdCluster.unavailable_reason():
        raise click.ClickException(f"{EtcdCluster.unavailable_reason()}; run ./scripts/system-deps "
                                   "or pass --systems ringkv")
    if profile_dir and py_spy() is None:
        raise click.ClickException("--profile-dir needs py-spy: pip install 'ringkv[bench]'")
    config = BenchConfig(systems=names, operations=operations, duration_s=duration_s or None,
                         repeats=repeats, processes=processes, clients=clients, keys=keys,
                         hot_keys=hot_keys, value_size=value_size,
                         probe_operations=probe_operations, profile_dir=profile_dir, seed=seed,
                         ringkv_client=ringkv_client)
    command = (f"ringkv bench consistency --systems {','.join(names)} --operations {operations} "
               f"--duration-s {duration_s:g} --repeats {repeats} --processes {processes} "
               f"--clients {clients} --keys {keys} --hot-keys {hot_keys} --value-size {value_size} "
               f"--probe-operations {probe_operations} --seed {seed}"
               + (f" --profile-dir {shlex.quote(profile_dir)}" if profile_dir else "")
               + (f" --ringkv-client {ringkv_client}" if ringkv_client != "redis-py" else ""))

    def log(line: str) -> None:
        click.echo(line, err=True)

    report = render(run_benchmark(config, command, log), note)
    if out == "-":
        sys.stdout.write(report)
    else:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        log(f"wrote {out}")
