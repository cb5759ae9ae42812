"""The storage-engine benchmark's report: tables on the console, the markdown page
(docs/benchmarks/engine.md), and the verdict on each of the issue's targets.

    render_console(run, console)
    text = render_markdown(run)

Ops/s are medians over repeats; a ratio is to the anchor (RocksDB) measured in the same
repeat, and the median of those ratios is quoted. Nothing here measures: it reads a `BenchRun`.
"""

from __future__ import annotations

import os
import statistics

from rich.console import Console
from rich.table import Table

from ringkv.bench.engine.adapters import MIB
from ringkv.bench.engine.harness import BenchRun
from ringkv.bench.engine.machine import git_revision, machine_lines
from ringkv.bench.engine.measure import CHECKED_SCANS, PHASES
from ringkv.bench.engine.strategies import TTL_HOUR_MS, TTL_MS, TTL_SERIES, TTL_WINDOW_MS
from ringkv.bench.engine.workload import KEY_BYTES, SAMPLED_KEYS

# The targets for ringkv, as ratios of its ops/s to RocksDB's in the same run.
TARGETS = (("fillrandom", 1.0), ("readrandom", 0.5), ("readmissing", 0.5), ("scan", 0.5))
TARGET_SCAN_COUNT = 100
# A timed loop shorter than this is flagged in the report: timer, cache warm-up and a
# neighbour's burst of work weigh too much in it.
SHORT_PHASE_SECONDS = 1.0


def _ringkv_engine_sa(run: BenchRun) -> str:
    values = [r["engine_stats"].get("space_amplification") for r in run.results["ringkv"]]
    median = _median_or_none(values)
    return "n/a" if median is None else f"{median:.2f}"


def _short_phases(run: BenchRun) -> str:
    """Phases whose timed loop ran under SHORT_PHASE_SECONDS in some repeat, with systems."""
    by_phase: dict[str, list[str]] = {}
    for system in run.systems:
        for phase in PHASES:
            if any(
                r["phases"][phase]["seconds"] < SHORT_PHASE_SECONDS for r in run.results[system]
            ):
                by_phase.setdefault(phase, []).append(system)
    if len(by_phase) == len(PHASES) and all(len(v) == len(run.systems) for v in by_phase.values()):
        return "all of them"
    return "; ".join(
        f"{phase_label(phase, run.config.spec.scan_count)} ({', '.join(systems)})"
        for phase, systems in by_phase.items()
    )


def phase_label(phase: str, scan_count: int) -> str:
    return f"scan-{scan_count}" if phase == "scan" else phase


def _ops_text(value: float) -> str:
    return f"{value:,.0f}"


def _ratio_text(ratios: list[float] | None) -> str:
    return "n/a" if not ratios else f"{statistics.median(ratios):.2f}x"


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f}"


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _amp_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# The targets for the compaction strategies: (what, needed ratio).
STRATEGY_TARGETS = (
    ("tiered writes less than leveled on fillrandom + overwrite (compaction bytes written)", 2.0),
    ("time-window reclaims expired data with less compaction I/O than leveled (TTL workload)", 5.0),
)


def _compaction_written(run: BenchRun, system: str) -> float | None:
    """Median bytes compaction wrote per user byte (fillrandom + overwrite), from engine stats."""
    if system not in run.results:
        return None
    values = []
    for r in run.results[system]:
        st = r["engine_stats"]
        if "compaction_bytes_written" in st:
            values.append(st["compaction_bytes_written"] / r["disk"]["user_bytes_written"])
    return statistics.median(values) if values else None


def _ttl_io(run: BenchRun, strategy: str) -> float | None:
    """Median compaction I/O (bytes read + written by merges) per user byte, TTL workload."""
    rs = run.results.get(f"ttl-{strategy}")
    if not rs:
        return None
    return statistics.median((r["compaction_bytes_read"] + r["compaction_bytes_written"]) / r["user_bytes"] for r in rs)


def _ratio_verdict(base: float | None, other: float | None, needed: float) -> tuple[str, str]:
    """(measured text, verdict) of "`other` is `needed` times less than `base`"."""
    if base is None or other is None:
        return "n/a", "NOT MEASURED"
    if other == 0:
        return "inf (none)" if base > 0 else "n/a", "MET" if base > 0 else "NOT MEASURED"
    ratio = base / other
    return f"{ratio:.2f}", "MET" if ratio >= needed else "MISSED"


