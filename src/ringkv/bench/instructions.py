"""Bytecode instructions per RESP command on one node: a measure of the hot path that does not
move with the machine's load, for A/B between commits where CPU time is too noisy.

    python -m ringkv.bench.instructions [--commands 3200] [--top 12] [--cluster]
    python -m ringkv.bench.instructions --cpu 3 [--cluster]

A node's RESP connection, its service and its engine are built in this process on a fake
transport (no sockets), warmed up, then fed pipelined SETs and GETs (1 and 16 commands per
read) under `sys.settrace` with opcode events. It counts the instructions the interpreter runs
per command, by function (this module's own loop and fake transport left out): the event
loop's own C code, the socket calls and the work C
extensions do (hiredis, msgspec, xxhash, crc32c) are not counted, so the figure is Python's
share only. The keys are 1,000, so GETs hit and SETs overwrite, as a benchmark's do.

With `--cluster`, the node is the coordinator of a 3-node cluster at QUORUM (N = 3, every key
on all three): its real read and write paths, plans and replica calls, over a fake transport
on which the two other replicas answer at once (they hold what this one holds). What is
counted is the coordinator's Python above the transport; the RPC layer's framing and the
failure detector (every peer up) are left out.

It also counts the garbage each command leaves for the cycle collector: the same commands run
again untraced with the collector off, and what `gc.collect()` then finds, per command. It
should be 0: a node collects once 20,000 more objects were made than freed, and each
collection under load walks the heap (a cycle per SET once cost a cluster's coordinator 30%
more CPU).

docs/benchmarks/server.md quotes it beside CPU time per request. The count is of the Python
source: where the hot path is compiled (ringkv/hotpath.py), the tool runs itself again with
RINGKV_PURE=1, since a tracer sees nothing inside an extension module.

With `--cpu N` it counts nothing: it times N rounds of 20,000 commands of each workload on the
same harness, untraced, and prints the median CPU time per command, on whichever modules the
process loads: compiled, or the Python source with RINGKV_PURE=1 (docs/compiled.md).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import click
import uvloop

from ringkv import hotpath
from ringkv.api.resp_server import RespConnection, RespServer
from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.node.assembly import CLUSTER_STATS
from ringkv.node.cluster_service import ClusterService, DataPath
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import ReplicaAck, ReplicaGet, ReplicaRecord
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import Replica
from ringkv.node.replica_calls import Liveness, ReplicaCalls
from ringkv.node.write_path import WritePath
from ringkv.service.contract import KeyValueService, ServiceLimits
from ringkv.storage import Engine, Options

KEYS = 1_000
WORKLOADS = (("SET", 1), ("SET", 16), ("GET", 1), ("GET", 16))


class _Transport:
    """Takes every reply and is never full; keeps what a transport would know of its state."""

    def __init__(self) -> None:
        self.bytes_written = 0
        self.reading = True
        self.closed = False
        self.high_water_bytes: int | None = None

    def write(self, data: bytes) -> None:
        self.bytes_written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 7379)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water_bytes = high

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True


class _Peers:
    """The transport to the two other replicas of a 3-node cluster: each call is answered at
    once, as a replica holding what this node holds would answer it."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.calls = 0

    def start_call(self, node: str, body: Any, timeout_ms: float, on_done: Any = None) -> asyncio.Future:
        self.calls += 1
        future = asyncio.get_running_loop().create_future()
        if on_done is not None:
            future.add_done_callback(on_done)
        if type(body) is ReplicaGet:
            data = self.store.engine.get(body.skey)
            future.set_result(ReplicaRecord(None if data is None else bytes(data)))
        else:
            future.set_result(ReplicaAck())
        return future


def _service(store: LocalStore, cluster: bool) -> tuple[KeyValueService, _Peers | None]:
    if not cluster:
        return LocalService(store), None
    peers = _Peers(store)
    liveness = Liveness()
    liveness.watch(lambda node: True, lambda node: 0.0)  # every peer up (defined here: not counted)
    calls = ReplicaCalls("n1", peers, liveness, 1_000)  # type: ignore[arg-type]
    placement = Placement("n1", Ring([Member("n1"), Member("n2"), Member("n3")], 64, 3), store.namespaces)
    stats = dict.fromkeys(CLUSTER_STATS, 0)
    path = DataPath("n1", Clock(), store, placement, ReadPath(placement, calls, store, stats),
                    WritePath(placement, calls, store, stats, None), None, None,  # type: ignore[arg-type]
                    ServiceLimits(1024 * 1024, 1_000, True))
    return ClusterService(path), peers


