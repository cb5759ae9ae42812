"""Data-type benchmark: redis-benchmark's collection tests against one ringkv node and, in the
same run, redis-server; then the latency of one-element reads on collections of growing size.

    python -m ringkv.bench.datatypes [--requests 20000] [--repeats 3] [--sizes 10,10000,1000000]
                                     [--out docs/benchmarks/datatypes.md]

Part 1 runs `redis-benchmark -t lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100` (50
clients, no pipelining, `-r 100000`) against each server in turn, alternating which goes
first, and quotes medians and the ratio of each repeat's pair. redis-benchmark pushes to and
pops from one list (`mylist`) and adds to one set, hash and sorted set, so those collections
grow to `--requests` elements during the run.

Part 2 builds a hash, a set and a sorted set of each size in both servers (pipelined writes),
then times HGET, SISMEMBER and ZSCORE of random members, and ZRANGE of ten members from a random
rank under 100 (the sorted set's score index), from one client, one request at a time, and
reports the median and p99 per size. The ringkv node runs with max_value_bytes at its
maximum (32 MiB) so that large collections can be stored at all; a size that still does not fit
is reported as refused.

This is a benchmark, not a test: the machine is small and shared, so only ratios measured side
by side mean much, and nothing here is tuned to make ringkv look good.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import click
import redis

from ringkv.bench.server import RedisServer, _cpu_model, _version, parse_redis_benchmark
from ringkv.testing.launcher import NodeProcess

TESTS = ("LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP", "ZADD", "LRANGE_100")
CLIENTS = 50
RATIO_TARGET = 0.4  # of Redis, without pipelining (issue 15)
FLAT_TARGET = 1.5  # largest size's median latency over the smallest's
MAX_VALUE_BYTES = 32 * 1024 * 1024
FILL_BATCH = 1000  # elements per pipelined write while building a collection
READS = 2000  # one-element reads timed per (type, size)
KINDS = ("hash", "set", "zset", "zrange")
READ_NAMES = {"hash": "HGET", "set": "SISMEMBER", "zset": "ZSCORE", "zrange": "ZRANGE r r+9"}


@dataclass
class Pair:
    ringkv: list[float] = field(default_factory=list)
    redis: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ringkv, self.redis)]


def _benchmark_all(port: int, requests: int) -> dict[str, float]:
    """ops/s per test of one redis-benchmark run of every test."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", ",".join(t.lower() for t in TESTS),
           "-c", str(CLIENTS), "-n", str(requests), "-r", "100000", "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True).stdout
    return {test: parse_redis_benchmark(out, test).rps for test in TESTS}


def _fill(client: redis.Redis, kind: str, key: str, size: int) -> None:
    client.delete(key)
    for start in range(0, size, FILL_BATCH):
        members = [f"member:{i}" for i in range(start, min(size, start + FILL_BATCH))]
        if kind == "hash":
            client.hset(key, mapping={m: "v" for m in members})
        elif kind == "set":
            client.sadd(key, *members)
        else:  # zset, zrange
            client.zadd(key, {m: i for i, m in enumerate(members, start)})


def _read_latencies(client: redis.Redis, kind: str, key: str, size: int) -> list[float]:
    rng = random.Random(7)
    out = []
    for _ in range(READS):
        member = f"member:{rng.randrange(size)}"
        started = time.perf_counter()
        if kind == "hash":
            client.hget(key, member)
        elif kind == "set":
            client.sismember(key, member)
        elif kind == "zset":
            client.zscore(key, member)
        else:
            first = rng.randrange(min(size, 100))
            client.zrange(key, first, first + 9)
        out.append((time.perf_counter() - started) * 1e6)
    return out


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


