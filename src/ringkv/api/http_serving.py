"""Serving the HTTP API: the FastAPI app, its middleware, and uvicorn inside the node's loop.

Contracts:
- `create_app(service, admin)` builds the app over a node's services; `create_app()` builds it
  for its OpenAPI spec alone (every route answers 503).
- `start_http(app, host, port)` serves it with uvicorn inside the running event loop (the
  node's uvloop) and returns `(handle, (host, port))`; `await handle.close()` stops it. The
  process keeps its own SIGTERM/SIGINT handlers: the embedded uvicorn installs none. With
  `tls=` (security/tls.ServerTls) the port serves HTTPS only, with the node's reloadable
  context and its bound on the handshake.
- Every error is `application/problem+json` (RFC 9457), mapped from exceptions in one place
  (`http_problems.problem_from_exception`); an unexpected exception is logged and answered
  500, and the connection and the node stay up.
- Bodies are bounded (`BodyLimitMiddleware`): a single value's request may hold a value of
  `max_value_bytes` as JSON text at its most escaped (`\u0001` is 6 bytes for 1) plus 64 KiB,
  a batch `MAX_BATCH_BODY_BYTES`. The value itself is then checked against `max_value_bytes`.
- A response the server can no longer take is dropped (`ClosedConnectionGuard`).

docs/http.md is the user's reference; `/openapi.json` is the machine-readable one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ringkv import __version__
from ringkv.api.client_limits import ThrottledLog
from ringkv.api.console import mount_console
from ringkv.api.http_admin import AdminApi, admin_routes
from ringkv.api.http_auth import (
    AuthApi,
    GuardedAdmin,
    GuardedService,
    HttpAuthMiddleware,
    auth_routes,
)
from ringkv.api.http_codec import API, BODY_SLACK_BYTES, MAX_BATCH_BODY_BYTES, MAX_HTTP_HEAD_BYTES
from ringkv.api.http_limits import (
    AllowedHosts,
    HostCheckMiddleware,
    HttpClientLimits,
    HttpClientStats,
    bounded_h11_protocol,
)
from ringkv.api.http_metrics import HttpMetrics, RequestMetricsMiddleware
from ringkv.api.http_models import PutKeyRequest
from ringkv.api.http_problems import Problem, ProblemError, ProblemRoute, problem_from_exception
from ringkv.api.http_routes import KeyValueApi, routes
from ringkv.api.http_session import HttpSessionMiddleware
from ringkv.errors import CommandError
from ringkv.security.access import AccessControl
from ringkv.security.tls import ServerTls
from ringkv.service.contract import AdminService, KeyValueService
from ringkv.service.limits import DEFAULT_MAX_VALUE_BYTES


class BodyLimitMiddleware:
    """Pure ASGI middleware bounding request bodies before anything buffers them.

    A declared Content-Length over the limit is answered 413 at once; a chunked body is
    counted as it arrives and the read that crosses the limit raises a 413 HTTPException,
    which the route answers as a problem.
    """

    def __init__(self, app: Any, single_limit_bytes: int, batch_limit_bytes: int, max_value_bytes: int) -> None:
        self.app = app
        self.single_limit_bytes = single_limit_bytes
        self.batch_limit_bytes = batch_limit_bytes
        self.max_value_bytes = max_value_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        batch = scope["path"].startswith(API + "/batch/")
        limit = self.batch_limit_bytes if batch else self.single_limit_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the HTTP parser has rejected a malformed length already
                if declared > limit:
                    await self._too_large(limit, batch).response()(scope, receive, send)
                    return
                break
        seen = 0

        async def receive_bounded() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                problem = self._too_large(limit, batch)
                raise StarletteHTTPException(413, problem.detail)
            return message

        await self.app(scope, receive_bounded, send)

    def _too_large(self, limit: int, batch: bool) -> ProblemError:
        if batch:
            why = f"a batch request body may hold {limit} bytes (max_batch_body_bytes); split the batch"
        else:
            why = (
                f"a request body may hold {limit} bytes: a value of max_value_bytes={self.max_value_bytes} as JSON "
                f"text at its most escaped ({JSON_ESCAPE_RATIO} bytes per byte) plus {BODY_SLACK_BYTES} bytes of JSON"
            )
        return ProblemError(413, "too-large", f"request body is too large: {why}")


log = logging.getLogger(__name__)

KEEP_ALIVE_S = 5.0  # uvicorn's default idle time of a keep-alive connection between requests

# The most bytes JSON text takes per byte of the value: a control character escaped as \u0001.
JSON_ESCAPE_RATIO = 6

_DESCRIPTION = """\
The REST/JSON API of a ringkv node. Values are text in JSON (`value_base64` for bytes that are
not UTF-8, or `encoding=base64`) or raw bytes with `application/octet-stream`; keys are UTF-8
text, or base64 with `key_encoding=base64`. `version` is a number that grows with every write;
`context` is the exact causal version.
Errors are `application/problem+json`. See docs/http.md.
"""


def _session_codec(service: Any) -> Any:
    """The service's session token codec (service/session.py), None when it has none."""
    if service is None:
        return None
    try:
        return service.sessions
    except (AttributeError, CommandError):
        return None


