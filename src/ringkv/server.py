"""The node process, `ringkv serve`: a node (node/) behind its client protocols (api/).

The one module that knows both sides: it opens the node (node/assembly.py), puts the RESP
server and the HTTP API in front of its `KeyValueService` and `AdminService`, starts the
node's background work, and on SIGTERM or SIGINT stops in order: stop accepting connections,
let in-flight requests finish (up to `shutdown_drain_ms`), close the adapters, then the node
(which flushes the memtable and closes the engine). On SIGHUP it re-reads the TLS certificate
files (security/tls.py): new connections use them, open ones carry on.

One uvloop event loop runs everything. The loop never waits on the disk: WAL fsyncs under
`sync="always"` are awaited in a thread pool (group commit inside the engine), and flushes and
compactions run in the engine's worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time

from ringkv import logs
from ringkv.api.http_limits import HttpClientLimits, HttpClientStats, default_allowed_hosts
from ringkv.api.http_serving import HttpHandle, create_app, start_http
from ringkv.api.resp_server import RespLimits, RespServer
from ringkv.node.assembly import open_node
from ringkv.node.config import NodeConfig
from ringkv.node.node import Node
from ringkv.security.access import AccessControl, AccessSettings
from ringkv.security.tls import ServerTls

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
        self.resp_address: tuple[str, int] | None = None  # plain RESP; None with resp_port = -1
        self.resp_tls_address: tuple[str, int] | None = None
        self.tls: ServerTls | None = None
        self.http_address: tuple[str, int] | None = None
        self.http_client_stats = HttpClientStats()  # the HTTP API's bounded-clients counts
        self.http_client_limits: HttpClientLimits | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._http: HttpHandle | None = None
        self._stopping = asyncio.Event()
        self.access: AccessControl | None = None
        self._access_task: asyncio.Task | None = None

    async def start(self) -> None:
        cfg = self.config
        # Certificates first: a bad file stops the start before the data directory is touched.
        self.tls = ServerTls(cfg.tls_files(), cfg.tls_handshake_timeout_ms) if cfg.tls_enabled() else None
        node = self.node = await open_node(cfg)
        limits = RespLimits(
            max_bulk_bytes=cfg.max_value_bytes + RESP_FRAME_SLACK_BYTES,
            max_args=cfg.max_args,
            max_inline_bytes=cfg.max_inline_bytes,
            max_query_buffer_bytes=max(cfg.max_query_buffer_bytes, cfg.max_value_bytes + RESP_FRAME_SLACK_BYTES),
            max_connections=cfg.max_connections,
            max_output_buffer_bytes=cfg.max_output_buffer_bytes,
            max_inflight_commands=cfg.max_inflight_commands,
            idle_timeout_ms=cfg.client_idle_timeout_ms,
            max_connections_per_ip=cfg.max_connections_per_ip,
            max_client_memory_bytes=cfg.max_client_memory_bytes,
        )
        self.access = access_control(cfg, node)
        self.resp = RespServer(node.service, node.admin, limits, access=self.access)
        loop = asyncio.get_running_loop()
        if cfg.resp_port >= 0:
            server = await loop.create_server(self.resp.protocol_factory, cfg.host, cfg.resp_port, backlog=1024)
            self._servers.append(server)
            self.resp_address = server.sockets[0].getsockname()[:2]
        if cfg.tls_port >= 0 and self.tls is not None:
            server = await loop.create_server(
                self.resp.protocol_factory, cfg.host, cfg.tls_port, backlog=1024,
                ssl=self.tls.context, ssl_handshake_timeout=self.tls.handshake_timeout_s)
            self._servers.append(server)
            self.resp_tls_address = server.sockets[0].getsockname()[:2]
        if cfg.http_enabled:
            allowed = default_allowed_hosts(cfg.http_allowed_hosts, cfg.host, (m.host for m in cfg.member_list()))
            app = create_app(node.service, node.admin, resp_stats=self.resp.stats, max_value_bytes=cfg.max_value_bytes,
                             access=self.access, allowed_hosts=allowed, client_stats=self.http_client_stats)
            client_limits = HttpClientLimits(header_timeout_ms=cfg.http_header_timeout_ms,
                                             idle_timeout_ms=cfg.client_idle_timeout_ms,
                                             max_connections_per_ip=cfg.max_connections_per_ip)
            self.http_client_limits = client_limits  # changed by CONFIG SET (apply_settings)
            self._http, self.http_address = await start_http(
                app, cfg.host, cfg.http_port, max_connections=cfg.max_connections, drain_ms=cfg.shutdown_drain_ms,
                tls=self.tls if cfg.http_tls else None, client_limits=client_limits,
                client_stats=self.http_client_stats)
        node.admin.watch_settings(self.apply_settings)  # CONFIG SET (node/runtime_config.py)
        # The RESP address other nodes and clients are told: plain when served, else TLS.
        advertised = self.resp_address or self.resp_tls_address
        node.start(_address(advertised), _address(self.http_address) if self.http_address else "")
        # Users: loaded (and bootstrapped) in the background, as the system namespace may not
        # have a quorum until the other members start; commands wait for them meanwhile.
        self._access_task = asyncio.create_task(self.access.run(cfg.requirepass, cfg.admin_password()),
                                                name="ringkv-users")
        c = node.cluster
        if c is not None:
            log.info("node %s joined cluster %s of %d members (N=%d, %d partitions), RPC on %s",
                     cfg.node_id, cfg.cluster_name, len(c.placement.ring.node_ids), c.placement.ring.replicas,
                     cfg.partitions, _address(c.transport.address))
            (log.info if cfg.member_auth() != "none" else log.warning)(
                "RPC peers authenticated by: %s", cfg.member_auth_description())
        log.info(
            "node %s (actor %s) serving %s, data in %s",
            cfg.node_id, node.figures.identity.actor.decode(), self.listening(), cfg.data_dir,
        )
        if self.tls is not None:
            log.info("TLS certificate %s from %s (client certificates: %s)", self.tls.certificate,
                     cfg.tls_cert_file, cfg.tls_client_auth)

    def apply_settings(self, changed: dict) -> None:
        """Settings changed at run time (CONFIG SET, node/runtime_config.LIVE_SETTINGS) that
        the client servers read: their limits objects are read at each use."""
        resp, http, cfg = self.resp, self.http_client_limits, self.config
        if resp is not None:
            limits = resp.limits
            limits.max_connections = cfg.max_connections
            limits.max_connections_per_ip = cfg.max_connections_per_ip
            limits.idle_timeout_ms = cfg.client_idle_timeout_ms
            limits.max_inflight_commands = cfg.max_inflight_commands
            limits.max_output_buffer_bytes = cfg.max_output_buffer_bytes
            limits.max_client_memory_bytes = cfg.max_client_memory_bytes
        if http is not None:
            http.max_connections_per_ip = cfg.max_connections_per_ip
            http.idle_timeout_ms = cfg.client_idle_timeout_ms
            http.header_timeout_ms = cfg.http_header_timeout_ms
        if self._http is not None and {"max_connections", "client_idle_timeout_ms"} & changed.keys():
            self._http.apply_limits(cfg.max_connections, cfg.client_idle_timeout_ms)

    def listening(self) -> str:
        """What it serves where, e.g. "RESP 127.0.0.1:7379, RESP+TLS 127.0.0.1:7389, HTTPS ..."."""
        parts = []
        if self.resp_address:
            parts.append(f"RESP {_address(self.resp_address)}")
        if self.resp_tls_address:
            parts.append(f"RESP+TLS {_address(self.resp_tls_address)}")
        if self.http_address:
            scheme = "https" if self.config.http_tls else "http"
            parts.append(f"{scheme.upper()} {scheme}://{_address(self.http_address)}")
        return ", ".join(parts)

    def reload_tls(self) -> None:
        """SIGHUP: re-read the certificate files; a bad one keeps the old (security/tls.py)."""
        if self.tls is None:
            log.info("SIGHUP: no TLS configured, nothing to reload")
            return
        self.tls.reload()

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
        if self._access_task is not None:
            self._access_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._access_task
        if self.access is not None:
            self.access.close()
        if self.node is not None:
            await self.node.stop()


def access_control(cfg: NodeConfig, node: Node) -> AccessControl:
    """The node's users and permissions on RESP and HTTP (security/access.py)."""
    settings = AccessSettings(
        protected_mode=cfg.protected_mode, refresh_interval_ms=cfg.acl_refresh_interval_ms,
        cache_max_users=cfg.acl_cache_max_users, max_users=cfg.acl_max_users,
        backoff_after_failures=cfg.auth_backoff_after_failures, backoff_base_ms=cfg.auth_backoff_base_ms,
        backoff_max_ms=cfg.auth_backoff_max_ms, backoff_max_tracked=cfg.auth_backoff_max_tracked,
        max_pending_auth=cfg.auth_max_pending, token_ttl_s=cfg.auth_token_ttl_s,
        token_max_ttl_s=cfg.auth_token_max_ttl_s, tokens_max_per_user=cfg.auth_tokens_max_per_user)
    return AccessControl(node.system, settings, now_ms=node.clock.now_ms, fallback=node.system_one)


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
    loop.add_signal_handler(signal.SIGHUP, process.reload_tls)
    await process.start()
    _settle_garbage_collector()
    ready = f"ringkv node {config.node_id} ready: {process.listening()}"
    # Always printed (on stdout, whatever log_level says); as a JSON line under log_format = "json".
    print(logs.standalone_line(ready, config.log_format, config.node_id), flush=True)
    await process.wait_stopped()
    await process.stop()


def run(config: NodeConfig) -> None:
    import uvloop

    logs.configure(config.log_level, config.log_format, config.node_id)
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