def render(pairs: dict[str, Pair], latency: dict, requests: int, repeats: int, sizes: list[int]) -> str:
    lines = [
        "# Data-type benchmark: one ringkv node against redis-server",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python -m ringkv.bench.datatypes --requests {requests} "
        f"--repeats {repeats} --sizes {','.join(map(str, sizes))}` on {os.cpu_count()} cores ({_cpu_model()}), "
        f"{_version(['redis-server', '--version'])}.",
        "",
        "## 1. redis-benchmark's collection tests",
        "",
        f"50 clients, no pipelining, `-n {requests} -r 100000`. The list, set, hash and sorted set each test "
        f"writes grow to about {requests:,} elements during the run. Medians of {repeats} repeats; the ratio "
        "is the median of each repeat's ringkv/Redis pair.",
        "",
        "| test | ringkv ops/s | Redis ops/s | ratio | target | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for test, pair in pairs.items():
        ratio = statistics.median(pair.ratios())
        lines.append(f"| {test} | {statistics.median(pair.ringkv):,.0f} | {statistics.median(pair.redis):,.0f} | "
                     f"{ratio:.2f} | >= {RATIO_TARGET} | {'PASS' if ratio >= RATIO_TARGET else 'SHORT'} |")
    lines += [
        "",
        "## 2. One-element reads on collections of growing size",
        "",
        f"One client, one request at a time, {READS:,} reads of random members per cell: median / p99 in "
        "microseconds. The target is a flat cost: the largest size within 1.5x of the smallest.",
        "",
        "| read | size | ringkv median / p99 us | Redis median / p99 us |",
        "|---|---:|---:|---:|",
    ]
    for (kind, size), cell in latency.items():
        rk = cell["ringkv"]
        rk_text = cell["refused"] if rk is None else f"{statistics.median(rk):,.0f} / {_p99(rk):,.0f}"
        rd = cell["redis"]
        lines.append(f"| {READ_NAMES[kind]} | {size:,} | {rk_text} | "
                     f"{statistics.median(rd):,.0f} / {_p99(rd):,.0f} |")
    for kind in KINDS:
        small = latency.get((kind, sizes[0]), {}).get("ringkv")
        large = latency.get((kind, sizes[-1]), {}).get("ringkv")
        if small and large:
            growth = statistics.median(large) / statistics.median(small)
            lines.append(f"\n{kind}: {sizes[-1]:,} members cost {growth:.1f}x {sizes[0]:,} per read "
                         f"(target <= {FLAT_TARGET}x): {'PASS' if growth <= FLAT_TARGET else 'SHORT'}.")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--requests", default=20_000, show_default=True, help="Requests per redis-benchmark test.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--sizes", default="10,10000,1000000", show_default=True, help="Collection sizes for part 2.")
@click.option("--out", default="docs/benchmarks/datatypes.md", show_default=True, help="'-' writes no file.")
def main(requests: int, repeats: int, sizes: str, out: str) -> None:
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools)")
    size_list = [int(s) for s in sizes.split(",")]
    pairs = {test: Pair() for test in TESTS}
    latency: dict = {}
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-types-") as tmp:
        for rep in range(repeats):
            # Fresh servers per repeat: the collections the tests grow start empty each time.
            node = NodeProcess(os.path.join(tmp, f"ringkv{rep}"), http_enabled="false", log_level="warning",
                               max_value_bytes=MAX_VALUE_BYTES)
            redis_dir = os.path.join(tmp, f"redis{rep}")
            os.makedirs(redis_dir)
            with node, RedisServer(redis_dir) as server:
                order = [("ringkv", node.resp_port), ("redis", server.port)]
                if rep % 2:
                    order.reverse()
                for name, port in order:
                    for test, rps in _benchmark_all(port, requests).items():
                        getattr(pairs[test], name).append(rps)
                        print(f"repeat {rep + 1} {name} {test}: {rps:,.0f} ops/s", flush=True)
                if rep == 0:
                    for name, port in order:
                        client = redis.Redis(port=port, socket_timeout=600)
                        for kind in KINDS:
                            for size in size_list:
                                cell = latency.setdefault((kind, size), {"ringkv": None, "redis": None,
                                                                          "refused": ""})
                                key = f"bench:{kind}:{size}"
                                try:
                                    _fill(client, kind, key, size)
                                except redis.ResponseError as exc:
                                    cell["refused"] = f"refused: {str(exc)[:80]}"
                                    continue
                                cell[name] = _read_latencies(client, kind, key, size)
                                print(f"{name} {kind} {size}: median {statistics.median(cell[name]):,.0f} us",
                                      flush=True)
                                client.delete(key)
                        client.close()
    report = render(pairs, latency, requests, repeats, size_list)
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
