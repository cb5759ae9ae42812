"""What `Client` and `AsyncClient` share apart from IO: options, the consistency default,
URLs, and the keyword arguments of redis-py's connections."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import random
import ssl
import threading
import weakref
from typing import Any, Self

import redis.connection
import redis.exceptions

from ringkv.client.errors import ClientError, SessionStateLostError
from ringkv.client.options import ClientOptions, Consistency, parse_consistency, parse_url
from ringkv.client.routing import Address, Router
from ringkv.errors import ClosedError, ConfigError

# redis-py sends CLIENT SETINFO twice on every new connection unless told not to. A ringkv node
# ignores it, and it costs two round trips per connection; it would also make "connected" mean
# "already talked to the node", blurring the line between a failed connect (request not sent)
# and a failed request. redis-py 7 takes `driver_info=None`; older ones lib_name/lib_version.
_NO_HANDSHAKE: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def _namespace_hook(namespace: str, asynchronous: bool) -> Any:
    """redis-py's connect hook (`redis_connect_func`): the usual handshake, then the client's
    namespace. A ResponseError (an unknown namespace) fails the connect."""
    if asynchronous:
        async def hook(conn: Any) -> None:
            await conn.on_connect()
            await conn.send_command("RINGKV.NAMESPACE", namespace)
            try:
                await conn.read_response()
            except redis.exceptions.ResponseError as exc:
                await conn.disconnect()
                raise ConfigError("namespace", str(exc)) from None
    else:
        def hook(conn: Any) -> None:
            conn.on_connect()
            conn.send_command("RINGKV.NAMESPACE", namespace)
            try:
                conn.read_response()
            except redis.exceptions.ResponseError as exc:
                conn.disconnect()
                raise ConfigError("namespace", str(exc)) from None
    return hook


def connection_class(options: ClientOptions, asynchronous: bool = False) -> type:
    """redis-py's connection class for these options: TLS or plain TCP."""
    if asynchronous:
        import redis.asyncio.connection as aio

        return aio.SSLConnection if options.tls else aio.Connection
    return redis.connection.SSLConnection if options.tls else redis.connection.Connection


def tls_kwargs(options: ClientOptions) -> dict[str, Any]:
    """redis-py's SSLConnection arguments for the options' TLS settings (empty without TLS)."""
    if not options.tls:
        return {}
    return {
        "ssl_ca_certs": None if options.ca_file is None else str(options.ca_file),
        "ssl_certfile": None if options.cert_file is None else str(options.cert_file),
        "ssl_keyfile": None if options.key_file is None else str(options.key_file),
        "ssl_cert_reqs": "required" if options.tls_verify else "none",
        "ssl_check_hostname": options.tls_verify,
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }


def pool_kwargs(options: ClientOptions, retry: Any, asynchronous: bool = False) -> dict[str, Any]:
    """Keyword arguments of redis-py's BlockingConnectionPool (and its connections) for these options.

    `retry` must be redis-py's no-retry policy: the client decides about retries itself
    (`ringkv.client.retry`), and a retry inside redis-py would resend an INCR behind its back.
    """
    return {
        "host": options.host,
        "port": options.port,
        "socket_timeout": options.timeout_ms / 1000,
        "socket_connect_timeout": options.connect_timeout_ms / 1000,
        "socket_keepalive": True,
        "username": options.username,
        "password": options.password,  # both None: no AUTH on connect
        "health_check_interval": 0,  # a PING before requests would double their round trips
        # RESP2 explicitly (redis-py 8 defaults to RESP3): no HELLO round trip on connect, and
        # replies in the shapes commands.py parses.
        "protocol": 2,
        "retry": retry,
        "max_connections": options.max_connections,
        # How long a caller waits for a free pooled connection when all are busy.
        "timeout": options.timeout_ms / 1000,
        **_NO_HANDSHAKE,
        **tls_kwargs(options),
        **({} if options.namespace is None else {
            "redis_connect_func": _namespace_hook(options.namespace, asynchronous)}),
    }


