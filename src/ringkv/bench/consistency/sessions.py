"""What each measured operation is on each system, from inside one client process.

    sessions = open_sessions("ringkv", addresses, tasks=16)   # on the process's event loop
    applied, version = await sessions[task % len(sessions)].cas(key, version, value)

A session is stateless over its connections: concurrent tasks share it. Every session answers
the same calls; `incr` exists on ringkv only (etcd has no increment: a client builds one from a
Txn loop, which is the CAS row).

| operation | ringkv (redis-py asyncio, RESP2, one client per node) | etcd (aiohttp, v3 JSON gateway, one session per member) |
|---|---|---|
| write | `SET key value` (Dynamo path: W=2 of N=3) | `Put` (`POST /v3/kv/put`) |
| INCR | `INCR key` (consensus: a Paxos round per key) | none |
| version | `RINGKV.GETV key`, its causal context (once per loop, not timed) | `Range` on the key, its `mod_revision` (once per loop, not timed) |
| CAS | `RINGKV.CAS key expected-version new-value`: `[1, new version]` or `[0, current version]` | `Txn`: compare `mod_revision` EQUAL, success `Put`, failure `Range`; the new `mod_revision` is the reply header's revision, the current one the failure Range's |
| linearizable read | `RINGKV.AT SERIAL GET key` | `Range` on the key (etcd's default: linearizable) |

Both CAS answers carry the version the next attempt needs, so a CAS loop is one request per
attempt on both systems, applied or not. No retries in the clients: a consensus command that
fails is counted, never sent again by the library.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Protocol

from ringkv.bench.ycsb.drivers import REQUEST_TIMEOUT_S, DriverSpec, EtcdDriver, EtcdSession

# ringkv answers this (409) when other proposers kept winning a key's rounds: nothing was
# applied, an answer about contention rather than a failure of the system.
CONTENDED_MARK = "was contended for"


class ContendedError(Exception):
    """The system gave up on a command because of contention; nothing was applied."""


class Session(Protocol):
    async def write(self, key: bytes, value: bytes) -> None: ...

    async def read(self, key: bytes) -> int:
        """A linearizable read: 1 if the key has a value, 0 if not."""

    async def version(self, key: bytes) -> Any:
        """The key's current version, as `cas` expects it (also when the key has no value)."""

    async def cas(self, key: bytes, version: Any, value: bytes) -> tuple[bool, Any]:
        """Write `value` if the key's version is still `version`: (applied, the key's version
        after the call: the new one if applied, else the current one)."""

    async def incr(self, key: bytes) -> int: ...


# ---------------------------------------------------------------------- ringkv


class RingkvSession:
    __slots__ = ("r",)

    def __init__(self, r: Any):
        self.r = r

    async def _call(self, *args: Any) -> Any:
        import redis.exceptions

        try:
            return await self.r.execute_command(*args)
        except redis.exceptions.ResponseError as exc:
            if CONTENDED_MARK in str(exc):
                raise ContendedError(str(exc)) from None
            raise

    async def write(self, key: bytes, value: bytes) -> None:
        await self._call("SET", key, value)

    async def read(self, key: bytes) -> int:
        return 0 if await self._call("RINGKV.AT", "SERIAL", "GET", key) is None else 1

    async def version(self, key: bytes) -> bytes:
        context, _siblings = await self._call("RINGKV.GETV", key)
        return context or b""  # empty: "the key has no live value", as RINGKV.CAS reads it

    async def cas(self, key: bytes, version: bytes, value: bytes) -> tuple[bool, bytes]:
        applied, current = await self._call("RINGKV.CAS", key, version, value)
        return applied == 1, current or b""

    async def incr(self, key: bytes) -> int:
        return await self._call("INCR", key)

    async def ping(self) -> None:
        await self._call("PING")


