"""Security benchmark: what TLS and AUTH cost, against Redis paying the same.

    python -m ringkv.bench.security [--requests 100000] [--repeats 3] [--out docs/benchmarks/security.md]

Four servers on loopback, started by this script, measured in one run by redis-benchmark
(Debian's redis-tools) at 50 clients, SET and GET, without pipelining and with `-P 16`:

- ringkv, one node, defaults (plain RESP, no password: protected mode admits loopback);
- ringkv, one node, RESP on TLS only (`tls_port`, certificates from `ringkv admin certs`) with
  a password on the default user (`requirepass`): every connection does a TLS handshake and AUTH;
- redis-server plain, and redis-server with `--tls-port` and `--requirepass`, the same files.

The issue's target: ringkv with TLS and AUTH at most 20% below ringkv without (ratio >= 0.8).
Runs rotate which server goes first, so drift in load falls on all four alike; the report
quotes medians of each repeat's ratios. A benchmark, not a test: nothing here is tuned.
"""

from __future__ import annotations

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

from ringkv.bench.server import CLIENTS, Result, _cpu_model, _version, parse_redis_benchmark
from ringkv.testing.launcher import NodeProcess, free_port

PASSWORD = "bench-secret-password"
TARGET_RATIO = 0.8  # ringkv TLS+AUTH / ringkv plain
SYSTEMS = ("ringkv", "ringkv-secure", "redis", "redis-secure")


@dataclass(frozen=True)
class Endpoint:
    port: int
    secure: bool


@dataclass
class Cell:
    runs: dict[str, list[Result]] = field(default_factory=lambda: {s: [] for s in SYSTEMS})

    def ratios(self, a: str, b: str) -> list[float]:
        return [x.rps / y.rps for x, y in zip(self.runs[a], self.runs[b])]


def benchmark_command(ep: Endpoint, ca: str, test: str, requests: int, pipeline: int) -> list[str]:
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(ep.port), "-t", test.lower(), "-c", str(CLIENTS),
           "-n", str(requests), "-P", str(pipeline), "-r", "100000", "--csv"]
    if ep.secure:
        cmd += ["--tls", "--cacert", ca, "-a", PASSWORD]
    return cmd


