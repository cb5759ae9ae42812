"""What an operator's monitoring reads from a real 3-node cluster (docs/observability.md):
`/metrics` passes `promtool check metrics` and holds the process, build, quorum-latency and
per-peer series; every metric the Grafana dashboard and the alert rules use is one a node
exports, and their expressions parse (`promtool check rules`); a killed peer shows in the
per-peer figures; `log_format = "json"` writes one JSON object per line, admin actions among
them as audit lines.

promtool comes from Debian's prometheus package (scripts/system-deps extracts it alone)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from tests.tools import require

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)



def promtool() -> str:
    return require(shutil.which("promtool"), "promtool (from Debian's prometheus package)")


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "ringkv-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "ringkv.json"
SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, replica_timeout_ms=1000, log_format="json")
LAUNCHER_MARK = "---- ringkv.testing.launcher"  # the launcher's own line between runs, not the node's


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("observability"), nodes=3, **SETTINGS) as c:
        r = redis.Redis(port=c.nodes[0].resp_port, socket_timeout=10)
        for i in range(40):
            r.set(f"k{i}", "v")
            r.get(f"k{i}")
        yield c


def scrape(node) -> str:
    answer = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def series_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_pass_promtool_lint(cluster):
    done = subprocess.run([promtool(), "check", "metrics"], input=scrape(cluster.nodes[0]), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_metrics_hold_process_build_quorum_and_peer_series(cluster):
    text = scrape(cluster.nodes[0])
    found = families(text)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds"):
        assert name in found, name
    (build,) = found["ringkv_build_info"].samples
    assert build.value == 1 and build.labels["version"] and build.labels["python"].count(".") == 2
    quorum = found["ringkv_quorum_duration_seconds"]
    assert quorum.type == "histogram"
    counts = {s.labels["operation"]: s.value for s in quorum.samples if s.name.endswith("_count")}
    assert counts["get"] >= 40 and counts["set"] >= 40
    # Buckets from 50 us to 10 s: loopback quorums land in the sub-millisecond ones.
    bounds = sorted({float(s.labels["le"]) for s in quorum.samples if s.name.endswith("_bucket")})
    assert bounds[0] <= 0.0001 and bounds[-2] >= 10 and bounds[-1] == float("inf")
    assert {s.labels["peer"] for s in found["ringkv_peer_up"].samples} == {"n2", "n3"}
    assert {s.labels["peer"] for s in found["ringkv_peer_phi"].samples} == {"n2", "n3"}
    peer_calls = {s.labels["peer"]: s.value for s in found["ringkv_peer_rpc_duration_seconds"].samples
                  if s.name.endswith("_count")}
    assert peer_calls["n2"] > 0 and peer_calls["n3"] > 0
    # INFO's counters that were missing, and the partition moves as a counter.
    for name, kind in (("ringkv_hints_dropped", "counter"), ("ringkv_gossip_failures", "counter"),
                       ("ringkv_anti_entropy_failures", "counter"), ("ringkv_cluster_replica_failures", "counter"),
                       ("ringkv_partition_moves", "counter"), ("ringkv_partition_moves_planned", "gauge"),
                       ("ringkv_disk_free_bytes", "gauge")):
        assert found[name].type == kind, name
    assert "ringkv_partition_moves_total" in series_names(text)


def _metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers followed by `{`, `[` or space that
    start with ringkv_, process_ or up)."""
    return set(re.findall(r"\b((?:ringkv|process)_[a-z0-9_]+)\b", expr))


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_dashboard_and_alerts_use_only_metrics_a_node_exports(cluster):
    exported = series_names(scrape(cluster.nodes[0]))
    used = set()
    for expr in _dashboard_exprs():
        used |= _metric_names(expr)
    used |= _metric_names(ALERTS.read_text())
    missing = {name for name in used if name not in exported}
    assert not missing, f"used by the dashboard or alerts but not exported: {sorted(missing)}"
    assert len(used) > 20


