"""The storage-engine benchmark runs end to end, reports every phase, and refuses wrong answers.

The figures themselves are never asserted: benchmarks are not timed tests. What is asserted is
that a run produces a complete report, and that a store answering wrongly while it is being
measured stops the run instead of producing a flattering number.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import pytest

from ringkv.bench import engine
from ringkv.bench.engine import (
    ADAPTERS,
    PHASES,
    BenchmarkCorrectnessError,
    StoreAdapter,
    Workload,
    WorkloadSpec,
    phase_label,
    run_sequence,
)

ENGINE_MISSING = ADAPTERS["ringkv"].unavailable_reason()


class DictStore(StoreAdapter):
    """An in-memory store with a sorted key list: right answers, unless told to be wrong."""

    name = "dict"
    requires = "bisect"

    def __init__(self, drop_every: int = 0, invent_missing: bool = False):
        super().__init__()
        self.drop_every = drop_every
        self.invent_missing = invent_missing

    def library_version(self) -> str:
        return "dict"

    def settings(self) -> str:
        return "in memory"

    def open(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.data: dict[bytes, bytes] = {}
        self.order: list[bytes] = []
        self.puts = 0
        self.put = self._put
        self.get = self._get

    def _put(self, key: bytes, value: bytes) -> None:
        self.puts += 1
        if self.drop_every and self.puts % self.drop_every == 0:
            return
        if key not in self.data:
            bisect.insort(self.order, key)
        self.data[key] = value

    def _get(self, key: bytes) -> bytes | None:
        value = self.data.get(key)
        if value is None and self.invent_missing:
            return b"invented"
        return value

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        i = bisect.bisect_left(self.order, start)
        return [(k, self.data[k]) for k in self.order[i : i + count]]

    def flush_and_settle(self) -> None:
        pass

    def close(self) -> None:
        pass


def small_workload() -> Workload:
    return Workload(
        WorkloadSpec(keys=500, value_bytes=100, reads=500, scans=20, scan_count=10, seed=7)
    )


def test_a_store_that_answers_correctly_passes_every_check(tmp_path: Path) -> None:
    result = run_sequence(DictStore(), small_workload(), tmp_path)

    assert set(result["phases"]) == set(PHASES)
    assert result["checks"]["readrandom_found"] == 500
    assert result["checks"]["readmissing_found"] == 0
    assert result["checks"]["problems"] == []


def test_a_store_that_loses_keys_fails_the_run(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkCorrectnessError, match=r"readrandom: .* returned None"):
        run_sequence(DictStore(drop_every=7), small_workload(), tmp_path)


def test_a_store_that_finds_absent_keys_fails_the_run(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkCorrectnessError, match="readmissing: 500 of 500"):
        run_sequence(DictStore(invent_missing=True), small_workload(), tmp_path)


def _section(markdown: str, heading_prefix: str) -> list[str]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_prefix))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


@pytest.mark.skipif(ENGINE_MISSING is not None, reason=f"ringkv engine not ready: {ENGINE_MISSING}")
def test_a_small_run_reports_every_phase_for_every_system(tmp_path: Path) -> None:
    systems = [name for name, adapter in ADAPTERS.items() if adapter.unavailable_reason() is None]
    out = tmp_path / "engine.md"

    status = engine.main(
        [
            "--keys",
            "2000",
            "--repeats",
            "1",
            "--systems",
            ",".join(systems),
            "--dir",
            str(tmp_path / "stores"),
            "--out",
            str(out),
            "--strategies",
            "none",
            "--ttl-records",
            "0",
        ]
    )

    assert status == 0
    markdown = out.read_text()
    assert "## Compaction strategies" not in markdown and "## TTL workload" not in markdown
    table = _section(markdown, "## Operations per second")
    header = next(line for line in table if line.startswith("| phase |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == systems
    for phase in PHASES:
        label = phase_label(phase, 100)
        row = next((line for line in table if line.startswith(f"| {label} |")), None)
        assert row is not None, f"no row for {label}"
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == len(systems)
        for system, cell in zip(systems, cells):
            assert re.fullmatch(r"[\d,]+ \((\d+\.\d\dx|n/a)\)", cell), (system, label, cell)
            assert float(cell.split()[0].replace(",", "")) > 0, (system, label, cell)

    checks = _section(markdown, "## Correctness checks")
    ringkv_row = next(line for line in checks if line.startswith("| ringkv |"))
    assert "| 2,000 of 2,000 | 0 of 2,000 |" in ringkv_row
    assert "## Targets" in markdown


@pytest.mark.slow  # short mode: test_a_small_run_reports_every_phase_for_every_system runs the harness
@pytest.mark.skipif(ENGINE_MISSING is not None, reason=f"ringkv engine not ready: {ENGINE_MISSING}")
def test_a_small_run_reports_each_compaction_strategy_and_the_ttl_workload(tmp_path: Path) -> None:
    out = tmp_path / "engine.md"
    strategies = ["ringkv-leveled", "ringkv-tiered", "ringkv-time_window"]

    status = engine.main(
        ["--keys", "2000", "--repeats", "1", "--systems", "ringkv", "--dir", str(tmp_path / "stores"),
         "--out", str(out), "--strategies", ",".join(strategies), "--ttl-records", "3000",
         "--ttl-memtable-bytes", "65536"]
    )

    assert status == 0
    markdown = out.read_text()
    section = _section(markdown, "## Compaction strategies")
    header = next(line for line in section if line.startswith("| phase |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == strategies
    amp = [line for line in section if line.startswith("| ringkv-")]
    assert [line.split("|")[1].strip() for line in amp] == strategies
    ttl = _section(markdown, "## TTL workload")
    rows = {line.split("|")[1].strip(): line for line in ttl if line.startswith("| ") and "strategy" not in line}
    assert set(rows) == {"leveled", "tiered", "time_window"}
    dropped = int(rows["time_window"].split("|")[6].strip())
    assert dropped >= 1, "the time-window run deleted no expired table: the workload proves nothing"
    targets = _section(markdown, "## Strategy targets")
    assert sum(1 for line in targets if line.startswith("| ") and "needed" not in line) == 2
