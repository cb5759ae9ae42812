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

With `--profile-dir`, a last extra run samples the cluster's nodes with py-spy (if installed;
it is in the `bench` extra) and the report lists where their time goes.

This is a benchmark, not a test: the machine is small and shared (the cluster's three processes
and the load generators share its cores), so only ratios measured side by side mean much, and
nothing here is tuned to make ringkv look good.
"""

from __future__ import annotations

import os
import shutil
import signal
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


# Where a sampled frame's own time is put when the report groups it (first match wins).
_GROUPS = (
    ("writes to sockets (send syscalls: replies to clients, RPC frames)",
     ("RespConnection._flush", "_FramedConnection._flush")),
    ("the event loop itself (uvloop in C: epoll, socket reads, callback dispatch)", ("Runner.run",)),
    ("WAL writes", ("WalWriter._write",)),
)


def profile_summary(paths: list[str], top: int = 20) -> list[str]:
    """py-spy's raw samples of the three nodes, as shares of their sampled time."""
    self_time: dict[str, int] = {}
    total = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.rstrip()
                if not line:
                    continue
                stack, n = line.rsplit(" ", 1)
                leaf = stack.split(";")[-1]
                name, _, where = leaf.partition(" (")
                where = where.rstrip(")").split("/site-packages/")[-1].split("/src/")[-1]
                key = f"{name} ({where.rsplit(':', 1)[0]})"
                self_time[key] = self_time.get(key, 0) + int(n)
                total += int(n)
    if not total:
        return ["(py-spy recorded no samples)"]
    groups = {label: 0 for label, _ in _GROUPS}
    rest = 0
    for key, n in self_time.items():
        for label, names in _GROUPS:
            if any(key.startswith(name + " ") for name in names):
                groups[label] += n
                break
        else:
            rest += n
    lines = [
        f"py-spy samples (100 per second per node, of the thread holding the GIL, so idle waits "
        f"in epoll do not count) of the three nodes during one "
        f"SET and one GET run: {total:,} samples.",
        "",
        "| where the time goes | share |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {n / total:.1%} |" for label, n in groups.items()]
    lines += [f"| Python code of the request path (parsing, coordinator, quorum, RPC framing, replica, engine) | {rest / total:.1%} |",
              "", "Functions with the most own time:", "", "| function | share |", "|---|---:|"]
    for key, n in sorted(self_time.items(), key=lambda kv: kv[1], reverse=True)[:top]:
        lines.append(f"| `{key}` | {n / total:.1%} |")
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


def run_profiled(tmp: str, profile_dir: str, requests: int, quiet: dict) -> list[str]:
    """One more SET and GET run on a fresh cluster with py-spy sampling every node."""
    if shutil.which("py-spy") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")):
        return ["(py-spy is not installed: `pip install py-spy` to profile)"]
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(profile_dir, exist_ok=True)
    cluster = LocalCluster(os.path.join(tmp, "profiled"), nodes=3, replicas=3, **quiet)
    paths = []
    with cluster:
        ports = [n.resp_port for n in cluster.nodes]
        for test in ("SET", "GET"):
            spies = []
            for n in cluster.nodes:
                path = os.path.abspath(os.path.join(profile_dir, f"{test.lower()}-{n.node_id}.txt"))
                paths.append(path)
                spies.append(subprocess.Popen(
                    [spy, "record", "--pid", str(n.proc.pid), "--rate", "100", "--format", "raw", "--gil",
                     "--output", path, "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # let py-spy attach
            r = run_spread(ports, test, requests)
            print(f"profiled {test}: {r.rps:,.0f} ops/s", flush=True)
            for p in spies:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for p in spies:
                p.wait(timeout=30)
    return profile_summary([p for p in paths if os.path.exists(p)])


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
            profile = run_profiled(tmp, profile_dir, requests, quiet)
    report = render(cells, requests, repeats, profile)
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
