"""`Client`: the blocking ringkv client, one node, a pool of connections, typed errors.

    with Client("127.0.0.1", 7379, timeout_ms=500) as kv:
        kv.set("user:1", b"ada", ttl_s=60)
        kv.get("user:1")            # b"ada"

It speaks RESP through redis-py's connection layer (`BlockingConnectionPool`, `Connection`,
the hiredis parser) but drives each request itself rather than through `redis.Redis`: to keep
an INCR from running twice it must know whether a failure came before the request was sent or
after, and `redis.Redis.execute_command` hides that. The retry rules are in
`ringkv.client.retry`, the commands in `ringkv.client.commands`.

A `Client` is safe to share between threads: each call borrows a pooled connection for its one
round trip. Calls beyond `max_connections` at once wait up to `timeout_ms` for one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self, TypeVar

import redis
import redis.backoff
import redis.exceptions
import redis.retry

from ringkv.client import commands
from ringkv.client.base import (
    _TOKEN_CHANGED,
    BUSY,
    GONE,
    IDLE,
    SESSION_HOLDER_POLL_S,
    ClientBase,
    ClientSession,
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


class Client(DataTypeCommands, ClientBase):
    """A blocking client of one ringkv node.

    Keys and values are bytes; `str` is accepted and encoded as UTF-8; values come back as
    bytes. Every key method takes `consistency="ONE"|"QUORUM"|"ALL"|"SERIAL"` to override the
    client's default for that call (SERIAL: a linearizable read); a single node has one replica
    and does not use it. `tls=True` (with `ca_file`, `cert_file`, `key_file`, `tls_verify`)
    talks to the node's TLS port: see `ClientOptions`. `username` and `password` (else
    RINGKV_USER / RINGKV_PASSWORD) authenticate each connection; a refusal raises
    `AuthenticationFailedError`, never retried. `seeds` ("host:port" or (host, port)) are more
    nodes of the cluster: a request whose connect fails moves on to the next one (ClientOptions).
    """

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

    def _new_pool(self, options: ClientOptions | None = None) -> redis.BlockingConnectionPool:
        options = options or self.options
        return redis.BlockingConnectionPool(
            connection_class=connection_class(options),
            **pool_kwargs(options, redis.retry.Retry(redis.backoff.NoBackoff(), 0)),
        )

    # ------------------------------------------------------------------ the round trip

    def _execute(self, request: Request[T]) -> T:
        if not request.args:
            self._check_open()
            return request.parse(None)
        session = self._session_for(request.consistency)
        if session is None:
            return self._run(request, None)
        with session.lock:  # a session runs one request at a time (ClientSession)
            return self._run(request, session)

    def _run(self, request: Request[T], session: ClientSession | None) -> T:
        attempts = Attempts(request, self.options, self._rng)
        pool = self._pool
        tried = 0  # seeds this request moved to after a failed connect (ClientOptions.seeds)
        # Token-aware: the replica of the request's key it goes to (None: the client's node).
        routed = None if self._router is None or session is not None else self._route(request)
        if routed is not None:
            pool = self._routed_pool(routed)
            attempts.address = format_address(*routed)
        while True:
            # Checked on every attempt: a retry must not reopen a pool that close() emptied.
            self._check_open()
            attempts.begin()
            # The session's holder when idle (SessionStateLostError if it was lost), else any.
            conn = None if session is None else self._holder(pool, session, request.command)
            try:
                if conn is None:
                    conn = pool.get_connection()
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
                    old, self._pool = pool, self._new_pool()
                    old.disconnect(inuse_connections=False)
                    # Not sent: moving on is not one of the request's attempts.
                    attempts.made -= 1
                    attempts.address = f"{attempts.address}, then {self.options.address}"
                    tried += 1
                    pool = self._pool
                    continue
                time.sleep(attempts.connect_failed(exc))
                pool = self._pool  # another thread may have moved to the next seed meanwhile
                continue
            p = None
            try:
                args = commands.wire_args(request)
                p = plan(conn, pool, session, args, request.command)
                if p is None:
                    conn.send_command(*args)
                    reply = conn.read_response()
                else:
                    conn.send_packed_command(conn.pack_commands(p.commands))
                    replies: list[Any] = []
                    for _ in p.commands:
                        try:
                            replies.append(conn.read_response())
                        except redis.exceptions.ResponseError as exc:
                            replies.append(exc)
                    reply = finish(p, conn, replies)
            except (redis.exceptions.ResponseError, ClientError) as exc:
                # The error reply was read whole: the connection is clean and goes back.
                pool.release(conn)
                if isinstance(exc, ClientError):
                    raise
                raise attempts.server_error(exc) from None
            except TRANSPORT_ERRORS as exc:
                failed(p, session, conn)
                conn.disconnect()
                pool.release(conn)
                time.sleep(attempts.request_failed(exc))
                continue
            except BaseException:
                # Interrupted mid-reply (KeyboardInterrupt, a bug): the rest of the reply must
                # not be read by the next borrower as the answer to its own request.
                failed(p, session, conn)
                conn.disconnect()
                pool.release(conn)
                raise
            pool.release(conn)
            return request.parse(reply)

    def _route(self, request: Request) -> Address | None:
        """Where a token-aware client sends `request`: a replica of its key, or None (the
        client's node). Fetches the ring map first when it is due (one round trip to the
        client's node, by one request at a time)."""
        router = self._router
        if router.should_fetch(time.monotonic() * 1000):
            try:
                doc = self._run(commands.ring_map(), None)
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
        """The pool of a routed node (one per node of the ring map: at most MAX_MEMBERS)."""
        pool = self._routed.get(address)
        if pool is None:
            pool = self._routed[address] = self._new_pool(self._options_at(address))
        return pool

    def _holder(self, pool: Any, session: ClientSession, command: str) -> Any:
        """The session's holder connection taken from `pool` when idle, None to take any; waits
        while another request fetches the session's token from the holder (timeout_ms)."""
        deadline = time.monotonic() + self.options.timeout_ms / 1000
        while True:
            got = session.claim(pool, _take_idle, self.address)
            if got is not BUSY:
                return got
            if time.monotonic() > deadline:
                raise RequestTimeoutError(command, self.options.timeout_ms, self.address,
                                          "the session's state, being fetched by another request")
            time.sleep(SESSION_HOLDER_POLL_S)

    @property
    def session_token(self) -> bytes | None:
        """The token of this client's session (None: no session yet), with everything the
        session wrote and read: fetched from the pooled connection holding the session's newest
        state when that state is not yet in the client's token (one round trip)."""
        session = self._session
        if session is None:
            return None
        with session.lock:
            if not session.unfetched:
                raise_lost(session, self.address)
                return session.token  # it holds the session's newest state: no round trip
            pool = self._pool
            conn = self._holder(pool, session, "RINGKV.SESSION")
            if conn is None:
                return session.token
            try:
                conn.send_command(*_TOKEN_CHANGED)
                reply = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                reply = exc
            except BaseException:
                failed(None, session, conn)
                conn.disconnect()
                pool.release(conn)
                raise_lost(session, self.address)
                raise
            pool.release(conn)
            return took_token(session, conn, reply, self.address)

    # ------------------------------------------------------------------ reads

    def get(self, key: Data, resolver: Resolver | None = None, *, consistency: Level = None) -> bytes | None:
        """The key's value, or None when it does not exist (or has expired).

        Without `resolver`, concurrent writes answer the node's deterministic winner. With it,
        the read is sibling-aware: one live sibling is returned as is; several are passed to
        `resolver(values) -> bytes` and its answer is written back with their context (so they
        collapse into one) and returned. The write-back is never retried (see
        `put_versioned`); its errors propagate, and a later resolving read tries again.
        """
        level = self._level(consistency)
        if resolver is None:
            return self._execute(commands.get(key, level))
        versions = self._execute(commands.get_versions(key, level))
        if len(versions.siblings) < 2:
            return versions.siblings[0].value if versions.siblings else None
        value, write = commands.resolved_write(key, versions, resolver(versions.values), level)
        self._execute(write)
        return value

    def get_versions(self, key: Data, *, consistency: Level = None) -> Versions:
        """Every live sibling of the key with the causal context covering them (context None
        when the key has no record). `.version` is what `cas` expects."""
        return self._execute(commands.get_versions(key, self._level(consistency)))

    def digest(self, key: Data, *, consistency: Level = None) -> str | None:
        """The value's digest (XXH3-64 as 16 lowercase hex digits, Redis 8.4's DIGEST), for
        `set(..., if_digest_eq=...)` and `delex`; None when the key does not exist."""
        return self._execute(commands.digest(key, self._level(consistency)))

    def mget(self, keys: Iterable[Data], *, consistency: Level = None) -> list[bytes | None]:
        """The values of `keys`, in order, None for each missing one."""
        return self._execute(commands.mget(keys, self._level(consistency)))

    def exists(self, *keys: Data, consistency: Level = None) -> int:
        """How many of `keys` exist (a key named twice counts twice, as in Redis)."""
        return self._execute(commands.exists(keys, self._level(consistency)))

    def ttl(self, key: Data, *, consistency: Level = None) -> float | None:
        """Seconds (millisecond precision) until the key expires; None when it has no expiry
        or does not exist (`exists` tells which)."""
        return self._execute(commands.ttl(key, self._level(consistency)))

    def scan_iter(self, match: Data | None = None, count: int = 100) -> Iterator[bytes]:
        """Every key (matching the glob `match`, if given), page by page of about `count`.

        Each key that exists for the whole iteration is yielded exactly once; keys written or
        deleted meanwhile may or may not be. A page lost to a connection failure is asked for
        again from the same cursor.
        """
        first = commands.scan_page(0, match, count)  # bad arguments fail here, not at next()
        return self._scan(first, match, count)

    def _scan(self, request: Request[tuple[int, list[bytes]]], match: Data | None,
              count: int) -> Iterator[bytes]:
        while True:
            cursor, keys = self._execute(request)
            yield from keys
            if cursor == 0:
                return
            request = commands.scan_page(cursor, match, count)

    def dbsize(self) -> int:
        """How many keys the node holds."""
        return self._execute(commands.dbsize())

    def info(self, section: str | None = None) -> dict[str, dict[str, Any]]:
        """The node's INFO as {section: {field: value}}; numbers are int or float."""
        return self._execute(commands.info(section))

    def ping(self) -> bool:
        """True when the node answers."""
        return self._execute(commands.ping())

    # ------------------------------------------------------------------ writes

    def set(
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
        """Store `value` under `key`, with an optional TTL (`ttl_s` or `ttl_ms`).

        Returns False, writing nothing, when its condition does not hold: `if_not_exists` and
        the key exists, `if_exists` and it does not; `if_eq` and the value is not that (a
        missing key is not created), `if_ne` and it is (a missing key is created);
        `if_digest_eq` / `if_digest_ne` the same with the value's `digest`. One condition at
        most. The check and the write are one step (linearizable on the consensus path). A
        conditional set is not retried (see `ResultUnknownError`).
        """
        return self._execute(
            commands.set_(key, value, ttl_s, ttl_ms, if_not_exists, if_exists, self._level(consistency),
                          if_eq=if_eq, if_ne=if_ne, if_digest_eq=if_digest_eq, if_digest_ne=if_digest_ne)
        )

    def cas(
        self,
        key: Data,
        expected_version: Data | int | None,
        new_value: Data,
        ttl_s: float | None = None,
        ttl_ms: int | None = None,
        *,
        consistency: Level = None,
    ) -> CasResult:
        """Compare-and-set: write `new_value` only if the key is still at `expected_version`
        (the `.version` of a `get_versions`, or a previous `CasResult.version`; or their
        `version_number`, an int, as the HTTP API's `version`; None: only if the key has no live
        value). One atomic step, linearizable with every other CAS,
        conditional write and SERIAL read of the key. Returns `CasResult(success, version)`:
        the new version, or the current one (None: no live value) when it did not match.
        Never retried: a lost reply raises `ResultUnknownError`."""
        return self._execute(
            commands.cas(key, expected_version, new_value, ttl_s, ttl_ms, self._level(consistency))
        )

    def cad(self, key: Data, expected_version: Data | int, *, consistency: Level = None) -> bool:
        """Compare-and-delete: delete the key only if it is still at `expected_version`; True
        when it was deleted. Never retried."""
        return self._execute(commands.cad(key, expected_version, self._level(consistency)))

    def mset(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
             consistency: Level = None) -> None:
        """Store every (key, value) pair, as one request."""
        self._execute(commands.mset(pairs, self._level(consistency)))

    def msetnx(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
               consistency: Level = None) -> bool:
        """Store every (key, value) pair only if none of the keys exists, atomically; True when
        stored. Several keys must share one hash tag ({user1}:a, {user1}:b), else ValueError
        (CROSSSLOT) before anything is sent."""
        return self._execute(commands.msetnx(pairs, self._level(consistency)))

    def mset_atomic(self, pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]], *,
                    consistency: Level = None) -> list[bytes]:
        """Store every (key, value) pair or none (docs/atomic-batches.md). Returns the keys
        still pending: the batch is committed, and the batch log's replay writes them (empty
        when every key is written)."""
        return self._execute(commands.mset_atomic(pairs, self._level(consistency)))

    def delete(self, *keys: Data, consistency: Level = None) -> int:
        """Delete `keys`; returns how many existed. After a retry the count can be low (the
        lost first attempt may have deleted some)."""
        return self._execute(commands.delete(keys, self._level(consistency)))

    def delex(
        self,
        key: Data,
        *,
        if_eq: Data | None = None,
        if_ne: Data | None = None,
        if_digest_eq: Data | None = None,
        if_digest_ne: Data | None = None,
        consistency: Level = None,
    ) -> bool:
        """Delete the key if its condition holds (as `set`'s if_eq ...; none: if it exists),
        Redis 8.4's DELEX; True when it was deleted. With a condition, never retried."""
        return self._execute(commands.delex(key, self._level(consistency), if_eq=if_eq, if_ne=if_ne,
                                            if_digest_eq=if_digest_eq, if_digest_ne=if_digest_ne))

    def put_versioned(
        self,
        key: Data,
        value: Data,
        context: Data | None = None,
        ttl_s: float | None = None,
        ttl_ms: int | None = None,
        *,
        consistency: Level = None,
    ) -> bytes:
        """Write `value` with the `context` a read returned: it replaces exactly the siblings
        that read saw. Without a context the write is blind and becomes a sibling of whatever
        is stored. Returns the new context. Never retried: a resent copy would not have seen
        the first one, and both would stay as siblings."""
        return self._execute(
            commands.put_versioned(key, value, context, ttl_s, ttl_ms, self._level(consistency))
        )

    def delete_versioned(self, key: Data, context: Data | None = None, *, consistency: Level = None) -> bytes:
        """Delete with the `context` a read returned: no sibling that read saw stays live.
        Returns the new context. Never retried."""
        return self._execute(commands.delete_versioned(key, context, self._level(consistency)))

    def incr(self, key: Data, delta: int = 1, *, consistency: Level = None) -> int:
        """Add `delta` to the integer stored at `key` (0 when missing); returns the new value.
        Never retried."""
        return self._execute(commands.incr(key, delta, self._level(consistency)))

    def incr_float(self, key: Data, delta: float, *, consistency: Level = None) -> float:
        """Add `delta` to the number stored at `key`; returns the new value. Never retried."""
        return self._execute(commands.incr_float(key, delta, self._level(consistency)))

    def append(self, key: Data, value: Data, *, consistency: Level = None) -> int:
        """Append `value` to the key's value (creating it); returns the new length.
        Never retried."""
        return self._execute(commands.append(key, value, self._level(consistency)))

    def expire(self, key: Data, ttl_s: float, *, consistency: Level = None) -> bool:
        """Make the key expire in `ttl_s` seconds (<= 0 deletes it, as in Redis). False when
        the key does not exist."""
        return self._execute(commands.expire(key, ttl_s, self._level(consistency)))

    def persist(self, key: Data, *, consistency: Level = None) -> bool:
        """Remove the key's expiry. False when it had none or does not exist."""
        return self._execute(commands.persist(key, self._level(consistency)))

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close every pooled connection. Calls after this raise `ringkv.errors.ClosedError`."""
        self._closed = True
        self._pool.disconnect()
        for pool in list(self._routed.values()):
            pool.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_idle(pool: redis.BlockingConnectionPool, conn: Any) -> str:
    """Take `conn` out of `pool` if it is idle there (IDLE); BUSY when lent out, GONE when the
    pool no longer has it. redis-py's blocking pool keeps its idle connections in a LIFO queue."""
    queue = pool.pool
    with queue.mutex:
        for i, idle in enumerate(queue.queue):
            if idle is conn:
                del queue.queue[i]
                queue.not_full.notify()
                return IDLE
    return BUSY if any(c is conn for c in pool._connections) else GONE