# Sessions (docs/client.md, "Consistency"). The node keeps a session's newest state on the
# connection that ran its last command; the client fetches the token from there only when it
# must. Per live connection (its socket, or asyncio stream writer: a new one for every TCP
# connection, so a reconnect, whose node-side connection starts in no session, never matches)
# the session whose newest state it holds. Weak keys: a closed connection's entry goes with it.
# Changed only under _STATE_LOCK, never held across IO (the async client holds it too: no await
# inside).
_HELD: weakref.WeakKeyDictionary[Any, ClientSession] = weakref.WeakKeyDictionary()
_STATE_LOCK = threading.Lock()
_TOKEN_CHANGED = (b"RINGKV.SESSION", b"TOKEN", b"CHANGED")
_END = (b"RINGKV.SESSION", b"END")
# Commands that only read: in a session their observations stay on the node's connection until
# the token is fetched. After any other command the token is fetched in the same pipeline, so
# a session's writes are always in the client's token (SessionStateLostError).
READ_COMMANDS = frozenset({"GET", "MGET", "EXISTS", "DIGEST", "RINGKV.GETV", "PTTL", "SCAN", "DBSIZE",
                           "INFO", "PING"})
# How often a session whose holder connection another request is fetching from looks again.
SESSION_HOLDER_POLL_S = 0.0005

IDLE, BUSY, GONE = "idle", "busy", "gone"  # a holder connection in its pool (take_idle)


def _link(conn: Any) -> Any:
    """The object that stands for `conn`'s current TCP connection (None: not connected)."""
    return getattr(conn, "_writer", None) or getattr(conn, "_sock", None)


class ClientSession:
    """A session (docs/consistency.md, "Sessions") as the client keeps it.

    Its newest state lives either in `token` (the client's copy) or on one pooled connection,
    `holder`, whose node-side connection ran the session's last command and so holds the
    session's state with everything that command read. A request of the session goes to the
    holder when it is idle in the pool, as just the command: no resume, no token. The token is
    fetched (`RINGKV.SESSION TOKEN CHANGED`, which answers 0 when nothing changed) only:
    - in the same pipeline as any command that is not a read (`READ_COMMANDS`), so the
      session's writes are always in `token`;
    - by a request of another session, or one without a session, that takes the holder from
      the pool: it fetches first, then resumes its own session (or ends this one) on it;
    - when the user asks for the token (`Client.session_token`, `AsyncClient.fetch_session_token`).
    A session's requests are serialized (`lock`): one session used from two threads or tasks
    runs one request at a time, in the order they take the lock. If the holder is busy (another
    request is fetching this session's token from it) the session waits for that fetch. If the
    holder is lost (connection killed, node restarted, client failed over) before the reads
    it holds were fetched, the session's next request raises `SessionStateLostError` once and
    the session goes on from `token`."""

    __slots__ = ("__weakref__", "holder", "holder_link", "holder_pool", "lock", "lost", "token", "unfetched")

    def __init__(self, token: bytes | str | None = None, asynchronous: bool = False):
        self.token = token.encode() if isinstance(token, str) else token
        self.holder: Any = None  # the connection holding the newest state (None: `token` is)
        self.holder_link: Any = None  # its TCP connection then
        self.holder_pool: Any = None  # its pool
        self.unfetched = False  # the holder ran commands whose observations `token` lacks
        self.lost: str | None = None  # why unfetched state was lost (raised on the next request)
        self.lock: Any = asyncio.Lock() if asynchronous else threading.Lock()

    def _drop_holder(self, reason: str) -> None:
        """Under _STATE_LOCK: the holder's state is gone; lost if it held unfetched reads."""
        if self.holder_link is not None:
            _HELD.pop(self.holder_link, None)
        if self.unfetched:
            self.lost = reason
        self.holder = self.holder_link = self.holder_pool = None
        self.unfetched = False

    def claim(self, pool: Any, take_idle: Any, address: str) -> Any:
        """Before a request of this session: its holder taken from `pool` (idle there), None to
        take any connection (the token is the newest state), or BUSY (another request is
        fetching from the holder: look again shortly). SessionStateLostError once after a loss."""
        with _STATE_LOCK:
            if self.lost is not None:
                reason, self.lost = self.lost, None
                raise SessionStateLostError(address, reason, self.token)
            holder = self.holder
            if holder is None:
                return None
            if self.holder_pool is not pool:
                self._drop_holder("was left behind when the client moved to another node")
            elif _link(holder) is not self.holder_link:
                self._drop_holder("was closed")
            else:
                state = take_idle(pool, holder)
                if state == IDLE:
                    return holder
                if state == BUSY:
                    return BUSY
                self._drop_holder("left the pool")
            if self.lost is not None:
                reason, self.lost = self.lost, None
                raise SessionStateLostError(address, reason, self.token)
            return None


