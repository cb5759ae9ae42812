"""How each measured system does YCSB's operations, from inside one client process.

    driver = make_driver(spec, tasks=16)       # in the client process, on its event loop
    session = driver.session(task_index)       # the connections one concurrent task uses
    found = await session.read(b"user42")

A `DriverSpec` is plain data (it crosses to the client processes); `make_driver` opens the
system's own client there. A driver spreads its tasks over the system's addresses (task i
talks to address i mod n), so on a cluster every member coordinates its share of requests;
with the option `token_aware` (the `-token` systems), ringkv's tasks share one token-aware
client instead, which sends each request to one of its key's replicas.

What the operations are, per system (the report repeats this table):

| operation | ringkv (cluster or node) | Redis | etcd |
|---|---|---|---|
| read | GET | GET | Range on the key |
| update, insert | SET (whole record) | SET; an insert also ZADDs the key to a sorted-set index, in the same pipelined round trip | Put |
| scan(start, n) | SCAN from start's token, COUNT n, then MGET of those keys: n consecutive records in token (hash) order | ZRANGEBYLEX on the index from start, LIMIT n, then MGET: n records in key order | one Range [start, end of "user" keys) with limit n: key order, in one request |

Sessions (docs/consistency.md, "Sessions"; the `ringkv-session` systems): each concurrent task
is one session for the whole run, its own (a user of a web application keeping one), at the
nodes' default level. With `sessions="client"` a task's requests go through a session view of
the node's client (`client.session()`): a read goes alone on the pooled connection that holds
the session's newest state, a write is followed by `RINGKV.SESSION TOKEN CHANGED` in the same
pipeline, and a connection holding another session gives that one's token back before this
one is resumed on it (docs/client.md, "Sessions"). With
`sessions="connection"` each task has a connection of its own (redis-py, like the `redis`
driver) that ran `RINGKV.CONSISTENCY SESSION` once: the session lives on the connection, and
no token travels.

ringkv's SCAN walks the ring in token order and its cursor is a token, so a YCSB scan on
ringkv reads the n records that follow the start key's token: the same amount of work as a
key-range scan (a contiguous run of n records in the store's order), over records that are
not neighbours by name. YCSB's Cassandra binding scans by token the same way.
"""

from __future__ import annotations

import abc
import base64
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringkv.client import commands
from ringkv.cluster.ring import token

INDEX_KEY = b"ycsb:index"  # Redis's sorted set of every record key (scores 0: ordered by name)
ETCD_PREFIX_END = b"uses"  # "user" + 1 in its last byte: the end of the key range YCSB uses
REQUEST_TIMEOUT_S = 10.0  # long enough that a slow request is measured, not dropped


@dataclass(frozen=True, slots=True)
class DriverSpec:
    kind: str  # "ringkv" | "redis" | "etcd"
    addresses: tuple[tuple[str, int], ...]
    options: dict[str, Any] = field(default_factory=dict)


class Session(abc.ABC):
    """The operations of one concurrent task. `read` and `scan` answer how many records were
    found, so the load generator can count reads of records that should exist and did not."""

    __slots__ = ()

    @abc.abstractmethod
    async def read(self, key: bytes) -> int:
        """Read one record: 1 if it was found, 0 if not."""

    @abc.abstractmethod
    async def update(self, key: bytes, value: bytes) -> None:
        """Overwrite one record."""

    @abc.abstractmethod
    async def insert(self, key: bytes, value: bytes) -> None:
        """Add one record."""

    @abc.abstractmethod
    async def scan(self, start: bytes, count: int) -> int:
        """Read up to `count` records from `start`; how many were found."""