def strategy_verdicts(run: BenchRun) -> list[tuple[str, float, str, str]]:
    """(target, needed ratio, measured, verdict) of the strategies' targets."""
    tiered = _ratio_verdict(_compaction_written(run, "ringkv-leveled"), _compaction_written(run, "ringkv-tiered"),
                            STRATEGY_TARGETS[0][1])
    ttl = _ratio_verdict(_ttl_io(run, "leveled"), _ttl_io(run, "time_window"), STRATEGY_TARGETS[1][1])
    return [(STRATEGY_TARGETS[0][0], STRATEGY_TARGETS[0][1], *tiered),
            (STRATEGY_TARGETS[1][0], STRATEGY_TARGETS[1][1], *ttl)]


def _strategy_amp_row(run: BenchRun, system: str) -> list[str]:
    rs = run.results[system]
    engine_wa = _median_or_none([r["engine_stats"].get("write_amplification") for r in rs])
    runs = _median_or_none([
        (r["engine_stats"].get("families") or {}).get("default", {}).get("sorted_runs") for r in rs
    ])
    written = _compaction_written(run, system)
    return [
        system,
        f"{statistics.median(r['settle_seconds'] for r in rs):.2f}",
        _amp_text(_median_or_none([r["disk"]["write_amplification"] for r in rs])),
        _amp_text(engine_wa),
        _amp_text(written),
        _amp_text(statistics.median(r["disk"]["space_amplification"] for r in rs)),
        _mib(statistics.median(r["disk"]["allocated_bytes"] for r in rs)),
        "n/a" if runs is None else f"{runs:g}",
    ]


def _ttl_row(run: BenchRun, name: str) -> list[str]:
    rs = run.results[name]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rs)

    io = statistics.median((r["compaction_bytes_read"] + r["compaction_bytes_written"]) / r["user_bytes"] for r in rs)
    space = statistics.median(r["allocated_bytes"] / r["live_bytes"] for r in rs if r["live_bytes"])
    return [
        name[len("ttl-"):],
        _ops_text(med("write_ops_per_s")),
        _mib(med("compaction_bytes_read")),
        _mib(med("compaction_bytes_written")),
        f"{io:.2f}",
        f"{med('expired_tables_dropped'):g}",
        _mib(med("expired_bytes_dropped")),
        _mib(med("allocated_bytes")),
        f"{space:.2f}",
        f"{med('sorted_runs'):g}",
        _ops_text(med("read_ops_per_s")),
        f"{med('settle_seconds'):.1f}",
    ]


def target_verdicts(run: BenchRun) -> list[tuple[str, float, float | None, str]]:
    """(phase, needed ratio, measured median ratio or None, verdict) of each target."""
    out = []
    for phase, needed in TARGETS:
        ratios = run.ratios("ringkv", phase) if "ringkv" in run.results else None
        if not ratios:
            out.append((phase, needed, None, "NOT MEASURED"))
            continue
        ratio = statistics.median(ratios)
        out.append((phase, needed, ratio, "PASS" if ratio >= needed else "SHORT"))
    return out


