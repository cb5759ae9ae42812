"""`AsyncClient`: the asyncio twin of `Client`, same methods, same errors, same retry rules.

    async with AsyncClient("127.0.0.1", 7379) as kv:
        await kv.set("user:1", b"ada")
        async for key in kv.scan_iter(match="user:*"):
            ...

Built on `redis.asyncio`'s `BlockingConnectionPool` and `Connection`, driven request by
request as `Client` is (see its module for why not `redis.asyncio.Redis`). An AsyncClient
belongs to the event loop that first uses it: its connections are that loop's sockets.

Cancelling a call closes the connection it was using (its reply might still arrive and must
not be taken as the next request's answer); for a non-idempotent request the outcome is then
unknown, as after a lost connection.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Self, TypeVar

import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.exceptions

from ringkv.client import commands
from ringkv.client.base import (
    _TOKEN_CHANGED,
    BUSY,
    GONE,
    IDLE,
    SESSION_HOLDER_POLL_S,
    ClientBase,
    ClientSession,
    _link,
    connection_class,
    failed,
    finish,
    plan,
    pool_kwargs,
    raise_lost,
    took_token,
)
from ringkv.client.commands import CasResult, Data, Request
from ringkv.client.datatypes import DataTypeCommands
from ringkv.client.errors import ClientError, RequestTimeoutError
from ringkv.client.options import (
    ClientOptions,
    Consistency,
    credentials,
    format_address,
    parse_consistency,
    parse_seeds,
)
from ringkv.client.retry import POOL_EXHAUSTED, TRANSPORT_ERRORS, Attempts
from ringkv.client.routing import Address
from ringkv.client.siblings import Resolver, Versions

T = TypeVar("T")
Level = str | Consistency | None


class AsyncClient(DataTypeCommands, ClientBase):
    """An asyncio client of one ringkv node; see `Client` for what each method does."""

    _ASYNCHRONOUS = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7379,
        *,
        timeout_ms: float = 1000,
        connect_timeout_ms: float = 1000,
        max_connections: int = 50,
        retries: int = 3,
        backoff_base_ms: float = 20,
        backoff_max_ms: float = 1000,
        consistency: Level = None,
        namespace: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_verify: bool = True,
        username: str | None = None,
        password: str | None = None,
        seeds: Iterable[str | tuple[str, int]] = (),
        token_aware: bool = False,
        datacenter: str | None = None,
        ring_refresh_ms: float = 10_000,
    ):
        super().__init__(
            ClientOptions(
                host=host,
                port=port,
                timeout_ms=timeout_ms,
                connect_timeout_ms=connect_timeout_ms,
                max_connections=max_connections,
                retries=retries,
                backoff_base_ms=backoff_base_ms,
                backoff_max_ms=backoff_max_ms,
                consistency=parse_consistency(consistency),
                namespace=namespace,
                tls=tls,
                ca_file=ca_file,
                cert_file=cert_file,
                key_file=key_file,
                tls_verify=tls_verify,
                # None and None: RINGKV_USER / RINGKV_PASSWORD from the environment, if set.
                **dict(zip(("username", "password"), credentials(username, password), strict=True)),
                seeds=parse_seeds(seeds),
                token_aware=token_aware,
                datacenter=datacenter,
                ring_refresh_ms=ring_refresh_ms,
            )
        )
        self._pool = self._new_pool()

    def _new_pool(self, options: ClientOptions | None = None) -> redis.asyncio.BlockingConnectionPool:
        options = options or self.options
        return redis.asyncio.BlockingConnectionPool(
            connection_class=connection_class(options, asynchronous=True),
            **pool_kwargs(options, redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0), True),
        )

    # ------------------------------------------------------------------ the round trip

    async def _execute(self, request: Request[T]) -> T:
        if not request.args:
            self._check_open()
            return request.parse(None)
        session = self._session_for(request.consistency)
        if session is None:
            return await self._run(request, None)
        async with session.lock:  # a session runs one request at a time (ClientSession)
            return await self._run(request, session)

    async def _run(self, request: Request[T], session: ClientSession | None) -> T:
        attempts = Attempts(request, self.options, self._rng)
        pool = self._pool
        tried = 0  # seeds this request moved to after a failed connect (ClientOptions.seeds)
        # Token-aware: the replica of the request's key it goes to (None: the client's node).
        routed = None if self._router is None or session is not None else await self._route(request)
        if routed is not None:
            pool = self._routed_pool(routed)
            attempts.address = format_address(*routed)
        while True:
            # Checked on every attempt: a retry must not reopen a pool that close() emptied.
            self._check_open()
            attempts.begin()
            # The session's holder when idle (SessionStateLostError if it was lost), else any.
            conn = None if session is None else await self._holder(pool, session, request.command)
            try:
                if conn is None:
                    conn = await pool.get_connection()
            except TRANSPORT_ERRORS as exc:
                if routed is not None and not isinstance(exc, redis.exceptions.AuthenticationError):
                    # The replica could not be reached: the request (not sent) goes on
                    # through the client's node; the replica gets no routed request a while.
                    if str(exc) != POOL_EXHAUSTED:
                        self._router.held_down(routed, time.monotonic() * 1000)
                    routed, pool = None, self._pool
                    attempts.made -= 1
                    attempts.address = f"{attempts.address}, then {self.options.address}"
                    continue
                if self._pool is pool and self._fail_over(exc, tried):
                    self._pool = self._new_pool()
                    await pool.disconnect(inuse_connections=False)
                    # Not sent: moving on is not one of the request's attempts.
                    attempts.made -= 1
                    attempts.address = f"{attempts.address}, then {self.options.address}"
                    tried += 1
                    pool = self._pool
                    continue
                await asyncio.sleep(attempts.connect_failed(exc))
                pool = self._pool  # another task may have moved to the next seed meanwhile
                continue
            p = None
            try:
                args = commands.wire_args(request)
                p = plan(conn, pool, session, args, request.command)
                if p is None:
                    await conn.send_command(*args)
                    reply = await conn.read_response()
                else:
                    await conn.send_packed_command(conn.pack_commands(p.commands))
                    replies: list[Any] = []
                    for _ in p.commands:
                        try:
                            replies.append(await conn.read_response())
                        except redis.exceptions.ResponseError as exc:
                            replies.append(exc)
                    reply = finish(p, conn, replies)
            except (redis.exceptions.ResponseError, ClientError) as exc:
                await pool.release(conn)
                if isinstance(exc, ClientError):
                    raise
                raise attempts.server_error(exc) from None
            except TRANSPORT_ERRORS as exc:
                failed(p, session, conn)
                await conn.disconnect()
                await pool.release(conn)
                await asyncio.sleep(attempts.request_failed(exc))
                continue
            except BaseException:
                # Cancelled mid-reply: see the module docstring.
                failed(p, session, conn)
                await conn.disconnect()
                await pool.release(conn)
                raise
            await pool.release(conn)
            return request.parse(reply)

    async def _route(self, request: Request) -> Address | None:
        """See `Client._route`."""
        router = self._router
        if router.should_fetch(time.monotonic() * 1000):
            try:
                doc = await self._run(commands.ring_map(), None)
            except Exception as exc:  # an older node, no permission, unreachable: stay on the node
                router.fetch_failed(str(exc), time.monotonic() * 1000)
            except BaseException:
                router.fetch_failed("interrupted", time.monotonic() * 1000)
                raise
            else:
                router.fetched(doc, time.monotonic() * 1000)
        return router.target(request.command, request.args, time.monotonic() * 1000,
                             request.consistency is Consistency.SERIAL)

    def _routed_pool(self, address: Address) -> Any:
        pool = self._routed.get(address)
        if pool is None:
            pool = self._routed[address] = self._new_pool(self._options_at(address))
        return pool

    async def _holder(self, pool: Any, session: ClientSession, command: str) -> Any:
        """See `Client._holder`."""
        deadline = time.monotonic() + self.options.timeout_ms / 1000
        while True:
            got = session.claim(pool, _take_idle, self.address)
            if got is not BUSY:
                return got
            if time.monotonic() > deadline:
                raise RequestTimeoutError(command, self.options.timeout_ms, self.address,
                                          "the session's state, being fetched by another request")
            await asyncio.sleep(SESSION_HOLDER_POLL_S)

    @property
    def session_token(self) -> bytes | None:
        """The token of this client's session (None: no session yet) when it holds everything
        the session wrote and read; when the session's newest state is still on a pooled
        connection, ClientError: `await fetch_session_token()` fetches it."""
        session = self._session
        if session is None:
            return None
        if session.holder is not None and session.unfetched:
            raise ClientError("the session's newest state is on a pooled connection, not yet in the client's "
                              "token: await fetch_session_token() to fetch it")
        return session.token

    async def fetch_session_token(self) -> bytes | None:
        """The token of this client's session (None: no session yet), with everything the
        session wrote and read: fetched from the pooled connection holding the session's newest
        state when that state is not yet in the client's token (one round trip)."""
        session = self._session
        if session is None:
            return None
        async with session.lock:
            if not session.unfetched:
                raise_lost(session, self.address)
                return session.token  # it holds the session's newest state: no round trip
            pool = self._pool
            conn = await self._holder(pool, session, "RINGKV.SESSION")
            if conn is None:
                return session.token
            try:
                await conn.send_command(*_TOKEN_CHANGED)
                reply = await conn.read_response()
            except redis.exceptions.ResponseError as exc:
                reply = exc
            except BaseException:
                failed(None, session, conn)
                await conn.disconnect()
                await pool.release(conn)
                raise_lost(session, self.address)
                raise
            await pool.release(conn)
            return took_token(session, conn, reply, self.address)

    # ------------------------------------------------------------------ reads

    async def get(self, key: Data, resolver: Resolver | None = None, *,
                  consistency: Level = None) -> bytes | None:
        """See `Client.get`; `resolver` may also return an awaitable, which is awaited."""
        level = self._level(consistency)
        if resolver is None:
            return await self._execute(commands.get(key, level))
        versions = await self._execute(commands.get_versions(key, level))
        if len(versions.siblings) < 2:
            return versions.siblings[0].value if versions.siblings else None
        resolved = resolver(versions.values)
        if inspect.isawaitable(resolved):
            resolved = await resolved
        value, write = commands.resolved_write(key, versions, resolved, level)
        await self._execute(write)
        return value

    async def get_versions(self, key: Data, *, consistency: Level = None) -> Versions:
        return await self._execute(commands.get_versions(key, self._level(consistency)))

    async def digest(self, key: Data, *, consistency: Level = None) -> str | None:
        return await self._execute(commands.digest(key, self._level(consistency)))

    async def mget(self, keys: Iterable[Data], *, consistency: Level = None) -> list[bytes | None]:
        return await self._execute(commands.mget(keys, self._level(consistency)))

    async def exists(self, *keys: Data, consistency: Level = None) -> int:
        return await self._execute(commands.exists(keys, self._level(consistency)))

    async def ttl(self, key: Data, *, consistency: Level = None) -> float | None:
        return await self._execute(commands.ttl(key, self._level(consistency)))

    def scan_iter(self, match: Data | None = None, count: int = 100) -> AsyncIterator[bytes]:
        """`async for key in kv.scan_iter(...)`: every key once (see `Client.scan_iter`)."""
        first = commands.scan_page(0, match, count)  # bad arguments fail here
        return self._scan(first, match, count)

    async def _scan(self, request: Request[tuple[int, list[bytes]]], match: Data | None,
                    count: int) -> AsyncIterator[bytes]:
        while True:
            cursor, keys = await self._execute(request)
            for key in keys:
                yield key
            if cursor == 0:
                return
            request = commands.scan_page(cursor, match, count)

    async def dbsize(self) -> int:
        return await self._execute(commands.dbsize())

    async def info(self, section: str | None = None) -> dict[str, dict[str, Any]]:
        return await self._execute(commands.info(section))

    async def ping(self) -> bool:
        return await self._execute(commands.ping())

    # ------------------------------------------------------------------ writes

    async def set(
        self,
        key: Data,
        value: Data,
        ttl_s: float | None = None,
        ttl_ms: int | None = None,
        if_not_exists: bool = False,
        if_exists: bool = False,
        *,
        if_eq: Data | None = None,
        if_ne: Data | None = None,
        if_digest_eq: Data | None = None,
        if_digest_ne: Data | None = None,
        consistency: Level = None,
    ) -> bool:
        return await self._execute(
            commands.set_(key, value, ttl_s, ttl_ms, if_not_exists, if_exists, self._level(consistency),
                          if_eq=if_eq, if_ne=if_ne, if_digest_eq=if_digest_eq, if_digest_ne=if_digest_ne)
        )

    async def cas(
        self,
        key: Data,
        expected_version: Data | int | None,
        new_value: Data,
        ttl_s: float | None = None,
        ttl_ms: int | None = None,
        *,
        consistency: Level = None,
    ) -> CasResult:
        return await self._execute(
            commands.cas(key, expected_version, new_value, ttl_s, ttl_ms, self._level(consistency))
        )

    async def cad(self, key: Data, expected_version: Data | int, *, consistency: Level = None) -> bool:
        return await self._execute(commands.cad(key, expected_version, self._level(consistency)))

    async def mset(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
                   consistency: Level = None) -> None:
        await self._execute(commands.mset(pairs, self._level(consistency)))

    async def msetnx(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
                     consistency: Level = None) -> bool:
        """Store every (key, value) pair only if none of the keys exists, atomically; True when
        stored. Several keys must share one hash tag ({user1}:a, {user1}:b), else ValueError
        (CROSSSLOT) before anything is sent."""
        return await self._execute(commands.msetnx(pairs, self._level(consistency)))

    async def mset_atomic(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
                    consistency: Level = None) -> list[bytes]:
        """Store every (key, value) pair or none (docs/atomic-batches.md). Returns the keys
        still pending: the batch is committed, and the batch log's replay writes them (empty
        when every key is written)."""
        return await self._execute(commands.mset_atomic(pairs, self._level(consistency)))

    async def delete(self, *keys: Data, consistency: Level = None) -> int:
        return await self._execute(commands.delete(keys, self._level(consistency)))

    async def delex(
        self,
        key: Data,
        *,
        if_eq: Data | None = None,
        if_ne: Data | None = None,
        if_digest_eq: Data | None = None,
        if_digest_ne: Data | None = None,
        consistency: Level = None,
    ) -> bool:
        return await self._execute(commands.delex(key, self._level(consistency), if_eq=if_eq, if_ne=if_ne,
                                                  if_digest_eq=if_digest_eq, if_digest_ne=if_digest_ne))

    async def put_versioned(
        self,
        key: Data,
        value: Data,
        context: Data | None = None,
        ttl_s: float | None = None,
        ttl_ms: int | None = None,
        *,
        consistency: Level = None,
    ) -> bytes:
        return await self._execute(
            commands.put_versioned(key, value, context, ttl_s, ttl_ms, self._level(consistency))
        )

    async def delete_versioned(self, key: Data, context: Data | None = None, *,
                               consistency: Level = None) -> bytes:
        return await self._execute(commands.delete_versioned(key, context, self._level(consistency)))

    async def incr(self, key: Data, delta: int = 1, *, consistency: Level = None) -> int:
        return await self._execute(commands.incr(key, delta, self._level(consistency)))

    async def incr_float(self, key: Data, delta: float, *, consistency: Level = None) -> float:
        return await self._execute(commands.incr_float(key, delta, self._level(consistency)))

    async def append(self, key: Data, value: Data, *, consistency: Level = None) -> int:
        return await self._execute(commands.append(key, value, self._level(consistency)))

    async def expire(self, key: Data, ttl_s: float, *, consistency: Level = None) -> bool:
        return await self._execute(commands.expire(key, ttl_s, self._level(consistency)))

    async def persist(self, key: Data, *, consistency: Level = None) -> bool:
        return await self._execute(commands.persist(key, self._level(consistency)))

    # ------------------------------------------------------------------ lifetime

    async def close(self) -> None:
        """Close every pooled connection; later calls raise `ringkv.errors.ClosedError`."""
        self._closed = True
        await self._pool.disconnect()
        for pool in list(self._routed.values()):
            await pool.disconnect()

    aclose = close  # for contextlib.aclosing and redis.asyncio's naming

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _take_idle(pool: redis.asyncio.BlockingConnectionPool, conn: Any) -> str:
    """See `ringkv.client.sync._take_idle`: redis-py's asyncio pool keeps its idle connections in
    a list, those lent out in a set. Run with no await, so no other task sees it half done."""
    available = pool._available_connections
    for i, idle in enumerate(available):
        if idle is conn:
            del available[i]
            pool._in_use_connections.add(conn)
            return IDLE
    if conn in pool._in_use_connections:
        return BUSY
    # In neither while release() awaits a disconnect: busy until it is back (or closed).
    return BUSY if _link(conn) is not None else GONE
