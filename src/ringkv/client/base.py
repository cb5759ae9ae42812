"""What `Client` and `AsyncClient` share apart from IO: options, the consistency default,
URLs, and the keyword arguments of redis-py's connections."""

from __future__ import annotations

import copy
import inspect
import random
import ssl
from typing import Any, Self

import redis.connection
import redis.exceptions

from ringkv.client.options import ClientOptions, Consistency, parse_consistency, parse_url
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


class ClientSession:
    """The token of a session (docs/consistency.md, "Sessions") as the client keeps it: each
    request in the session is sent as one pipeline of `RINGKV.SESSION <token>`, the command,
    and `RINGKV.SESSION TOKEN`, so that whichever pooled connection (or node) carries it, it
    runs in the session, and the token it leaves is kept for the next one."""

    __slots__ = ("token",)

    def __init__(self, token: bytes | str | None = None):
        self.token = token.encode() if isinstance(token, str) else token

    def wrap(self, args: tuple) -> list[tuple]:
        start = (b"RINGKV.SESSION", self.token) if self.token else (b"RINGKV.SESSION",)
        return [start, args, (b"RINGKV.SESSION", b"TOKEN")]

    def unwrap(self, replies: list) -> Any:
        """The command's reply from the pipeline's three (an error reply raised), the token kept."""
        if isinstance(replies[0], Exception):
            raise replies[0]
        if isinstance(replies[2], bytes):
            self.token = replies[2]
        if isinstance(replies[1], Exception):
            raise replies[1]
        return replies[1]


class ClientBase:
    """Options and bookkeeping common to both clients."""

    def __init__(self, options: ClientOptions):
        self.options = options
        self._rng = random.Random()  # backoff jitter only
        self._closed = False
        # The client's own session: at consistency SESSION (the default or a call's), or a
        # view made by session().
        self._session: ClientSession | None = (
            ClientSession() if options.consistency is Consistency.SESSION else None)

    def session(self, token: bytes | str | None = None) -> Self:
        """A view of this client (same connections) with a session of its own: a new one, or
        the one `token` names (`session_token` of another client or view, on any node). Close
        the client, not the view."""
        view = copy.copy(self)
        view._session = ClientSession(token)
        return view

    @property
    def session_token(self) -> bytes | None:
        """The token of this client's session as it is now (None: no session yet)."""
        return None if self._session is None else self._session.token

    def _session_for(self, consistency: Consistency | None) -> ClientSession | None:
        if self._session is None and consistency is Consistency.SESSION:
            self._session = ClientSession()
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

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"this client of {self.address} was closed")

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.address}{state}>"
