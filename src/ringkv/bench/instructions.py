"""Bytecode instructions per RESP command on one node: a measure of the hot path that does not
move with the machine's load, for A/B between commits where CPU time is too noisy.

    python -m ringkv.bench.instructions [--commands 3200] [--top 12]

A node's RESP connection, its service and its engine are built in this process on a fake
transport (no sockets), warmed up, then fed pipelined SETs and GETs (1 and 16 commands per
read) under `sys.settrace` with opcode events. It counts the instructions the interpreter runs
per command, by function (this module's own loop and fake transport left out): the event
loop's own C code, the socket calls and the work C
extensions do (hiredis, msgspec, xxhash, crc32c) are not counted, so the figure is Python's
share only. The keys are 1,000, so GETs hit and SETs overwrite, as a benchmark's do.

It also counts the garbage each command leaves for the cycle collector: the same commands run
again untraced with the collector off, and what `gc.collect()` then finds, per command. It
should be 0: a node collects once 20,000 more objects were made than freed, and each
collection under load walks the heap (a cycle per SET once cost a cluster's coordinator 30%
more CPU).

docs/benchmarks/server.md quotes it beside CPU time per request.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import random
import sys
import tempfile
from typing import Any

import click
import uvloop

from ringkv.api.resp_server import RespConnection, RespServer
from ringkv.clock import Clock
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica
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


def _request(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def _count(name: str, pipeline: int, commands: int, directory: str) -> tuple[collections.Counter, float]:
    engine = Engine.open(directory, Options())
    try:
        service = LocalService(LocalStore(Replica(engine, b"a1"), Clock(), namespaces=Namespaces(1, "siblings")))
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
        chunks = [chunk() for _ in range(max(1, commands // pipeline))]
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
        if transport.closed or not transport.bytes_written:
            raise RuntimeError(f"{name} -P {pipeline}: the connection closed or answered nothing")
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


def measure(commands: int = 3_200) -> dict[str, tuple[collections.Counter, float]]:
    """For each workload ("SET -P 16" ...): instructions per command by function, and the
    objects per command the cycle collector found."""
    out = {}
    for name, pipeline in WORKLOADS:
        with tempfile.TemporaryDirectory() as directory:
            # uvloop, as a node runs: its event loop is C code, not counted.
            out[f"{name} -P {pipeline}"] = uvloop.run(_count(name, pipeline, commands, directory))
    return out


@click.command()
@click.option("--commands", default=3_200, show_default=True, help="Commands counted per workload.")
@click.option("--top", default=12, show_default=True, help="Functions listed per workload.")
def main(commands: int, top: int) -> None:
    for workload, (counts, garbage) in measure(commands).items():
        click.echo(f"{workload}: {sum(counts.values()):,.0f} instructions per command, "
                   f"{garbage:g} objects of garbage per command")
        for function, n in counts.most_common(top):
            click.echo(f"  {n:8.1f}  {function}")


if __name__ == "__main__":
    main()
