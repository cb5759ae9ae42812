"""Hot-key spreading measured: how much of a zipfian read load at ONE its busiest replica
serves, with `hot_reads = "all"` and with `"spread"` (docs/hot-keys.md).

    python -m ringkv.bench.hotkeys                                   # the defaults below
    python -m ringkv.bench.hotkeys --keys 10000 --reads 40000 --json /tmp/hot.json
    python -m ringkv.bench.hotkeys --dcs 2 --front 0 --wan-delay-ms 40  # spreading across a WAN
    python -m ringkv.bench.hotkeys --set read_fanout=all               # any node setting, every node

For each mode a fresh cluster is started: `--nodes` data nodes (default 6) holding
`--replicas` copies of every key (default 3), and `--front` nodes (default 2) that hold no
copy and only coordinate: they sit in a datacenter of their own ("front") that the replica
counts do not list (docs/multi-dc.md, "Where the copies go"). The clients talk to the front
nodes only, so every replica read is a ReplicaGet RPC and each data node's
`cluster_replica_reads` counter (INFO ringkv) is exactly what it served. (A coordinator that
is itself a replica reads its own copy without that counter, which would hide part of the
load.) The records are written at ALL, then `--warmup` reads let each coordinator's hot set
form (a key must be 1% of its sampled requests and 8 samples), then `--reads` reads are
counted. Keys are YCSB's names of records 0..keys-1; popularity is zipfian 0.99 (the most
popular record first, YCSB's ZipfianGenerator), or YCSB's scrambled zipfian with
`--distribution scrambled`.

With `--dcs 2 --front 0` the data nodes are split into datacenters (`--replicas` copies in
each, `--wan-delay-ms` between them) and the clients talk to dc1's nodes: the replica counters
then leave out each coordinator's own copy, and the figure to read is the latency (does a
spread read cross the WAN?).

A benchmark, not a test: the figures are printed, and asserted nowhere.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from ringkv.bench.ycsb.generators import ScrambledZipfianGenerator, ZipfianGenerator, key_name
from ringkv.testing.launcher import (
    LocalCluster,
    datacenter_layout,
    datacenter_of,
    dc_replicas_setting,
)

MODES = ("all", "spread")
FRONT_DC = "front"


@dataclass
class ModeResult:
    mode: str
    reads: int  # client reads counted
    seconds: float
    read_p50_ms: float
    read_p99_ms: float
    hottest_key_share: float  # share of the client reads that asked for the most popular key
    served: dict[str, int]  # data node -> replica reads it served while the counted reads ran
    spread: int  # coordinators' cluster_hot_reads_spread over the counted reads
    hot_p50_ms: float = 0.0  # latency of the reads of the most popular key
    hot_p99_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def total_served(self) -> int:
        return sum(self.served.values())

    @property
    def hottest(self) -> tuple[str, int]:
        return max(self.served.items(), key=lambda kv: kv[1]) if self.served else ("", 0)

    def summary(self) -> dict:
        total = max(self.total_served, 1)
        node, most = self.hottest
        mean = total / max(len(self.served), 1)
        return {
            **asdict(self),
            "replica_reads": self.total_served,
            "replica_reads_per_read": self.total_served / max(self.reads, 1),
            "hottest_replica": node,
            "hottest_replica_reads": most,
            "hottest_replica_share": most / total,
            "hottest_replica_per_read": most / max(self.reads, 1),
            "hottest_over_mean": most / mean if mean else 0.0,
        }


def _layout(nodes: int, dcs: int, front: int) -> list[str]:
    data = datacenter_layout(nodes, dcs)
    return data + [f"{FRONT_DC}/r{i + 1}" for i in range(front)]


def _info(node, section: str = "ringkv") -> dict:
    import redis

    r = redis.Redis(host=node.connect_host, port=node.resp_port)
    try:
        return r.info(section)
    finally:
        r.close()


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


async def _write_all(addresses: list[tuple[str, int]], keys: list[bytes], tasks: int) -> None:
    import redis.asyncio

    clients = [redis.asyncio.Redis(host=h, port=p, protocol=2) for h, p in addresses]
    todo = iter(keys)

    async def task(i: int) -> None:
        r = clients[i % len(clients)]
        for key in todo:
            await r.execute_command("RINGKV.AT", "ALL", "SET", key, key)

    try:
        await asyncio.gather(*(task(i) for i in range(tasks)))
    finally:
        for c in clients:
            await c.aclose()


async def _read_load(addresses: list[tuple[str, int]], draws: list[bytes], tasks: int,
                     hottest: bytes) -> tuple[float, list[float], list[float]]:
    """The draws read at ONE by `tasks` concurrent tasks, task i on address i mod n: (seconds,
    every read's latency in ms, the hottest key's reads' latencies)."""
    import redis.asyncio

    clients = [redis.asyncio.Redis(host=h, port=p, protocol=2, max_connections=tasks)
               for h, p in addresses]
    todo = iter(draws)
    took: list[float] = []
    hot: list[float] = []

    async def task(i: int) -> None:
        r = clients[i % len(clients)]
        for key in todo:
            started = time.perf_counter()
            value = await r.execute_command("RINGKV.AT", "ONE", "GET", key)
            ms = (time.perf_counter() - started) * 1000
            took.append(ms)
            if key == hottest:
                hot.append(ms)
            if value != key:
                raise AssertionError(f"read of {key!r} answered {value!r}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(task(i) for i in range(tasks)))
    finally:
        for c in clients:
            await c.aclose()
    return time.perf_counter() - started, took, hot


def run_mode(root: Path, mode: str, *, nodes: int, replicas: int, dcs: int, front: int,
             wan_delay_ms: int, keys: int, reads: int, warmup: int, tasks: int,
             distribution: str, seed: int, settings: dict[str, str] | None = None,
             log=print) -> ModeResult:
    locations = _layout(nodes, dcs, front)
    data_dcs = sorted({datacenter_of(loc) for loc in locations if not loc.startswith(FRONT_DC + "/")})
    counts = dict.fromkeys(data_dcs, replicas)
    cluster = LocalCluster(root / mode, nodes=len(locations), locations=locations,
                           replicas=sum(counts.values()), dc_replicas=dc_replicas_setting(counts),
                           emulated_wan_delay_ms=wan_delay_ms, hot_reads=mode,
                           **{"http_enabled": "false", "log_level": "warning", **(settings or {})})
    names = [key_name(i) for i in range(keys)]
    rng = random.Random(seed)
    gen = (ZipfianGenerator(0, keys - 1, rng) if distribution == "zipfian"
           else ScrambledZipfianGenerator(0, keys - 1, rng))
    draws = [names[gen.next()] for _ in range(warmup + reads)]
    counted = draws[warmup:]
    hottest = collections.Counter(counted).most_common(1)[0][0]
    with cluster:
        by_loc = {n.node_id: cluster.locations[n.node_id] for n in cluster.nodes}
        data_nodes = [n for n in cluster.nodes if not by_loc[n.node_id].startswith(FRONT_DC + "/")]
        coordinators = ([n for n in cluster.nodes if by_loc[n.node_id].startswith(FRONT_DC + "/")]
                        or [n for n in data_nodes if datacenter_of(by_loc[n.node_id]) == data_dcs[0]])
        addresses = [(n.connect_host, n.resp_port) for n in coordinators]
        asyncio.run(_write_all(addresses, names, tasks))
        if warmup:
            asyncio.run(_read_load(addresses, draws[:warmup], tasks, hottest))
        before = {n.node_id: int(_info(n)["cluster_replica_reads"]) for n in data_nodes}
        spread0 = sum(int(_info(n)["cluster_hot_reads_spread"]) for n in coordinators)
        seconds, took, hot = asyncio.run(_read_load(addresses, counted, tasks, hottest))
        served = {n.node_id: int(_info(n)["cluster_replica_reads"]) - before[n.node_id] for n in data_nodes}
        spread = sum(int(_info(n)["cluster_hot_reads_spread"]) for n in coordinators) - spread0
        hot_sets = {n.node_id: int(_info(n, "hotkeys").get("hotkeys_hot", 0)) for n in coordinators}
    took.sort()
    hot.sort()
    result = ModeResult(mode, len(counted), seconds, _percentile(took, 50), _percentile(took, 99),
                        counted.count(hottest) / len(counted), served, spread,
                        _percentile(hot, 50), _percentile(hot, 99),
                        {"hot_set_sizes": hot_sets, "coordinators": [n.node_id for n in coordinators]})
    s = result.summary()
    log(f"hot_reads={mode}: {len(counted):,} reads in {seconds:.1f} s, p50 {s['read_p50_ms']:.2f} ms, "
        f"p99 {s['read_p99_ms']:.2f} ms; replica reads {s['replica_reads']:,} "
        f"({s['replica_reads_per_read']:.2f} per read), busiest {s['hottest_replica']} "
        f"{s['hottest_replica_reads']:,} ({s['hottest_replica_share']:.1%} of them, "
        f"{s['hottest_over_mean']:.2f}x the mean); spread {spread:,}; per node {served}")
    return result


@click.command()
@click.option("--nodes", default=6, show_default=True, type=click.IntRange(1, 32), help="Data nodes.")
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 7),
              help="Copies of every key (in each datacenter with --dcs).")
