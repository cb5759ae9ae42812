"""The YCSB report: markdown tables (docs/benchmarks/ycsb.md) and PNG plots (docs/benchmarks/ycsb/).

    paths = plot(run, "docs/benchmarks/ycsb")
    text = render(run, plots_rel="ycsb")

Throughput is operations completed over the phase's wall time (first process's start to last
process's end). Latencies are read from the processes' HdrHistograms merged per operation type;
they are in milliseconds. Ratios are to Redis measured in the same run.
"""

from __future__ import annotations

import os
import time

from ringkv.bench.ycsb.drivers import __doc__ as DRIVERS_DOC
from ringkv.bench.ycsb.harness import (
    CLIENT_CORE,
    CLIENT_SHARE_KIND,
    MACHINE_SATURATION,
    OTHER_LOAD,
    BenchRun,
    Caveat,
    Measurement,
)
from ringkv.bench.ycsb.loadgen import LOAD
from ringkv.bench.ycsb.workloads import WORKLOADS

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
ANCHOR = "redis"


def _phase_label(workload: str) -> str:
    return "load" if workload == LOAD else WORKLOADS[workload].label


def _ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:,.0f}"


def _operations_table() -> list[str]:
    """The per-system table of drivers.py's docstring, so the report and the code agree."""
    lines = DRIVERS_DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| operation"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def _phases(run: BenchRun) -> list[str]:
    return [LOAD, *run.config.ordered_workloads()]


def _systems(run: BenchRun) -> list[str]:
    return [s for s in run.config.systems if s in run.systems]


