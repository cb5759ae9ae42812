"""Echo throughput of the RPC layer over one loopback connection (a benchmark, not a test).

Run: PYTHONPATH=src python tests/net/bench_rpc_echo.py [--callers 100] [--seconds 5]
     [--loop uvloop|asyncio] [--server-process]

By default server and client share one process and one event loop, so one core does both
ends' work. With --server-process the server runs in a child process, as a peer node would.
Besides requests/s it prints the CPU time spent per request (both ends in one process, or
the caller's side alone), which a busy machine disturbs far less than wall-clock throughput.
The figures go into docs/formats/rpc.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Callable

import msgspec
import uvloop

from ringkv.net import MessageCodec, RpcClient, RpcServer


class Echo(msgspec.Struct, tag=True, array_like=True):
    data: bytes


CODEC = MessageCodec([Echo])
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


async def _echo(peer: str, body: Echo) -> Echo:
    return body


async def _serve_until_stopped(ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    server = RpcServer(_echo, "bench", "server", CODEC)
    ports.put((await server.start("127.0.0.1", 0))[1])
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await server.close()


def _server_process(loop: str, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(_serve_until_stopped(ports, stop))


async def measure(port: int | None, callers: int, seconds: float,
                  payload_bytes: int) -> tuple[float, float]:
    """Return (requests per second, CPU microseconds of this process per request)."""
    server = None
    if port is None:
        server = RpcServer(_echo, "bench", "server", CODEC)
        port = (await server.start("127.0.0.1", 0))[1]
    client = RpcClient("client", "bench", CODEC)
    client.set_peer_address("server", "127.0.0.1", port)
    body = Echo(b"x" * payload_bytes)
    await client.call("server", body, 1000)  # connect and handshake outside the timing
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await client.call("server", body, 5000)
            done += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await client.close()
    if server is not None:
        await server.close()
    return done / elapsed, cpu / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--payload-bytes", type=int, default=16)
    parser.add_argument("--loop", choices=sorted(LOOPS), default="uvloop")
    parser.add_argument("--server-process", action="store_true")
    args = parser.parse_args()
    child = stop = None
    port = None
    if args.server_process:
        ports: multiprocessing.Queue = multiprocessing.Queue()
        stop = multiprocessing.Event()
        child = multiprocessing.Process(target=_server_process, args=(args.loop, ports, stop))
        child.start()
        port = ports.get(timeout=10)
    try:
        with asyncio.Runner(loop_factory=LOOPS[args.loop]) as runner:
            rate, cpu_us = runner.run(measure(port, args.callers, args.seconds,
                                              args.payload_bytes))
    finally:
        if child is not None and stop is not None:
            stop.set()
            child.join(10)
    where = "server in a child process" if child else "client and server on one loop"
    side = "caller side" if child else "both ends"
    print(f"{args.loop}, {where}: {args.callers} callers, {args.payload_bytes}-byte echo: "
          f"{rate:,.0f} requests/s over one connection; {cpu_us:.1f} us CPU per request "
          f"({side})")


if __name__ == "__main__":
    main()
