"""`python -m ringkv.bench.engine`: the storage-engine benchmark's command line.

    python -m ringkv.bench.engine --keys 100000 --repeats 1

Parses the options into a `BenchConfig`, runs it (harness.py), prints the console tables and
writes the markdown report and, with --json, the raw figures. The hidden `--worker JOB` option
makes the same command a worker process (harness.worker_main). `main(argv)` returns the exit
status instead of exiting, for tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console

from ringkv.bench.engine.adapters import ADAPTERS, SYSTEMS
from ringkv.bench.engine.harness import BenchConfig, run_benchmark, worker_main
from ringkv.bench.engine.report import TARGET_SCAN_COUNT, render_console, render_markdown
from ringkv.bench.engine.strategies import STRATEGY_SYSTEMS, TTL_STRATEGIES, TtlSpec
from ringkv.bench.engine.workload import WorkloadSpec

TTL_MEMTABLE_BYTES = 4 << 20


def _default_out() -> Path:
    """docs/benchmarks/engine.md of the checkout this module sits in, else of the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "docs").is_dir():
            return parent / "docs" / "benchmarks" / "engine.md"
    return Path("docs") / "benchmarks" / "engine.md"


def _parse_systems(value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in ADAPTERS]
    if unknown or not names:
        raise click.BadParameter(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    return names


def _parse_names(value: str, known: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip() and s.strip() != "none")
    unknown = [s for s in names if s not in known]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(known)} (or none)")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Keys to load (16 bytes each).",
)
@click.option("--value-bytes", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs of every system; medians are reported.",
)
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    help="Comma-separated systems to run.",
)
@click.option(
    "--dir",
    "dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the stores are created (default: a temporary directory).",
)
@click.option(
    "--out",
    default=None,
    help="Markdown report path (default docs/benchmarks/engine.md; '-' writes none).",
)
@click.option(
    "--scan-count",
    type=click.IntRange(min=1),
    default=TARGET_SCAN_COUNT,
    show_default=True,
    help="Entries read by each scan.",
)
@click.option(
    "--reads",
    type=click.IntRange(min=1),
    default=None,
    help="Gets in readrandom and in readmissing (default: --keys).",
)
@click.option(
    "--scans",
    type=click.IntRange(min=1),
    default=None,
    help="Scans in the scan phase (default: reads / scan-count, so the scan phase "
    "reads as many entries as readrandom reads keys).",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--memtable-bytes",
    type=click.IntRange(min=64 * 1024),
    default=None,
    help="Write-buffer size for ringkv, RocksDB and LevelDB alike "
    "(default: each system's own default).",
)
@click.option(
    "--strategies",
    default=",".join(STRATEGY_SYSTEMS),
    show_default=True,
    help="Systems that run the same workload with each compaction strategy, settling in the "
    "background instead of compacting fully ('none': skip).",
)
@click.option(
    "--ttl-records",
    type=click.IntRange(min=0),
    default=None,
    help="Writes of the TTL workload (an hour of time series, 10-minute TTL, compressed in "
    "time), per strategy (default: --keys; 0 skips it).",
)
@click.option(
    "--ttl-memtable-bytes",
    type=click.IntRange(min=64 * 1024),
    default=TTL_MEMTABLE_BYTES,
    show_default=True,
    help="ringkv's memtable in the TTL workload.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every repeat's raw figures (engine stats included) as JSON here.",
)
@click.option(
    "--worker",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    hidden=True,
)
def cli(
    keys: int,
    value_bytes: int,
    repeats: int,
    systems: str,
    dir_: Path | None,
    out: str | None,
    scan_count: int,
    reads: int | None,
    scans: int | None,
    seed: int,
    memtable_bytes: int | None,
    strategies: str,
    ttl_records: int | None,
    ttl_memtable_bytes: int,
    json_out: Path | None,
    worker: Path | None,
) -> None:
    """Measure ringkv's storage engine beside RocksDB, LevelDB, LMDB and sqlite3."""
    if worker is not None:
        worker_main(worker)
        return
    reads = keys if reads is None else reads
    spec = WorkloadSpec(
        keys=keys,
        value_bytes=value_bytes,
        reads=reads,
        scans=scans if scans is not None else max(1, reads // scan_count),
        scan_count=scan_count,
        seed=seed,
    )
    out_path = None if out == "-" else (_default_out() if out is None else Path(out))
    chosen = _parse_systems(systems)
    # Every workload setting spelled out, so the report's command reproduces the run.
    command = (
        f"python -m ringkv.bench.engine --keys {keys} --value-bytes {value_bytes} "
        f"--repeats {repeats} --systems {','.join(chosen)} --reads {reads} "
        f"--scans {spec.scans} --scan-count {scan_count} --seed {seed}"
    )
    if memtable_bytes is not None:
        command += f" --memtable-bytes {memtable_bytes}"
    strategy_systems = _parse_names(strategies, STRATEGY_SYSTEMS)
    ttl_records = keys if ttl_records is None else ttl_records
    command += (f" --strategies {','.join(strategy_systems) or 'none'} --ttl-records {ttl_records}"
                f" --ttl-memtable-bytes {ttl_memtable_bytes}")
    ttl = TtlSpec(ttl_records, max(value_bytes, 16), ttl_memtable_bytes, seed) if ttl_records else None
    config = BenchConfig(spec, repeats, chosen, dir_, out_path, memtable_bytes, command,
                         strategy_systems, ttl, TTL_STRATEGIES if ttl else ())
    console = Console()
    if not console.is_terminal:
        # Piped or logged output would otherwise wrap the tables at 80 columns.
        console = Console(width=140)
    run = run_benchmark(config, console)
    render_console(run, console)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(render_markdown(run))
        console.print(f"wrote {out_path}")
    if json_out is not None:
        raw = {
            "command": command,
            "started": run.started.isoformat(),
            "skipped": run.skipped,
            "results": run.results,
        }
        json_out.write_text(json.dumps(raw, indent=1))
        console.print(f"wrote {json_out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting (for tests)."""
    try:
        cli.main(
            args=None if argv is None else list(argv),
            prog_name="python -m ringkv.bench.engine",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 1
    return 0
