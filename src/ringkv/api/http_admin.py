"""The HTTP API's operations routes: the cluster administration under /api/v1/admin (the same
calls as RINGKV.ADMIN and `ringkv admin`), health (`/healthz`, `/readyz`) and Prometheus
`/metrics`. Each handler calls the node's `AdminService`; errors are raised and answered as
problem+json in one place (api/http_problems.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Query
from starlette.responses import Response

from ringkv.api.http_codec import API, json_response
from ringkv.api.http_metrics import HttpMetrics
from ringkv.api.http_models import (
    AddNodeRequest,
    AdmitResponse,
    CleanupResponse,
    ClusterStatusResponse,
    CompactionRequest,
    CompactionResponse,
    DecommissionResponse,
    HotKeysResponse,
    OperationResponse,
    OperationsResponse,
    RemoveResponse,
    RepairResponse,
    SeedsResponse,
    StartOperationRequest,
    StatusResponse,
)
from ringkv.api.http_problems import ProblemError, problem_responses
from ringkv.service.contract import AdminService
from ringkv.service.limits import HOTKEYS_DEFAULT_COUNT, HOTKEYS_MAX_COUNT


class AdminApi:
    """The operations handlers, over a node's `AdminService` (None: every route answers 503)."""

    def __init__(self, admin: AdminService | None, metrics: HttpMetrics) -> None:
        self.admin_service = admin
        self.metrics = metrics

    def _admin(self) -> AdminService:
        if self.admin_service is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        return self.admin_service

    async def healthz(self) -> Response:
        """The process is alive and its event loop answers."""
        return json_response({"status": "ok"})

    async def readyz(self) -> Response:
        """Ready to serve: the engine is open and no background flush or compaction failed."""
        why_not = self._admin().health()
        if why_not is not None:
            raise ProblemError(503, "unavailable", why_not)
        return json_response({"status": "ready"})

    async def cluster_status(self) -> Response:
        """The members as this node sees them: each one's address, status (healthy, joining,
        leaving, down), role, keys, memory, partitions and liveness; the cluster's key count
        (each key once) and replication factor; membership progress. The same document as
        RINGKV.STATUS and `ringkv cluster status --json`."""
        return json_response(await self._admin().status())

    async def cluster_repair(self) -> Response:
        """Run anti-entropy now over every partition this node holds; answers what it fixed
        (as `ringkv repair`)."""
        return json_response(await self._admin().repair())

    async def cluster_remove_node(self, node_id: str, force: bool = False) -> Response:
        """Take a node out of the ring: this node decommissions itself (hands its partitions
        over, then leaves) when `node_id` names it; any other node is removed as dead and its
        partitions are rebuilt from the remaining replicas. A node this one still hears from
        is not removed (409: decommission it) unless `force=true`."""
        admin = self._admin()
        if node_id == admin.node_id:
            return json_response(await admin.decommission())
        if force:
            return json_response(await admin.remove(node_id, True))
        return json_response(await admin.remove(node_id))

    async def cluster_cleanup(self) -> Response:
        """Remove from this node the data it no longer holds as a replica (left behind by joins
        and decommissions); refused (409) while a membership change runs or a member is down."""
        return json_response(await self._admin().cleanup())

    async def cluster_add_node(self, body: AddNodeRequest) -> Response:
        """Add a node. `{"node_address": "host:port"}`, sent to any member: admit the node whose
        RESP port is there, running as a joining node (`ringkv admin join`) and not yet a
        member; answers its id, state, the partitions it will receive and the seeds it was
        given; the status then shows it joining, with its progress, until it is healthy.
        `{"seeds": [...]}`, sent to the joining node itself: the members it learns the cluster
        from (node_id@host:rpc_port)."""
        admin = self._admin()
        if body.node_address is not None:
            return json_response(await admin.admit(body.node_address))
        return json_response(await admin.join(list(body.seeds or ())))

    async def cluster_rebalance(self) -> Response:
        """Bring every partition this node holds in line with its other replicas now (the
        anti-entropy pass `ringkv repair` runs), e.g. after a membership change. Ownership needs
        no rebalancing: the ring assigns partitions in balance from the member list alone."""
        return await self.cluster_repair()

    async def namespace_compaction(self, namespace: str) -> Response:
        """How a namespace's keys are compacted on the node asked: its column family, strategy
        and settings, and the sorted runs a lookup there probes at most."""
        return json_response(self._admin().compaction(namespace))

    async def set_namespace_compaction(self, namespace: str, body: CompactionRequest) -> Response:
        """Compact a namespace by another strategy from now on, on the node asked (ask each node):
        the merges picked from now on, and the tables they and later flushes write, follow it;
        tables already written stay until a merge takes them. Not stored: a restart takes the
        configuration's strategy. The namespace needs a tree of its own (a `compaction` setting
        in its configuration), or is the default one (docs/compaction.md)."""
        return json_response(self._admin().set_compaction(namespace, body.compaction, dict(body.settings)))

    async def list_operations(self, running: bool = False) -> Response:
        """This node's long operations, newest first (docs/operations.md): every running one and
        the last finished ones; `running=true` for those in flight only."""
        return json_response({"operations": self._admin().operations(running)})

    async def get_operation(self, operation_id: str, wait_ms: int = 0) -> Response:
        """One operation of this node: its state, progress (done of total units), ETA and, once
        finished, its result or error. `wait_ms` (up to 30000): answer as soon as it finishes,
        or after that long."""
        admin = self._admin()
        if wait_ms:
            return json_response(await admin.wait_operation(operation_id, wait_ms / 1000))
        return json_response(admin.operation(operation_id))

    async def start_operation(self, body: StartOperationRequest) -> Response:
        """Start a long operation (repair, cleanup, decommission, remove, backup, restore) and
        answer its document at once (202); follow it at /api/v1/admin/operations/{id}. 409 while
        a conflicting operation runs (named) or the change is refused now."""
        return json_response(await self._admin().start_operation(body.kind, dict(body.args)), status=202)

    async def config(self, pattern: Annotated[list[str], Query(
            max_length=64, description="Glob patterns (Redis's, any case) of the setting names to answer; "
                                       "several allowed; default every setting")] = ["*"]) -> Response:  # noqa: B006
        """This node's settings, as CONFIG GET answers them (docs/configuration.md): every setting
        by its configuration-file name, and the Redis names with an equivalent; values as text;
        secrets never. Settings are changed at run time with CONFIG SET over RESP."""
        return json_response(self._admin().config_get(list(pattern)))

    async def hot_keys(self, count: Annotated[int, Query(
            ge=1, le=HOTKEYS_MAX_COUNT, description="How many keys to answer at most")] = HOTKEYS_DEFAULT_COUNT) -> Response:
        """The keys this node coordinated most lately, most requested first (docs/hot-keys.md), as
        RINGKV.HOTKEYS answers them; each node counts its own: ask every node (`ringkv hotkeys`
        does) for the cluster's."""
        return json_response(self._admin().hot_keys(count))

    async def metrics_text(self) -> Response:
        """Prometheus metrics: HTTP requests and latency per command, RESP commands, engine, loop."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def admin_routes(api: AdminApi) -> Iterator[tuple[str, Callable, str, dict[str, Any]]]:
    """The route table: (path, handler, method, route options)."""
    def answers(model: Any, *statuses: int) -> dict[str, Any]:
        # Handlers answer with json_response (no re-validation); the model documents the answer
        # in the OpenAPI spec, which the schemathesis tests hold the answers to.
        return {"response_model": model, "responses": problem_responses(*statuses, 503)}

    yield API + "/admin/cluster/status", api.cluster_status, "GET", answers(ClusterStatusResponse)
    yield API + "/admin/cluster/repair", api.cluster_repair, "POST", answers(RepairResponse)
    yield API + "/admin/cluster/rebalance", api.cluster_rebalance, "POST", answers(RepairResponse)
    yield API + "/admin/cluster/nodes", api.cluster_add_node, "POST", answers(
        AdmitResponse | SeedsResponse, 400, 409, 422)
    yield API + "/admin/cluster/cleanup", api.cluster_cleanup, "POST", answers(CleanupResponse, 409)
    yield API + "/admin/cluster/nodes/{node_id}", api.cluster_remove_node, "DELETE", answers(
        DecommissionResponse | RemoveResponse, 400, 409, 422)
    yield API + "/admin/namespaces/{namespace}/compaction", api.namespace_compaction, "GET", answers(
        CompactionResponse, 400)
    yield API + "/admin/namespaces/{namespace}/compaction", api.set_namespace_compaction, "PUT", answers(
        CompactionResponse, 400, 422)
    yield API + "/admin/config", api.config, "GET", answers(dict[str, str], 422)
    yield API + "/admin/hotkeys", api.hot_keys, "GET", answers(HotKeysResponse, 422)
    yield API + "/admin/operations", api.list_operations, "GET", answers(OperationsResponse, 422)
    yield API + "/admin/operations", api.start_operation, "POST", {
        **answers(OperationResponse, 400, 409, 422), "status_code": 202}
    yield API + "/admin/operations/{operation_id}", api.get_operation, "GET", answers(OperationResponse, 400, 422)
    yield "/healthz", api.healthz, "GET", {"response_model": StatusResponse}
    yield "/readyz", api.readyz, "GET", {"response_model": StatusResponse, "responses": problem_responses(503)}
    yield "/metrics", api.metrics_text, "GET", {
        "response_class": Response,
        "responses": {200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }
