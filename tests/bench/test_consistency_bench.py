"""The consistency benchmark runs end to end and writes a complete report.

One tiny run through `ringkv bench consistency` (a few hundred operations per phase, one
repeat) against a 3-node ringkv cluster and, where it is installed, a 3-member etcd. Figures
are never asserted (benchmarks are not timed tests). What is asserted: every table is there,
every operation of every system was measured, none failed, an uncontended CAS loop was never
refused, and INCR and CAS really went through consensus (the nodes' counters say so).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ringkv.cli import main as cli_main

ETCD = shutil.which("etcd") is not None
NO_ETCD = "etcd is not on PATH (Debian: etcd-server; ./scripts/system-deps installs it)"
OPERATIONS = 300
SECTIONS = ("Setup", "Targets", "Results", "Every repeat", "Contended CAS", "Consensus counters",
            "One client, no queueing", "Round trips", "Who used the CPU", "Warnings",
            "Reading these figures")
RINGKV_OPERATIONS = {"write": "SET", "incr": "INCR", "cas": "CAS", "read": "SERIAL GET",
                     "contended": "CAS (contended)"}
ETCD_OPERATIONS = {"write": "Put", "cas": "CAS (Txn)", "read": "GET (linearizable)",
                   "contended": "CAS (Txn, contended)"}


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


def _section(sections: dict[str, list[str]], prefix: str) -> list[str]:
    return next(lines for title, lines in sections.items() if title.startswith(prefix))


def _rows(lines: list[str]) -> list[list[str]]:
    """Rows of the first table in `lines`, header and alignment row left out."""
    table = []
    for line in lines:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    return table[2:]


def _number(cell: str) -> float:
    return float(re.sub(r"[,x%]", "", cell.split()[0]))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    out: Path = tmp_path_factory.mktemp("consistency") / "consistency.md"
    result = CliRunner().invoke(cli_main, [
        "bench", "consistency", "--systems", "ringkv,etcd" if ETCD else "ringkv",
        "--operations", str(OPERATIONS), "--repeats", "1", "--processes", "2", "--clients", "6",
        "--hot-keys", "2", "--probe-operations", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out.read_text()


def test_the_report_has_every_table(report: str) -> None:
    sections = _sections(report)
    for prefix in SECTIONS:
        assert any(title.startswith(prefix) for title in sections), (prefix, list(sections))
    targets = {row[0]: row for row in _rows(_section(sections, "Targets"))}
    assert set(targets) == {"ringkv CAS ops/s / etcd CAS ops/s", "ringkv INCR p99 / ringkv SET p99"}
    assert targets["ringkv INCR p99 / ringkv SET p99"][-1] in ("MET", "SHORT")


def _results(report: str, system: str) -> dict[str, list[str]]:
    rows = _rows(_section(_sections(report), "Results"))
    return {row[0]: row for row in rows if row[1] == system}


def _check_measured_without_failures(rows: dict[str, list[str]], expected: dict[str, str]) -> None:
    assert set(rows) == set(expected)
    for test, row in rows.items():
        operation, ops_s, p50, p99, p999, count, refused, gave_up, failed = row[2:]
        assert operation == expected[test]
        assert _number(ops_s) > 0
        assert 0 < _number(p50) <= _number(p99) <= _number(p999), row
        assert _number(count) == OPERATIONS, row
        assert _number(failed) == 0, row
        if test != "contended":
            assert _number(refused) == 0 and _number(gave_up) == 0, row  # each task owns its key


def test_every_ringkv_operation_is_measured_and_none_failed(report: str) -> None:
    _check_measured_without_failures(_results(report, "ringkv"), RINGKV_OPERATIONS)
    assert "operations failed" not in report and "refused in an uncontended loop" not in report


def test_incr_and_cas_went_through_consensus(report: str) -> None:
    counters = {row[0]: row for row in _rows(_section(_sections(report), "Consensus counters"))}
    for operation in ("INCR", "CAS", "CAS (contended)"):
        answered, commands = _number(counters[operation][1]), _number(counters[operation][2])
        assert commands >= answered > 0, counters[operation]
    assert _number(counters["SERIAL GET"][3]) >= _number(counters["SERIAL GET"][1])  # SERIAL reads
    assert _number(counters["SET"][2]) == 0  # plain SET is not a consensus command


def test_the_probe_measures_every_operation_with_one_client(report: str) -> None:
    rows = _rows(_section(_sections(report), "One client, no queueing"))
    ringkv = {row[1] for row in rows if row[0] == "ringkv"}
    assert ringkv == {"PING", "SET", "INCR", "CAS", "SERIAL GET"}
    for row in rows:
        assert _number(row[2]) == 50 and _number(row[6]) == 0, row


@pytest.mark.skipif(not ETCD, reason=NO_ETCD)
def test_every_etcd_operation_is_measured_and_none_failed(report: str) -> None:
    _check_measured_without_failures(_results(report, "etcd"), ETCD_OPERATIONS)
    cas = next(row for row in _rows(_section(_sections(report), "Targets")) if row[0].startswith("ringkv CAS"))
    assert cas[-1] in ("MET", "SHORT")
    contended = {row[0] for row in _rows(_section(_sections(report), "Contended CAS"))}
    assert contended == {"ringkv", "etcd"}


@pytest.fixture(scope="module")
def token_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    out: Path = tmp_path_factory.mktemp("consistency-token") / "consistency.md"
    result = CliRunner().invoke(cli_main, [
        "bench", "consistency", "--systems", "ringkv", "--ringkv-client", "token-aware",
        "--operations", str(OPERATIONS), "--repeats", "1", "--processes", "2", "--clients", "6",
        "--hot-keys", "2", "--probe-operations", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out.read_text()


def test_through_the_token_aware_client_no_consensus_command_is_forwarded(token_report: str) -> None:
    # ringkv's own client sends each consensus command to its key's proposer (docs/client.md).
    _check_measured_without_failures(_results(token_report, "ringkv"), RINGKV_OPERATIONS)
    assert "--ringkv-client token-aware" in token_report
    assert any("token-aware client" in line for line in _section(_sections(token_report), "Setup"))
    counters = {row[0]: row for row in _rows(_section(_sections(token_report), "Consensus counters"))}
    for operation in ("INCR", "CAS", "SERIAL GET", "CAS (contended)"):
        assert _number(counters[operation][1]) > 0 and _number(counters[operation][9]) == 0, counters[operation]


def test_the_profile_sees_the_consensus_code(tmp_path: Path) -> None:
    # py-spy reads Python frames: on compiled nodes it saw only the event loop ("Runner.run",
    # 58% of the samples). The profiled phase runs on Python-source nodes of its own.
    from ringkv.bench.consistency.profile import py_spy

    if py_spy() is None:
        pytest.skip("py-spy is not installed (scripts/bootstrap bench installs it)")
    out = tmp_path / "consistency.md"
    result = CliRunner().invoke(cli_main, [
        "bench", "consistency", "--systems", "ringkv", "--operations", "1500", "--repeats", "1",
        "--processes", "1", "--clients", "6", "--probe-operations", "0",
        "--profile-dir", str(tmp_path / "prof"), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = _section(_sections(out.read_text()), "Where the ringkv nodes' CPU goes")
    if any("recorded no samples" in line for line in lines):
        pytest.skip("py-spy could not attach here (ptrace permission)")
    stages = {row[0]: _number(row[1]) for row in _rows(lines)}
    consensus = sum(share for stage, share in stages.items() if stage.startswith(("proposer", "acceptor")))
    assert consensus > 5, stages