def throughput_table(run: BenchRun) -> list[str]:
    systems = _systems(run)
    lines = [
        "| phase | " + " | ".join(systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    for w in _phases(run):
        cells = []
        anchor = run.get(ANCHOR, w)
        for s in systems:
            m = run.get(s, w)
            if m is None:
                cells.append("")
                continue
            cell = f"{m.throughput:,.0f}"
            if anchor is not None and s != ANCHOR and anchor.throughput > 0:
                cell += f" ({m.throughput / anchor.throughput:.2f}x)"
            cells.append(cell)
        lines.append(f"| {_phase_label(w)} | " + " | ".join(cells) + " |")
    return lines


def latency_table(run: BenchRun, workload: str) -> list[str]:
    lines = [
        "| system | operation | count | ops/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | failed | not found |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in _systems(run):
        m = run.get(s, workload)
        if m is None:
            continue
        errors = m.result.errors()
        misses = m.result.misses()
        for op, h in m.histograms.items():
            n = h.get_total_count()
            pct = " | ".join(_ms(h.get_value_at_percentile(p)) for p in PERCENTILES)
            lines.append(
                f"| {s} | {op} | {n:,} | {n / m.elapsed_s:,.0f} | {pct} | {_ms(h.get_max_value())} | "
                f"{errors.get(op, 0)} | {misses.get(op, 0)} |")
    return lines


def cpu_table(run: BenchRun) -> list[str]:
    lines = [
        "| system | phase | seconds | ops/s | client processes (share of a core each) | client CPU us/op | server cores | server CPU us/op | other processes (cores) | machine busy |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in run.measurements:
        ops = max(m.result.operations, 1)
        busy = f"{m.machine_busy:.0%}" + (" (saturated)" if m.machine_busy >= MACHINE_SATURATION else "")
        lines.append(
            f"| {m.system} | {_phase_label(m.workload)} | {m.elapsed_s:.1f} | {m.throughput:,.0f} | "
            f"{', '.join(f'{x:.0%}' for x in m.client_loads())} | {m.client_cpu_s / ops * 1e6:,.0f} | "
            f"{m.server_cpu_s / m.elapsed_s:.2f} | {m.server_cpu_s / ops * 1e6:,.0f} | "
            f"{m.other_cores:.2f} | {busy} |")
    return lines


def figures(run: BenchRun) -> dict:
    """The run's figures as plain data (`--json`): what the tables show, unrounded, so that
    several runs can be compared by a script (ratios within a round, medians over rounds)."""
    phases = []
    for m in run.measurements:
        errors, misses = m.result.errors(), m.result.misses()
        operations = {}
        for op, h in m.histograms.items():
            operations[op] = {
                "count": h.get_total_count(),
                **{f"p{p:g}_ms": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES},
                "max_ms": h.get_max_value() / 1000,
                "failed": errors.get(op, 0),
                "not_found": misses.get(op, 0),
            }
        phases.append({
            "system": m.system, "phase": m.workload, "seconds": m.elapsed_s, "ops_per_s": m.throughput,
            "server_cpu_s": m.server_cpu_s, "client_cpu_s": m.client_cpu_s,
            "machine_busy": m.machine_busy, "other_cores": m.other_cores, "operations": operations,
        })
    return {
        "command": run.command, "started": run.started, "ended": run.ended, "machine": run.machine,
        "systems": {s: {"version": i.version, "settings": i.settings} for s, i in run.systems.items()},
        "skipped": run.skipped, "phases": phases, "warnings": [c.line() for c in run.caveats],
    }


def render(run: BenchRun, plots_rel: str | None = None) -> str:
    cfg = run.config
    mi = run.machine
    names = ", ".join(_systems(run)) or "no system"
    lines = [
        "# YCSB core workloads: ringkv, Redis and etcd",
        "",
        f"Measured {mi['date']} by `{run.command or 'ringkv bench ycsb'}` on {mi['cores']} cores "
        f"({mi['cpu']}), Python {mi['python']}; client libraries {mi['clients']}. Load average "
        f"when the run started: {mi['load']}"
        + (f"; when it ended: {mi['load_end']}" if "load_end" in mi else "")
        + f". The run took {run.ended - run.started:,.0f} s.",
        "",
        f"Systems measured: {names}."
        + (" Skipped: " + "; ".join(f"{s} ({why})" for s, why in run.skipped.items()) + "." if run.skipped else ""),
        "",
        "## Setup",
        "",
        f"- {cfg.records:,} records, loaded first (the load phase inserts them in hashed order, "
        f"as YCSB does), then {cfg.operations:,} operations per workload"
        + (f", each workload capped at {cfg.duration_s:g} s" if cfg.duration_s else "")
        + ". Keys are YCSB's: `user` followed by the FNV-64 hash of the record number.",
        f"- Each record is one value of {cfg.value_size * cfg.fields:,} random printable bytes"
        + (f" ({cfg.fields} fields of {cfg.value_size} bytes, stored and rewritten as one value)"
           if cfg.fields > 1 else "")
        + ". An update rewrites the whole record.",
        f"- Load: {cfg.clients} concurrent clients in all, spread over {cfg.processes} client "
        "processes (asyncio, each with its own connections), closed loop with no think time and no "
        "target rate: each client sends its next request when the previous reply arrives, as "
        "YCSB's threads do. Latency is measured per request in the client, into HdrHistograms "
        "(microsecond resolution, 3 significant digits) merged across processes.",
        "- Workloads run in YCSB's order A, B, C, F, D, E on one loaded data set; D and E add "
        "records, and E starts from the records D left (YCSB reloads before E). Zipfian is YCSB's "
        "scrambled zipfian (constant 0.99); D's latest is YCSB's skewed-latest; reads, updates and "
        "scans only pick records whose insert was acknowledged.",
        "- Every system runs alone, started and stopped by the harness, on this machine's loopback; "
        "the servers and the client processes share its cores, so neither side has the machine "
        "to itself (the CPU table below says who used it).",
        "",
        "| workload | mix | request distribution |",
        "|---|---|---|",
    ]
    for w in cfg.ordered_workloads():
        wl = WORKLOADS[w]
        dist = wl.distribution + (", scan length uniform 1..100" if wl.scan else "")
        lines.append(f"| {wl.label} | {wl.mix} | {dist} |")
    lines += ["", "| system | version | settings |", "|---|---|---|"]
    for s in _systems(run):
        info = run.systems[s]
        lines.append(f"| {s} | {info.version} | {info.settings} |")
    lines += [
        "",
        "What each operation is on each system:",
        "",
        *_operations_table(),
        "",
        "**Scans are not alike.** ringkv keeps records in token (hash) order and has no key-range "
        "scan, so workload E on ringkv reads, from the start key's token on, the next n records "
        "in token order (SCAN with a token cursor, then MGET): n records stored next to each "
        "other, as many as a key-range scan returns, but not the n keys that follow the start "
        "key by name. Redis has no ordered keyspace either: there E reads a sorted-set index "
        "(ZRANGEBYLEX) and then the values (MGET), and every insert pays for the index. etcd's "
        "Range is a real key-range scan in one request.",
        "",
        "**Durability is not alike.** etcd fsyncs every write on a majority before it answers; "
        "ringkv fsyncs its WAL every 100 ms (a write is in the OS page cache of W replicas when "
        "acknowledged); Redis only snapshots. Write latencies compare different promises.",
        "",
        "## Throughput (operations per second; ratio to Redis)",
        "",
        *throughput_table(run),
        "",
    ]
    if plots_rel is not None:
        lines += [f"![throughput per system and workload]({plots_rel}/throughput.png)", ""]
    for w in _phases(run):
        title = "Load" if w == LOAD else f"Workload {WORKLOADS[w].label}: {WORKLOADS[w].mix}"
        lines += [f"## {title}", "", *latency_table(run, w), ""]
        if plots_rel is not None and w != LOAD:
            lines += [f"![latency CDF, workload {w.upper()}]({plots_rel}/latency-{w}.png)", ""]
    lines += [
        "## Who used the CPU",
        "",
        "Client processes: CPU time over wall time of each (100 % is a whole core). Server cores: "
        "user + system time of the system's processes (with their children) over the phase's "
        "wall time. Other processes: the machine's busy cores less the clients' and the servers' "
        "(the harness itself, and whatever else runs on the machine). Machine busy: share of all "
        "cores' time not idle. Where the machine is saturated, a phase measures the machine as "
        "much as the system, and a client process cannot reach a whole core even if it is the "
        "limit: compare client CPU per operation with the server's instead.",
        "",
        *cpu_table(run),
        "",
        "## Warnings",
        "",
    ]
    warnings = caveat_lines(run)
    if warnings:
        lines += [f"- {w}" for w in warnings]
    else:
        lines.append("None: no client process reached 85 % of a core, the clients never used "
                     "most of a saturated machine, no operation failed, no read missed a record.")
    return "\n".join(lines) + "\n"


def caveat_lines(run: BenchRun) -> list[str]:
    """The run's caveats, those of a kind that recurs summed up per system."""
    out = []
    grouped: dict[tuple[str, str], list[Caveat]] = {}
    for c in run.caveats:
        if c.kind in (CLIENT_CORE, CLIENT_SHARE_KIND, OTHER_LOAD):
            grouped.setdefault((c.kind, c.system), []).append(c)
        else:
            phase = "load" if c.workload == LOAD else f"workload {c.workload.upper()}"
            out.append(f"**{c.system}, {phase}**: {c.detail}")
    for (kind, system), cs in grouped.items():
        where = ", ".join(f"{'load' if c.workload == LOAD else c.workload.upper()} ({c.detail})" for c in cs)
        if kind == CLIENT_CORE:
            out.append(f"**{system}**: a client process used nearly a whole core (busiest process, "
                       f"share of a core) in {where}: the load generator is near its limit, so "
                       "these throughputs may measure the client rather than the server.")
        elif kind == CLIENT_SHARE_KIND:
            out.append(f"**{system}**: the machine was saturated and the client processes used "
                       f"most of its busy CPU (clients' share) in {where}: the load generator "
                       "competes with the server for the same cores, so throughput is bounded "
                       "by the client's CPU per operation, and the server alone would do more.")
        else:
            out.append(f"**{system}**: the machine was saturated and processes outside this "
                       f"benchmark used cores (cores used by them) in {where}: these figures "
                       "are lower than on an idle machine.")
    return out


# ---------------------------------------------------------------------- plots


def plot(run: BenchRun, plots_dir: str) -> list[str]:
    """throughput.png and latency-<w>.png per workload; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    os.makedirs(plots_dir, exist_ok=True)
    paths = []
    systems = _systems(run)
    phases = _phases(run)
    colors = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(systems)}

    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(len(systems), 1)
    for i, s in enumerate(systems):
        xs, ys = [], []
        for j, w in enumerate(phases):
            m = run.get(s, w)
            if m is not None:
                xs.append(j + (i - (len(systems) - 1) / 2) * width)
                ys.append(m.throughput)
        bars = ax.bar(xs, ys, width, label=s, color=colors[s])
        ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(phases)))
    ax.set_xticklabels(["load" if w == LOAD else w.upper() for w in phases])
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 2.5)  # room for the rotated value labels under the title
    ax.set_ylabel("operations per second (log scale)")
    ax.set_title(f"YCSB throughput, {run.config.records:,} records, {run.config.clients} clients "
                 f"({time.strftime('%Y-%m-%d', time.localtime(run.started))})")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(plots_dir, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    styles = ["-", "--", ":", "-."]
    for w in run.config.ordered_workloads():
        fig, ax = plt.subplots(figsize=(9, 5))
        for s in systems:
            m: Measurement | None = run.get(s, w)
            if m is None:
                continue
            for k, (op, h) in enumerate(m.histograms.items()):
                total = h.get_total_count()
                if not total:
                    continue
                xs, ys = [], []
                for it in h.get_recorded_iterator():
                    xs.append(it.value_iterated_to / 1000)
                    ys.append(it.total_count_to_this_value / total)
                ax.step(xs, ys, where="post", color=colors[s], linestyle=styles[k % len(styles)],
                        label=f"{s} {op}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_ylabel("fraction of operations")
        ax.set_ylim(0, 1.01)
        ax.set_title(f"Latency CDF, workload {WORKLOADS[w].label}")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = os.path.join(plots_dir, f"latency-{w}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
