"""`ringkv bench ycsb`: run YCSB's core workloads and write the report.

Only click and the standard library are imported here; the benchmark's modules (and redis-py,
aiohttp, hdrhistogram, matplotlib) load when the command runs, so `ringkv --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

ALL_WORKLOADS = "a,b,c,d,e,f"
ALL_SYSTEMS = "ringkv-cluster,ringkv-node,redis,etcd"
# Measured only when named: the cluster with token-aware clients and on six nodes
# (docs/benchmarks/ycsb.md, "Token-aware clients"), at fixed levels, in sessions
# (docs/benchmarks/ycsb.md, "Sessions"), and in two datacenters (docs/benchmarks/multidc.md).
EXTRA_SYSTEMS = ("ringkv-cluster-token,ringkv-six,ringkv-six-token,"
                 "ringkv-one,ringkv-quorum,ringkv-session,ringkv-session-raw,"
                 "ringkv-dc-local,ringkv-dc-each,ringkv-dc-each-rw")


def _names(value: str, known: str, what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in known.split(",")]
    if unknown or not names:
        raise click.BadParameter(f"unknown {what} {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {known}")
    return names


@click.command("ycsb")
@click.option("--workloads", default=ALL_WORKLOADS, show_default=True,
              help="Comma-separated YCSB core workloads; they run in YCSB's order A, B, C, F, D, E.")
@click.option("--systems", default=ALL_SYSTEMS, show_default=True,
              help="Comma-separated systems to measure, each started and stopped by the harness; "
                   f"also {EXTRA_SYSTEMS} (the cluster at fixed levels, in sessions, in two "
                   "datacenters).")
@click.option("--records", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Records loaded before the workloads run.")
@click.option("--operations", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Operations per workload (over all clients).")
@click.option("--value-size", default=100, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Bytes per field.")
@click.option("--fields", default=1, show_default=True, type=click.IntRange(1, 100),
              help="Fields per record (YCSB's default is 10), stored as one value of fields x value-size bytes.")
@click.option("--clients", default=48, show_default=True, type=click.IntRange(min=1),
              help="Concurrent clients in all (closed loop), spread over the client processes.")
@click.option("--processes", default=3, show_default=True, type=click.IntRange(1, 64),
              help="Client processes generating the load.")
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop a workload after this many seconds even if operations remain.")
@click.option("--consistency", default="quorum", show_default=True,
              type=click.Choice(["one", "quorum", "all"], case_sensitive=False),
              help="R and W of the ringkv cluster (a single node has one replica).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the operation streams.")
@click.option("--out", default="docs/benchmarks/ycsb.md", show_default=True,
              help="The markdown report; '-' prints it and writes no file.")
@click.option("--plots-dir", default="docs/benchmarks/ycsb", show_default=True,
              help="Where the PNG plots go ('-': none).")
@click.option("--json", "json_out", default=None,
              help="Also write the figures as JSON to this file (unrounded, for comparing runs).")
def ycsb(workloads: str, systems: str, records: int, operations: int, value_size: int, fields: int,
         clients: int, processes: int, duration_s: float | None, consistency: str, seed: int,
         out: str, plots_dir: str, json_out: str | None) -> None:
    """Run YCSB's core workloads A-F against ringkv (3-node cluster and one node), Redis and
    etcd, started here on loopback, and write a report with tables and plots.

    A benchmark, not a test: the figures depend on the machine and on what else runs on it.
    """
    from ringkv.bench import BenchDependencyError, require

    wl = _names(workloads, ALL_WORKLOADS, "workload")
    sy = _names(systems, f"{ALL_SYSTEMS},{EXTRA_SYSTEMS}", "system")
    try:
        require("hdrhistogram", *(("aiohttp",) if "etcd" in sy else ()),
                *(() if plots_dir == "-" else ("matplotlib",)))
    except BenchDependencyError as exc:
        raise click.ClickException(str(exc)) from None
    from ringkv.bench.ycsb.harness import BenchConfig, run_benchmark
    from ringkv.bench.ycsb.report import figures, plot, render

    if clients < processes:
        raise click.BadParameter(f"--clients ({clients}) must be at least --processes ({processes})")
    config = BenchConfig(workloads=wl, systems=sy, records=records, operations=operations,
                         value_size=value_size, fields=fields, clients=clients, processes=processes,
                         duration_s=duration_s, consistency=consistency.lower(), seed=seed)
    command = (f"ringkv bench ycsb --workloads {','.join(wl)} --systems {','.join(sy)} "
               f"--records {records} --operations {operations} --value-size {value_size} "
               f"--fields {fields} --clients {clients} --processes {processes} "
               + (f"--duration-s {duration_s:g} " if duration_s else "")
               + f"--consistency {consistency.lower()} --seed {seed}")

    def log(line: str) -> None:
        click.echo(line, err=True)

    run = run_benchmark(config, command, log)
    plots_rel = None
    if plots_dir != "-":
        for path in plot(run, plots_dir):
            log(f"wrote {path}")
        base = os.path.dirname(os.path.abspath(out)) if out != "-" else os.getcwd()
        plots_rel = os.path.relpath(os.path.abspath(plots_dir), base)
    if json_out:
        import json

        os.makedirs(os.path.dirname(json_out) or ".", exist_ok=True)
        with open(json_out, "w") as f:
            json.dump(figures(run), f, indent=1)
        log(f"wrote {json_out}")
    report = render(run, plots_rel)
    if out == "-":
        sys.stdout.write(report)
    else:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        log(f"wrote {out}")
