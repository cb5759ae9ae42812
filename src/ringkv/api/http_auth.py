"""Users on the HTTP API: who a request is from, what it may run, and bearer tokens.

`HttpAuthMiddleware` (pure ASGI) authenticates every request before its body is read:

- `Authorization: Basic base64(user:password)`: the same users and passwords as RESP's AUTH
  (security/access.py: backoff, audit, one scrypt per new credential);
- `Authorization: Bearer <token>`: a token from `POST /api/v1/auth/token`;
- neither: the default user when it needs no password (no user configured), else 401 with
  `WWW-Authenticate: Basic realm="ringkv", Bearer realm="ringkv"`.
Protected mode refuses a client not on loopback while the default user needs no password
(403, `protected-mode`). `/healthz`, `/readyz` and the API's description (`/openapi.json`,
`/docs`, `/redoc` and their assets) and the console's page (`/`, its assets) answer anyone:
probes, documentation and files, no data. `/metrics` needs INFO's permission.

What a request may do is checked where it acts: the routes call the node's `KeyValueService`
through `GuardedService` and its `AdminService` through `GuardedAdmin`, which check every call
against the request's user as the RESP command it amounts to: GET /keys/k is GET k, PUT is SET
(SET NX with if_not_exists; RINGKV.CAS with If-Match or /cas, which also read the key first:
GET), DELETE is DEL, /ttl is PTTL and PEXPIREAT, /incr INCRBY, /versions RINGKV.GETV, PUTV and
DELV, the collection routes (/fields, /members, /scores, /range, /items) the Redis command each
runs (HSET, SADD, ZRANGE, LPOP, ...; a GET of a collection also TYPE and its type's read), /batch/get MGET and /batch/put SET (or RINGKV.MSETATOMIC) with every key checked, /scan
and listings SCAN, /namespaces RINGKV.NAMESPACES, /admin/cluster/status RINGKV.STATUS,
/repair and /rebalance RINGKV.REPAIR, node and cleanup routes RINGKV.ADMIN's subcommands
(docs/http.md has the table). A refusal is 403 naming the user and the missing permission.
Every admin call is an audit line.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from ringkv.api.http_codec import API, json_response
from ringkv.api.http_problems import AUTH_CHALLENGE as CHALLENGE
from ringkv.api.http_problems import ProblemError, problem_from_exception, problem_responses
from ringkv.errors import AuthenticationError, CommandError, PermissionDeniedError
from ringkv.security import tenants
from ringkv.security.access import PROTECTED_MODE_MESSAGE, AccessControl, Session
from ringkv.security.categories import RW, R, W, key_access, unit_of
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.values import ANY_VERSION

# The request's session and how it authenticated ("basic", "bearer" or "" for none).
CURRENT: contextvars.ContextVar[tuple[Session, str] | None] = contextvars.ContextVar("ringkv_http_session",
                                                                                      default=None)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/"})
# The console's page and scripts and the API documentation's assets: files, no data (the
# console's figures come from /api/v1/console/state, which needs a user: api/console.py).
PUBLIC_PREFIXES = ("/console/static/", "/docs/static/")
MAX_AUTHORIZATION_BYTES = 8192


def _challenge(problem: ProblemError) -> ProblemError:
    if problem.status == 401:
        problem.headers = {**(problem.headers or {}), "WWW-Authenticate": CHALLENGE}
    return problem


def _unauthorized(detail: str) -> ProblemError:
    return _challenge(ProblemError(401, "unauthorized", detail))


# A script's request (`X-Requested-With`, as Spring Security reads it) is challenged with Bearer
# alone: a Basic challenge makes a browser open its own password dialog over the page, and the
# console (api/console.py) signs in with a form of its own.
SCRIPT_CHALLENGE = 'Bearer realm="ringkv"'


def _for_script(problem: ProblemError, scope: dict) -> ProblemError:
    if problem.status == 401 and any(name == b"x-requested-with" for name, _ in scope["headers"]):
        problem.headers = {**(problem.headers or {}), "WWW-Authenticate": SCRIPT_CHALLENGE}
    return problem


class HttpAuthMiddleware:
    """See the module docstring."""

    def __init__(self, app: Any, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            session, scheme = await self._session(scope)
        except ProblemError as problem:
            await _for_script(problem, scope).response()(scope, receive, send)
            return
        except CommandError as exc:
            await _for_script(_challenge(problem_from_exception(exc)), scope).response()(scope, receive, send)
            return
        except Exception as exc:  # the users cannot be read (no quorum of the system namespace)
            problem = ProblemError(503, "unavailable", f"cannot authenticate now: the users are not readable ({exc})")
            await problem.response()(scope, receive, send)
            return
        token = CURRENT.set((session, scheme))
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)

    async def _session(self, scope: dict) -> tuple[Session, str]:
        access = self.access
        await access.ensure_ready()
        client = scope.get("client") or ("?", None)
        host, port = client[0], client[1]
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
                break
        anonymous = access.anonymous(host, port)
        if access.protected_refusal(anonymous):
            access.audit.auth_failure("http", anonymous.client, None, "protected_mode")
            raise ProblemError(403, "protected-mode", PROTECTED_MODE_MESSAGE)
        if authorization is None:
            if anonymous.user is None:
                access.refuse_noauth(anonymous)
                raise _unauthorized("authentication required: send Authorization: Basic (user:password) or "
                                    "Bearer (a token from POST /api/v1/auth/token)")
            session, scheme = anonymous, ""
        else:
            session, scheme = await self._credentials(authorization, host, port)
        if scope["path"] == "/metrics" and session.user is not None and not session.user.can_run("info"):
            access.audit.permission_denied("http")
            raise ProblemError(403, "forbidden", f"user {session.user.name} has no permission to run 'info', "
                                                 "which /metrics needs")
        return session, scheme

    async def _credentials(self, authorization: bytes, host: str, port: int | None) -> tuple[Session, str]:
        access = self.access
        if len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise _unauthorized(f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes")
        scheme, _, value = authorization.strip().partition(b" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == b"basic":
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            user, sep, password = decoded.partition(b":")
            if not sep or not user:
                raise _unauthorized("malformed Basic credentials: expected base64 of user:password")
            return await access.authenticate_basic(host, port, user, password), "basic"
        if scheme == b"bearer":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            return await access.authenticate_bearer(host, port, text), "bearer"
        raise _unauthorized("unsupported Authorization scheme: use Basic or Bearer")


# ---------------------------------------------------------------------- checks


def _session() -> Session:
    current = CURRENT.get()
    if current is None:  # a route reached without the middleware: refuse, never allow
        raise AuthenticationError("Authentication required.", kind="NOAUTH", reason="noauth")
    return current[0]


_VERBS = {R: "read", W: "write", RW: "read and write"}
_PATTERNS = {R: "%R~ or ~", W: "%W~ or ~", RW: "~"}


def check(unit: str, keys: Iterable[bytes] = (), access: str | None = None) -> Session:
    """The request's session, if its user may run `unit` on `keys` (PermissionDeniedError,
    naming the missing permission, if not)."""
    session = _session()
    if session.open:
        return session
    user = session.user
    if user is None:
        raise AuthenticationError("Authentication required.", kind="NOAUTH", reason="noauth")
    if not user.can_run(unit):
        raise PermissionDeniedError(f"user {user.name} has no permission to run '{unit}', the command this request "
                                    f"runs (ACL SETUSER {user.name} +{unit} grants it)")
    if access is not None and not user.unrestricted:
        for key in keys:
            if not user.may_access(key, access):
                shown = key.decode("utf-8", "replace")[:200]
                raise PermissionDeniedError(f"user {user.name} has no permission to {_VERBS.get(access, 'access')} "
                                            f"key '{shown}' (a {_PATTERNS.get(access, '~')} pattern matching it "
                                            "grants it)")
    return session


class GuardedService:
    """A `KeyValueService` whose every call is checked against the request's user first (the
    command each call amounts to: module docstring). Views (`at`, `in_namespace`) stay guarded."""

    __slots__ = ("_denied", "_kv")

    def __init__(self, kv: Any, denied: Callable[[], None]):
        self._kv = kv
        self._denied = denied  # counts a refusal (/metrics)

    def _check(self, unit: str, keys: Iterable[bytes] = (), access: str | None = None) -> None:
        try:
            user = check(unit, keys, access).user
            if user is not None and user.namespaces is not None and unit != "ringkv.namespaces":
                tenants.check(user, self._kv.namespace.name)  # a tenant: only its namespaces
        except PermissionDeniedError:
            self._denied()
            raise

    # views and facts
    namespace = property(lambda self: self._kv.namespace)
    levels = property(lambda self: self._kv.levels)
    limits = property(lambda self: self._kv.limits)
    has_pending_writes = property(lambda self: self._kv.has_pending_writes)
    rate_limited = property(lambda self: self._kv.rate_limited)

    def at(self, *args: Any, **kwargs: Any) -> GuardedService:
        return GuardedService(self._kv.at(*args, **kwargs), self._denied)

    sessions = property(lambda self: self._kv.sessions)

    def with_session(self, session: Any) -> GuardedService:
        return GuardedService(self._kv.with_session(session), self._denied)

    def in_namespace(self, name: str | bytes) -> GuardedService:
        user = _session().user
        if user is not None and user.namespaces is not None:
            shown = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            if not tenants.may_use(user, shown or "default"):
                self._denied()
                raise PermissionDeniedError(tenants.refusal(user, shown))
        return GuardedService(self._kv.in_namespace(name), self._denied)

    def admit(self) -> None:
        self._kv.admit()

    def now_ms(self) -> int:
        return self._kv.now_ms()

    def commit_writes(self) -> None:
        self._kv.commit_writes()

    def namespaces(self) -> Any:
        self._check("ringkv.namespaces")
        return tenants.visible(_session().user, self._kv.namespaces())

    # reads
    async def get(self, key: bytes) -> Any:
        self._check("get", (key,), R)
        return await self._kv.get(key)

    async def get_value(self, key: bytes) -> Any:
        self._check("get", (key,), R)
        return await self._kv.get_value(key)

    async def get_versions(self, key: bytes) -> Any:
        self._check("ringkv.getv", (key,), R)
        return await self._kv.get_versions(key)

    async def hash_field_versions(self, key: bytes, field: bytes) -> Any:
        self._check("ringkv.hgetv", (key,), R)
        return await self._kv.hash_field_versions(key, field)

    async def zset_score_versions(self, key: bytes, member: bytes) -> Any:
        self._check("ringkv.zscorev", (key,), R)
        return await self._kv.zset_score_versions(key, member)

    async def exists(self, keys: Iterable[bytes]) -> int:
        keys = list(keys)
        self._check("exists", keys, "any")
        return await self._kv.exists(keys)

    async def mget(self, keys: list[bytes]) -> Any:
        self._check("mget", keys, R)
        return await self._kv.mget(keys)

    async def ttl_ms(self, key: bytes) -> int:
        self._check("pttl", (key,), "any")
        return await self._kv.ttl_ms(key)

    # writes
    async def write(self, key: bytes, value: bytes | None, *, expire_at_ms: int = 0, expected: Any = ANY_VERSION) -> Any:
        if expected is ANY_VERSION:
            unit = "del" if value is None else "set"
        elif expected is None and value is not None:
            unit = "set"  # SET NX
        else:
            unit = "ringkv.cad" if value is None else "ringkv.cas"
        self._check(unit, (key,), W)
        return await self._kv.write(key, value, expire_at_ms=expire_at_ms, expected=expected)

    async def put_versioned(self, key: bytes, value: bytes | None, context: bytes | None, *,
                            expire_at_ms: int = 0) -> bytes:
        self._check("ringkv.delv" if value is None else "ringkv.putv", (key,), W)
        return await self._kv.put_versioned(key, value, context, expire_at_ms=expire_at_ms)

    async def write_atomic(self, items: list[tuple[bytes, bytes, int]]) -> Any:
        self._check("ringkv.msetatomic", [k for k, _, _ in items], W)
        return await self._kv.write_atomic(items)

    async def incr_by_versioned(self, key: bytes, delta: int) -> Any:
        self._check("incrby", (key,), RW)
        return await self._kv.incr_by_versioned(key, delta)

    async def expire_at(self, key: bytes, expire_at_ms: int, condition: str | None = None) -> bool:
        self._check("persist" if expire_at_ms == 0 else "pexpireat", (key,), W)
        return await self._kv.expire_at(key, expire_at_ms, condition)

    async def type_command(self, name: str, args: list[bytes]) -> Any:
        # Checked as the RESP command itself (HSET, LPOP, OBJECT ENCODING, ...): its unit, and
        # every key it names with the access its key-spec declares.
        spec = TYPE_COMMANDS[name]
        unit = unit_of(name.lower(), args[0] if args else None)
        self._check(unit, spec.keys(args), key_access(unit, [name.encode(), *args]))
        return await self._kv.type_command(name, args)

    # the keyspace
    async def scan(self, cursor: int, count: int = 10, match: bytes | None = None) -> Any:
        self._check("scan")
        return await self._kv.scan(cursor, count, match)

    def __getattr__(self, name: str) -> Any:
        # A call the HTTP routes do not make today: allowed only to a user who may run
        # everything, so a route added later cannot bypass the checks.
        attr = getattr(self._kv, name)
        if callable(attr):
            session = _session()
            if not session.open:
                raise PermissionDeniedError(f"this request calls {name}, which only a user with every permission "
                                            "may call over HTTP")
        return attr


_ADMIN_UNITS = {
    "status": "ringkv.status", "repair": "ringkv.repair", "membership": "ringkv.admin|status",
    "join": "ringkv.admin|join", "admit": "ringkv.admin|admit", "decommission": "ringkv.admin|decommission",
    "remove": "ringkv.admin|remove", "cleanup": "ringkv.admin|cleanup", "fault": "ringkv.fault",
    "ring_view": "ringkv.status",
    "start_operation": "ringkv.admin|start", "operations": "ringkv.admin|operations",
    "operation": "ringkv.admin|operation", "wait_operation": "ringkv.admin|wait",
    "config_get": "config|get", "hot_keys": "ringkv.hotkeys",
}
_ADMIN_READS = frozenset({"status", "membership", "ring_view", "operations", "operation", "wait_operation",
                          "config_get", "hot_keys"})
# Read by /healthz, /readyz and /metrics (whose access the middleware decides), not by users.
_ADMIN_FACTS = frozenset({"node_id", "health", "key_counts", "info", "metrics"})


class GuardedAdmin:
    """The node's `AdminService`, each call checked as the RESP command it is (RINGKV.STATUS,
    RINGKV.REPAIR, RINGKV.ADMIN's subcommands) and written to the audit trail."""

    def __init__(self, admin: Any, access: AccessControl):
        self._admin = admin
        self._access = access

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._admin, name)
        if name in _ADMIN_FACTS or not callable(attr):
            return attr
        unit = _ADMIN_UNITS.get(name, "ringkv.admin")
        audited = name not in _ADMIN_READS

        def call(*args: Any, **kwargs: Any) -> Any:
            session = _session()
            shown = [str(a) for a in args]
            try:
                check(unit)
            except PermissionDeniedError as exc:
                self._access.audit.permission_denied("http")
                if audited:
                    self._access.audit.admin_action("http", session.client, session.name, unit, shown, "denied",
                                                    str(exc))
                raise
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                if audited:
                    self._access.audit.admin_action("http", session.client, session.name, unit, shown, "error",
                                                    str(exc))
                raise
            if audited and hasattr(result, "__await__"):
                return self._awaited(result, session, unit, shown)
            if audited:
                self._access.audit.admin_action("http", session.client, session.name, unit, shown, "ok")
            return result

        return call

    async def _awaited(self, result: Any, session: Session, unit: str, shown: list[str]) -> Any:
        try:
            value = await result
        except Exception as exc:
            self._access.audit.admin_action("http", session.client, session.name, unit, shown, "error", str(exc))
            raise
        self._access.audit.admin_action("http", session.client, session.name, unit, shown, "ok")
        return value


