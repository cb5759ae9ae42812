"""Compaction strategies per namespace on a real node: a metrics namespace configured with
`compaction = "time_window"` has an LSM tree of its own; once every record of one of its windows
has expired, that window's table is deleted as a file (counted in /metrics), while the default
namespace's data, compacted leveled beside it, stays whole. A namespace's strategy changes on
the running node over RESP (RINGKV.ADMIN COMPACTION), HTTP (PUT
/api/v1/admin/namespaces/{ns}/compaction) and the CLI (`ringkv admin compaction`); a merge the
disk cannot hold is refused with a clear error, counted in INFO and /metrics, and the node stays
writable. A node of one, small memtables so that tables are written within seconds."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(120)

METRICS = 1500
USERS = 1500
TTL_MS = 3000


def _metric(http_port: int, name: str, labels: str = "") -> float | None:
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return None if m is None else float(m.group(1))


def test_a_time_window_namespace_deletes_its_expired_window_as_a_file(tmp_path: Path):
    node = NodeProcess(tmp_path / "n1", memtable_bytes=65536, anti_entropy_interval_ms=0,
                       namespaces="metrics:compaction=time_window:compaction_window_s=1")
    with node:
        metrics = redis.Redis(port=node.resp_port, socket_timeout=30, single_connection_client=True)
        assert metrics.execute_command("RINGKV.NAMESPACE", "metrics") == b"OK"
        users = redis.Redis(port=node.resp_port, socket_timeout=30)
        pipe = metrics.pipeline(transaction=False)
        pipe.execute_command("RINGKV.NAMESPACE", "metrics")  # a pipeline has a connection of its own
        rng = random.Random(7)
        for i in range(METRICS):
            # Hex, so that the tables' bytes are about the records' (lz4 leaves hex nearly whole).
            pipe.set(f"cpu:{i:05d}", rng.randbytes(50).hex(), px=TTL_MS)
        before = time.monotonic()  # no record expires before this + TTL
        pipe.execute()
        # The memtable is shared by every namespace: these writes flush what is left of the
        # metrics into a table, and stay (they have no TTL).
        pipe = users.pipeline(transaction=False)
        for i in range(USERS):
            pipe.set(f"user:{i:05d}", "y" * 100)
        pipe.execute()
        label = '{compaction="time_window",family="metrics"}'
        wait_until(lambda: (_metric(node.http_port, "ringkv_engine_family_sorted_runs", label) or 0) >= 1,
                   30, "the metrics namespace's own tables to be flushed", interval_s=0.1)
        if time.monotonic() - before < TTL_MS / 1000 - 0.5:
            assert _metric(node.http_port, "ringkv_engine_expired_tables_dropped_total") == 0
        tables_before = len(list((tmp_path / "n1" / "engine").glob("*.sst")))

        wait_until(lambda: (_metric(node.http_port, "ringkv_engine_expired_tables_dropped_total") or 0) >= 1,
                   30, "the expired window's table to be deleted", interval_s=0.2)
        assert time.monotonic() - before >= TTL_MS / 1000 - 0.2, "deleted before its records expired"
        # Every window of the namespace goes, as files: none of its tables is left.
        wait_until(lambda: _metric(node.http_port, "ringkv_engine_family_sorted_runs", label) == 0,
                   30, "every expired window of the metrics namespace to be deleted", interval_s=0.2)
        assert _metric(node.http_port, "ringkv_engine_expired_bytes_dropped_total") > METRICS * 100
        assert len(list((tmp_path / "n1" / "engine").glob("*.sst"))) < tables_before + 2
        assert metrics.get("cpu:00000") is None
        assert list(metrics.scan_iter(count=1000)) == [], "no metric is listed once its window is gone"
        assert users.dbsize() == USERS
        assert all(v == b"y" * 100 for v in users.mget([f"user:{i:05d}" for i in range(0, USERS, 50)]))


def _info(client: redis.Redis, section: str) -> dict:
    return client.info(section)


def _cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "compaction", *args,
                           "--port", str(node.resp_port), "--timeout-ms", "30000"],
                          capture_output=True, text=True, timeout=60)


def _write(client: redis.Redis, namespace: str, prefix: str, count: int, size: int = 100) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("RINGKV.NAMESPACE", namespace)
    for i in range(count):
        pipe.set(f"{prefix}:{i:05d}", "v" * size)
    pipe.execute()


def test_compaction_strategy_changes_on_the_running_node_over_resp_http_and_the_cli(tmp_path: Path):
    node = NodeProcess(tmp_path / "n1", memtable_bytes=65536, anti_entropy_interval_ms=0,
                       namespaces="events:compaction=leveled,cache:replicas=1")
    with node:
        r = redis.Redis(port=node.resp_port, socket_timeout=30, single_connection_client=True)
        http = httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30)

        # RESP: show, then change to tiered with a setting by its short name.
        shown = json.loads(r.execute_command("RINGKV.ADMIN", "COMPACTION", "events"))
        assert (shown["namespace"], shown["family"], shown["compaction"]) == ("events", "events", "leveled")
        changed = json.loads(r.execute_command("RINGKV.ADMIN", "COMPACTION", "events", "tiered",
                                               "min_merge_runs", "2", "compaction_max_runs", "8"))
        assert changed["compaction"] == "tiered" and changed["min_merge_runs"] == 2 and changed["max_runs"] == 8
        # New tables of the namespace follow it: flushed runs merge in pairs, never past 8 runs.
        _write(r, "events", "e", 3000)
        r.execute_command("RINGKV.NAMESPACE", "default")
        label = '{compaction="tiered",family="events"}'
        wait_until(lambda: _metric(node.http_port, "ringkv_engine_family_sorted_runs", label) is not None,
                   30, "the events family to be reported as tiered", interval_s=0.2)
        assert _metric(node.http_port, "ringkv_engine_family_sorted_runs", label) <= 8
        persistence = _info(r, "persistence")
        assert persistence["family_events"]["compaction"] == "tiered"
        assert persistence["family_default"]["compaction"] == "leveled", "the other family is unchanged"

        # Refusals name what is wrong, and change nothing.
        with pytest.raises(redis.ResponseError, match="shares the default namespace's LSM tree"):
            r.execute_command("RINGKV.ADMIN", "COMPACTION", "cache", "tiered")
        with pytest.raises(redis.ResponseError, match="compaction_window_s is a setting of time_window"):
            r.execute_command("RINGKV.ADMIN", "COMPACTION", "events", "tiered", "window_s", "60")
        with pytest.raises(redis.ResponseError, match="setting 'window_s' has no value"):
            r.execute_command("RINGKV.ADMIN", "COMPACTION", "events", "time_window", "window_s")
        with pytest.raises(redis.ResponseError, match="unknown namespace 'nope'"):
            r.execute_command("RINGKV.ADMIN", "COMPACTION", "nope")
        assert json.loads(r.execute_command("RINGKV.ADMIN", "COMPACTION", "events"))["compaction"] == "tiered"

        # HTTP: the same calls.
        put = http.put("/api/v1/admin/namespaces/events/compaction",
                       json={"compaction": "time_window", "settings": {"window_s": 60, "ttl_rule": "safe"}})
        assert put.status_code == 200, put.text
        assert put.json()["compaction"] == "time_window" and put.json()["window_ms"] == 60_000
        got = http.get("/api/v1/admin/namespaces/events/compaction")
        assert got.status_code == 200 and got.json()["compaction"] == "time_window"
        bad = http.put("/api/v1/admin/namespaces/events/compaction",
                       json={"compaction": "time_window", "settings": {"window_s": 0}})
        assert bad.status_code == 400 and "compaction_window_s must be an integer >= 1" in bad.json()["detail"]
        assert http.put("/api/v1/admin/namespaces/events/compaction", json={"compaction": "fifo"}).status_code == 422
        unknown = http.get("/api/v1/admin/namespaces/nope/compaction")
        assert unknown.status_code == 400 and "unknown namespace 'nope'" in unknown.json()["detail"]

        # The CLI: change back to leveled, show it as JSON, and a refusal's exit code.
        out = _cli(node, "events", "leveled")
        assert out.returncode == 0, out.stderr
        assert "namespace events (column family events) is now compacted leveled" in out.stdout
        out = _cli(node, "events", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["compaction"] == "leveled"
        out = _cli(node, "cache", "tiered", "size_ratio_percent=50")
        assert out.returncode == 4 and "shares the default namespace's LSM tree" in out.stderr
        out = _cli(node, "events", "tiered", "size_ratio_percent")
        assert out.returncode == 2 and "expected SETTING=VALUE" in out.stderr

        # The data written under each strategy reads back whole.
        r.execute_command("RINGKV.NAMESPACE", "events")
        assert r.dbsize() == 3000
        assert all(v == b"v" * 100 for v in r.mget([f"e:{i:05d}" for i in range(0, 3000, 97)]))
        http.close()


def test_a_merge_the_disk_cannot_hold_is_refused_counted_and_the_node_stays_writable(tmp_path: Path):
    # A headroom of 10^12 % of a merge's input: no disk can hold that, so every merge is refused
    # before it starts, as on a disk that is nearly full.
    node = NodeProcess(tmp_path / "n1", memtable_bytes=65536, anti_entropy_interval_ms=0,
                       compaction="tiered", compaction_min_merge_runs=2,
                       compaction_headroom_percent=10**12)
    with node:
        r = redis.Redis(port=node.resp_port, socket_timeout=30)
        _write(r, "default", "k", 2000)
        wait_until(lambda: (_metric(node.http_port, "ringkv_engine_compaction_space_refusals_total") or 0) >= 1,
                   30, "a merge to be refused for want of space", interval_s=0.2)
        persistence = _info(r, "persistence")
        assert persistence["compaction_space_refusals"] >= 1
        error = persistence["compaction_space_error"]  # INFO shows no "," (clients split on it)
        assert "not enough disk space for compaction" in error and "bytes are free" in error, error
        assert persistence["background_error"] == "", "a refused merge does not turn the node read-only"
        assert _metric(node.http_port, "ringkv_engine_background_error") == 0
        assert persistence["family_default"]["sorted_runs"] >= 2, "the runs it would have merged are still there"
        _write(r, "default", "later", 200)
        assert r.get("later:00199") == b"v" * 100 and r.get("k:01999") == b"v" * 100