class Driver(abc.ABC):
    @abc.abstractmethod
    def session(self, task: int) -> Session:
        """The session of concurrent task number `task`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""


# ---------------------------------------------------------------------- ringkv


class RingkvSession(Session):
    __slots__ = ("client",)

    def __init__(self, client: Any):
        self.client = client

    async def read(self, key: bytes) -> int:
        return 0 if await self.client.get(key) is None else 1

    async def update(self, key: bytes, value: bytes) -> None:
        await self.client.set(key, value)

    insert = update

    async def scan(self, start: bytes, count: int) -> int:
        # One SCAN page from a cursor of our choosing: the client's scan_iter always starts at
        # 0, so the page is sent through the client's request path directly (same retries,
        # same errors as its public calls).
        request = commands.scan_page(token(b"", start), None, count)
        _cursor, keys = await self.client._execute(request)
        keys = keys[:count]
        if not keys:
            return 0
        values = await self.client.mget(keys)
        return sum(v is not None for v in values)


class RingkvDriver(Driver):
    """ringkv.client.AsyncClient, one per node, pooled connections enough for every task;
    with option `sessions="client"`, a session view of it per task."""

    def __init__(self, spec: DriverSpec, tasks: int):
        from ringkv.client import AsyncClient

        per_node = -(-tasks // len(spec.addresses))
        if spec.options.get("token_aware"):
            # One token-aware client for every task: each request goes to one of its key's
            # replicas (docs/client.md, "Token-aware routing"), a pool of up to `tasks`
            # connections per node; the other addresses are its seeds.
            (host, port), *seeds = spec.addresses
            self.clients = [AsyncClient(host, port, seeds=seeds, token_aware=True, max_connections=max(tasks, 1),
                                        timeout_ms=REQUEST_TIMEOUT_S * 1000, connect_timeout_ms=5000,
                                        consistency=spec.options.get("consistency"))]
        else:
            self.clients = [
                AsyncClient(host, port, max_connections=max(per_node, 1),
                            timeout_ms=REQUEST_TIMEOUT_S * 1000, connect_timeout_ms=5000,
                            consistency=spec.options.get("consistency"))
                for host, port in spec.addresses
            ]
        if spec.options.get("sessions") == "client":
            # Task i's session goes through node i mod n's client, like its plain requests.
            self.sessions = [RingkvSession(self.clients[t % len(self.clients)].session())
                             for t in range(max(tasks, 1))]
        else:
            self.sessions = [RingkvSession(c) for c in self.clients]

    def session(self, task: int) -> Session:
        return self.sessions[task % len(self.sessions)]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


class RingkvConnectionSession(RingkvSession):
    """One task's own connection, in a session started by RINGKV.CONSISTENCY SESSION (held by
    the connection: no token travels). Reads and writes only: YCSB's scans (workload E) go
    through the node's client, outside the session."""

    __slots__ = ("conn", "ready")

    def __init__(self, conn: Any, client: Any):
        super().__init__(client)
        self.conn = conn
        self.ready = False

    async def _call(self, *args: Any) -> Any:
        if not self.ready:
            await self.conn.execute_command("RINGKV.CONSISTENCY", "SESSION")
            self.ready = True
        return await self.conn.execute_command(*args)

    async def read(self, key: bytes) -> int:
        return 0 if await self._call("GET", key) is None else 1

    async def update(self, key: bytes, value: bytes) -> None:
        await self._call("SET", key, value)

    insert = update


class RingkvConnectionDriver(RingkvDriver):
    """A connection per task in a session of its own (option `sessions="connection"`)."""

    def __init__(self, spec: DriverSpec, tasks: int):
        import redis.asyncio

        super().__init__(DriverSpec(spec.kind, spec.addresses), tasks)
        self.conns = []
        sessions: list[Session] = []
        for t in range(max(tasks, 1)):
            host, port = spec.addresses[t % len(spec.addresses)]
            conn = redis.asyncio.Redis(host=host, port=port, protocol=2, socket_timeout=REQUEST_TIMEOUT_S,
                                       socket_connect_timeout=5, single_connection_client=True)
            self.conns.append(conn)
            sessions.append(RingkvConnectionSession(conn, self.clients[t % len(self.clients)]))
        self.sessions = sessions

    async def close(self) -> None:
        for conn in self.conns:
            await conn.aclose()
        await super().close()


# ---------------------------------------------------------------------- Redis


