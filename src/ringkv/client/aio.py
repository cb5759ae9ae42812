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
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Self, TypeVar

import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.exceptions

from ringkv.client import commands
from ringkv.client.base import ClientBase, connection_class, pool_kwargs
from ringkv.client.commands import CasResult, Data, Request
from ringkv.client.options import ClientOptions, Consistency, credentials, parse_consistency
from ringkv.client.retry import TRANSPORT_ERRORS, Attempts
from ringkv.client.siblings import Resolver, Versions

T = TypeVar("T")
Level = str | Consistency | None


class AsyncClient(ClientBase):
    """An asyncio client of one ringkv node; see `Client` for what each method does."""

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
            )
        )
        self._pool = redis.asyncio.BlockingConnectionPool(
            connection_class=connection_class(self.options, asynchronous=True),
            **pool_kwargs(self.options, redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0), True),
        )

    # ------------------------------------------------------------------ the round trip

    async def _execute(self, request: Request[T]) -> T:
        if not request.args:
            self._check_open()
            return request.parse(None)
        attempts = Attempts(request, self.options, self._rng)
        pool = self._pool
        while True:
            # Checked on every attempt: a retry must not reopen a pool that close() emptied.
            self._check_open()
            attempts.begin()
            try:
                conn = await pool.get_connection()
            except TRANSPORT_ERRORS as exc:
                await asyncio.sleep(attempts.connect_failed(exc))
                continue
            session = self._session_for(request.consistency)
            try:
                if session is None:
                    await conn.send_command(*commands.wire_args(request))
                    reply = await conn.read_response()
                else:
                    await conn.send_packed_command(conn.pack_commands(session.wrap(commands.wire_args(request))))
                    replies: list[Any] = []
                    for _ in range(3):
                        try:
                            replies.append(await conn.read_response())
                        except redis.exceptions.ResponseError as exc:
                            replies.append(exc)
                    reply = session.unwrap(replies)
            except redis.exceptions.ResponseError as exc:
                await pool.release(conn)
                raise attempts.server_error(exc) from None
            except TRANSPORT_ERRORS as exc:
                await conn.disconnect()
                await pool.release(conn)
                await asyncio.sleep(attempts.request_failed(exc))
                continue
            except BaseException:
                # Cancelled mid-reply: see the module docstring.
                await conn.disconnect()
                await pool.release(conn)
                raise
            await pool.release(conn)
            return request.parse(reply)

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

    aclose = close  # for contextlib.aclosing and redis.asyncio's naming

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
