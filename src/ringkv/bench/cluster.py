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

Then (unless `--no-sweep`) it measures latency against throughput on the cluster: SET and GET
at 1 to 50 clients, a table, the load up to which p99 stays under 1 ms against half the maximum
throughput, and a plot (cluster-latency.png beside --out).

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
from ringkv.hotpath import PURE_ENV
from ringkv.testing.launcher import LocalCluster, NodeProcess

RATIO_TARGET = 0.25
P99_TARGET_MS = 5.0
SYSTEMS = ("cluster", "node", "redis")


@dataclass
class Cell:
    runs: dict[str, list[Result]] = field(default_factory=lambda: {s: [] for s in SYSTEMS})

    def ratios(self, system: str) -> list[float]:
        return [a.rps / b.rps for a, b in zip(self.runs[system], self.runs["redis"])]


def run_spread(ports: list[int], test: str, requests: int, total_clients: int = CLIENTS) -> Result:
    """redis-benchmark against several nodes at once, `total_clients` clients in all (a node
    left without a client when there are fewer clients than nodes gets no redis-benchmark)."""
    n = len(ports)
    clients = [total_clients // n + (1 if i < total_clients % n else 0) for i in range(n)]
    procs = [
        subprocess.Popen(redis_benchmark_command(port, test, requests * c // total_clients, 1, c),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for port, c in zip(ports, clients) if c
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
        f"SET and one GET run: {total:,} samples. The profiled nodes run the Python source "
        "(`RINGKV_PURE=1`): py-spy sees nothing inside compiled modules (docs/compiled.md).",
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


def render(cells: dict[str, Cell], requests: int, repeats: int, profile: list[str],
           sweep: list[str] | None = None) -> str:
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
    if sweep:
        lines += ["", *sweep]
    if profile:
        lines += ["", "## Where the cluster's CPU goes", "", *profile]
    return "\n".join(lines) + "\n"


def run_profiled(tmp: str, profile_dir: str, requests: int, quiet: dict) -> list[str]:
    """One more SET and GET run on a fresh cluster with py-spy sampling every node."""
    if shutil.which("py-spy") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")):
        return ["(py-spy is not installed: `pip install py-spy` to profile)"]
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(profile_dir, exist_ok=True)
    # Python-source nodes: py-spy reads Python frames, and compiled code has none.
    cluster = LocalCluster(os.path.join(tmp, "profiled"), nodes=3, replicas=3, env={PURE_ENV: "1"}, **quiet)
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


# The latency sweep: closed-loop load at each of these client counts (spread over the nodes),
# from one client to saturation. Each point is one (throughput, latency) pair of the curve.
SWEEP_CLIENTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 50)
SWEEP_P99_TARGET_MS = 1.0


def run_sweep(ports: list[int], requests: int, repeats: int) -> dict[str, dict[int, list[Result]]]:
    """For SET and GET, every client count of SWEEP_CLIENTS, `repeats` times (the counts in a
    rotated order each time, so load drift does not line up with the count)."""
    out: dict[str, dict[int, list[Result]]] = {t: {c: [] for c in SWEEP_CLIENTS} for t in ("SET", "GET")}
    for rep in range(repeats):
        counts = list(SWEEP_CLIENTS)
        shift = rep * 3 % len(counts)
        counts = counts[shift:] + counts[:shift]
        for test in ("SET", "GET"):
            for c in counts:
                # At least 4,000 requests per client: a p99 needs enough samples per process.
                r = run_spread(ports, test, max(requests * c // CLIENTS, 4_000 * c), c)
                out[test][c].append(r)
                print(f"sweep {rep + 1} {test} {c} clients: {r.rps:,.0f} ops/s p50 {r.p50_ms} ms "
                      f"p99 {r.p99_ms} ms", flush=True)
    return out


def sweep_points(runs: dict[int, list[Result]]) -> list[tuple[int, float, float, float]]:
    """(clients, ops/s, p50 ms, p99 ms) per client count: medians of the repeats."""
    return [(c, statistics.median(r.rps for r in rs), statistics.median(r.p50_ms for r in rs),
             statistics.median(r.p99_ms for r in rs)) for c, rs in runs.items() if rs]


def sweep_verdict(points: list[tuple[int, float, float, float]]) -> tuple[float, float, float | None, str]:
    """(maximum ops/s, half of it, p99 at the fastest point at or below half, verdict)."""
    peak = max(p[1] for p in points)
    half = peak / 2
    below = [p for p in points if p[1] <= half]
    if not below:
        return peak, half, None, "no point at or below half the maximum"
    p99 = max(p[3] for p in below)  # the worst p99 over every load up to half
    return peak, half, p99, "PASS" if p99 < SWEEP_P99_TARGET_MS else "SHORT"


def render_sweep(sweep: dict[str, dict[int, list[Result]]], plot_path: str | None, requests: int,
                 repeats: int) -> list[str]:
    lines = [
        "## Latency against throughput",
        "",
        f"Closed-loop load from redis-benchmark at {', '.join(map(str, SWEEP_CLIENTS))} clients in all, "
        "spread over the three nodes as above (the worst node's p99 is the point's p99); "
        f"at least 4,000 requests per client per point, {repeats} repeat(s) in rotated orders, "
        "medians. Each client waits for its answer before sending again, so a point's throughput "
        "is what that many clients reach and its latency what they saw there. Target: p99 under "
        f"{SWEEP_P99_TARGET_MS:g} ms at every load up to half of the maximum throughput.",
        "",
    ]
    if plot_path:
        lines += [f"![latency against throughput]({os.path.basename(plot_path)})", ""]
    lines += ["| test | clients | ops/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    verdicts = []
    for test, runs in sweep.items():
        points = sweep_points(runs)
        for c, rps, p50, p99 in points:
            lines.append(f"| {test} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |")
        peak, half, p99, verdict = sweep_verdict(points)
        held = [p for p in points if p[3] < SWEEP_P99_TARGET_MS]
        holds_to = max((p[1] for p in held), default=0.0)
        verdicts.append(
            f"- {test}: maximum {peak:,.0f} ops/s; half is {half:,.0f} ops/s; worst p99 at or below "
            f"half: {'n/a' if p99 is None else f'{p99:.2f} ms'} ({verdict}); p99 stays under "
            f"{SWEEP_P99_TARGET_MS:g} ms up to {holds_to:,.0f} ops/s ({holds_to / peak:.0%} of the maximum)."
        )
    return [*lines, "", *verdicts]


def plot_sweep(sweep: dict[str, dict[int, list[Result]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for test, colour in (("SET", "tab:red"), ("GET", "tab:blue")):
        points = sweep_points(sweep[test])
        xs = [p[1] for p in points]
        ax.plot(xs, [p[3] for p in points], "o-", color=colour, label=f"{test} p99")
        ax.plot(xs, [p[2] for p in points], "o--", color=colour, alpha=0.5, label=f"{test} p50")
        peak = max(xs)
        ax.axvline(peak / 2, color=colour, linestyle=":", alpha=0.6)
        for c, x, _, y in points:
            ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color=colour)
    ax.axhline(SWEEP_P99_TARGET_MS, color="black", linewidth=0.8, linestyle="-.", label=f"{SWEEP_P99_TARGET_MS:g} ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("throughput, ops/s (numbers: clients; dotted: half of each test's maximum)")
    ax.set_ylabel("latency, ms")
    ax.set_title("3-node ringkv cluster at QUORUM: latency against throughput")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--requests", default=100_000, show_default=True, help="Requests per run (spread over the nodes for the cluster).")
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default="docs/benchmarks/cluster.md", show_default=True, help="'-' writes no file.")
@click.option("--profile-dir", default=None, help="Also profile the cluster's nodes in one extra run; keep the profiles here.")
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="Also measure latency against throughput from 1 to 50 clients, with a plot beside --out.")
def main(requests: int, repeats: int, out: str, profile_dir: str | None, sweep: bool) -> None:
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
            swept = run_sweep(ports, requests, repeats) if sweep else None
        profile: list[str] = []
        if profile_dir:
            profile = run_profiled(tmp, profile_dir, requests, quiet)
    sweep_lines: list[str] = []
    if swept is not None:
        plot_path = None
        if out != "-":
            plot_path = os.path.join(os.path.dirname(out) or ".", "cluster-latency.png")
            os.makedirs(os.path.dirname(plot_path) or ".", exist_ok=True)
            plot_sweep(swept, plot_path)
        sweep_lines = render_sweep(swept, plot_path, requests, repeats)
    report = render(cells, requests, repeats, profile, sweep_lines)
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
