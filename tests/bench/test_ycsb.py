"""The YCSB benchmark draws keys as YCSB does and produces a complete, sane report.

Figures are never asserted (benchmarks are not timed tests). What is asserted: the generators
give YCSB's keys and distributions; a tiny run through `ringkv bench ycsb` against one ringkv
node and redis-server (and etcd, where it is installed) reports every workload for every
system, with operations counted, no failures, and latency percentiles in order.
"""

from __future__ import annotations

import collections
import random
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.bench.ycsb.generators import (
    ScrambledZipfianGenerator,
    SkewedLatestGenerator,
    ZipfianGenerator,
    expected_max_share_scrambled,
    fnvhash64,
    key_name,
    zipfian_probability,
)
from ringkv.bench.ycsb.workloads import (
    INSERT,
    READ,
    UPDATE,
    WORKLOADS,
    InsertSequence,
    OperationChooser,
)
from ringkv.cli import main as cli_main

# ---------------------------------------------------------------------- keys and generators


def test_keys_are_ycsbs_hashed_user_keys() -> None:
    # YCSB's first three keys with insertorder=hashed (its default).
    assert [key_name(i) for i in range(3)] == [
        b"user6284781860667377211", b"user8517097267634966620", b"user1820151046732198393"]


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_fnv_hash_is_a_non_negative_java_long(value: int) -> None:
    h = fnvhash64(value)
    assert -(1 << 63) <= h < (1 << 63)
    assert h >= 0 or h == -(1 << 63)  # Math.abs(Long.MIN_VALUE) stays negative in Java


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32), low=st.integers(0, 1000), n=st.integers(1, 3000))
def test_zipfian_draws_stay_in_range(seed: int, low: int, n: int) -> None:
    rng = random.Random(seed)
    gen = ZipfianGenerator(low, low + n - 1, rng)
    scrambled = ScrambledZipfianGenerator(low, low + n - 1, rng)
    for _ in range(500):
        assert low <= gen.next() < low + n
        assert low <= scrambled.next() < low + n


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32))
def test_zipfian_gives_the_first_items_their_zipf_share(seed: int) -> None:
    # Gray's method is exact for the two most popular items; 20,000 draws put the tolerance
    # (15 %) at about 8 standard deviations, so no seed fails by chance.
    n, draws = 100, 20_000
    gen = ZipfianGenerator(0, n - 1, random.Random(seed))
    counts = collections.Counter(gen.next() for _ in range(draws))
    for rank in (0, 1):
        expected = zipfian_probability(rank, n) * draws
        assert abs(counts[rank] - expected) < 0.15 * expected, (rank, counts[rank], expected)
    assert counts[0] > counts[1] > counts[5] > counts[50]


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32))
def test_scrambled_zipfian_spreads_the_hot_keys(seed: int) -> None:
    n, draws = 10_000, 20_000
    gen = ScrambledZipfianGenerator(0, n - 1, random.Random(seed))
    counts = collections.Counter(gen.next() for _ in range(draws))
    (hottest, top), = counts.most_common(1)
    # The most popular item is zipfian rank 0, hashed into the range, with about 3.8 % of draws.
    assert hottest == fnvhash64(0) % n
    expected = expected_max_share_scrambled() * draws
    assert abs(top - expected) < 0.2 * expected
    # Skewed but not clustered: the ten hottest keys are scattered over the range.
    hot = [k for k, _ in counts.most_common(10)]
    assert max(hot) - min(hot) > n // 4


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32), start=st.integers(2, 5000), growth=st.lists(st.integers(0, 50), max_size=20))
def test_latest_reads_only_acknowledged_records_and_prefers_the_newest(seed: int, start: int,
                                                                       growth: list[int]) -> None:
    last = [start]
    gen = SkewedLatestGenerator(lambda: last[0], random.Random(seed))
    for g in [0, *growth]:
        last[0] += g
        for _ in range(200):
            v = gen.next()
            assert 0 < v <= last[0]
    # The newest record is the most popular: on enough draws that chance cannot reverse it (with
    # 200 the newest and the one before it, about 2:1 in expectation, swapped for some seeds).
    counts: collections.Counter[int] = collections.Counter(last[0] - gen.next() for _ in range(5000))
    assert counts.most_common(1)[0][0] == 0, counts.most_common(3)