def render_console(run: BenchRun, console: Console) -> None:
    spec = run.config.spec
    table = Table(title=f"ops/s, median of {run.config.repeats} (ratio to RocksDB)")
    table.add_column("phase")
    for system in run.systems:
        table.add_column(system, justify="right")
    for phase in PHASES:
        row = [phase_label(phase, spec.scan_count)]
        for system in run.systems:
            row.append(
                f"{_ops_text(statistics.median(run.ops(system, phase)))} "
                f"({_ratio_text(run.ratios(system, phase))})"
            )
        table.add_row(*row)
    console.print(table)

    amp = Table(title="amplification and memory (medians; peak RSS: highest)")
    for column in (
        "system",
        "settle s",
        "write amp (/proc)",
        "write amp (engine)",
        "space amp",
        "on disk MiB",
        "peak RSS MiB",
        "workers peak MiB",
    ):
        amp.add_column(column, justify="right" if column != "system" else "left")
    for system in run.systems:
        amp.add_row(*_amp_row(run, system))
    console.print(amp)

    targets = Table(title="targets (ringkv / RocksDB)")
    for column in ("phase", "needed", "measured", "verdict"):
        targets.add_column(column)
    for phase, needed, ratio, verdict in target_verdicts(run):
        style = {"PASS": "green", "SHORT": "red"}.get(verdict, "yellow")
        targets.add_row(
            phase_label(phase, TARGET_SCAN_COUNT),
            f">= {needed:.1f}",
            "n/a" if ratio is None else f"{ratio:.2f}",
            f"[{style}]{verdict}[/{style}]",
        )
    console.print(targets)

    if run.strategy_systems:
        st = Table(title="compaction strategies: ops/s (ratio to RocksDB), settled in the background")
        st.add_column("phase")
        for system in run.strategy_systems:
            st.add_column(system, justify="right")
        for phase in PHASES:
            st.add_row(phase_label(phase, spec.scan_count), *(
                f"{_ops_text(statistics.median(run.ops(s, phase)))} ({_ratio_text(run.ratios(s, phase))})"
                for s in run.strategy_systems))
        console.print(st)
    if run.ttl_runs:
        tt = Table(title="TTL workload")
        for column in ("strategy", "writes/s", "compaction read MiB", "compaction written MiB", "I/O per user byte",
                       "tables deleted unread", "MiB deleted unread", "on disk MiB", "space amp", "runs",
                       "reads/s", "settle s"):
            tt.add_column(column, justify="right" if column != "strategy" else "left")
        for name in run.ttl_runs:
            tt.add_row(*_ttl_row(run, name))
        console.print(tt)
    if run.strategy_systems or run.ttl_runs:
        sv = Table(title="strategy targets")
        for column in ("target", "needed", "measured", "verdict"):
            sv.add_column(column)
        for what, needed, measured, verdict in strategy_verdicts(run):
            style = {"MET": "green", "MISSED": "red"}.get(verdict, "yellow")
            sv.add_row(what, f">= {needed:.0f}x", measured, f"[{style}]{verdict}[/{style}]")
        console.print(sv)


def _amp_row(run: BenchRun, system: str) -> list[str]:
    rs = run.results[system]
    engine_wa = _median_or_none([r["engine_stats"].get("write_amplification") for r in rs])
    children = max(r["children_peak_rss_kib"] for r in rs)
    return [
        system,
        f"{statistics.median(r['settle_seconds'] for r in rs):.2f}",
        _amp_text(_median_or_none([r["disk"]["write_amplification"] for r in rs])),
        _amp_text(engine_wa),
        _amp_text(statistics.median(r["disk"]["space_amplification"] for r in rs)),
        _mib(statistics.median(r["disk"]["allocated_bytes"] for r in rs)),
        _mib(max(r["peak_rss_kib"] for r in rs) * 1024),
        _mib(children * 1024) if children else "-",
    ]


