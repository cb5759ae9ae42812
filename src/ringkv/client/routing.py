"""Token-aware routing: send each key's request to one of the key's replicas.

Any node of a cluster coordinates any request, so a client that talks to one node is always
right; but when that node holds no replica of the key, it must forward the request (a write)
or ask the replicas over the network (a read), one more hop than needed. A token-aware client
(`Client(..., token_aware=True)`) asks the cluster where each partition's replicas are
(`RINGKV.RING`, one JSON document per namespace) and sends a keyed request straight to one of
the key's replicas, which then coordinates it: Cassandra's and Riak's drivers do the same.

- **Which replica:** one of the key's replicas that this client does not hold down, chosen at
  random (so a hot key's requests spread over its replicas), among those in `datacenter` when
  the client names one and one is there, else among all of them. Except for what a node runs
  on the key's proposer, its first reachable replica (`runs_on_proposer`: the consensus path's
  commands, reads at SERIAL, and the same commands in a namespace with `rmw = "fast"`): any
  other node forwards those there, so they go to the first replica in the key's preference
  order that the client does not hold down (in `datacenter` first, as a node of that
  datacenter would pick), which saves that hop (docs/client.md, "Token-aware routing").
- **The map** is fetched on the first keyed request and again every `ring_refresh_ms`
  (default 10 s; after a second while some node's address is not known yet), by one request
  at a time; a stale map is never wrong, only slower: every node
  coordinates every key. A map that cannot be fetched (an older node, a user without the
  permission) leaves the client on its node until the next refresh.
- **A node that cannot be reached** (its connect fails) is held down for `DOWN_HOLD_MS` and the
  request goes on through the client's node (and its seeds), as in the plain mode: the request
  was not sent, so this is safe for any request.
- **Not routed:** requests without a key (SCAN, DBSIZE, INFO, PING), and every request in a
  session: a session's state lives on one connection (docs/client.md, "Sessions").

The advertised address of each node is the one it tells gossip (`resp_address`: its plain RESP
port when it serves one, else its TLS port); a node that advertises a wildcard address
(0.0.0.0 or ::) is reached at the host this client was given.

Pure bookkeeping: the clients do the IO (sync.py, aio.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ringkv.cluster.ring import MAX_MEMBERS, MAX_PARTITIONS, check_partitions, partition_of, token
from ringkv.errors import CommandError, ConfigError
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes.base import first_key

DEFAULT_RING_REFRESH_MS = 10_000
MAX_RING_REFRESH_MS = 3_600_000
INCOMPLETE_REFRESH_MS = 1_000  # the next fetch of a map that lacks a node's address
DOWN_HOLD_MS = 2_000  # how long a node whose connect failed gets no routed request
# Requests with no key to route by (their args[1] is not a key).
KEYLESS = frozenset({"SCAN", "DBSIZE", "INFO", "PING", "RINGKV.RING"})
_WILDCARDS = ("0.0.0.0", "::", "[::]", "")

# The string and keyspace commands whose result depends on the key's current value: a node
# runs them on the key's proposer (docs/consistency.md's table of the consensus path). Every
# data-type command that writes (HSET, SADD, LPUSH, RENAME, ...) runs there too.
PROPOSED = frozenset({
    "INCR", "INCRBY", "DECR", "DECRBY", "INCRBYFLOAT", "APPEND", "SETNX", "GETSET", "GETDEL",
    "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST", "DEL", "UNLINK", "DELEX", "MSETNX",
    "RINGKV.CAS", "RINGKV.CAD",
}) | frozenset(name for name, spec in TYPE_COMMANDS.items() if spec.write)
# SET runs there with any of these options (a plain SET or one with only an expiry does not);
# GETEX with any of its expiry options (without one it is a read).
SET_READING_OPTIONS = frozenset({b"NX", b"XX", b"GET", b"KEEPTTL", b"IFEQ", b"IFNE", b"IFDEQ", b"IFDNE"})
GETEX_WRITING_OPTIONS = frozenset({b"EX", b"PX", b"EXAT", b"PXAT", b"PERSIST"})


def routing_key(command: str, args: Sequence[Any]) -> bytes | None:
    """The key a request is routed by: its first key (LMPOP's and SINTERCARD's come after a
    count), None when it names none the client can find (the node then reports what is wrong)."""
    spec = TYPE_COMMANDS.get(command)
    if spec is not None and spec.keys is not first_key:
        try:
            keys = spec.keys([a if isinstance(a, bytes) else str(a).encode() for a in args[1:]])
        except (CommandError, IndexError, ValueError):
            return None
        return keys[0] if keys else None
    return args[1] if len(args) >= 2 and isinstance(args[1], bytes) else None


def runs_on_proposer(command: str, args: Sequence[Any], serial: bool = False) -> bool:
    """Whether a node runs the keyed request `args` (its command named `command`) on the key's
    proposer, its first reachable replica, forwarding it there from any other node. `serial`:
    the request is a read at SERIAL."""
    if serial or command in PROPOSED:
        return True
    options = SET_READING_OPTIONS if command == "SET" else GETEX_WRITING_OPTIONS if command == "GETEX" else None
    if options is None:
        return False
    start = 3 if command == "SET" else 2  # SET key value [options], GETEX key [options]
    return any(isinstance(a, bytes) and a.upper() in options for a in args[start:])

Address = tuple[str, int]


class RingMap:
    """A namespace's partitions and their replicas, as RINGKV.RING answered them."""

    __slots__ = ("addresses", "datacenters", "namespace", "partitions", "replicas")

    def __init__(self, doc: Any, fallback_host: str):
        """`doc`: the parsed JSON; ValueError naming what is wrong with it."""
        if not isinstance(doc, dict):
            raise ValueError("the ring map is not a JSON object")
        partitions = doc.get("partitions")
        if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be an integer 1..{MAX_PARTITIONS}, got {partitions!r}")
        check_partitions(partitions)
        nodes, replicas = doc.get("nodes"), doc.get("replicas")
        if not isinstance(nodes, list) or len(nodes) > MAX_MEMBERS:
            raise ValueError(f"nodes must be a list of at most {MAX_MEMBERS}")
        if not isinstance(replicas, list) or len(replicas) != partitions:
            raise ValueError(f"replicas must list each of the {partitions} partitions")
        self.namespace = str(doc.get("namespace", ""))
        self.partitions = partitions
        # Per node: its (host, port), None when it advertises none; its datacenter.
        self.addresses: list[Address | None] = []
        self.datacenters: list[str] = []
        for node in nodes:
            if not isinstance(node, dict):
                raise ValueError("each node must be a JSON object")
            self.addresses.append(_address(node.get("resp"), fallback_host))
            self.datacenters.append(str(node.get("datacenter") or ""))
        count = len(nodes)
        self.replicas: list[tuple[int, ...]] = []
        for entry in replicas:
            if not isinstance(entry, list) or not all(type(i) is int and 0 <= i < count for i in entry):
                raise ValueError("each partition's replicas must be indexes into nodes")
            self.replicas.append(tuple(entry))

    def replicas_of(self, namespace: bytes, key: bytes) -> tuple[int, ...]:
        """The indexes (into `addresses`) of the key's replicas, in preference order."""
        return self.replicas[partition_of(token(namespace, key), self.partitions)]


