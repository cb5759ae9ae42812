"""The node process, `ringkv serve`: a node (node/) behind its client protocols (api/).

The one module that knows both sides: it opens the node (node/assembly.py), puts the RESP
server and the HTTP API in front of its `KeyValueService` and `AdminService`, starts the
node's background work, and on SIGTERM or SIGINT stops in order: stop accepting connections,
let in-flight requests finish (up to `shutdown_drain_ms`), close the adapters, then the node
(which flushes the memtable and closes the engine).

One uvloop event loop runs everything. The loop never waits on the disk: WAL fsyncs under
`sync="always"` are awaited in a thread pool (group commit inside the engine), and flushes and
compactions run in the engine's worker processes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time

from ringkv.api.http_serving import HttpHandle, create_app, start_http
from ringkv.api.resp_server import RespLimits, RespServer
from ringkv.node.assembly import open_node
from ringkv.node.config import NodeConfig
from ringkv.node.node import Node

log = logging.getLogger("ringkv.node")

# RESP frames may hold a value of max_value_bytes plus the command around it.
RESP_FRAME_SLACK_BYTES = 64 * 1024
DRAIN_POLL_S = 0.01


def _address(sockname) -> str:
    return f"{sockname[0]}:{sockname[1]}"


class NodeServer:
    """A node with its client servers (see the module docstring)."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.node: Node | None = None
        self.resp: RespServer | None = None
        self.resp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._http: HttpHandle | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        node = self.node = await open_node(cfg)
        limits = RespLimits(
            max_bulk_bytes=cfg.max_value_bytes + RESP_FRAME_SLACK_BYTES,
            max_args=cfg.max_args,
            max_inline_bytes=cfg.max_inline_bytes,
            max_query_buffer_bytes=max(cfg.max_query_buffer_bytes, cfg.max_value_bytes + RESP_FRAME_SLACK_BYTES),
            max_connections=cfg.max_connections,
            max_output_buffer_bytes=cfg.max_output_buffer_bytes,
        )
        self.resp = RespServer(node.service, node.admin, limits)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.resp.protocol_factory, cfg.host, cfg.resp_port, backlog=1024)
        self._servers.append(server)
        self.resp_address = server.sockets[0].getsockname()[:2]
        if cfg.http_enabled:
            app = create_app(node.service, node.admin, resp_stats=self.resp.stats, max_value_bytes=cfg.max_value_bytes)
            self._http, self.http_address = await start_http(
                app, cfg.host, cfg.http_port, max_connections=cfg.max_connections, drain_ms=cfg.shutdown_drain_ms)
        node.start(_address(self.resp_address), _address(self.http_address) if self.http_address else "")
        c = node.cluster
        if c is not None:
            log.info("node %s joined cluster %s of %d members (N=%d, %d partitions), RPC on %s",
                     cfg.node_id, cfg.cluster_name, len(c.placement.ring.node_ids), c.placement.ring.replicas,
                     cfg.partitions, _address(c.transport.address))
        log.info(
            "node %s (actor %s) serving RESP on %s%s, data in %s",
            cfg.node_id, node.figures.identity.actor.decode(), _address(self.resp_address),
            f", HTTP on {_address(self.http_address)}" if self.http_address else "", cfg.data_dir,
        )

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Drain and close: no acknowledged write is lost, the memtable is flushed."""
        for server in self._servers:
            server.close()
        # HTTP drains in parallel with RESP: shutdown takes one drain period, not two.
        http_closed = asyncio.ensure_future(self._http.close()) if self._http is not None else None
        deadline = time.monotonic() + self.config.shutdown_drain_ms / 1000
        resp = self.resp
        while resp is not None and resp.has_pending() and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        if resp is not None:
            resp.close_all()
        if http_closed is not None:
            await http_closed
        if self.node is not None:
            await self.node.stop()


# The cyclic garbage collector, tuned for a server (measured on a 3-node cluster under
# redis-benchmark SET load, 2026-11-23): with CPython's defaults a full collection walked every
# object the imports made (FastAPI, pydantic, uvicorn...) and paused a node for up to 77 ms,
# eight times in a 16-second run, which is most of the cluster's p99. Freezing what exists once
# the node has started takes those objects out of every later collection (pauses fell to 4-7
# ms), and a larger first-generation threshold stops request bursts from starting collections
# at all: a request frees what it allocates, and the collector only runs once 20,000 more
# container objects are alive than at the last collection. Cycles are still collected.
GC_GEN0_THRESHOLD = 20_000


def _settle_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve(config: NodeConfig) -> None:
    process = NodeServer(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.request_stop)
    await process.start()
    _settle_garbage_collector()
    resp, http = process.resp_address, process.http_address
    print(f"ringkv node {config.node_id} ready: RESP {resp[0]}:{resp[1]}"
          + (f", HTTP http://{http[0]}:{http[1]}" if http else ""), flush=True)
    await process.wait_stopped()
    await process.stop()


def run(config: NodeConfig) -> None:
    import uvloop

    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    profile_out = os.environ.get("RINGKV_PROFILE_OUT")
    if not profile_out:
        uvloop.run(serve(config))
        return
    # For benchmarks: a cProfile of the whole node, written at a clean stop (SIGTERM).
    import cProfile

    profiler = cProfile.Profile(time.process_time)  # CPU time: idle waits do not count
    profiler.enable()
    try:
        uvloop.run(serve(config))
    finally:
        profiler.disable()
        profiler.dump_stats(profile_out)
