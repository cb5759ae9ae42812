"""A client's settings: one typed object, units in the names, checked when the client is made.

`ClientOptions` is what `Client(...)` and `AsyncClient(...)` build from their keyword
arguments; a bad value raises `ringkv.errors.ConfigError` naming the argument. Addresses can
also come as a URL, `ringkv://host:port` (port 7379 when left out), with credentials:
`ringkv://user:password@host:port` (percent-encode `@`, `:` and `/` in them).

Credentials: `username` and `password` authenticate every new connection (redis-py sends
`AUTH username password`; a password alone is the `default` user's, as `requirepass`). When
the caller gives neither (nor the URL), `credentials()` takes them from the environment:
`RINGKV_USER` and `RINGKV_PASSWORD` (the CLI reads the same variables). A password is never
part of a repr or an error message.

Seeds: `seeds=("host:port", ...)` are further nodes of the same cluster. The client talks to
one node at a time, starting with `host:port`; when a connection to it cannot be made (refused,
unreachable, connect timed out), the request moves to the next seed at once (the request was
not sent, so this is safe for any request), each seed at most once per request, and the client
stays on the node that answered. `parse_address` reads one "host[:port]".

Token-aware routing (`token_aware=True`, client/routing.py): each request with a key goes to
one of the key's replicas, from the ring map the cluster gives (`RINGKV.RING`), preferring
`datacenter`'s when given; the map is fetched again every `ring_refresh_ms`.

TLS (`tls=True`): the node's certificate is verified against `ca_file` (the system's CAs when
None) and its host name or address against the certificate's SANs, unless `tls_verify=False`;
`cert_file` and `key_file` present a client certificate (a node with tls_client_auth=required
asks for one). The files are checked for readability here, so a typo fails at once.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ringkv.client.routing import check_routing
from ringkv.errors import ConfigError

DEFAULT_PORT = 7379
URL_SCHEME = "ringkv"
# Bounds that keep a typo from turning into an hour-long hang or a retry storm.
MAX_TIMEOUT_MS = 3_600_000
MAX_RETRIES = 100
MAX_CONNECTIONS = 10_000
MAX_CREDENTIAL_BYTES = 4096  # a node refuses longer passwords (security/passwords.py)
MAX_SEEDS = 64  # further nodes a client may fail over to
USER_ENV = "RINGKV_USER"
PASSWORD_ENV = "RINGKV_PASSWORD"


class Consistency(enum.StrEnum):
    """How many of a key's replicas must answer a request (Dynamo's R and W).

    Sent with each request that names one (`RINGKV.AT <level> <command>`). A single node has
    one replica, so there every level means "this node". SERIAL is for reads: linearizable,
    through the key's consensus path (it sees every CAS and conditional write acknowledged
    before it); a write at SERIAL is a write at QUORUM. SESSION is ONE in the client's session:
    reads see the client's own writes and never go back in time (docs/consistency.md).
    LOCAL_ONE and LOCAL_QUORUM count only the replicas in the datacenter of the node the client
    talks to, EACH_QUORUM a majority in every datacenter (docs/multi-dc.md).
    """

    ONE = "ONE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    SERIAL = "SERIAL"
    SESSION = "SESSION"
    LOCAL_ONE = "LOCAL_ONE"
    LOCAL_QUORUM = "LOCAL_QUORUM"
    EACH_QUORUM = "EACH_QUORUM"


def parse_consistency(value: str | Consistency | None, field: str = "consistency") -> Consistency | None:
    """`None` stays None (the client's default applies); names are case-insensitive."""
    if value is None or isinstance(value, Consistency):
        return value
    if isinstance(value, str):
        try:
            return Consistency(value.upper())
        except ValueError:
            pass
    raise ConfigError(field, f"must be one of {', '.join(Consistency)}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    timeout_ms: float = 1000  # per request: from sending it to its whole reply
    connect_timeout_ms: float = 1000  # per TCP connect
    max_connections: int = 50  # pooled connections; callers beyond it wait up to timeout_ms
    retries: int = 3  # extra attempts of an idempotent request after a connection failure
    backoff_base_ms: float = 20
    backoff_max_ms: float = 1000
    consistency: Consistency | None = None
    namespace: str | None = None  # sent once per new connection (RINGKV.NAMESPACE); None: default
    tls: bool = False
    ca_file: str | None = None  # CA certificates (PEM) to verify the node with; None: the system's
    cert_file: str | None = None  # client certificate (PEM), with key_file
    key_file: str | None = None
    tls_verify: bool = True  # False: accept any certificate (tests only: anyone can pose as the node)
    username: str | None = None  # None with a password: the default user
    password: str | None = field(default=None, repr=False)
    seeds: tuple[tuple[str, int], ...] = ()  # further (host, port)s, tried in order when one refuses
    # Token-aware routing (client/routing.py): each keyed request to one of its key's replicas.
    token_aware: bool = False
    datacenter: str | None = None  # with token_aware: prefer the key's replicas in this datacenter
    ring_refresh_ms: float = 10_000  # with token_aware: how often the ring map is fetched again

    def __post_init__(self) -> None:
        def require(cond: bool, name: str, message: str) -> None:
            if not cond:
                raise ConfigError(name, f"{message}, got {getattr(self, name)!r}")

        def number(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | float) and not isinstance(value, bool)

        require(isinstance(self.host, str) and bool(self.host), "host", "must be a host name or address")
        require(type(self.port) is int and 1 <= self.port <= 65535, "port", "must be a TCP port 1..65535")
        for name in ("timeout_ms", "connect_timeout_ms"):
            require(number(name) and 1 <= getattr(self, name) <= MAX_TIMEOUT_MS, name,
                    f"must be a number of milliseconds, 1..{MAX_TIMEOUT_MS}")
        require(type(self.max_connections) is int and 1 <= self.max_connections <= MAX_CONNECTIONS,
                "max_connections", f"must be an integer 1..{MAX_CONNECTIONS}")
        require(type(self.retries) is int and 0 <= self.retries <= MAX_RETRIES, "retries",
                f"must be an integer 0..{MAX_RETRIES}")
        require(number("backoff_base_ms") and self.backoff_base_ms >= 0, "backoff_base_ms", "must be >= 0")
        require(number("backoff_max_ms") and self.backoff_max_ms >= self.backoff_base_ms,
                "backoff_max_ms", "must be >= backoff_base_ms")
        require(self.consistency is None or isinstance(self.consistency, Consistency), "consistency",
                "must be a Consistency (parse_consistency reads names)")
        require(self.namespace is None or (isinstance(self.namespace, str)
                                           and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.namespace) is not None),
                "namespace", "must be a namespace name: 1..64 letters, digits, '-', '_' or '.'")
        require(isinstance(self.tls, bool), "tls", "must be True or False")
        require(isinstance(self.tls_verify, bool), "tls_verify", "must be True or False")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is None:
                continue
            require(isinstance(path, str | os.PathLike) and bool(str(path)), name, "must be a file path")
            require(self.tls, name, "is given but tls is off: pass tls=True")
            require(os.path.isfile(path) and os.access(path, os.R_OK), name, "must be a readable file")
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and 0 < len(value.encode()) <= MAX_CREDENTIAL_BYTES):
                # Not `require`: its message would show the password.
                raise ConfigError(name, f"must be a non-empty string of at most {MAX_CREDENTIAL_BYTES} bytes")
        if self.username is not None and self.password is None:
            raise ConfigError("password", f"must be given with username {self.username!r} (or in {PASSWORD_ENV})")
        require(isinstance(self.seeds, tuple) and len(self.seeds) <= MAX_SEEDS
                and all(isinstance(h, str) and h and type(p) is int and 1 <= p <= 65535 for h, p in self.seeds),
                "seeds", f"must be at most {MAX_SEEDS} (host, port) pairs (parse_address reads \"host:port\")")
        check_routing(self.token_aware, self.datacenter, self.ring_refresh_ms)
        if self.datacenter is not None and not self.token_aware:
            raise ConfigError("datacenter", "routes requests to replicas in a datacenter: pass token_aware=True too")
        if (self.cert_file is None) != (self.key_file is None):
            missing, given = ("key_file", "cert_file") if self.key_file is None else ("cert_file", "key_file")
            raise ConfigError(missing, f"must be given with {given} (a client certificate and its key)")

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every node the client may use, in order: (host, port), then the seeds (repeats dropped)."""
        out = [(self.host, self.port)]
        for seed in self.seeds:
            if seed not in out:
                out.append(seed)
        return out


def format_address(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    return f"{host}:{port}"


def parse_seeds(seeds: Iterable[str | tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """A client's `seeds` argument: "host[:port]" strings or (host, port) pairs."""
    if isinstance(seeds, str):
        seeds = seeds.split(",")
    out = []
    for seed in seeds:
        out.append(parse_address(seed) if isinstance(seed, str) else tuple(seed))
        if len(out) > MAX_SEEDS:
            raise ConfigError("seeds", f"more than {MAX_SEEDS} seeds")
    return tuple(out)  # type: ignore[return-value]


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or "[v6]" -> (host, port); ConfigError("seeds") otherwise."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            host = ""
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        port = 0
    if not host or not 1 <= port <= 65535:
        raise ConfigError("seeds", f"{text[:200]!r} is not host[:port] with a port 1..65535")
    return host, port


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """`ringkv://[user[:password]@]host[:port]` -> (host, port, username, password); user
    and password percent-decoded, None when absent (`ringkv://:pw@host`: a password alone).
    Anything else raises ConfigError("url"), which never shows the password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("url", f"{_hide_password(url)!r} is not a valid URL: {exc}") from None
    shown = _hide_password(url)
    if parts.scheme != URL_SCHEME:
        raise ConfigError("url", f"scheme must be {URL_SCHEME}://, got {shown!r}")
    if not parts.hostname:
        raise ConfigError("url", f"no host in {shown!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("url", f"expected only {URL_SCHEME}://[user:password@]host:port, got {shown!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        raise ConfigError("url", f"{shown!r} names user {username!r} without a password (user:password@host)")
    return parts.hostname, port if port is not None else DEFAULT_PORT, username, password


def _hide_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{tail}" if ":" in userinfo else url


def credentials(username: str | None, password: str | None,
                environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The credentials a client uses: those given, else `RINGKV_USER` / `RINGKV_PASSWORD` from
    the environment (empty variables count as unset)."""
    if username is not None or password is not None:
        return username, password
    env = os.environ if environ is None else environ
    return env.get(USER_ENV) or None, env.get(PASSWORD_ENV) or None
