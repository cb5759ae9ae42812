"""The instruction-count benchmark (ringkv.bench.instructions) measures what it says: every
workload runs through the RESP connection, the service and the engine, and its count per
command does not depend on how many commands were counted. No command leaves garbage for the
cycle collector."""

from __future__ import annotations

import pytest

from ringkv import hotpath
from ringkv.bench.instructions import measure, measure_cpu

# The count is of Python bytecode, which a compiled module has none of: the counting tests run
# in scripts/test's pure pass (RINGKV_PURE=1), as `python -m ringkv.bench.instructions` runs itself.
counts_bytecode = pytest.mark.skipif(hotpath.module_state("ringkv.api.resp_server") == "compiled",
                                     reason="counts bytecode: runs in the pure pass")


@counts_bytecode
def test_every_workload_is_counted_through_the_whole_path():
    measured = measure(commands=320)
    assert list(measured) == ["SET -P 1", "SET -P 16", "GET -P 1", "GET -P 16"]
    counts = {workload: by_function for workload, (by_function, _) in measured.items()}
    for workload, by_function in counts.items():
        assert any(f.endswith("api/resp_server.py:_execute") for f in by_function), workload
        assert any(f.endswith("storage/engine.py:get") for f in by_function), workload
        total = sum(by_function.values())
        assert 100 < total < 10_000, (workload, total)
    assert any(f.endswith("storage/engine.py:put") for f in counts["SET -P 16"])
    # Pipelining spreads the per-read work (parsing, the log write, the reply) over 16.
    assert sum(counts["SET -P 16"].values()) < sum(counts["SET -P 1"].values())
    # Deterministic: the same path counted twice over a different number of commands.
    again, _ = measure(commands=640)["GET -P 16"]
    assert abs(sum(again.values()) - sum(counts["GET -P 16"].values())) < 5
    # A cycle per command would be freed only by collections that walk the node's heap.
    assert {workload: garbage for workload, (_, garbage) in measured.items()} == dict.fromkeys(measured, 0.0)


@counts_bytecode
def test_a_clusters_coordinator_is_counted_through_its_read_and_write_paths():
    measured = measure(commands=160, cluster=True)
    for workload, (by_function, garbage) in measured.items():
        path = "node/write_path.py:replicate" if workload.startswith("SET") else "node/read_path.py:read"
        assert any(f.endswith(path) for f in by_function), workload
        assert garbage == 0, workload
    # The coordinator does more than one node alone: the plans, the quorum, the replica calls.
    single = measure(commands=160)
    for workload in measured:
        assert sum(measured[workload][0].values()) > sum(single[workload][0].values()), workload


@pytest.mark.parametrize("cluster", [False, True], ids=["node", "coordinator"])
def test_cpu_mode_times_every_workload_on_whichever_modules_loaded(cluster):
    # `--cpu` runs compiled and pure alike (both passes run this): each workload answered
    # (the harness raises if the connection closed or sent nothing) in a time per command
    # that a real run could have taken.
    timed = measure_cpu(commands=1_600, cluster=cluster)
    assert list(timed) == ["SET -P 1", "SET -P 16", "GET -P 1", "GET -P 16"]
    assert all(0.5 < us < 5_000 for us in timed.values()), timed