def create_app(service: KeyValueService | None = None, admin: AdminService | None = None, *,
               resp_stats: Any = None, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
               access: AccessControl | None = None, allowed_hosts: AllowedHosts | None = None,
               client_stats: HttpClientStats | None = None) -> FastAPI:
    """The app over a node's services; with none, an app for its OpenAPI spec alone (every
    route answers 503). `resp_stats` (api/resp_server.RespStats) adds the RESP figures to
    /metrics. `access`: users and permissions (api/http_auth.py); None serves every request.
    `allowed_hosts`: the Host names answered (api/http_limits.py); None answers any."""
    metrics = HttpMetrics(admin, resp_stats)
    # /docs and /redoc are the console module's, with every file served by the node (no CDN).
    app = FastAPI(title="ringkv", version=__version__, description=_DESCRIPTION, docs_url=None, redoc_url=None)
    app.router.route_class = ProblemRoute
    if access is not None:  # every data and admin call checked against the request's user
        metrics.registry.register(access.audit.collector())
        service = GuardedService(service, lambda: access.audit.permission_denied("http")) if service else None
        admin = GuardedAdmin(admin, access) if admin is not None else None  # type: ignore[assignment]
    table = [*routes(KeyValueApi(service)), *admin_routes(AdminApi(admin, metrics)), *auth_routes(AuthApi(access))]
    for path, handler, method, options in table:
        app.add_api_route(
            path, handler, methods=[method], name=handler.__name__, operation_id=handler.__name__, **options
        )

    mount_console(app, admin)  # `/`, its state, /docs, /redoc and their files (api/console.py)

    async def routing_problem(request: Request, exc: Exception) -> Response:
        # The router's own answers: no route for the path (404), or not for this method (405,
        # with its Allow header). Routes answer their errors themselves (ProblemRoute).
        problem = problem_from_exception(exc, request)
        if problem.status == 404:
            problem.detail = f"no route for {request.method} {request.url.path[:200]}"
        elif problem.status == 405:
            allowed = (problem.headers or {}).get("Allow", "")
            problem.detail = f"{request.method} is not allowed on {request.url.path[:200]}; allowed: {allowed}"
        return problem.response()

    app.add_exception_handler(StarletteHTTPException, routing_problem)

    single_limit = JSON_ESCAPE_RATIO * max_value_bytes + BODY_SLACK_BYTES
    # add_middleware wraps what was added before: the metrics (added last) run outermost and
    # see every answer, the body limit's early 413s included.
    app.add_middleware(
        BodyLimitMiddleware,
        single_limit_bytes=single_limit,
        batch_limit_bytes=max(MAX_BATCH_BODY_BYTES, single_limit),
        max_value_bytes=max_value_bytes,
    )
    sessions = _session_codec(service)
    if sessions is not None:  # Session-Token in and out (api/http_session.py), inside authentication
        app.add_middleware(HttpSessionMiddleware, codec=sessions)
    if access is not None:  # who the request is from, before its body is read (api/http_auth.py)
        app.add_middleware(HttpAuthMiddleware, access=access)
    if allowed_hosts is not None:  # DNS rebinding: refused before any other work
        stats = client_stats if client_stats is not None else HttpClientStats()

        def host_refused(_client: str) -> None:
            stats.hosts_refused += 1

        app.add_middleware(HostCheckMiddleware, allowed=allowed_hosts, on_refused=host_refused)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, plus the schemas that routes reference by hand (problems, PUT's body)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, PutKeyRequest):
            schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = spec
    return app.openapi_schema




class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the node's loop. The node owns SIGTERM/SIGINT (it drains every server
    before closing the engine); uvicorn's own handlers would replace the node's."""

    tls_handshake_timeout_s: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.config.ssl is None or sockets is None:
            await super().startup(sockets)
            return
        # uvicorn's startup on given sockets, with the one thing it does not pass: a bound on
        # the TLS handshake (asyncio's default lets a silent client hold a connection 60 s).
        await self.lifespan.startup()
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                              app_state=self.lifespan.state, _loop=_loop)

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, ssl=config.ssl, backlog=config.backlog,
                                     ssl_handshake_timeout=self.tls_handshake_timeout_s)
            for sock in sockets
        ]
        self.started = True


class ClosedConnectionGuard:
    """The outermost ASGI layer: a response the server can no longer take is dropped.

    uvicorn answers some malformed requests itself (a broken chunked body, say) with a 400 and
    closes, while the app is still handling the request whose head arrived intact. When the
    app's own answer then reaches the server, uvicorn's h11 protocol raises
    `LocalProtocolError` (a state machine in MUST_CLOSE) instead of the `OSError` the ASGI
    specification asks for on a closed connection. The connection is gone either way; this
    layer notes that the first send failed and turns every later one into a no-op, so the
    app finishes normally and nothing is logged as an application error.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        closed = False

        async def send_unless_closed(message: dict) -> None:
            nonlocal closed
            if closed:
                return
            try:
                await send(message)
            except Exception as exc:
                closed = True
                log.debug("the server dropped the connection before the response (%s: %s)", type(exc).__name__, exc)

        await self.app(scope, receive, send_unless_closed)


