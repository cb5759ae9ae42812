"""Server benchmark: redis-benchmark against one ringkv node and, in the same run, redis-server.

    python -m ringkv.bench.server [--requests 200000] [--repeats 3] [--out docs/benchmarks/server.md]

Both servers are started by this script on loopback: ringkv with its default settings (WAL sync
every 100 ms), redis-server with its default persistence (RDB snapshots, no AOF) in a temporary
directory. For each of SET and GET, at 50 clients, without pipelining and with `-P 16`, it runs
redis-benchmark (Debian's redis-tools) and keeps ops/s, p50 and p99. Runs alternate between the
two servers and repeat; the report quotes medians and the ratio to Redis of each repeat's pair.
A third server, a ringkv node with `RINGKV_PURE=1`, runs beside them: the compiled hot path's
gain over the same code as Python, measured in the same run (docs/compiled.md).

This is a benchmark, not a test: the machine is small and shared, so only ratios measured side
by side mean much, and nothing here is tuned to make ringkv look good.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import click
import redis as redis_py

from ringkv.hotpath import PURE_ENV
from ringkv.testing.launcher import NodeProcess, free_port

CLIENTS = 50
TARGETS = {1: 0.5, 16: 0.25}  # pipeline depth -> ratio to Redis needed
P99_TARGET_MS = 2.0


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0  # the server process's CPU time per request (user + system)


@dataclass
class Cell:
    ringkv: list[Result] = field(default_factory=list)
    redis: list[Result] = field(default_factory=list)
    pure: list[Result] = field(default_factory=list)  # ringkv with RINGKV_PURE=1

    def ratios(self) -> list[float]:
        return [a.rps / b.rps for a, b in zip(self.ringkv, self.redis)]

    def compiled_ratios(self) -> list[float]:
        """Each repeat's ringkv ops/s over the same build's pure-Python ops/s."""
        return [a.rps / b.rps for a, b in zip(self.ringkv, self.pure)]


def redis_benchmark_command(port: int, test: str, requests: int, pipeline: int, clients: int = CLIENTS) -> list[str]:
    return [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test.lower(),
        "-c", str(clients), "-n", str(requests), "-P", str(pipeline), "-r", "100000", "--csv",
    ]


def parse_redis_benchmark(out: str, test: str) -> Result:
    rows = list(csv.DictReader(io.StringIO(out)))
    row = next(r for r in rows if r["test"].upper().startswith(test.upper()))
    return Result(float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]))


def run_redis_benchmark(port: int, test: str, requests: int, pipeline: int, clients: int = CLIENTS) -> Result:
    cmd = redis_benchmark_command(port, test, requests, pipeline, clients)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    return parse_redis_benchmark(out, test)


class RedisServer:
    def __init__(self, directory: str):
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def hot_path_of(port: int) -> str:
    """What a node's INFO says of its hot path: "compiled", or why not (ringkv/hotpath.py)."""
    info = redis_py.Redis(port=port, socket_timeout=10).info("server")
    reason = info.get("hot_path_reason")
    return info["hot_path"] + (f": {reason}" if reason else "")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds process `pid` has used (Linux /proc; 0 elsewhere). Per
    request, it moves far less with the machine's load than ops/s does: the figure to compare
    two builds by on a busy machine."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def render(cells: dict, requests: int, repeats: int, hot_path: str) -> str:
    lines = [
        "# Server benchmark: one ringkv node against redis-server",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m ringkv.bench.server --requests {requests} "
        f"--repeats {repeats}` on {os.cpu_count()} cores ({_cpu_model()}), Python "
        f"{platform.python_version()}, {_version(['redis-server', '--version'])}, "
        f"{_version(['redis-benchmark', '--version'])}.",
        "",
        "Both servers run on loopback, started by the script: ringkv with its defaults (one node, "
        "WAL written to the OS before every reply and fsynced every 100 ms), redis-server with its "
        "defaults (RDB snapshots, no AOF). redis-benchmark: 50 clients, random keys out of 100,000 "
        "(`-r 100000`), 3-byte values. Medians of the repeats; the ratio is the median of each "
        "repeat's ringkv/Redis pair (the runs alternate, so both see the same machine load).",
        "",
        f"ringkv runs its compiled hot path ({hot_path}); a second ringkv node started with "
        "`RINGKV_PURE=1` runs the same code as Python in the same run (docs/compiled.md): "
        "the last columns compare the two.",
        "",
        "| test | pipeline | ringkv ops/s | ringkv p50 / p99 ms | Redis ops/s | Redis p50 / p99 ms | ratio | target | verdict "
        "| CPU us per request, ringkv / Redis | pure-Python ringkv ops/s, p99 ms, CPU us | compiled / pure ops/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for (test, pipeline), cell in cells.items():
        rk = cell.ringkv
        rd = cell.redis
        ratio = statistics.median(cell.ratios())
        target = TARGETS[pipeline]
        rk_p99 = statistics.median(r.p99_ms for r in rk)
        verdict = "PASS" if ratio >= target else "SHORT"
        if pipeline == 1 and rk_p99 > P99_TARGET_MS:
            verdict += f" (p99 {rk_p99:.2f} ms > {P99_TARGET_MS} ms)"
        lines.append(
            f"| {test} | {pipeline} | {statistics.median(r.rps for r in rk):,.0f} | "
            f"{statistics.median(r.p50_ms for r in rk):.2f} / {rk_p99:.2f} | "
            f"{statistics.median(r.rps for r in rd):,.0f} | "
            f"{statistics.median(r.p50_ms for r in rd):.2f} / {statistics.median(r.p99_ms for r in rd):.2f} | "
            f"{ratio:.2f} | >= {target} | {verdict} | "
            f"{statistics.median(r.cpu_us for r in rk):.1f} / {statistics.median(r.cpu_us for r in rd):.1f} | "
            f"{statistics.median(r.rps for r in cell.pure):,.0f}, {statistics.median(r.p99_ms for r in cell.pure):.2f}, "
            f"{statistics.median(r.cpu_us for r in cell.pure):.1f} | {statistics.median(cell.compiled_ratios()):.2f} |"
        )
    lines += [
        "",
        "Targets (from the server issue): ratio >= 0.5 without pipelining, >= 0.25 with `-P 16`, "
        "p99 <= 2 ms at 50 clients without pipelining. CPU per request is the server process's user "
        "plus system time over the run divided by its requests (ringkv's background compaction "
        "workers not included).",
        "",
        "Every repeat:",
        "",
        "| test | pipeline | ringkv ops/s | Redis ops/s | ratio | pure-Python ringkv ops/s | compiled / pure |",
        "|---|---|---|---|---|---|---|",
    ]
    for (test, pipeline), cell in cells.items():
        lines.append(
            f"| {test} | {pipeline} | {', '.join(f'{r.rps:,.0f}' for r in cell.ringkv)} | "
            f"{', '.join(f'{r.rps:,.0f}' for r in cell.redis)} | {', '.join(f'{x:.2f}' for x in cell.ratios())} | "
            f"{', '.join(f'{r.rps:,.0f}' for r in cell.pure)} | {', '.join(f'{x:.2f}' for x in cell.compiled_ratios())} |"
        )
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--requests", default=200_000, show_default=True, help="Requests per redis-benchmark run.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default="docs/benchmarks/server.md", show_default=True, help="'-' writes no file.")
def main(requests: int, repeats: int, out: str) -> None:
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools)")
    cells: dict[tuple[str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-server-") as tmp:
        node = NodeProcess(os.path.join(tmp, "ringkv"), http_enabled="false", log_level="warning")
        pure = NodeProcess(os.path.join(tmp, "ringkv-pure"), http_enabled="false", log_level="warning",
                           env={PURE_ENV: "1"})
        with node, pure, RedisServer(tmp) as redis:
            hot_path = hot_path_of(node.resp_port)
            if not hot_path_of(pure.resp_port).startswith("pure"):
                raise SystemExit("the node started with RINGKV_PURE=1 does not run pure Python")
            for rep in range(repeats):
                for pipeline in (1, 16):
                    for test in ("SET", "GET"):
                        cell = cells.setdefault((test, pipeline), Cell())
                        n = requests * (4 if pipeline > 1 else 1)
                        # Alternate which server goes first so drift in load hits both alike.
                        order = [("ringkv", node.resp_port), ("redis", redis.port), ("pure", pure.resp_port)]
                        if rep % 2:
                            order.reverse()
                        pids = {"ringkv": node.proc.pid, "redis": redis.proc.pid, "pure": pure.proc.pid}
                        for name, port in order:
                            pid = pids[name]
                            cpu_before = process_cpu_s(pid)
                            r = run_redis_benchmark(port, test, n, pipeline)
                            r.cpu_us = 1e6 * (process_cpu_s(pid) - cpu_before) / n
                            getattr(cell, name).append(r)
                            print(f"repeat {rep + 1} {test} -P {pipeline} {name}: {r.rps:,.0f} ops/s "
                                  f"p50 {r.p50_ms} ms p99 {r.p99_ms} ms, {r.cpu_us:.1f} us CPU per request", flush=True)
    report = render(cells, requests, repeats, hot_path)
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