# ---------------------------------------------------------------------- tokens


class TokenRequest(BaseModel):
    ttl_s: int | None = Field(None, description="Lifetime in seconds (default auth_token_ttl_s, at most "
                                                "auth_token_max_ttl_s).")


class TokenResponse(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = Field("Bearer", examples=["Bearer"])
    user: str
    expires_at: int = Field(description="Unix time, seconds.")
    expires_in: int = Field(description="Seconds from now.")


class AuthApi:
    """`POST /api/v1/auth/token` issues a bearer token to a client that authenticates with its
    password (Basic); `DELETE /api/v1/auth/token` revokes the token it is sent with."""

    def __init__(self, access: AccessControl | None) -> None:
        self.access = access

    def _access(self) -> AccessControl:
        if self.access is None:
            raise ProblemError(503, "unavailable", "this node runs without users: there are no tokens to issue")
        return self.access

    async def issue_token(self, body: TokenRequest | None = None) -> Response:
        """A bearer token for the user of the request's Basic credentials."""
        access = self._access()
        current = CURRENT.get()
        if current is None or current[1] != "basic" or current[0].user is None:
            raise _unauthorized("a token is issued for a password: send Authorization: Basic (user:password)")
        session = current[0]
        token, expires_ms, ttl = await access.issue_token(session, None if body is None else body.ttl_s)
        return json_response({"token": token, "token_type": "Bearer", "user": session.name,
                              "expires_at": expires_ms // 1000, "expires_in": ttl}, status=201)

    async def revoke_token(self, request: Request) -> Response:
        """Revoke the bearer token this request is authenticated with."""
        access = self._access()
        current = CURRENT.get()
        header = request.headers.get("authorization", "")
        if current is None or current[1] != "bearer":
            raise _unauthorized("send the token to revoke as Authorization: Bearer <token>")
        await access.revoke_token(header.partition(" ")[2].strip())
        return Response(status_code=204)


def auth_routes(api: AuthApi) -> Iterator[tuple[str, Callable, str, dict[str, Any]]]:
    yield API + "/auth/token", api.issue_token, "POST", {
        "response_model": TokenResponse, "status_code": 201, "responses": problem_responses(400, 401, 422, 503)}
    yield API + "/auth/token", api.revoke_token, "DELETE", {
        "status_code": 204, "response_class": Response,
        "responses": {204: {"description": "Revoked."}, **problem_responses(401, 503)}}
