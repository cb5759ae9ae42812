"""Cluster benchmark: a 3-node ringkv cluster, one ringkv node and redis-server, side by side.

    python -m ringkv.bench.cluster [--requests 100000] [--repeats 3] [--out docs/benchmarks/cluster.md]
                                   [--profile-dir DIR]

Every server is started by this script on loopback. The cluster is three `ringkv serve`
processes (N=3, R=W=2: QUORUM, the defaults) on the same machine; the single node and
redis-server run with their defaults. Load is redis-benchmark at 50 clients without pipelining:
for the cluster, three redis-benchmark processes run at once, one per node (17 + 17 + 16
clients), so every node coordinates a third of the requests; their ops/s add up and the p99
quoted is the worst of the three. Runs rotate between the three systems and repeat; the report
quotes medians and each repeat's ratio to Redis.

With `--profile-dir`, a last extra run profiles the cluster's nodes (cProfile, written when they
stop) and the report lists where the CPU goes.

This is a benchmark, not a test: the machine is small and shared (the cluster's three processes
and the load generators share its cores), so only ratios measured side by side mean much, and
nothing here is tuned to make ringkv look good.
"""

from __future__ import annotations

import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import click

from ringkv.bench.server import (
    CLIENTS,
    RedisServer,
    Result,
    _cpu_model,
    _version,
    parse_redis_benchmark,
    redis_benchmark_command,
    run_redis_benchmark,
)
from ringkv.testing.launcher import LocalCluster, NodeProcess

RATIO_TARGET = 0.25
P99_TARGET_MS = 5.0
SYSTEMS = ("cluster", "node", "redis")


@dataclass
class Cell:
    runs: dict[str, list[Result]] = field(default_factory=lambda: {s: [] for s in SYSTEMS})

    def ratios(self, system: str) -> list[float]:
        return [a.rps / b.rps for a, b in zip(self.runs[system], self.runs["redis"])]


