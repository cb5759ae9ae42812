"""Prometheus metrics of a node, served by the HTTP API at `/metrics`.

Two sources:
- `HttpMetrics` counts and times every HTTP request per command (the route's name), fed by
  `RequestMetricsMiddleware`, a pure ASGI middleware: one send wrapper and one clock read per
  request, no logging;
- `NodeCollector` reads the node's own figures at scrape time (`AdminService.metrics()`: the
  engine, loop stalls, expiry, disk space, the cluster's counters, quorum latencies and the
  per-peer figures) and the RESP server's, so nothing on the request paths of those layers
  pays for metrics beyond the counts they keep anyway.

And prometheus_client's own collectors of the process (`process_*`: CPU, resident memory,
open file descriptors, start time) and of Python (`python_info`, `python_gc_*`), plus
`ringkv_build_info{version, python}` (always 1), the version a node runs. docs/observability.md
lists every metric.

Each app gets its own `CollectorRegistry`: tests build several apps in one process, and the
global registry would refuse the second set of metric names.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ringkv import __version__
from ringkv.api.resp_server import LATENCY_BUCKETS_S as RESP_LATENCY_BUCKETS_S
from ringkv.service.contract import AdminService

# Single-node requests take tens of microseconds to a few milliseconds; an fsync under
# sync="always" takes a few milliseconds more. The buckets resolve both.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
UNMATCHED = "unmatched"  # requests that matched no route: one label, whatever the path


class HttpMetrics:
    """Request counts by (command, status) and latency histograms by command."""

    def __init__(self, admin: AdminService | None, resp_stats: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "ringkv_http_requests",
            "HTTP requests answered, by command (route name) and status code.",
            ["command", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ringkv_http_request_duration_seconds",
            "Time from the first byte handed to the app to the last byte of the answer.",
            ["command"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(NodeCollector(admin, resp_stats))
        # The process's and the interpreter's figures: prometheus_client's collectors (they read
        # /proc and the gc module at scrape time), in this app's registry as well as the global one.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        # labels() takes a lock and builds a tuple key; the set of (command, status) pairs is
        # small and fixed by the routes, so the children are looked up once and kept.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, command: str, status: int, seconds: float) -> None:
        pair = self._children.get((command, status))
        if pair is None:
            pair = (self.requests.labels(command, str(status)), self.latency.labels(command))
            self._children[(command, status)] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request into an `HttpMetrics`.

    The command label is the name of the route the router matched, read from the scope after
    the app returns.
    """

    def __init__(self, app: Any, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def send_recording_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            # The router leaves the matched route (APIRoutes) or at least its endpoint (FastAPI's
            # own /openapi.json and /docs) in the scope.
            name = (
                getattr(scope.get("route"), "name", None)
                or getattr(scope.get("endpoint"), "__name__", None)
                or UNMATCHED
            )
            self.metrics.observe(name, status, time.perf_counter() - started)


class NodeCollector:
    """Reads the node's figures at scrape time. Without an admin service, only RESP's."""

    def __init__(self, admin: AdminService | None, resp_stats: Any = None) -> None:
        self.admin = admin
        self.resp_stats = resp_stats

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("ringkv_build_info", "Always 1: the ringkv version and the Python "
                                  "version this node runs, as labels.", labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        if self.resp_stats is not None:
            yield from _resp_metrics(self.resp_stats)
        if self.admin is None:
            return
        figures = self.admin.metrics()
        yield from _engine_metrics(figures["engine"])
        yield from _loop_metrics(figures["loop"])
        yield CounterMetricFamily("ringkv_expired_keys", "Keys removed by active expiry.",
                                  value=figures["expired_keys"])
        disk = figures.get("disk") or {}
        if disk:
            yield GaugeMetricFamily("ringkv_disk_free_bytes", "Free bytes of the file system holding the "
                                    "data directory.", value=disk["free_bytes"])
            yield GaugeMetricFamily("ringkv_disk_size_bytes", "Size of the file system holding the data "
                                    "directory.", value=disk["total_bytes"])
        if "cluster" in figures:
            yield from _cluster_metrics(figures)
        if "namespaces" in figures:
            yield from _namespace_metrics(figures["namespaces"])
        if "hot_keys" in figures:
            yield from _hot_key_metrics(figures["hot_keys"])


def _hot_key_metrics(doc: dict[str, Any]) -> Iterator[Metric]:
    """The hot-key summary (docs/hot-keys.md): its size, and the few most requested keys with
    their estimated rate. Those carry the key as a label (its first 64 bytes, escaped), so a
    key is a time series only while it is among them."""
    yield GaugeMetricFamily("ringkv_hot_keys_sampled", "Sampled requests in the hot-key summary (decayed).",
                            value=doc["sampled"])
    yield GaugeMetricFamily("ringkv_hot_keys_hot", "Keys in the hot set (what hot_reads and hot_cache_ms act on).",
                            value=doc["hot_count"])
    rate = GaugeMetricFamily("ringkv_hot_key_requests_per_second", "Estimated requests per second this node "
                             "coordinated for one of its most requested keys.", labels=["rank", "namespace", "key"])
    for rank, k in enumerate(doc["keys"], 1):
        shown = k["key"][:64] + ("..." if len(k["key"]) > 64 else "")
        rate.add_metric([str(rank), k["namespace"], shown], k["per_s"])
    yield rate


def _namespace_metrics(figures: dict[str, Any]) -> Iterator[Metric]:
    """Keys and bytes per namespace on this replica; for namespaces with a quota, this node's
    estimate for the cluster, the limits, and refusals (node/quotas.py, docs/namespaces.md)."""
    keys = GaugeMetricFamily("ringkv_namespace_keys", "Live keys of the namespace on this node's replica.",
                             labels=["namespace"])
    nbytes = GaugeMetricFamily("ringkv_namespace_bytes", "Bytes of live keys and values of the namespace on "
                               "this node's replica.", labels=["namespace"])
    est_keys = GaugeMetricFamily("ringkv_namespace_estimated_keys", "Live keys of the namespace in the "
                                 "cluster, as this node estimates them for its quota.", labels=["namespace"])
    est_bytes = GaugeMetricFamily("ringkv_namespace_estimated_bytes", "Bytes of the namespace in the cluster, "
                                  "as this node estimates them for its quota.", labels=["namespace"])
    limits = GaugeMetricFamily("ringkv_namespace_quota_limit", "A namespace's quota, by setting.",
                               labels=["namespace", "quota"])
    for name, doc in figures["namespaces"].items():
        keys.add_metric([name], doc["keys"])
        nbytes.add_metric([name], doc["bytes"])
        if "estimated_keys" in doc:
            est_keys.add_metric([name], doc["estimated_keys"])
            est_bytes.add_metric([name], doc["estimated_bytes"])
            for quota, limit in doc["limits"].items():
                limits.add_metric([name, quota], limit)
    refusals = CounterMetricFamily("ringkv_quota_refusals", "Requests refused by a namespace quota, by "
                                   "namespace and quota (max_keys, max_bytes, max_requests_per_s).",
                                   labels=["namespace", "quota"])
    for (name, quota), count in sorted(figures["refusals"].items()):
        refusals.add_metric([name, quota], count)
    yield from (keys, nbytes, est_keys, est_bytes, limits, refusals)


def _cluster_metrics(figures: dict[str, Any]) -> Iterator[Metric]:
    """Coordinator, hints, failure detector, anti-entropy and partition moves."""
    stats = figures["cluster"]
    for name, help_text in (
        ("reads", "Reads coordinated here."), ("writes", "Writes replicated from here."),
        ("forwarded", "Writes run here for another coordinator."),
        ("read_repairs", "Records sent to replicas that answered a read with less."),
        ("quorum_failures", "Requests that could not reach R or W replicas."),
        ("replica_failures", "Replica writes that failed (timed out, unreachable, or an error) on the "
                             "coordinator's side."),
        ("repairs_dropped", "Read repairs not sent because too many were in flight."),
        ("stand_ins", "Writes a stand-in took for a failed replica (sloppy quorum)."),
        ("hints_taken", "Writes this node kept as a stand-in, for a replica that was down."),
        ("session_failures", "Session reads that found no replica holding the session's writes in time."),
        ("replica_reads", "Reads of this node's replica asked by a coordinator (ReplicaGet, ReplicaGetDigest)."),
        ("replica_digest_reads", "Of replica_reads, digest reads (ReplicaGetDigest; read_digests = true)."),
        ("digest_mismatches", "Digest asks of reads coordinated here that found a replica holding another "
                              "record (it answered with the record, or was asked for it)."),
        ("speculative_reads", "Reads that asked one more replica because the one asked was slower than "
                              "its recent p99 (read_fanout = quorum)."),
        ("hot_reads_spread", "Reads at ONE of a hot key sent to one replica in turn (hot_reads = spread)."),
        ("hot_cache_hits", "Reads at ONE of a hot key answered from the coordinator's cache (hot_cache_ms)."),
        ("relays_sent", "Writes sent once to another datacenter's relay for all its replicas."),
        ("relayed_writes", "Writes this node relayed to the other replicas of its datacenter."),
        ("relays_answered_early", "Relayed writes answered once enough replicas here held them, "
                                  "before a slower one."),
    ):
        yield CounterMetricFamily(f"ringkv_cluster_{name}", help_text, value=stats.get(name, 0))
    hints = figures["hints"]
    yield GaugeMetricFamily("ringkv_hints_pending", "Hints waiting for their replica.", value=hints["hints_pending"])
    yield CounterMetricFamily("ringkv_hints_stored", "Hints stored for a replica that missed a write.",
                              value=hints.get("hints_stored", 0))
    yield CounterMetricFamily("ringkv_hints_delivered", "Hints delivered.", value=hints["hints_delivered"])
    yield CounterMetricFamily("ringkv_hints_expired", "Hints dropped past max_hint_window_ms.",
                              value=hints["hints_expired"])
    yield CounterMetricFamily("ringkv_hints_dropped", "Hints dropped because the hint store held max_hints "
                              "(the replica is repaired by anti-entropy instead).",
                              value=hints.get("hints_dropped_full", 0))
    yield GaugeMetricFamily("ringkv_nodes_down", "Nodes the failure detector believes down.",
                            value=figures["nodes_down"])
    gossip = figures.get("gossip", {})
    yield CounterMetricFamily("ringkv_gossip_rounds", "Gossip rounds run.", value=gossip.get("rounds", 0))
    yield CounterMetricFamily("ringkv_gossip_failures", "Gossip exchanges with a peer that failed (no answer, "
                              "refused).", value=gossip.get("exchanges_failed", 0))
    ae = figures["anti_entropy"]
    yield CounterMetricFamily("ringkv_anti_entropy_comparisons", "Partition comparisons run.",
                              value=ae["comparisons"])
    yield CounterMetricFamily("ringkv_anti_entropy_keys_transferred", "Keys pushed or pulled.",
                              value=ae["keys_transferred"])
    yield CounterMetricFamily("ringkv_anti_entropy_failures", "Partition comparisons that failed (a replica "
                              "did not answer, or the exchange broke off).", value=ae.get("failures", 0))
    moves = figures["moves"]
    yield GaugeMetricFamily("ringkv_partition_moves_planned", "Partitions the current (or last) join, leave "
                            "or rebalance moves to or from this node.", value=moves["total"])
    yield GaugeMetricFamily("ringkv_partition_moves_done", "Of those, moved.", value=moves["done"])
    yield CounterMetricFamily("ringkv_partition_moves", "Partitions moved by this node since it started.",
                              value=moves.get("moved", 0))
    yield from _latency_metrics(figures)
    auth = figures.get("rpc_auth", {})
    refused = CounterMetricFamily(
        "ringkv_rpc_handshakes_refused", "RPC connections refused before they were authenticated "
        "(no or a wrong cluster secret, a certificate of another CA or node, ...), by reason.",
        labels=["reason"])
    prefix = "rpc_handshakes_refused_"
    for key, count in auth.items():
        if key.startswith(prefix):
            refused.add_metric([key[len(prefix):]], count)
    yield refused
    yield CounterMetricFamily("ringkv_rpc_peers_refused", "Connect attempts to a peer that refused "
                              "this node's handshake or failed to prove itself.",
                              value=auth.get("rpc_peers_refused", 0))
    yield CounterMetricFamily("ringkv_gossip_states_refused", "Gossip states refused for their "
                              "origin (a tombstone from a non-member, a relayed address change).",
                              value=auth.get("gossip_states_refused", 0))


def _buckets(cumulative: list[tuple[float, int]]) -> list[tuple[str, int]]:
    return [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in cumulative]


def _latency_metrics(figures: dict[str, Any]) -> Iterator[Metric]:
    """Quorum latencies per operation, and per peer: phi, up, replica call durations and
    failures (node/latency.py). Peers are labelled by node id; the node bounds how many."""
    quorum = HistogramMetricFamily(
        "ringkv_quorum_duration_seconds", "Time from a coordinated request's first replica call to its R "
        "(get) or W (set) answers, or to its failure, by operation.", labels=["operation"])
    for op, (cumulative, total_s) in sorted(figures.get("quorum_latency", {}).items()):
        quorum.add_metric([op], _buckets(cumulative), total_s)
    yield quorum
    peers = figures.get("peers", {})
    phi = GaugeMetricFamily("ringkv_peer_phi", "The phi-accrual suspicion of each peer (above phi_threshold: "
                            "down).", labels=["peer"])
    up = GaugeMetricFamily("ringkv_peer_up", "1 when the failure detector believes the peer up, else 0.",
                           labels=["peer"])
    calls = HistogramMetricFamily("ringkv_peer_rpc_duration_seconds", "Duration of replica calls to each peer, "
                                  "from sent to answered or failed.", labels=["peer"])
    failures = CounterMetricFamily("ringkv_peer_rpc_failures", "Replica calls to each peer that failed, by "
                                   "reason (timeout, unavailable: refused or believed down, error: the peer "
                                   "answered with one).", labels=["peer", "reason"])
    for peer, doc in sorted(peers.items()):
        if "phi" in doc:
            phi.add_metric([peer], doc["phi"])
            up.add_metric([peer], 1 if doc["up"] else 0)
        if "latency" in doc:
            cumulative, total_s = doc["latency"]
            calls.add_metric([peer], _buckets(cumulative), total_s)
            for reason, n in sorted(doc["failures"].items()):
                failures.add_metric([peer, reason], n)
    yield from (phi, up, calls, failures)


def _resp_metrics(stats: Any) -> Iterator[Metric]:
    commands = CounterMetricFamily(
        "ringkv_resp_commands", "RESP commands run to their reply, by command.", labels=["command"]
    )
    for name, count in list(stats.commands.items()):
        commands.add_metric([name.decode("ascii", "replace")], count)
    yield commands
    latency = HistogramMetricFamily(
        "ringkv_resp_command_seconds",
        "RESP command latency from parsed to reply ready, by command.",
        labels=["command"],
    )
    for name, counts in list(stats.latency.items()):
        cumulative = []
        total = 0
        for bound, n in zip((*RESP_LATENCY_BUCKETS_S, float("inf")), counts):
            total += n
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", total))
        latency.add_metric([name.decode("ascii", "replace")], cumulative, counts[-1])
    yield latency
    yield GaugeMetricFamily(
        "ringkv_resp_connections", "Open RESP client connections.", value=stats.connections_current
    )
    yield CounterMetricFamily(
        "ringkv_resp_connections_received", "RESP connections accepted.", value=stats.connections_received
    )
    yield CounterMetricFamily(
        "ringkv_resp_protocol_errors",
        "RESP connections closed after a protocol error.",
        value=stats.protocol_errors,
    )
    # Bounded clients (api/resp_server.py): connections refused or closed, by why.
    closes = CounterMetricFamily("ringkv_resp_client_closes", "RESP connections refused or closed to bound "
                                 "clients, by reason.", labels=["reason"])
    for reason, value in (("max_connections_per_ip", stats.connections_rejected_per_ip),
                          ("idle_timeout", stats.idle_closes), ("max_client_memory", stats.client_memory_closes),
                          ("cross_protocol", stats.cross_protocol_closes)):
        closes.add_metric([reason], value)
    yield closes


def _engine_metrics(st: dict) -> Iterator[Metric]:
    yield GaugeMetricFamily("ringkv_engine_sstables", "SSTables in the engine.", value=st["tables"])
    level_tables = GaugeMetricFamily(
        "ringkv_engine_level_sstables", "SSTables per LSM level.", labels=["level"]
    )
    level_bytes = GaugeMetricFamily(
        "ringkv_engine_level_bytes", "Bytes of SSTables per LSM level.", labels=["level"]
    )
    for lv in st["levels"]:
        level_tables.add_metric([str(lv["level"])], lv["tables"])
        level_bytes.add_metric([str(lv["level"])], lv["bytes"])
    yield level_tables
    yield level_bytes
    yield GaugeMetricFamily(
        "ringkv_engine_disk_bytes", "Bytes of SSTables and WAL on disk.", value=st["bytes_on_disk"]
    )
    yield GaugeMetricFamily(
        "ringkv_engine_memtable_bytes", "Approximate bytes in the active memtable.", value=st["memtable_bytes"]
    )
    yield GaugeMetricFamily(
        "ringkv_engine_write_amplification",
        "Bytes written to disk (WAL, flushes, compactions) per user byte written.",
        value=st["write_amplification"],
    )
    yield GaugeMetricFamily(
        "ringkv_engine_space_amplification",
        "Bytes of all SSTables per byte of the last non-empty level.",
        value=st["space_amplification"],
    )
    cache = st["block_cache"]
    yield GaugeMetricFamily(
        "ringkv_engine_block_cache_hit_ratio", "Block cache hits / lookups since start.", value=cache["hit_rate"]
    )
    yield GaugeMetricFamily(
        "ringkv_engine_block_cache_used_bytes", "Bytes held by the block cache.", value=cache["used_bytes"]
    )
    yield CounterMetricFamily("ringkv_engine_flushes", "Memtable flushes.", value=st["flushes"])
    yield CounterMetricFamily("ringkv_engine_compactions", "Compactions.", value=st["compactions"])
    yield CounterMetricFamily(
        "ringkv_engine_write_stalls", "Writes that waited for a flush or compaction.", value=st["write_stalls"]
    )
    yield GaugeMetricFamily(
        "ringkv_engine_background_error",
        "1 when a background flush or compaction failed and the engine turned read-only.",
        value=1 if st["background_error"] else 0,
    )
    # Compaction strategies per namespace (docs/compaction.md): each column family's read
    # amplification, the expired tables time-window compaction deleted unread, and the merges
    # refused because the disk could not hold their output.
    runs = GaugeMetricFamily(
        "ringkv_engine_family_sorted_runs",
        "Sorted runs of each column family: the most SSTables a lookup there probes.",
        labels=["family", "compaction"],
    )
    for name, family in st["families"].items():
        runs.add_metric([name, family["compaction"]], family["sorted_runs"])
    yield runs
    yield CounterMetricFamily(
        "ringkv_engine_expired_tables_dropped",
        "SSTables whose every record had expired, deleted without being read (time-window compaction).",
        value=st["expired_tables_dropped"],
    )
    yield CounterMetricFamily(
        "ringkv_engine_expired_bytes_dropped", "Bytes of those SSTables.", value=st["expired_bytes_dropped"]
    )
    yield CounterMetricFamily(
        "ringkv_engine_compaction_space_refusals",
        "Merges refused before they started because the disk could not hold their output.",
        value=st["compaction_space_refusals"],
    )


def _loop_metrics(loop: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "ringkv_loop_stall_max_seconds",
        "Longest delay of the event loop's periodic probe since start.",
        value=loop["max_stall_ms"] / 1000,
    )
    yield CounterMetricFamily(
        "ringkv_loop_stalls_over_5ms", "Probes the event loop ran more than 5 ms late.", value=loop["over_5ms"]
    )
    yield CounterMetricFamily("ringkv_loop_stall_samples", "Event loop probes run.", value=loop["samples"])