def render_markdown(run: BenchRun) -> str:
    cfg = run.config
    spec = cfg.spec
    systems = run.systems
    scan = phase_label("scan", spec.scan_count)
    lines: list[str] = []
    add = lines.append

    add("# Storage-engine benchmark")
    add("")
    add(
        f"Generated by `{cfg.command}` on {run.started:%Y-%m-%d %H:%M} UTC "
        f"({(run.finished - run.started).total_seconds() / 60:.1f} minutes). "
        "Each system ran in its own process, once per repeat, in an order rotated between "
        f"repeats; figures are medians of {cfg.repeats} repeat(s). Ratios are to RocksDB "
        "(rocksdict) measured in the same repeat, then the median of those ratios is taken. "
        "This is a benchmark, not a test: on a small shared machine expect tens of percent "
        "of noise between runs (short loops more), and read the spread table before a "
        "single number."
    )
    add("")

    add("## Machine")
    add("")
    for line in machine_lines():
        add(f"- {line}")
    add(f"- Data directory filesystem: {run.fs_type}")
    add(
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in run.load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in run.load_after)}"
    )
    cores = os.cpu_count() or 1
    if run.load_before[0] > 0.5 * cores:
        add(
            f"- **The machine was busy**: 1-minute load {run.load_before[0]:.2f} on {cores} cores "
            "before the run began. Other work competed for the cores, so expect more noise than "
            "usual; the wall/CPU table below shows where loops waited."
        )
    versions = {s: run.results[s][0]["library_version"] for s in systems}
    if "ringkv" in versions:
        versions["ringkv"] += f" ({git_revision()})"
    add(f"- Libraries: {'; '.join(versions.values())}")
    add("")

    add("## Workload")
    add("")
    add(
        f"- {spec.keys:,} keys of {KEY_BYTES} bytes (16 decimal digits; seed {spec.seed}), "
        f"values of {spec.value_bytes} bytes, about half compressible (a random printable run "
        "repeated, as db_bench), drawn from a 1 MiB pool."
    )
    add(f"- Live data after load: {_mib(spec.live_user_bytes)} MiB of keys and values.")
    add("- `fillseq`: every key in key order into a fresh store (then discarded).")
    add("- `fillrandom`: the same keys in random order into a second fresh store.")
    add(f"- `overwrite`: {spec.keys:,} puts of random keys of that set (with repeats), new values.")
    add(
        "- settle (untimed, its time reported): flush and full compaction, so that reads "
        "measure a settled store; no read is served from a memtable."
    )
    add(f"- `readrandom`: {spec.reads:,} gets of existing keys in random order.")
    add(
        f"- `readmissing`: {spec.reads:,} gets of absent keys (odd numbers between the even "
        "existing ones)."
    )
    add(
        f"- `{scan}`: {spec.scans:,} scans, each a seek to a random existing key and "
        f"{spec.scan_count} entries in key order; ops/s counts scans, not entries."
    )
    add(
        "- Every answer is checked: the run fails if an existing key reads as missing, a "
        "missing key reads as present, the scans return the wrong number of entries, or "
        f"sampled values ({SAMPLED_KEYS} keys) and scans ({CHECKED_SCANS}) read back wrong."
    )
    add("")

    add("## Settings of each system")
    add("")
    for system in systems:
        add(f"- **{system}**: {run.results[system][0]['settings']}")
    if "ringkv" in systems:
        add(
            "- ringkv's default sync policy fsyncs its WAL every 100 ms; the RocksDB anchor "
            "never fsyncs (no per-write sync, no periodic sync), so ringkv does strictly more "
            "durability work here."
        )
    for system, reason in run.skipped.items():
        add(f"- **{system}**: not measured ({reason})")
    add("")

    add(f"## Operations per second (median of {cfg.repeats}; ratio to RocksDB)")
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            cells.append(
                f"{_ops_text(statistics.median(run.ops(system, phase)))} "
                f"({_ratio_text(run.ratios(system, phase))})"
            )
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")

    add("## Spread across repeats (min - max ops/s)")
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            ops = run.ops(system, phase)
            cells.append(f"{_ops_text(min(ops))} - {_ops_text(max(ops))}")
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")
    short = _short_phases(run)
    if short:
        add(
            f"Timed loops shorter than {SHORT_PHASE_SECONDS:g} s, whose figures are mostly "
            f"noise (use more keys or reads): {short}."
        )
        add("")

    add("## Wall time / CPU time of the timed loops (median)")
    add("")
    add(
        "CPU time is the worker process's (all its threads, not its child processes). Near 1: "
        "the loop had a core to itself. Above 1: it waited, on the disk or for a core another "
        "process held; on a busy machine this is where the noise comes from. Below 1: the "
        "worker's background threads (RocksDB's and LevelDB's flushes and compactions) used "
        "a second core; ringkv's run in child processes and do not show here."
    )
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            waits = [
                r["phases"][phase]["seconds"] / r["phases"][phase]["cpu_seconds"]
                for r in run.results[system]
                if r["phases"][phase]["cpu_seconds"] > 0
            ]
            cells.append(f"{statistics.median(waits):.2f}" if waits else "n/a")
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")

    add("## Targets (ringkv / RocksDB, same run)")
    add("")
    add("| target | needed | measured | verdict |")
    add("|---|---:|---:|---|")
    for phase, needed, ratio, verdict in target_verdicts(run):
        label = phase_label(phase, TARGET_SCAN_COUNT)
        if phase == "scan" and spec.scan_count != TARGET_SCAN_COUNT:
            label += f" (measured as {scan})"
        add(
            f"| {label} | >= {needed:.1f} | {'n/a' if ratio is None else f'{ratio:.2f}'} "
            f"| {verdict} |"
        )
    add("")

    add("## Amplification and memory")
    add("")
    add(
        "| system | settle (s) | write amp (/proc) | write amp (engine) | space amp | on disk "
        "(MiB) | peak RSS (MiB) | workers peak RSS (MiB) | memtable (MiB) | data / memtable |"
    )
    add("|---|" + "---:|" * 9)
    for system in systems:
        row = _amp_row(run, system)
        memtable = run.results[system][0]["memtable_bytes"]
        row.append(_mib(memtable) if memtable else "-")
        row.append(f"{spec.live_user_bytes / memtable:.2f}" if memtable else "-")
        add("| " + " | ".join(row) + " |")
    add("")
    baseline = statistics.median(r["baseline_rss_kib"] for s in systems for r in run.results[s])
    add(
        "- **write amp (/proc)**: bytes the system's process tree dirtied in the page cache "
        "(`write_bytes` of `/proc/<pid>/io`, summed over the worker process, its threads, and "
        "every descendant process, live or reaped) from opening the second store to the end "
        "of the settle, divided by the user bytes written there (fillrandom + overwrite, key "
        "+ value). The kernel charges whole 4 KiB pages when they first become dirty, so a log "
        "appended between writebacks counts once per page, and a page written back (by an "
        "fsync or by the kernel's flusher) and then appended to again counts again. The "
        "same rule makes the figure low for stores that update pages in place (LMDB, "
        "sqlite's main file): with no fsync, a page changed many times between two "
        "writebacks counts once; sqlite's high figure is its WAL, which appends a whole "
        "page per committed put."
    )
    if "ringkv" in systems:
        add(
            '- **write amp (engine)**: ringkv\'s own `stats()["write_amplification"]`, read '
            "at the end of the same window: bytes the engine wrote as it counts them (WAL "
            "records, flushed and compacted SSTables) per user byte. It can differ from the "
            "/proc figure because it counts bytes handed to write() rather than pages "
            "dirtied (a WAL page re-dirtied after each 100 ms fsync counts again in /proc; "
            "the manifest and file headers count only there). ringkv's flushes and "
            "compactions run in worker processes; the /proc figure includes them through "
            "the process tree. ringkv's own `space_amplification` (its definition: table "
            f"bytes / last-level bytes) was {_ringkv_engine_sa(run)}."
        )
    add(
        "- **space amp**: allocated bytes (`st_blocks`) of the store's directory after the "
        "settle, divided by the live user bytes (keys + values), so compression can bring it "
        "below 1."
    )
    add(
        f"- **peak RSS**: `ru_maxrss` of each system's worker process, highest over repeats. It "
        f"includes the harness's pre-generated keys (about {_mib(baseline * 1024)} MiB of RSS "
        "before the store opened, the same for every system). **workers peak RSS**: the "
        "largest peak of the worker's own child processes (ringkv's compaction workers)."
    )
    if any((run.results[s][0]["memtable_bytes"] or 0) * 4 > spec.live_user_bytes for s in systems):
        add(
            "- The issue asks for a data set at least 4x the memtable. Where the last column "
            "is below 4, this run's data set is smaller than that for that system's default "
            "write buffer; reads still go to SSTables, since the store was flushed and "
            "compacted before them, but use more keys (or `--memtable-bytes`) for the "
            "figures the issue asks for."
        )
    add("")

    add("## Correctness checks")
    add("")
    add("| system | readrandom found | readmissing found | scan entries (got / expected) |")
    add("|---|---:|---:|---:|")
    for system in systems:
        r = run.results[system][-1]
        checks = r["checks"]
        add(
            f"| {system} | {checks['readrandom_found']:,} of {spec.reads:,} | "
            f"{checks['readmissing_found']:,} of {spec.reads:,} | {checks['scan_entries']:,} / {checks['scan_expected_entries']:,} |"
        )
    add("")
    add(
        "All repeats passed every check; a wrong answer stops the run instead of reaching this "
        "page."
    )
    add("")
    if run.strategy_systems or run.ttl_runs:
        _strategy_sections(run, add)
    return "\n".join(lines)