def _address(text: Any, fallback_host: str) -> Address | None:
    if not isinstance(text, str) or ":" not in text:
        return None
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host in _WILDCARDS:
        host = fallback_host
    return host.strip("[]"), int(port)


class Router:
    """Where a client sends each keyed request: the ring map, when it is next due, and the
    nodes held down. One per client (its views share it); every method takes the time."""

    def __init__(self, namespace: str | None, host: str, datacenter: str | None = None,
                 refresh_ms: float = DEFAULT_RING_REFRESH_MS, rng: random.Random | None = None):
        self.namespace = b"" if namespace in (None, "default") else namespace.encode()
        self.host = host
        self.datacenter = datacenter or ""
        self.refresh_ms = refresh_ms
        self.rng = rng or random.Random()
        self.map: RingMap | None = None
        self.due_ms = 0.0  # when the map is next fetched
        self.fetching = False  # a request is fetching it
        self.last_error: str | None = None  # why the last fetch failed (None: it did not)
        self.down_until_ms: dict[Address, float] = {}
        self.routed = 0  # requests sent to a replica of their key
        self.unrouted = 0  # keyed requests that went to the client's node (no map, all held down)

    def should_fetch(self, now_ms: float) -> bool:
        """Whether the caller should fetch the map now; if so it must call `fetched` or
        `fetch_failed` after."""
        if self.fetching or now_ms < self.due_ms:
            return False
        self.fetching = True
        return True

    def fetched(self, doc: Any, now_ms: float) -> None:
        self.fetching = False
        self.due_ms = now_ms + self.refresh_ms
        try:
            self.map = RingMap(doc, self.host)
            self.last_error = None
        except ValueError as exc:
            self.fetch_failed(f"the ring map was malformed: {exc}", now_ms)
            return
        if None in self.map.addresses:  # a node's address not gossiped yet (it just started)
            self.due_ms = now_ms + min(self.refresh_ms, INCOMPLETE_REFRESH_MS)

    def fetch_failed(self, why: str, now_ms: float) -> None:
        """The map could not be fetched: the client stays on its node until the next try."""
        self.fetching = False
        self.due_ms = now_ms + self.refresh_ms
        self.last_error = why

    def target(self, command: str, args: Sequence[Any], now_ms: float, serial: bool = False) -> Address | None:
        """A replica to send the request `args` to, None for the client's own node. `serial`:
        the request is a read at SERIAL (it runs on the key's proposer)."""
        ring = self.map
        key = None if ring is None or command in KEYLESS else routing_key(command, args)
        if key is None:
            return None
        down = self.down_until_ms
        # In preference order: a request for the proposer goes to the first of them.
        up = [(i, a) for i in ring.replicas_of(self.namespace, key)
              if (a := ring.addresses[i]) is not None and down.get(a, 0.0) <= now_ms]
        if self.datacenter:
            up = [(i, a) for i, a in up if ring.datacenters[i] == self.datacenter] or up
        if not up:
            self.unrouted += 1
            return None
        self.routed += 1
        if len(up) == 1 or runs_on_proposer(command, args, serial):
            return up[0][1]
        return self.rng.choice(up)[1]

    def held_down(self, address: Address, now_ms: float) -> None:
        """A connect to `address` failed: no routed request goes there for DOWN_HOLD_MS."""
        if len(self.down_until_ms) > MAX_MEMBERS:
            self.down_until_ms = {a: t for a, t in self.down_until_ms.items() if t > now_ms}
        self.down_until_ms[address] = now_ms + DOWN_HOLD_MS

    def stats(self) -> dict[str, Any]:
        """What the router did: requests routed and not, the map's size, the last fetch error."""
        return {"routed": self.routed, "unrouted": self.unrouted,
                "nodes": 0 if self.map is None else len(self.map.addresses),
                "partitions": 0 if self.map is None else self.map.partitions, "last_error": self.last_error}


def check_routing(token_aware: Any, datacenter: Any, ring_refresh_ms: Any) -> None:
    """The routing options, checked (ConfigError naming the one that is wrong)."""
    if not isinstance(token_aware, bool):
        raise ConfigError("token_aware", f"must be True or False, got {token_aware!r}")
    if datacenter is not None and not (isinstance(datacenter, str) and 0 < len(datacenter) <= 64):
        raise ConfigError("datacenter", f"must be a datacenter name of 1..64 characters, got {datacenter!r}")
    if isinstance(ring_refresh_ms, bool) or not isinstance(ring_refresh_ms, int | float) \
            or not 100 <= ring_refresh_ms <= MAX_RING_REFRESH_MS:
        raise ConfigError("ring_refresh_ms", f"must be a number of milliseconds, 100..{MAX_RING_REFRESH_MS}, "
                                             f"got {ring_refresh_ms!r}")