@click.option("--dcs", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Datacenters the data nodes are split into.")
@click.option("--front", default=2, show_default=True, type=click.IntRange(0, 8),
              help="Coordinator-only nodes the clients talk to (0: dc1's data nodes).")
@click.option("--wan-delay-ms", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="emulated_wan_delay_ms between datacenters (the front one included).")
@click.option("--keys", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--reads", default=20_000, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=2_000, show_default=True, type=click.IntRange(0),
              help="Reads before the counted ones, so that the hot sets have formed.")
@click.option("--tasks", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Concurrent client tasks (one process, asyncio).")
@click.option("--distribution", default="zipfian", show_default=True,
              type=click.Choice(["zipfian", "scrambled"]))
@click.option("--modes", default=",".join(MODES), show_default=True,
              help="hot_reads settings to measure, in this order.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--set", "node_settings", multiple=True, metavar="NAME=VALUE",
              help="A node setting for every node (RINGKV_<NAME>), e.g. read_fanout=all; repeatable.")
@click.option("--json", "json_out", default=None, help="Also write the figures as JSON here.")
def main(nodes: int, replicas: int, dcs: int, front: int, wan_delay_ms: int, keys: int, reads: int,
         warmup: int, tasks: int, distribution: str, modes: str, seed: int,
         node_settings: tuple[str, ...], json_out: str | None) -> None:
    """Measure the busiest replica's share of a zipfian read load at ONE, per hot_reads mode."""
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    if dcs > nodes:
        raise click.BadParameter(f"{dcs} datacenters need at least {dcs} data nodes")
    if replicas > nodes // dcs:
        raise click.BadParameter(f"{replicas} copies per datacenter need {replicas} nodes in each")

    settings = {}
    for item in node_settings:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--set")
        settings[name.strip().lower()] = value.strip()

    def log(line: str) -> None:
        click.echo(line, err=True)

    load = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-hotkeys-") as tmp:
        for mode in chosen:
            results.append(run_mode(Path(tmp), mode, nodes=nodes, replicas=replicas, dcs=dcs,
                                    front=front, wan_delay_ms=wan_delay_ms, keys=keys, reads=reads,
                                    warmup=warmup, tasks=tasks, distribution=distribution,
                                    seed=seed, settings=settings, log=log))
    doc = {
        "command": "python -m ringkv.bench.hotkeys " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(),
        "load_start": load, "load_end": os.getloadavg(), "settings": settings,
        "results": [r.summary() for r in results],
    }
    lines = ["| hot_reads | reads | replica reads per read | busiest replica: share of replica reads | "
             "its reads per client read | over the mean | spread reads | read p50 / p99 ms | "
             "hottest key p50 / p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in doc["results"]:
        lines.append(
            f"| {s['mode']} | {s['reads']:,} | {s['replica_reads_per_read']:.2f} | "
            f"{s['hottest_replica_share']:.1%} ({s['hottest_replica']}) | "
            f"{s['hottest_replica_per_read']:.3f} | {s['hottest_over_mean']:.2f}x | {s['spread']:,} | "
            f"{s['read_p50_ms']:.2f} / {s['read_p99_ms']:.2f} | {s['hot_p50_ms']:.2f} / {s['hot_p99_ms']:.2f} |")
    click.echo("\n".join(lines))
    if len(doc["results"]) == 2:
        a, b = doc["results"]
        click.echo(f"\nbusiest replica's reads per client read: {b['mode']} / {a['mode']} = "
                   f"{b['hottest_replica_per_read'] / max(a['hottest_replica_per_read'], 1e-9):.2f}x; "
                   f"most popular key: {statistics.fmean([a['hottest_key_share'], b['hottest_key_share']]):.1%} "
                   "of the reads")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"wrote {json_out}")


if __name__ == "__main__":
    main()