def _strategy_sections(run: BenchRun, add) -> None:
    spec = run.config.spec
    if run.strategy_systems:
        systems = run.strategy_systems
        add("## Compaction strategies: fillrandom + overwrite (same data)")
        add("")
        add(
            "The same phases on the same keys and values as above, in the same repeats, with each "
            "compaction strategy of ringkv (and RocksDB's universal compaction). One difference: "
            "the settle flushes and then waits for the background compactions, without a full "
            "compaction, so reads meet the store as the strategy keeps it (a full compaction "
            "leaves one sorted run whatever the strategy). Ratios are to **rocksdb** (default "
            "leveled compaction, compacted fully) in the same repeat."
        )
        add("")
        add("| phase | " + " | ".join(systems) + " |")
        add("|---|" + "---:|" * len(systems))
        for phase in PHASES:
            cells = [
                f"{_ops_text(statistics.median(run.ops(s, phase)))} ({_ratio_text(run.ratios(s, phase))})"
                for s in systems
            ]
            add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
        add("")
        add(
            "| system | settle (s) | write amp (/proc) | write amp (engine) | compaction written "
            "/ user byte | space amp | on disk (MiB) | sorted runs |"
        )
        add("|---|" + "---:|" * 7)
        for system in systems:
            add("| " + " | ".join(_strategy_amp_row(run, system)) + " |")
        add("")
        add("Settings:")
        add("")
        for system in systems:
            add(f"- **{system}**: {run.results[system][0]['settings']}")
        add("")
        add(
            "- **compaction written / user byte**: the engine's `compaction_bytes_written` at the "
            "end of the settle, per user byte of fillrandom + overwrite: the writes a strategy "
            "decides (the log and the flushes, about 1 + 0.6 per user byte here, are the same "
            "for every strategy and are in **write amp (engine)**). **sorted runs**: what a "
            "point lookup may probe after the settle."
        )
        add("")
    if run.ttl_runs:
        ttl = run.config.ttl
        first = run.results[run.ttl_runs[0]][0]
        add("## TTL workload: an hour of time series with a 10-minute TTL (simulated clock)")
        add("")
        add(
            f"- {ttl.records:,} writes of unique keys (`series:timestamp`, {TTL_SERIES} series), "
            f"their timestamps spread over {TTL_HOUR_MS // 60_000} minutes of a simulated clock "
            "that the engine, its expiry extractor and its compaction filter read: the hour "
            "passes in the time the writes take. Each value ("
            f"{ttl.value_bytes} bytes) starts with its expiry, written + {TTL_MS // 60_000} "
            f"minutes; the compaction filter drops a record whose expiry has passed. "
            f"Memtable {ttl.memtable_bytes / MIB:g} MiB; time windows of {TTL_WINDOW_MS // 1000} s "
            "(simulated); other options the engine's defaults."
        )
        add(
            "- After the writes, at the hour's end: flush, and wait for the background "
            "compactions (which include deleting the windows that have expired). Then "
            f"{first['live_records']:,} live records' worth ({_mib(first['live_bytes'])} MiB) "
            "should remain; a sample of them is read back (reads/s, and every one checked)."
        )
        add(
            "- **compaction I/O**: bytes the merges read and wrote (the engine's "
            "`compaction_bytes_read` + `compaction_bytes_written`), per user byte written. "
            "Deleting an expired table unread costs none. **space amp**: allocated bytes of "
            "the directory after the settle, per live byte."
        )
        add("")
        add(
            "| strategy | writes/s | compaction read (MiB) | compaction written (MiB) | compaction "
            "I/O / user byte | tables deleted unread | MiB deleted unread | on disk (MiB) | space "
            "amp | sorted runs | reads/s | settle (s) |"
        )
        add("|---|" + "---:|" * 11)
        for name in run.ttl_runs:
            add("| " + " | ".join(_ttl_row(run, name)) + " |")
        add("")
        add(
            "RocksDB is not in this table: its TTL (`DB::OpenWithTTL`, FIFO's `ttl`) reads the "
            "wall clock, which a simulated hour cannot move, and rocksdict takes no compaction "
            "filter written in Python."
        )
        add("")
    add("## Strategy targets (same run)")
    add("")
    add("| target | needed | measured | verdict |")
    add("|---|---:|---:|---|")
    for what, needed, measured, verdict in strategy_verdicts(run):
        add(f"| {what} | >= {needed:.0f}x | {measured} | {verdict} |")
    add("")