@settings(max_examples=25)
@given(processes=st.integers(1, 4), order=st.randoms(use_true_random=False), n=st.integers(1, 40))
def test_every_record_below_the_acknowledged_bound_exists(processes: int, order: random.Random, n: int) -> None:
    base = 100
    acked = [0] * processes
    seqs = [InsertSequence(base, p, processes, acked) for p in range(processes)]
    issued = [s.next() for s in seqs for _ in range(n)]
    order.shuffle(issued)
    existing = set(range(base))
    for keynum in issued:
        seqs[(keynum - base) % processes].acknowledge(keynum)
        existing.add(keynum)
        bound = seqs[0].last_acknowledged()
        assert all(k in existing for k in range(bound + 1))
    assert seqs[0].last_acknowledged() == base + processes * n - 1


def test_operation_mix_follows_the_workload() -> None:
    rng = random.Random(7)
    seq = InsertSequence(1000, 0, 1, [0])
    draws = 20_000
    for name, expect in (("a", {READ: 0.5, UPDATE: 0.5}), ("b", {READ: 0.95, UPDATE: 0.05}),
                         ("d", {READ: 0.95, INSERT: 0.05})):
        chooser = OperationChooser(WORKLOADS[name], 1000, seq, rng)
        counts = collections.Counter(chooser.next()[0] for _ in range(draws))
        assert set(counts) == set(expect)
        for op, share in expect.items():
            assert abs(counts[op] / draws - share) < 0.02, (name, op, counts)


# ---------------------------------------------------------------------- a tiny run, end to end


def _sections(markdown: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _rows(lines: list[str]) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    return rows[2:]  # header and alignment row


def _number(cell: str) -> float:
    return float(re.sub(r"[,x()]", "", cell.split()[0]))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (scripts/system-deps)")
def test_a_tiny_run_reports_every_workload_for_every_system(tmp_path: Path) -> None:
    systems = ["ringkv-node", "redis"] + (["etcd"] if shutil.which("etcd") else [])
    out = tmp_path / "ycsb.md"
    plots = tmp_path / "ycsb"
    result = CliRunner().invoke(cli_main, [
        "bench", "ycsb", "--systems", ",".join(systems), "--records", "100", "--operations", "200",
        "--clients", "8", "--processes", "2", "--out", str(out), "--plots-dir", str(plots)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    markdown = out.read_text()
    sections = _sections(markdown)

    for name in ("throughput.png", *(f"latency-{w}.png" for w in "abcdef")):
        assert (plots / name).stat().st_size > 1000
        assert f"(ycsb/{name})" in markdown

    throughput = {row[0]: row[1:] for row in _rows(sections["Throughput (operations per second; ratio to Redis)"])}
    assert set(throughput) == {"load", *(WORKLOADS[w].label for w in "abcdef")}
    for cells in throughput.values():
        assert len(cells) == len(systems)
        assert all(_number(c) > 0 for c in cells)

    for w, wl in WORKLOADS.items():
        title = next(t for t in sections if t.startswith(f"Workload {wl.label}"))
        rows = _rows(sections[title])
        assert {r[0] for r in rows} == set(systems)
        for system in systems:
            ops = {r[1]: r for r in rows if r[0] == system}
            assert set(ops) == set(wl.operations()), (w, system)
            for r in ops.values():
                count, p50, p95, p99, p999, worst, failed, missing = (_number(c) for c in r[2:3] + r[4:])
                assert count > 0
                assert 0 < p50 <= p95 <= p99 <= p999 <= worst, (w, system, r)
                assert failed == 0, (w, system, r)
                if r[1] == READ:
                    assert missing == 0, (w, system, r)  # every key read had been inserted
    assert "reads found no record" not in markdown and "failed operations" not in markdown