class RedisProcess:
    """redis-server on loopback without persistence; with `secure`, TLS only and a password."""

    def __init__(self, directory: str, certs: str, secure: bool):
        self.dir, self.certs, self.secure = directory, certs, secure
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RedisProcess:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--dir", self.dir, "--save", "", "--appendonly", "no"]
        if self.secure:
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", f"{self.certs}/n1.crt",
                    "--tls-key-file", f"{self.certs}/n1.key", "--tls-ca-cert-file", f"{self.certs}/ca.crt",
                    "--tls-auth-clients", "no", "--requirepass", PASSWORD]
        else:
            cmd += ["--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ping = ["redis-cli", "-p", str(self.port)]
        if self.secure:
            ping += ["--tls", "--cacert", f"{self.certs}/ca.crt", "-a", PASSWORD, "--no-auth-warning"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run([*ping, "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.port, self.secure)


def make_certs(directory: str) -> str:
    certs = os.path.join(directory, "certs")
    subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "certs", "--out", certs, "--nodes", "n1"],
                   check=True, capture_output=True)
    return certs


def render(cells: dict[tuple[str, int], Cell], requests: int, repeats: int, load: tuple[str, str]) -> str:
    lines = [
        "# Security benchmark: the cost of TLS and AUTH, ringkv beside Redis",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m ringkv.bench.security --requests {requests} "
        f"--repeats {repeats}` on {os.cpu_count()} cores ({_cpu_model()}), Python {platform.python_version()}, "
        f"{_version(['redis-server', '--version'])}. Load average at the start: {load[0]}; at the end: {load[1]}.",
        "",
        "One ringkv node and one redis-server, each run twice: plain (no TLS, no password) and secure "
        "(RESP on TLS only, certificates from `ringkv admin certs`, a password that every connection "
        "sends with AUTH: ringkv's `requirepass`, Redis's `--requirepass`). redis-benchmark: 50 clients, "
        "random keys out of 100,000, 3-byte values; each client does its TLS handshake and AUTH once. "
        "Medians over the repeats; ratios are per repeat (the four runs of a repeat are side by side), "
        "then their median.",
        "",
        "| test | pipeline | ringkv plain ops/s | ringkv TLS+AUTH ops/s | secure/plain | target | verdict | "
        "ringkv TLS+AUTH p50 / p99 ms | Redis plain ops/s | Redis TLS+AUTH ops/s | Redis secure/plain | "
        "ringkv/Redis, both secure |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for (test, pipeline), cell in cells.items():
        med = {s: statistics.median(r.rps for r in cell.runs[s]) for s in SYSTEMS}
        ours = statistics.median(cell.ratios("ringkv-secure", "ringkv"))
        theirs = statistics.median(cell.ratios("redis-secure", "redis"))
        vs = statistics.median(cell.ratios("ringkv-secure", "redis-secure"))
        sec = cell.runs["ringkv-secure"]
        lines.append(
            f"| {test} | {pipeline} | {med['ringkv']:,.0f} | {med['ringkv-secure']:,.0f} | {ours:.2f} | "
            f">= {TARGET_RATIO} | {'MET' if ours >= TARGET_RATIO else 'SHORT'} | "
            f"{statistics.median(r.p50_ms for r in sec):.2f} / {statistics.median(r.p99_ms for r in sec):.2f} | "
            f"{med['redis']:,.0f} | {med['redis-secure']:,.0f} | {theirs:.2f} | {vs:.2f} |")
    lines += ["", "Every repeat (ops/s):", "",
              "| test | pipeline | " + " | ".join(SYSTEMS) + " |", "|---|---|" + "---|" * len(SYSTEMS)]
    for (test, pipeline), cell in cells.items():
        lines.append(f"| {test} | {pipeline} | " + " | ".join(
            ", ".join(f"{r.rps:,.0f}" for r in cell.runs[s]) for s in SYSTEMS) + " |")
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


@click.command()
@click.option("--requests", default=100_000, show_default=True, help="Requests per run without pipelining "
              "(4x that with -P 16).")
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default="docs/benchmarks/security.md", show_default=True, help="'-' writes no file.")
def main(requests: int, repeats: int, out: str) -> None:
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools)")
    cells: dict[tuple[str, int], Cell] = {}
    start_load = _load()
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-security-") as tmp:
        certs = make_certs(tmp)
        ca = os.path.join(certs, "ca.crt")
        plain = NodeProcess(os.path.join(tmp, "plain"), http_enabled="false", log_level="warning")
        tls_port = free_port()
        secure = NodeProcess(os.path.join(tmp, "secure"), node_id="n1", http_enabled="false", log_level="warning",
                             resp_port=-1, tls_port=tls_port, tls_cert_file=f"{certs}/n1.crt",
                             tls_key_file=f"{certs}/n1.key", tls_ca_file=ca, requirepass=PASSWORD)
        with plain, secure, RedisProcess(tmp, certs, False) as redis, \
                RedisProcess(tmp, certs, True) as redis_secure:
            endpoints = {"ringkv": Endpoint(plain.resp_port, False), "ringkv-secure": Endpoint(tls_port, True),
                         "redis": redis.endpoint, "redis-secure": redis_secure.endpoint}
            for rep in range(repeats):
                for pipeline in (1, 16):
                    for test in ("SET", "GET"):
                        cell = cells.setdefault((test, pipeline), Cell())
                        n = requests * (4 if pipeline > 1 else 1)
                        order = SYSTEMS[rep % len(SYSTEMS):] + SYSTEMS[:rep % len(SYSTEMS)]
                        for name in order:
                            cmd = benchmark_command(endpoints[name], ca, test, n, pipeline)
                            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
                            r = parse_redis_benchmark(done.stdout, test)
                            cell.runs[name].append(r)
                            print(f"repeat {rep + 1} {test} -P {pipeline} {name}: {r.rps:,.0f} ops/s "
                                  f"p50 {r.p50_ms} ms p99 {r.p99_ms} ms", flush=True)
    report = render(cells, requests, repeats, (start_load, _load()))
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