class HttpHandle:
    """A running HTTP server; `close()` stops it (idempotent)."""

    def __init__(self, server: _EmbeddedServer, task: asyncio.Task, drain_s: float) -> None:
        self._server = server
        self._task = task
        self._drain_s = drain_s

    def apply_limits(self, max_connections: int, idle_timeout_ms: int) -> None:
        """New connection and keep-alive limits (CONFIG SET) for connections accepted from now
        on: uvicorn's protocol copies both from its config when a connection is made."""
        self._server.config.limit_concurrency = max_connections
        self._server.config.timeout_keep_alive = keep_alive_s(idle_timeout_ms)

    async def close(self) -> None:
        server = self._server
        server.should_exit = True
        try:
            # uvicorn stops accepting, closes idle keep-alive connections, lets in-flight
            # requests finish up to timeout_graceful_shutdown, then cancels them.
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self._drain_s + 2)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A client still sending a request (a slow or broken one) holds its connection past
        # the drain: close it, so the node's shutdown never waits on a client.
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a bad address raises OSError to the caller (uvicorn
    would log and sys.exit instead)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=1024)


def keep_alive_s(idle_timeout_ms: int) -> float:
    """How long a keep-alive connection may idle between requests: uvicorn's 5 s, or less."""
    return min(KEEP_ALIVE_S, idle_timeout_ms / 1000) if idle_timeout_ms else KEEP_ALIVE_S


async def start_http(app: FastAPI, host: str, port: int, *, max_connections: int = 10_000,
                     drain_ms: int = 5_000, tls: ServerTls | None = None,
                     client_limits: HttpClientLimits | None = None,
                     client_stats: HttpClientStats | None = None) -> tuple[HttpHandle, tuple[str, int]]:
    """Serve `app` on host:port (0 picks a free port) in the running loop; HTTPS with `tls`.
    `client_limits`: timeouts and the per-address limit (api/http_limits.py), counted in
    `client_stats`."""
    drain_s = drain_ms / 1000
    limits = client_limits or HttpClientLimits()
    protocol = bounded_h11_protocol(limits, client_stats or HttpClientStats(), ThrottledLog(log))
    sock = _bind(host, port)
    config = uvicorn.Config(
        ClosedConnectionGuard(app),
        host=host,
        port=port,
        log_level="error",  # "warning" logs a line per malformed request: garbage floods the log
        log_config=None,  # leave logging to the node (uvicorn's loggers propagate to its root)
        access_log=False,
        lifespan="off",
        interface="asgi3",
        ws="none",
        proxy_headers=False,  # a middleware layer per request that a node does not need
        server_header=False,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=MAX_HTTP_HEAD_BYTES,
        http=protocol,
        # A keep-alive connection idle between requests: uvicorn's 5 s, or less.
        timeout_keep_alive=keep_alive_s(limits.idle_timeout_ms),
        timeout_graceful_shutdown=max(1, math.ceil(drain_s)),
    )
    if tls is not None:
        config.load()
        config.ssl = tls.context  # reloadable: see security/tls.ServerTls
    server = _EmbeddedServer(config)
    if tls is not None:
        server.tls_handshake_timeout_s = tls.handshake_timeout_s
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="ringkv-http")
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.001)
    except BaseException:
        server.should_exit = True
        sock.close()
        raise
    bound = server.servers[0].sockets[0].getsockname()
    return HttpHandle(server, task, drain_s), (bound[0], bound[1])