def run_spread(ports: list[int], test: str, requests: int) -> Result:
    """redis-benchmark against several nodes at once, CLIENTS clients in all."""
    n = len(ports)
    clients = [CLIENTS // n + (1 if i < CLIENTS % n else 0) for i in range(n)]
    procs = [
        subprocess.Popen(redis_benchmark_command(port, test, requests * c // CLIENTS, 1, c),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for port, c in zip(ports, clients)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        if p.returncode:
            raise RuntimeError(f"redis-benchmark exited with {p.returncode}")
        results.append(parse_redis_benchmark(out, test))
    return Result(
        sum(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        max(r.p99_ms for r in results),
    )


def profile_summary(paths: list[str], requests: int, top: int = 25) -> list[str]:
    """The functions with the most own time, summed over the nodes' profiles."""
    stats = pstats.Stats(paths[0])
    for p in paths[1:]:
        stats.add(p)
    total = sum(v[2] for v in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    lines = [
        f"Own CPU time of the three nodes' processes during one SET run and one GET run of "
        f"{requests:,} requests each (cProfile on CPU time, which slows Python code down; the shares are what "
        f"matters): {total:.1f} s in all, {total / (2 * requests) * 1e6:.0f} us per request.",
        "",
        "| function | own time s | share | calls per request |",
        "|---|---:|---:|---:|",
    ]
    for (filename, line, name), (_cc, nc, tt, _ct, _callers) in rows:
        where = filename.split("/site-packages/")[-1].split("/src/")[-1]
        lines.append(f"| `{name}` ({where}:{line}) | {tt:.2f} | {tt / total:.1%} | {nc / (2 * requests):.2f} |")
    return lines


def render(cells: dict[str, Cell], requests: int, repeats: int, profile: list[str]) -> str:
    lines = [
        "# Cluster benchmark: three ringkv nodes, one ringkv node and redis-server",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m ringkv.bench.cluster --requests {requests} "
        f"--repeats {repeats}` on {os.cpu_count()} cores ({_cpu_model()}), {_version(['redis-server', '--version'])}.",
        "",
        "All on loopback, started by the script. The cluster: 3 `ringkv serve` processes, N=3, R=W=2 "
        "(QUORUM), WAL written before every reply and fsynced every 100 ms, so a write is acknowledged "
        "once two replicas have it in their logs. Load: 50 redis-benchmark clients without "
        "pipelining, random keys out of 100,000, 3-byte values; for the cluster, three redis-benchmark "
        "processes at once (17 + 17 + 16 clients, one per node), ops/s summed, p99 the worst of the "
        "three. The single node and redis-server get one redis-benchmark with 50 clients. Medians of "
        "the repeats; ratios are per repeat, against the Redis run of the same repeat.",
        "",
        "| test | system | ops/s | p50 ms | p99 ms | ratio to Redis | target | verdict |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for test, cell in cells.items():
        for system in SYSTEMS:
            runs = cell.runs[system]
            rps = statistics.median(r.rps for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            ratio = statistics.median(cell.ratios(system)) if system != "redis" else 1.0
            target = verdict = ""
            if system == "cluster":
                target = f">= {RATIO_TARGET}, p99 <= {P99_TARGET_MS:g} ms"
                verdict = "PASS" if ratio >= RATIO_TARGET and p99 <= P99_TARGET_MS else "SHORT"
            lines.append(f"| {test} | {system} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio:.2f} | {target} | {verdict} |")
    lines += ["", "Every repeat (ops/s):", "", "| test | cluster | node | redis |", "|---|---|---|---|"]
    for test, cell in cells.items():
        lines.append(f"| {test} | " + " | ".join(", ".join(f"{r.rps:,.0f}" for r in cell.runs[s]) for s in SYSTEMS) + " |")
    if profile:
        lines += ["", "## Where the cluster's CPU goes", "", *profile]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--requests", default=100_000, show_default=True, help="Requests per run (spread over the nodes for the cluster).")
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default="docs/benchmarks/cluster.md", show_default=True, help="'-' writes no file.")
@click.option("--profile-dir", default=None, help="Also profile the cluster's nodes in one extra run; keep the profiles here.")
def main(requests: int, repeats: int, out: str, profile_dir: str | None) -> None:
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools)")
    cells: dict[str, Cell] = {t: Cell() for t in ("SET", "GET")}
    quiet = {"http_enabled": "false", "log_level": "warning"}
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-cluster-") as tmp:
        cluster = LocalCluster(os.path.join(tmp, "cluster"), nodes=3, replicas=3, **quiet)
        node = NodeProcess(os.path.join(tmp, "node"), **quiet)
        with cluster, node, RedisServer(tmp) as redis:
            ports = [n.resp_port for n in cluster.nodes]
            for rep in range(repeats):
                for test in ("SET", "GET"):
                    order = list(SYSTEMS)
                    order = order[rep % 3:] + order[: rep % 3]  # rotate who runs first
                    for system in order:
                        if system == "cluster":
                            r = run_spread(ports, test, requests)
                        else:
                            r = run_redis_benchmark(node.resp_port if system == "node" else redis.port, test, requests, 1)
                        cells[test].runs[system].append(r)
                        print(f"repeat {rep + 1} {test} {system}: {r.rps:,.0f} ops/s p50 {r.p50_ms} ms "
                              f"p99 {r.p99_ms} ms", flush=True)
        profile: list[str] = []
        if profile_dir:
            os.makedirs(profile_dir, exist_ok=True)
            paths = [os.path.abspath(os.path.join(profile_dir, f"n{i + 1}.prof")) for i in range(3)]
            cluster = LocalCluster(os.path.join(tmp, "profiled"), nodes=3, replicas=3, **quiet)
            for n, path in zip(cluster.nodes, paths):
                n.env["RINGKV_PROFILE_OUT"] = path
            with cluster:
                ports = [n.resp_port for n in cluster.nodes]
                for test in ("SET", "GET"):
                    r = run_spread(ports, test, requests)
                    print(f"profiled {test}: {r.rps:,.0f} ops/s", flush=True)
            profile = profile_summary(paths, requests)
    report = render(cells, requests, repeats, profile)
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