def _request(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def _prepared(name: str, pipeline: int, commands: int, engine: Engine,
                    cluster: bool) -> tuple[RespConnection, _Transport, _Peers | None, list[bytes]]:
    """A connection to a node (or a cluster's coordinator) on `engine`, every key written and
    the code paths warm, and the requests of the workload, `pipeline` commands per read."""
    store = LocalStore(Replica(engine, b"a1"), Clock(), namespaces=Namespaces(3 if cluster else 1, "siblings"))
    service, peers = _service(store, cluster)
    conn = RespConnection(RespServer(service))
    transport = _Transport()
    conn.connection_made(transport)
    rng = random.Random(1)

    def chunk() -> bytes:
        return b"".join(_request(b"SET", b"key:%06d" % rng.randrange(KEYS), b"xyz") if name == "SET"
                        else _request(b"GET", b"key:%06d" % rng.randrange(KEYS)) for _ in range(pipeline))

    for _ in range(KEYS):  # every key written, the code paths warm
        conn.data_received(_request(b"SET", b"key:%06d" % rng.randrange(KEYS), b"xyz"))
        await asyncio.sleep(0)
    return conn, transport, peers, [chunk() for _ in range(max(1, commands // pipeline))]


def _check_answered(name: str, pipeline: int, transport: _Transport, peers: _Peers | None) -> None:
    if transport.closed or not transport.bytes_written or (peers is not None and not peers.calls):
        raise RuntimeError(f"{name} -P {pipeline}: the connection closed or answered nothing")


async def _count(name: str, pipeline: int, commands: int, directory: str,
                 cluster: bool) -> tuple[collections.Counter, float]:
    engine = Engine.open(directory, Options())
    try:
        conn, transport, peers, chunks = await _prepared(name, pipeline, commands, engine, cluster)
        counts: collections.Counter = collections.Counter()

        def trace(frame: Any, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                if code.co_filename == __file__:
                    return trace  # the harness and its fake transport: not the node's work
                counts[f"{code.co_filename.rpartition('/src/')[2] or code.co_filename}:{code.co_name}"] += 1
            return trace

        sys.settrace(trace)
        try:
            for data in chunks:
                conn.data_received(data)
                await asyncio.sleep(0)  # the group commit and its replies run here
        finally:
            sys.settrace(None)
        _check_answered(name, pipeline, transport, peers)
        for key in counts:
            counts[key] /= len(chunks) * pipeline  # type: ignore[assignment]
        gc.collect()
        gc.disable()
        try:
            for data in chunks:
                conn.data_received(data)
                await asyncio.sleep(0)
            garbage = gc.collect() / (len(chunks) * pipeline)
        finally:
            gc.enable()
        return counts, garbage
    finally:
        engine.close()


async def _cpu(name: str, pipeline: int, commands: int, directory: str, cluster: bool) -> float:
    """CPU microseconds per command of the same workload, untraced, on whichever modules this
    process loaded (compiled or Python source): the in-process rows of docs/compiled.md."""
    engine = Engine.open(directory, Options())
    try:
        conn, transport, peers, chunks = await _prepared(name, pipeline, commands, engine, cluster)
        started = time.process_time()
        for data in chunks:
            conn.data_received(data)
            await asyncio.sleep(0)
        spent = time.process_time() - started
        _check_answered(name, pipeline, transport, peers)
        return 1e6 * spent / (len(chunks) * pipeline)
    finally:
        engine.close()


def measure(commands: int = 3_200, cluster: bool = False) -> dict[str, tuple[collections.Counter, float]]:
    """For each workload ("SET -P 16" ...): instructions per command by function, and the
    objects per command the cycle collector found; of a single node, or with `cluster` of a
    3-node cluster's coordinator."""
    out = {}
    for name, pipeline in WORKLOADS:
        with tempfile.TemporaryDirectory() as directory:
            # uvloop, as a node runs: its event loop is C code, not counted.
            out[f"{name} -P {pipeline}"] = uvloop.run(_count(name, pipeline, commands, directory, cluster))
    return out


def measure_cpu(commands: int = 20_000, cluster: bool = False) -> dict[str, float]:
    """For each workload: CPU microseconds per command, untraced (see `_cpu`)."""
    out = {}
    for name, pipeline in WORKLOADS:
        with tempfile.TemporaryDirectory() as directory:
            out[f"{name} -P {pipeline}"] = uvloop.run(_cpu(name, pipeline, commands, directory, cluster))
    return out


@click.command()
@click.option("--commands", default=3_200, show_default=True, help="Commands counted per workload.")
@click.option("--top", default=12, show_default=True, help="Functions listed per workload.")
@click.option("--cluster", is_flag=True, help="Count a 3-node cluster's coordinator (the other replicas stood in for).")
@click.option("--cpu", "cpu_rounds", default=0, show_default=True,
              help="Instead of counting, time this many rounds of 20,000 commands per workload, untraced, "
                   "on the modules this process loads (compiled, or Python with RINGKV_PURE=1).")
def main(commands: int, top: int, cluster: bool, cpu_rounds: int) -> None:
    if cpu_rounds:
        status = hotpath.status()
        click.echo(f"hot path: {status['mode']} ({status['compiled']} modules compiled)")
        rounds = [measure_cpu(20_000, cluster) for _ in range(cpu_rounds)]
        for workload in rounds[0]:
            figures = sorted(r[workload] for r in rounds)
            click.echo(f"{workload}: {statistics.median(figures):.2f} us of CPU per command (median of "
                       f"{len(figures)}; {', '.join(f'{f:.2f}' for f in figures)})")
        return
    if hotpath.status()["mode"] != "pure":
        # The tracer sees no bytecode inside a compiled module: count the Python source, as
        # every earlier count did, by running again with the compiled hot path set aside.
        os.execve(sys.executable, [sys.executable, "-m", "ringkv.bench.instructions", *sys.argv[1:]],
                  {**os.environ, hotpath.PURE_ENV: "1"})
    for workload, (counts, garbage) in measure(commands, cluster).items():
        click.echo(f"{workload}: {sum(counts.values()):,.0f} instructions per command, "
                   f"{garbage:g} objects of garbage per command")
        for function, n in counts.most_common(top):
            click.echo(f"  {n:8.1f}  {function}")


if __name__ == "__main__":
    main()
