"""The cluster console at `/` and the API documentation at `/docs` and `/redoc`, served offline.

Every byte a browser needs comes from the node itself: the console's page, script and style are
package data (`api/console_static/`), and Swagger UI's and ReDoc's bundles are those the
`fastapi-offline` package ships, served under `/docs/static/`. No page names another host, and
the console's page says so to the browser too (`Content-Security-Policy: default-src 'self'`).

Contracts:
- The page and the assets are files with no data in them: they answer anyone
  (api/http_auth.PUBLIC_PATHS, PUBLIC_PREFIXES). The figures come from
  `GET /api/v1/console/state`, which goes through the HTTP authentication like every API
  route: with users configured the page asks for a user and password once, trades them for a
  bearer token (`POST /api/v1/auth/token`) kept in the tab's sessionStorage, and sends it with
  every poll. The state reads the cluster as RINGKV.STATUS does (and needs its permission);
  the local anti-entropy and hint figures are INFO's, left out for a user who may not run it.
- The state is one JSON document (`console_state`): the members with their liveness, phi,
  keys, disk, memory and move progress; the ring's owner per partition and the pending ring's
  (partitions whose replicas move are listed); the hints this node holds per target; this
  node's anti-entropy figures; membership progress and, when `admin status` reports them, the
  long operations in flight; the keys this node coordinated most (RINGKV.HOTKEYS, None for a
  user who may not run it). The page polls it every POLL_INTERVAL_MS.

docs/console.md is the user's guide.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from ringkv import __version__
from ringkv.api import http_auth
from ringkv.api.http_codec import API, json_response
from ringkv.api.http_problems import ProblemError, problem_responses
from ringkv.errors import AuthenticationError, PermissionDeniedError
from ringkv.service.contract import AdminService

CONSOLE_STATE_PATH = API + "/console/state"
CONSOLE_STATIC_PATH = "/console/static"
DOCS_STATIC_PATH = "/docs/static"
# ReDoc 2 draws its maker's logo from a CDN, whatever its options say; it is served in its place.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
POLL_INTERVAL_MS = 1500  # the page's refresh period; the script reads it from the state
FINISHED_OPERATIONS_SHOWN = 5
HOT_KEYS_SHOWN = 10

STATIC_DIR = Path(__file__).with_name("console_static")
# The page forbids anything not from this node: scripts, styles, images, fetches.
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
INFO_FIGURES = ("hints_pending", "hints_stored", "hints_delivered", "hints_dropped_full", "hints_expired",
                "ae_comparisons", "ae_in_sync", "ae_keys_pushed", "ae_keys_pulled", "ae_traffic_bytes",
                "ae_failures", "ae_partitions_completed", "gossip_rounds", "gossip_exchanges_failed",
                "nodes_down", "max_stall_ms")


def docs_static_dir() -> Path:
    """Where fastapi-offline keeps Swagger UI's and ReDoc's files (a runtime dependency)."""
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _may_run_info() -> bool:
    """Whether the request's user may see INFO's figures (always, on a node without users)."""
    if http_auth.CURRENT.get() is None:  # no authentication layer: every request is served
        return True
    try:
        http_auth.check("info")
    except (PermissionDeniedError, AuthenticationError):
        return False
    return True


def _hot_keys(admin: AdminService) -> dict | None:
    """The node's most requested keys as RINGKV.HOTKEYS answers them; None for a user who may
    not run it."""
    try:
        return admin.hot_keys(HOT_KEYS_SHOWN)
    except PermissionDeniedError:
        return None


def _operations(admin: AdminService, status: dict) -> list[dict] | None:
    """The node's long operations (node/operations.py): every running one and the last
    FINISHED_OPERATIONS_SHOWN finished, newest first; None for a user who may not list them."""
    listing = getattr(admin, "operations", None)
    try:
        ops = listing() if callable(listing) else status.get("operations") or []
    except PermissionDeniedError:
        return None
    running = [op for op in ops if op.get("state") == "running"]
    finished = [op for op in ops if op.get("state") != "running"][:FINISHED_OPERATIONS_SHOWN]
    return running + finished


class ConsoleApi:
    """The console's page and state, and the documentation pages, over a node's `AdminService`
    (None: the state answers 503, the pages still load)."""

    def __init__(self, admin: AdminService | None, page_html: str) -> None:
        self.admin_service = admin
        self.page_html = page_html
        self._redoc_script: bytes | None = None  # read on first use: a 1 MiB file most nodes never serve

    async def console_page(self) -> Response:
        """The cluster console (an HTML page; its figures come from /api/v1/console/state)."""
        return Response(self.page_html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-cache"})

    async def console_state(self) -> Response:
        """What the console shows, in one document: the members (status, phi, keys, disk,
        memory, move), the ring's owner per partition and the pending ring's, the partitions
        whose replicas move, hints held here per target, this node's anti-entropy figures,
        membership progress and the operations in flight. Needs RINGKV.STATUS's permission."""
        admin = self.admin_service
        if admin is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        status = await admin.status()
        ring = admin.ring_view()
        doc: dict[str, Any] = {
            "node_id": admin.node_id,
            "version": __version__,
            "poll_interval_ms": POLL_INTERVAL_MS,
            "cluster": status.get("cluster"),
            "total_keys": status.get("total_keys"),
            "total_keys_unknown_partitions": status.get("total_keys_unknown_partitions"),
            "replication_factor": status.get("replication_factor"),
            "nodes": status.get("nodes", []),
            "membership": status.get("membership"),
            "operations": _operations(admin, status),
            "ring": ring,
            "health": admin.health(),
        }
        doc["hot_keys"] = _hot_keys(admin)
        if _may_run_info():
            ringkv = admin.info().get("ringkv", {})
            doc["local"] = {name: ringkv[name] for name in INFO_FIGURES if name in ringkv}
        else:
            doc["local"] = None  # the user may not run INFO
        return json_response(doc)

    async def swagger_ui(self) -> Response:
        """Swagger UI over /openapi.json, every file from this node."""
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="ringkv API",
            swagger_js_url=f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{CONSOLE_STATIC_PATH}/favicon.svg",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # Swagger UI would otherwise send the spec to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def swagger_ui_redirect(self) -> Response:
        """Swagger UI's OAuth2 redirect page."""
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc_script(self) -> Response:
        """ReDoc's bundle, with the one address it would fetch from the internet (the logo in its
        sidebar, an image it shows unconditionally) turned into this node's icon."""
        if self._redoc_script is None:
            bundle = (docs_static_dir() / "redoc.standalone.js").read_bytes()
            self._redoc_script = bundle.replace(REDOC_CDN_LOGO, f"{CONSOLE_STATIC_PATH}/favicon.svg".encode())
        return Response(self._redoc_script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=3600"})

    async def redoc(self) -> Response:
        """ReDoc over /openapi.json, every file from this node (no web fonts)."""
        return get_redoc_html(
            openapi_url="/openapi.json", title="ringkv API",
            redoc_js_url=f"{DOCS_STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{CONSOLE_STATIC_PATH}/favicon.svg",
            with_google_fonts=False,
        )


def mount_console(app: FastAPI, admin: AdminService | None) -> None:
    """Add the console, its state route, the documentation pages and both static mounts to
    `app`, which must be created with `docs_url=None, redoc_url=None`."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    api = ConsoleApi(admin, page)
    hidden = {"include_in_schema": False}
    app.add_api_route("/", api.console_page, methods=["GET"], name="console_page", **hidden)
    app.add_api_route(CONSOLE_STATE_PATH, api.console_state, methods=["GET"], name="console_state",
                      operation_id="console_state", responses=problem_responses(401, 403, 503))
    app.add_api_route("/docs", api.swagger_ui, methods=["GET"], name="swagger_ui", **hidden)
    app.add_api_route("/docs/oauth2-redirect", api.swagger_ui_redirect, methods=["GET"],
                      name="swagger_ui_redirect", **hidden)
    app.add_api_route("/redoc", api.redoc, methods=["GET"], name="redoc", **hidden)
    # Before the static mount, which would serve the file as shipped.
    app.add_api_route(f"{DOCS_STATIC_PATH}/redoc.standalone.js", api.redoc_script, methods=["GET"],
                      name="redoc_script", **hidden)
    app.mount(CONSOLE_STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="console_static")
    app.mount(DOCS_STATIC_PATH, StaticFiles(directory=docs_static_dir()), name="docs_static")