class Plan:
    """The pipeline one request sends on one connection, and how to read its replies back
    (`plan`, `finish`, `failed`). None from `plan`: a plain request, sent as is."""

    __slots__ = ("commands", "fetch_after", "fetch_for", "link", "on_holder", "pool", "resumed", "session")

    def __init__(self) -> None:
        self.commands: list[tuple] = []
        self.fetch_for: ClientSession | None = None  # whose token the pipeline fetches first
        self.session: ClientSession | None = None
        self.resumed = False
        self.on_holder = False
        self.fetch_after = False
        self.link: Any = None
        self.pool: Any = None


def plan(conn: Any, pool: Any, session: ClientSession | None, args: tuple, command: str) -> Plan | None:
    """The pipeline for the command `args` (named `command`) on `conn`, taken from `pool` for
    `session` (None: no session): a fetch of the token of the session `conn` holds, if another,
    then a resume (or an end), the command, and a fetch when the command is not a read."""
    link = _link(conn)
    with _STATE_LOCK:
        owner = _HELD.get(link) if link is not None else None
        if owner is None and session is None:
            return None
        p = Plan()
        p.link, p.pool, p.session = link, pool, session
        if owner is not None and owner is not session:
            del _HELD[link]
            if owner.unfetched:
                # The owner's newest state is here only: fetched first. Until the reply, the
                # owner sees its holder busy and waits.
                p.fetch_for = owner
                p.commands.append(_TOKEN_CHANGED)
            else:
                owner.holder = owner.holder_link = owner.holder_pool = None
        if session is None:
            p.commands.append(_END)
        else:
            p.on_holder = owner is session and session.holder is conn and session.holder_link is link
            if not p.on_holder:
                p.resumed = True
                p.commands.append((b"RINGKV.SESSION", session.token) if session.token else (b"RINGKV.SESSION",))
        p.commands.append(args)
        if session is not None and command not in READ_COMMANDS:
            p.fetch_after = True
            p.commands.append(_TOKEN_CHANGED)
    return p


def _fetched(reply: Any, token: bytes | None) -> tuple[bool, bytes | None]:
    """A `TOKEN CHANGED` reply read: (known, the token)."""
    if isinstance(reply, bytes):
        return True, reply
    if reply == 0 and not isinstance(reply, bool):
        return True, token
    return False, token


def finish(p: Plan, conn: Any, replies: list) -> Any:
    """The command's reply from the pipeline's (its error reply raised), the sessions' state kept."""
    i = 0
    error: BaseException | None = None
    with _STATE_LOCK:
        if p.fetch_for is not None:
            owner = p.fetch_for
            known, owner.token = _fetched(replies[0], owner.token)
            if owner.holder is conn:
                owner.unfetched = owner.unfetched and not known
                owner._drop_holder(f"answered {replies[0]!r} when its token was fetched")
            i = 1
        session = p.session
        if session is None:
            result = replies[i + 1]  # after the END
        elif p.resumed and isinstance(replies[i], Exception):
            raise replies[i]
        if session is not None and p.resumed:
            if isinstance(replies[i], Exception):
                raise replies[i]
            session.token = replies[i]  # the token the connection resumed (or started) at
            i += 1
        if session is not None:
            result = replies[i]
        if session is not None and p.fetch_after:
            known, session.token = _fetched(replies[i + 1], session.token)
            if not known:
                # No session on the connection (None), or an error: what the command wrote is
                # not in the token, and going on without it would drop read-your-writes.
                _HELD.pop(p.link, None)
                session.holder = session.holder_link = session.holder_pool = None
                session.unfetched = False
                last = replies[i + 1]
                error = result if isinstance(result, Exception) else last if isinstance(last, Exception) else \
                    ClientError("the connection was in no session after the command (its session was lost), "
                                "so the command ran outside the session")
        if session is not None and error is None:
            if session.holder is not None and session.holder is not conn:
                session._drop_holder("was replaced")  # not reached: a request takes its holder
            session.holder, session.holder_link, session.holder_pool = conn, p.link, p.pool
            session.unfetched = not p.fetch_after
            _HELD[p.link] = session
    if error is not None:
        raise error
    if isinstance(result, Exception):
        raise result
    return result


def failed(p: Plan | None, session: ClientSession | None, conn: Any) -> None:
    """The pipeline on `conn` failed in transport (the connection is then closed): the sessions
    whose state it held lose what was not fetched."""
    with _STATE_LOCK:
        if p is not None and p.fetch_for is not None and p.fetch_for.holder is conn:
            p.fetch_for._drop_holder("failed while its token was being fetched")
        if session is not None and session.holder is conn:
            session._drop_holder("failed during a request")