class RedisSession(Session):
    __slots__ = ("r",)

    def __init__(self, r: Any):
        self.r = r

    async def read(self, key: bytes) -> int:
        return 0 if await self.r.get(key) is None else 1

    async def update(self, key: bytes, value: bytes) -> None:
        await self.r.set(key, value)

    async def insert(self, key: bytes, value: bytes) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(key, value)
            pipe.zadd(INDEX_KEY, {key: 0})
            await pipe.execute()

    async def scan(self, start: bytes, count: int) -> int:
        keys = await self.r.zrangebylex(INDEX_KEY, b"[" + start, b"+", start=0, num=count)
        if not keys:
            return 0
        values = await self.r.mget(keys)
        return sum(v is not None for v in values)


class RedisDriver(Driver):
    """redis-py's asyncio client (hiredis parser, RESP2, as ringkv's client uses)."""

    def __init__(self, spec: DriverSpec, tasks: int):
        import redis.asyncio

        host, port = spec.addresses[0]
        self.client = redis.asyncio.Redis(
            host=host, port=port, protocol=2, socket_timeout=REQUEST_TIMEOUT_S,
            socket_connect_timeout=5, max_connections=max(tasks, 1))
        self._session = RedisSession(self.client)

    def session(self, task: int) -> Session:
        return self._session

    async def close(self) -> None:
        await self.client.aclose()


# ---------------------------------------------------------------------- etcd


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EtcdSession(Session):
    """etcd's v3 API through its JSON gateway (grpc-gateway on the client port): keys and
    values travel base64-encoded in JSON, as HTTP/1.1 POSTs on kept-alive connections. Reads
    are etcd's default, linearizable (serializable: false)."""

    __slots__ = ("http",)

    def __init__(self, http: Any):
        self.http = http

    async def _post(self, path: str, body: dict) -> dict:
        async with self.http.post(path, data=msgspec.json.encode(body)) as resp:
            content = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"etcd {path}: HTTP {resp.status}: {content[:200]!r}")
        return msgspec.json.decode(content)

    async def read(self, key: bytes) -> int:
        reply = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = reply.get("kvs") or ()
        for kv in kvs:
            base64.b64decode(kv.get("value", ""))
        return len(kvs)

    async def update(self, key: bytes, value: bytes) -> None:
        await self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    insert = update

    async def scan(self, start: bytes, count: int) -> int:
        reply = await self._post("/v3/kv/range", {
            "key": _b64(start), "range_end": _b64(ETCD_PREFIX_END), "limit": count})
        kvs = reply.get("kvs") or ()
        for kv in kvs:
            base64.b64decode(kv.get("value", ""))
        return len(kvs)


class EtcdDriver(Driver):
    """aiohttp, one session per member. Not httpx: on this project's 2-core machines httpx
    spent about 4x aiohttp's CPU per request (735 against 175 us), which made the client, not
    etcd, the limit."""

    def __init__(self, spec: DriverSpec, tasks: int):
        import aiohttp

        per_member = max(-(-tasks // len(spec.addresses)), 1)
        self.clients = [
            aiohttp.ClientSession(
                f"http://{host}:{port}",
                connector=aiohttp.TCPConnector(limit=per_member),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=5.0),
                headers={"content-type": "application/json"})
            for host, port in spec.addresses
        ]
        self.sessions = [EtcdSession(c) for c in self.clients]

    def session(self, task: int) -> Session:
        return self.sessions[task % len(self.sessions)]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


DRIVERS = {"ringkv": RingkvDriver, "redis": RedisDriver, "etcd": EtcdDriver}


def make_driver(spec: DriverSpec, tasks: int) -> Driver:
    """The driver for `spec`; call from the event loop that will use it."""
    if spec.kind == "ringkv" and spec.options.get("sessions") == "connection":
        return RingkvConnectionDriver(spec, tasks)
    try:
        cls = DRIVERS[spec.kind]
    except KeyError:
        raise ValueError(f"no driver for {spec.kind!r}; known: {', '.join(DRIVERS)}") from None
    return cls(spec, tasks)