def _ringkv_sessions(addresses: tuple[tuple[str, int], ...], tasks: int) -> tuple[list[RingkvSession], list[Any]]:
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff

    per_node = max(-(-tasks // len(addresses)), 1)
    clients = [
        # Retries off: redis-py would otherwise send a consensus command again after a
        # connection error, and the benchmark would count one operation for two.
        redis.asyncio.Redis(host=host, port=port, protocol=2, socket_timeout=REQUEST_TIMEOUT_S,
                            socket_connect_timeout=5, max_connections=per_node,
                            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0))
        for host, port in addresses
    ]
    return [RingkvSession(c) for c in clients], clients


class RingkvClientSession:
    """The same operations through ringkv's own asyncio client, token-aware (`--ringkv-client
    token-aware`): each request goes to one of its key's replicas, and a consensus command (INCR,
    CAS, a SERIAL read) to the key's proposer, so no node forwards it (docs/client.md)."""

    __slots__ = ("c",)

    def __init__(self, client: Any):
        self.c = client

    @staticmethod
    def _contended(exc: Exception) -> Exception:
        return ContendedError(str(exc)) if CONTENDED_MARK in str(exc) else exc

    async def write(self, key: bytes, value: bytes) -> None:
        await self.c.set(key, value)

    async def read(self, key: bytes) -> int:
        try:
            return 0 if await self.c.get(key, consistency="SERIAL") is None else 1
        except Exception as exc:
            raise self._contended(exc) from None

    async def version(self, key: bytes) -> bytes | None:
        return (await self.c.get_versions(key)).context  # None: no record, as `cas` expects it

    async def cas(self, key: bytes, version: bytes | None, value: bytes) -> tuple[bool, bytes | None]:
        try:
            result = await self.c.cas(key, version, value)
        except Exception as exc:
            raise self._contended(exc) from None
        return result.success, result.version

    async def incr(self, key: bytes) -> int:
        try:
            return await self.c.incr(key)
        except Exception as exc:
            raise self._contended(exc) from None

    async def ping(self) -> None:
        await self.c.ping()


def _ringkv_client_sessions(addresses: tuple[tuple[str, int], ...], tasks: int
                            ) -> tuple[list[RingkvClientSession], list[Any]]:
    from ringkv.client import AsyncClient

    # One client per process: it holds a pool per node it routes to. Retries off, as above.
    host, port = addresses[0]
    client = AsyncClient(host, port, token_aware=True, retries=0, max_connections=max(tasks, 1),
                         timeout_ms=REQUEST_TIMEOUT_S * 1000, connect_timeout_ms=5000,
                         seeds=[f"{h}:{p}" for h, p in addresses[1:]])
    return [RingkvClientSession(client)] * len(addresses), [client]


# ---------------------------------------------------------------------- etcd


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EtcdCasSession(EtcdSession):
    """YCSB's etcd session (its Range is `read`, its Put `write`) with the Txn of a CAS loop.
    etcd's int64 fields travel as JSON strings; a key that does not exist has mod_revision 0,
    and comparing it with 0 succeeds, so a loop may start on a fresh key."""

    __slots__ = ()

    async def write(self, key: bytes, value: bytes) -> None:
        await self.update(key, value)

    async def version(self, key: bytes) -> int:
        kvs = (await self._post("/v3/kv/range", {"key": _b64(key)})).get("kvs") or ()
        return int(kvs[0]["mod_revision"]) if kvs else 0

    async def cas(self, key: bytes, version: int, value: bytes) -> tuple[bool, int]:
        k = _b64(key)
        reply = await self._post("/v3/kv/txn", {
            "compare": [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(version)}],
            "success": [{"request_put": {"key": k, "value": _b64(value)}}],
            "failure": [{"request_range": {"key": k}}],
        })
        if reply.get("succeeded"):  # the gateway leaves false out
            return True, int(reply["header"]["revision"])
        kvs = reply["responses"][0]["response_range"].get("kvs") or ()
        return False, int(kvs[0]["mod_revision"]) if kvs else 0

    async def incr(self, key: bytes) -> int:
        raise NotImplementedError("etcd has no increment")


# ---------------------------------------------------------------------- both


class Sessions:
    """The sessions of one system in one client process: task i uses sessions[i mod n], so
    the tasks spread evenly over the nodes or members."""

    def __init__(self, kind: str, addresses: tuple[tuple[str, int], ...], tasks: int,
                 options: dict[str, Any] | None = None):
        self.kind = kind
        self.token_aware = kind == "ringkv" and bool((options or {}).get("token_aware"))
        if self.token_aware:
            self.sessions, self._clients = _ringkv_client_sessions(addresses, tasks)
            self._etcd = None
        elif kind == "ringkv":
            self.sessions, self._clients = _ringkv_sessions(addresses, tasks)
            self._etcd = None
        elif kind == "etcd":
            self._etcd = EtcdDriver(DriverSpec("etcd", addresses), tasks)  # its aiohttp sessions
            self.sessions = [EtcdCasSession(http) for http in self._etcd.clients]
            self._clients = []
        else:
            raise ValueError(f"no sessions for {kind!r}; known: ringkv, etcd")

    def __getitem__(self, task: int) -> Session:
        return self.sessions[task % len(self.sessions)]

    def __len__(self) -> int:
        return len(self.sessions)

    async def check(self) -> None:
        """One request per node or member, so a system that does not answer fails before
        anything is timed, and the connections exist."""
        for s in self.sessions:
            await s.read(b"consistency-bench-connect-check")
        if self.token_aware:
            # Until the ring map names every node, requests go to the client's node.
            client = self._clients[0]
            for _ in range(200):
                router = client._router
                if router.map is not None and None not in router.map.addresses \
                        and len(router.map.addresses) == len(self.sessions):
                    break
                await asyncio.sleep(0.05)
                await client.get(b"consistency-bench-connect-check")
            else:
                raise RuntimeError(f"the token-aware client has no complete ring map: {client.routing}")

    async def close(self) -> None:
        for c in self._clients:
            await (c.close() if self.token_aware else c.aclose())
        if self._etcd is not None:
            await self._etcd.close()