def took_token(session: ClientSession, conn: Any, reply: Any, address: str) -> bytes | None:
    """The reply of a `TOKEN CHANGED` sent on the session's holder `conn` (at the user's request):
    the session's token, now its newest state."""
    with _STATE_LOCK:
        known, session.token = _fetched(reply, session.token)
        if known:
            session.unfetched = False
            return session.token
        session._drop_holder(f"answered {reply!r} when its token was fetched")
    raise_lost(session, address)
    return session.token


def raise_lost(session: ClientSession, address: str) -> None:
    """SessionStateLostError if the session lost unfetched state (then the session goes on)."""
    with _STATE_LOCK:
        reason, session.lost = session.lost, None
    if reason is not None:
        raise SessionStateLostError(address, reason, session.token)


class ClientBase:
    """Options and bookkeeping common to both clients."""

    _ASYNCHRONOUS = False  # AsyncClient: its sessions' locks are asyncio's

    def __init__(self, options: ClientOptions):
        self.options = options
        self._rng = random.Random()  # backoff jitter only
        self._closed = False
        # Token-aware routing (client/routing.py): the ring map and a pool per replica node.
        self._router = (Router(options.namespace, options.host, options.datacenter, options.ring_refresh_ms)
                        if options.token_aware else None)
        self._routed: dict[Address, Any] = {}
        # The client's own session: at consistency SESSION (the default or a call's), or a
        # view made by session().
        self._session: ClientSession | None = (
            ClientSession(asynchronous=self._ASYNCHRONOUS) if options.consistency is Consistency.SESSION else None)

    def session(self, token: bytes | str | None = None) -> Self:
        """A view of this client (same connections) with a session of its own: a new one, or
        the one `token` names (`session_token` of another client or view, on any node). Close
        the client, not the view."""
        view = copy.copy(self)
        view._session = ClientSession(token, self._ASYNCHRONOUS)
        return view

    def _session_for(self, consistency: Consistency | None) -> ClientSession | None:
        if self._session is None and consistency is Consistency.SESSION:
            with _STATE_LOCK:
                if self._session is None:
                    self._session = ClientSession(asynchronous=self._ASYNCHRONOUS)
        return self._session

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A client for `ringkv://[user:password@]host[:port]` (port 7379 when omitted);
        keyword arguments as for the constructor (`username`/`password` given there win over
        the URL's)."""
        host, port, username, password = parse_url(url)
        if username is not None or password is not None:
            kwargs.setdefault("username", username)
            kwargs.setdefault("password", password)
        return cls(host, port, **kwargs)

    @property
    def address(self) -> str:
        """The node's "host:port"."""
        return self.options.address

    @property
    def consistency(self) -> Consistency | None:
        """The level requests use unless a call names its own (None: the node's default)."""
        return self.options.consistency

    def _level(self, consistency: str | Consistency | None) -> Consistency | None:
        return parse_consistency(consistency) or self.options.consistency

    def _fail_over(self, exc: BaseException, tried: int) -> bool:
        """After connecting to the current node failed with `exc` (the request was not sent):
        move to the next seed and return True, unless the failure is not the node's (refused
        credentials, every pooled connection busy) or `tried` seeds were tried already for this
        request, all of them. The caller replaces its pool (the options now name the new node)."""
        addresses = self.options.addresses
        if len(addresses) < 2 or tried >= len(addresses) - 1:
            return False
        if isinstance(exc, redis.exceptions.AuthenticationError) or str(exc) == "No connection available.":
            return False
        # The addresses rotated by one: the next becomes the node, the one that failed the last seed.
        rotated = (*addresses[1:], addresses[0])
        self.options = dataclasses.replace(self.options, host=rotated[0][0], port=rotated[0][1], seeds=rotated[1:])
        return True

    @property
    def routing(self) -> dict[str, Any] | None:
        """With token_aware: requests sent to a replica of their key and not, the ring map's
        size and the last error fetching it (client/routing.py); None otherwise."""
        return None if self._router is None else self._router.stats()

    def _options_at(self, address: Address) -> ClientOptions:
        """These options for the pool of one routed node."""
        return dataclasses.replace(self.options, host=address[0], port=address[1], seeds=())

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"this client of {self.address} was closed")

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.address}{state}>"