def test_alert_rules_and_dashboard_queries_parse(tmp_path):
    done = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {"RingkvNodeDown", "RingkvHintsPilingUp", "RingkvRepairFailing", "RingkvDiskFilling",
              "RingkvEventLoopStalls"}
    assert alerts <= set(re.findall(r"alert: (\w+)", ALERTS.read_text()))
    # Each dashboard query as a recording rule, Grafana's variables given values: promtool
    # parses every expression.
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$job", "ringkv").replace("$instance", ".*")
        rules.append(f"      - record: ringkv:dashboard_query_{i}\n        expr: {json.dumps(expr)}\n")
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_json_log_lines_and_an_audit_line_per_admin_action(cluster):
    n1 = cluster.nodes[0]
    redis.Redis(port=n1.resp_port, socket_timeout=30).execute_command("RINGKV.REPAIR")
    # The HTTP admin API is audited too, with no users configured.
    answer = httpx.post(f"http://127.0.0.1:{n1.http_port}/api/v1/admin/cluster/repair", timeout=30)
    assert answer.status_code == 200, answer.text

    def audit_lines() -> list[dict]:
        lines = [json.loads(line) for line in n1.log().splitlines() if line and not line.startswith(LAUNCHER_MARK)]
        return [d for d in lines if d.get("logger") == "ringkv.audit"]

    def repairs() -> dict[str, dict]:
        return {d.get("protocol"): d for d in audit_lines() if d.get("command") == "ringkv.repair"}

    wait_until(lambda: {"resp", "http"} <= repairs().keys(), 10, "both repairs' audit lines are in n1's log")
    for protocol, line in repairs().items():
        assert line["event"] == "admin" and line["result"] == "ok" and line["node_id"] == "n1", protocol
        assert line["client"].startswith("127.0.0.1:") and line["ts"].endswith("Z"), protocol
    assert len([d for d in audit_lines() if d.get("command") == "ringkv.repair"]) == 2
    # Every line of the node's output is one JSON object, its ready line and startup logs included.
    records = [json.loads(line) for line in n1.log().splitlines() if line and not line.startswith(LAUNCHER_MARK)]
    assert any("ready" in d.get("message", "") for d in records)
    assert all({"ts", "level", "logger"} <= d.keys() for d in records)


def test_a_killed_peer_shows_in_the_per_peer_figures(cluster):
    n1, _, n3 = cluster.nodes
    n3.kill()
    try:
        r = redis.Redis(port=n1.resp_port, socket_timeout=10)
        for i in range(20):
            r.execute_command("RINGKV.AT", "ONE", "SET", f"after:{i}", "v")

        def n3_failures() -> float:
            found = families(scrape(n1))
            return sum(s.value for s in found["ringkv_peer_rpc_failures"].samples
                       if s.labels["peer"] == "n3" and s.name.endswith("_total"))

        wait_until(lambda: n3_failures() >= 20, 10, "n1 counts its failed calls to n3")
        assert n3_failures() >= 20
    finally:
        n3.start()


def gc_collections(node) -> float:
    """Garbage collections the node's interpreter has run, every generation."""
    return sum(s.value for s in families(scrape(node))["python_gc_collections"].samples)


def test_requests_leave_no_garbage_for_the_cycle_collector(cluster):
    # A reference cycle made per request is freed only by the garbage collector, whose passes
    # then walk the heap under load: one such cycle per SET once cost the coordinator 30% more
    # CPU. A node collects once 20,000 more objects were made than freed (GC_GEN0_THRESHOLD,
    # ringkv/server.py), so these 6,000 requests would start several collections on the
    # coordinator if each left even a few objects behind.
    r = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=10)
    r.set("gc-warm", "v")
    before = [gc_collections(node) for node in cluster.nodes]
    for start in range(0, 3_000, 100):
        pipe = r.pipeline(transaction=False)
        for i in range(start, start + 100):
            pipe.set(f"gc{i % 200}", f"v{i}")
            pipe.get(f"gc{i % 200}")
        replies = pipe.execute()
        assert replies[1::2] == [f"v{i}".encode() for i in range(start, start + 100)]
    after = [gc_collections(node) for node in cluster.nodes]
    assert all(a - b <= 1 for a, b in zip(after, before, strict=True)), (before, after)
