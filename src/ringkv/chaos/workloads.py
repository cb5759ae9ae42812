"""Client processes of a chaos run: each a thread with one connection to one node, doing one
workload's operations back to back and recording every one in the history.

    register      per-key registers written with causal contexts (the Dynamo path):
                  RINGKV.GETV, then RINGKV.PUTV of a new unique value with the context that
                  read returned (a blind PUTV, no context, when the read failed), or now and
                  then RINGKV.DELV with it (a delete of exactly what the read saw); some
                  operations are reads only
    set           a set per key: RINGKV.GETV, union of the siblings' elements plus one new
                  unique element, RINGKV.PUTV with the read's context; now and then a
                  RINGKV.DELV of the whole set with the read's context
    counter       INCR and INCRBY 3 (the consensus path: per-key Paxos, docs/consistency.md)
                  and reads at SERIAL (`RINGKV.AT SERIAL GET`); on a third of the keys
                  (`hctr:<i>`), HINCRBY of one field of a hash instead (a round of the
                  field's own record) and `RINGKV.AT SERIAL HGET`
    cas-register  a register changed only by consensus: read the value and its version
                  (RINGKV.GETV, half the time at SERIAL), then RINGKV.CAS key version new-value,
                  or now and then RINGKV.CAD key version; checked for linearizability
    set-crdt      Redis sets, hashes and sorted sets (`sc:<i>`, `hc:<i>`, `zc:<i>`): SADD and
                  SREM of one element of a small pool, HSET of one field (a new unique value)
                  and HDEL, ZADD of one member (a new unique score) and ZREM, and reads
                  (SMEMBERS, HGETALL, ZRANGEBYSCORE or ZREVRANGEBYSCORE of every score: a
                  walk of the score index), half of them at SERIAL; checked per element,
                  field and member
                  (typed_checker.py; a member's score is checked as a field's value)
    list-push     Redis lists (`lp:<i>`): RPUSH of a new unique value, LPOP, and reads
                  (LRANGE 0 -1); checked for lost, duplicated, invented and reordered pushes

Every connection runs `RINGKV.CONSISTENCY QUORUM STRICT` (even-numbered workers) or
`... SLOPPY` (odd ones), or another level the run asks for: at QUORUM, R + W > N, and the
strict ones never use stand-ins, so their reads must see their own acknowledged writes
(checker.py). A client moves to a random node now and then (`hop_p`). A client whose operation ended
"unknown" continues as a new process id (process + number of workers), as in Jepsen: the old
operation may still be running somewhere and is concurrent with everything after it. A
client that cannot reach its node moves on to the next one.

Choices (key, operation, pacing) come from a random generator seeded by the run's seed and
the worker's index, so a replay makes the same choices; what the cluster answers does not
replay, and neither does the interleaving.

An error that says "nothing was applied" (the consensus path's answer when too few replicas
answered or other proposers kept winning, docs/consistency.md) is taken at its word: the
operation is recorded as failed, not unknown. Were it ever applied all the same, the counter
bounds or the linearizability check would show it. Any other error on a write is unknown.

Sessions (level `SESSION`, docs/consistency.md "Sessions"): each client has one session for
the whole run, `s<index>`, and carries its token itself, as a session-aware client does: every
request is one pipeline of the command and `RINGKV.SESSION TOKEN`, and a new connection (after
a hop, a lost connection, a node that is down) first resumes the session with
`RINGKV.SESSION <token>`, then runs `RINGKV.CONSISTENCY SESSION STRICT|SLOPPY`. A reply whose
token did not come back is treated as a lost reply (the client does not know the session's
state after it). Session clients move between nodes more often (SESSION_HOP_P): moving is
what a session must survive. Operations record their session and the causal context they
answered (history.Op), for checker.check_sessions. A session read refused with
`session: ...` (no reachable replica has what the session saw) is a failed read, counted.

Token-aware clients (`ringkv chaos --token-aware`): each request goes to one of its key's
replicas among the client's nodes, from the ring map (`RINGKV.RING`, fetched again every
ten seconds, client/routing.py), instead of the client's current node; a replica whose
connect fails is held down two seconds. Moving to another node is a new connection, which
resumes the client's session first (level SESSION).

A planted bug, to test the checkers rather than the store (`lie_every`): the worker records
every n-th write as acknowledged without sending it, with a made-up answer (the INCR's value
one more increment on, a new CAS version). A run with it must fail. Another, for sessions
(`stale_every`): every n-th session read is recorded with the answer of the session's first
read of that key instead of its own, which is what a session read that ignored the token
would answer; the session checks must catch it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.backoff
import redis.exceptions
import redis.retry

from ringkv.chaos.history import FAIL, OK, UNKNOWN, History, Op
from ringkv.client.base import _NO_HANDSHAKE
from ringkv.client.routing import Router

WORKLOADS = ("register", "set", "counter", "cas-register")  # the default set
TYPED_WORKLOADS = ("set-crdt", "list-push")  # Redis data types (service/datatypes), opt-in
ALL_WORKLOADS = WORKLOADS + TYPED_WORKLOADS
READ_FRACTION = 0.2  # of register, set and cas-register operations, reads only
REGISTER_DELETE_P = 0.1  # of register writes, deletes
SET_DELETE_P = 0.05  # of set adds, deletes of the whole set
COUNTER_READ_FRACTION = 0.2  # of counter operations, SERIAL reads
INCRBY_P = 0.4  # of increments, INCRBY rather than INCR
# One size only: increments of unknown outcome pile up (a full disk on a key's proposer makes
# hundreds), and the linearizability search must find which of them took effect. With sizes
# 1 and 3 that is a two-way choice at each step; with sizes 1 to 5 it is subset-sum, and a
# 5-node run's counters exhausted a 10-minute search (docs/reliability.md, run c).
INCRBY_DELTA = 3
CAS_SERIAL_READ_P = 0.5  # of the reads before a CAS, at SERIAL (else at the connection's level)
CAD_P = 0.1  # of the changes of a live cas-register, RINGKV.CAD
SET_KEY_EPOCH_S = 10.0  # a set key takes adds for this long, then the workers move to new keys
HOP_P = 0.02  # chance, per operation, that a client moves to a random node
NOTHING_APPLIED = "nothing was applied"  # the consensus path's definite refusal
REFUSED_BACKOFF_S = 0.1  # a client's pause after an error answer
SESSION_LEVEL = "SESSION"
SESSION_HOP_P = 0.2  # chance, per operation, that a session client moves to a random node
SESSION_ERROR = "session: "  # how a session read that found no replica with its version errs
# set-crdt and list-push (Redis data types on the key's consensus path)
TYPED_READ_FRACTION = 0.1  # of their operations, reads only
TYPED_SERIAL_READ_P = 0.5  # of those reads, at SERIAL (else at the connection's level)
CRDT_HASH_P = 0.3  # of set-crdt operations, on a hash rather than a set
CRDT_ZSET_P = 0.2  # of the rest, on a sorted set
SET_POOL_ELEMENTS = 12  # elements e0.. a set-crdt set key draws from: each is added and removed often
HASH_POOL_FIELDS = 6  # fields f0.. a set-crdt hash key draws from
SADD_P = 0.6  # of set writes, SADD (else SREM); HSET vs HDEL likewise
# Of list writes, LPOP (else RPUSH): as many pops as pushes keeps the lists short (some pops
# find them empty), which keeps the queue model's linearizability search cheap.
LPOP_P = 0.5
SET_KEY_PREFIX, HASH_KEY_PREFIX, LIST_KEY_PREFIX, ZSET_KEY_PREFIX = "sc:", "hc:", "lp:", "zc:"
# Counters kept in a hash field (HINCRBY): the counter workload's keys with this prefix.
HASH_COUNTER_PREFIX, HASH_COUNTER_FIELD = "hctr:", "total"
HASH_COUNTER_P = 1 / 3  # of counter operations, on a hash counter


def counter_read_args(key: str) -> tuple:
    """The command that reads a counter key's value (a string, or a hash counter's field)."""
    if key.startswith(HASH_COUNTER_PREFIX):
        return ("HGET", key, HASH_COUNTER_FIELD)
    return ("GET", key)


def typed_kind(key: str) -> str | None:
    """The Redis type a chaos key holds: "set", "hash", "list", "zset", or None (a string key
    read with RINGKV.GETV)."""
    for prefix, kind in ((SET_KEY_PREFIX, "set"), (HASH_KEY_PREFIX, "hash"), (LIST_KEY_PREFIX, "list"),
                         (HASH_COUNTER_PREFIX, "hash"), (ZSET_KEY_PREFIX, "zset")):
        if key.startswith(prefix):
            return kind
    return None


def typed_read_args(key: str) -> tuple:
    """The command that reads the whole of a typed chaos key (typed_kind not None). A sorted
    set is read by a walk of the score index: from the lowest score on even keys, from the
    highest on odd ones."""
    kind = typed_kind(key)
    if kind == "zset":
        if int(key.rsplit(":", 1)[1]) % 2:
            return ("ZREVRANGEBYSCORE", key, "+inf", "-inf", "WITHSCORES")
        return ("ZRANGEBYSCORE", key, "-inf", "+inf", "WITHSCORES")
    return {"set": ("SMEMBERS", key), "hash": ("HGETALL", key), "list": ("LRANGE", key, 0, -1)}[kind]


def typed_result(key: str, reply: Any) -> list[str]:
    """A typed read's reply as the history records it: a set's members sorted, a hash's
    fields as `field=value` sorted by field (the workload's fields and values hold no `=`), a
    sorted set's members as `member=score` likewise, a list's items in order."""
    kind = typed_kind(key)
    if kind in ("hash", "zset"):
        pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
        return sorted(f"{_text(f)}={_text(v)}" for f, v in pairs)
    items = [_text(v) for v in (reply or ())]
    return items if kind == "list" else sorted(items)


class NotSent(Exception):
    """The request was never sent: no connection to the node."""


class Indeterminate(Exception):
    """The request was sent and no reply came back (timeout, connection lost)."""


class Refused(Exception):
    """The node answered with an error."""


@dataclass(frozen=True)
class Endpoint:
    node_id: str
    port: int
    host: str = "127.0.0.1"


class ClientSession:
    """A client's ringkv session (level SESSION): its name and its token as last answered,
    carried from connection to connection."""

    def __init__(self, name: str):
        self.name = name
        self.token: bytes | None = None


class NodeSession:
    """One RESP connection to one node at QUORUM, STRICT or SLOPPY; reconnected on demand,
    with the consistency command sent again on each new connection. With a `carrier` (level
    SESSION), each new connection first resumes the carrier's session, and every command is
    pipelined with RINGKV.SESSION TOKEN, the answer kept in the carrier."""

    def __init__(self, endpoint: Endpoint, strict: bool, timeout_s: float, level: str = "QUORUM",
                 carrier: ClientSession | None = None):
        self.endpoint = endpoint
        self.strict = strict
        self.timeout_s = timeout_s
        self.level = level
        self.carrier = carrier
        self._conn: redis.Connection | None = None

    def _connect(self) -> redis.Connection:
        conn = redis.Connection(
            host=self.endpoint.host, port=self.endpoint.port, socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s, protocol=2, health_check_interval=0,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), **_NO_HANDSHAKE)
        try:
            conn.connect()
            if self.carrier is not None and self.carrier.token is not None:
                conn.send_command("RINGKV.SESSION", self.carrier.token)
                conn.read_response()
            conn.send_command("RINGKV.CONSISTENCY", self.level, "STRICT" if self.strict else "SLOPPY")
            conn.read_response()
        except (redis.exceptions.RedisError, OSError) as exc:
            conn.disconnect()
            raise NotSent(f"{self.endpoint.node_id}: {exc}") from None
        return conn

    def call(self, *args: Any) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        if self.carrier is not None:
            return self._call_in_session(conn, args)
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.exceptions.ResponseError as exc:
            raise Refused(str(exc)) from None
        except (redis.exceptions.RedisError, OSError) as exc:
            self.close()
            raise Indeterminate(f"{self.endpoint.node_id}: {type(exc).__name__}: {exc}") from None

    def _call_in_session(self, conn: redis.Connection, args: tuple) -> Any:
        """The command and RINGKV.SESSION TOKEN in one pipeline; the token goes to the carrier.
        Without the token's reply the command's counts as lost (Indeterminate)."""
        refused: redis.exceptions.ResponseError | None = None
        try:
            conn.send_packed_command(conn.pack_commands([args, ("RINGKV.SESSION", "TOKEN")]))
            try:
                reply = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                reply, refused = None, exc
            token = conn.read_response()
        except (redis.exceptions.RedisError, OSError) as exc:
            self.close()
            raise Indeterminate(f"{self.endpoint.node_id}: {type(exc).__name__}: {exc}") from None
        if token is not None:
            self.carrier.token = token
        if refused is not None:
            raise Refused(str(refused))
        return reply

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None


def _text(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


def _versions(reply: Any) -> tuple[bytes | None, list[str]]:
    context, siblings = reply
    return context, [_text(s[0]) for s in siblings]


def version_text(context: bytes | None) -> str | None:
    """A version as the history records it: the hex of the causal context (canonical: the
    same clock always encodes to the same bytes, versioning/dvv.py)."""
    return context.hex() if context else None


def set_elements(values: Sequence[str]) -> set[str]:
    """A set value is its elements separated by spaces; siblings merge by union."""
    return {e for v in values for e in v.split()}


def set_value(observed: Sequence[str] | None, element: str) -> str:
    """The value a set add wrote: the elements of the siblings it read, plus its own."""
    return " ".join(sorted(set_elements(observed or ()) | {element}))


class Worker(threading.Thread):
    """One client: `index` numbers it among `workers`, it runs `workload` on `keys` keys.
    `lie_every` > 0 plants a bug (the module's docstring)."""

    def __init__(self, index: int, workers: int, workload: str, endpoints: Sequence[Endpoint],
                 history: History, seed: int, stop: threading.Event, *, keys: int = 4,
                 think_ms: float = 10.0, timeout_s: float = 2.0, level: str = "QUORUM",
                 hop_p: float | None = None, lie_every: int = 0, stale_every: int = 0,
                 token_aware: bool = False):
        super().__init__(name=f"chaos-{workload}-{index}", daemon=True)
        if workload not in ALL_WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(ALL_WORKLOADS)}")
        self.index = index
        self.workers = workers
        self.workload = workload
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = random.Random(f"ringkv-chaos-worker:{seed}:{index}")
        self.stop = stop
        self.keys = keys
        self.think_ms = think_ms
        self.timeout_s = timeout_s
        self.level = level
        self.carrier = ClientSession(f"s{index}") if level == SESSION_LEVEL else None
        self.hop_p = hop_p if hop_p is not None else SESSION_HOP_P if self.carrier else HOP_P
        self.lie_every = lie_every
        self.stale_every = stale_every
        self.session_reads = 0  # reads in the session, for stale_every
        self.first_reads: dict[str, tuple[bytes | None, list[str]]] = {}  # stale_every: one per key read
        self.strict = index % 2 == 0
        self.process = index
        self.seq = 0
        self.writes = 0  # write operations invoked, for lie_every
        self.counters: dict[str, int] = {}  # the last value seen per counter, for a made-up answer
        self._node = index % len(self.endpoints)
        self.session = NodeSession(self.endpoints[self._node], self.strict, timeout_s, level,
                                   self.carrier)
        # Token-aware (client/routing.py): each request to one of its key's replicas among
        # this client's endpoints, from the ring map, fetched again every RING_REFRESH_S.
        self.router = (Router(None, "", rng=random.Random(f"ringkv-chaos-route:{seed}:{index}"))
                       if token_aware else None)
        self._by_address = {(e.host, e.port): e for e in self.endpoints}

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        step = {"register": self._register, "set": self._set, "counter": self._counter,
                "cas-register": self._cas_register, "set-crdt": self._set_crdt,
                "list-push": self._list_push}[self.workload]
        try:
            while not self.stop.is_set():
                if self.rng.random() < self.hop_p:
                    self._hop()
                step()
                if self.think_ms:
                    self.stop.wait(self.rng.uniform(0, 2 * self.think_ms) / 1000)
        finally:
            self.session.close()

    # ------------------------------------------------------------------ one request

    def request(self, f: str, key: str, value: Any, args: tuple, observed: list[str] | None = None,
            write: bool = True, serial: bool = False) -> tuple[Op, bool, Any]:
        """Send one request and record it: (the op, whether a reply came, the reply). The op
        is completed here unless a reply came: the caller completes it with its result."""
        if self.router is not None:
            self._route(key)
        op = self.history.invoke(self.process, self.workload, f, key, value,
                                 self.session.endpoint.node_id, self.strict, observed, serial,
                                 self.carrier.name if self.carrier else None)
        if write and self.lie_every:
            self.writes += 1
            if self.writes % self.lie_every == 0:
                return op, True, self._made_up_reply(op, args)
        try:
            reply = self.session.call(*args)
        except NotSent as exc:
            self.history.complete(op, FAIL, error=f"not sent: {exc}")
            if self.router is not None:
                endpoint = self.session.endpoint
                self.router.held_down((endpoint.host, endpoint.port), time.monotonic() * 1000)
            self._next_node()
            return op, False, None
        except Indeterminate as exc:
            self.history.complete(op, UNKNOWN, error=str(exc))
            self.process += self.workers
            self._next_node()
            return op, False, None
        except Refused as exc:
            # A write the node refused may still be stored on the replicas that took it:
            # "not acknowledged" is not "not written" (docs/cluster.md); unless the node
            # says that nothing was applied (the consensus path, docs/consistency.md).
            if write and NOTHING_APPLIED not in str(exc):
                self.history.complete(op, UNKNOWN, error=str(exc))
                self.process += self.workers
            else:
                self.history.complete(op, FAIL, error=str(exc))
            # A node that errs at once (a full disk, no quorum) would otherwise take hundreds
            # of requests a second, each an unknown outcome the checkers must carry to the
            # end of the history; a client backs off, as a real one would.
            self.stop.wait(REFUSED_BACKOFF_S)
            return op, False, None
        if self.carrier is not None and args[0] in ("RINGKV.PUTV", "RINGKV.DELV"):
            op.context = version_text(reply)  # the clock the write left: the session requires it
        return op, True, reply

    def _route(self, key: str) -> None:
        """Token-aware: move to one of `key`'s replicas (a new connection, which resumes the
        client's session if it has one), fetching the ring map first when it is due."""
        router = self.router
        now_ms = time.monotonic() * 1000
        if router.should_fetch(now_ms):
            try:
                doc = json.loads(self.session.call("RINGKV.RING"))
            except (NotSent, Indeterminate, Refused, ValueError) as exc:
                router.fetch_failed(str(exc), now_ms)
            else:
                # Each node at the address this client uses for it; none for the others.
                mine = {e.node_id: f"{e.host}:{e.port}" for e in self.endpoints}
                for node in doc.get("nodes", ()) if isinstance(doc, dict) else ():
                    if isinstance(node, dict):
                        node["resp"] = mine.get(node.get("node_id"))
                router.fetched(doc, now_ms)
        target = router.target("GET", ("GET", key.encode()), now_ms)
        endpoint = self._by_address.get(target) if target is not None else None
        if endpoint is not None and endpoint != self.session.endpoint:
            self.session.close()
            self._node = self.endpoints.index(endpoint)
            self.session = NodeSession(endpoint, self.strict, self.timeout_s, self.level, self.carrier)

    def _made_up_reply(self, op: Op, args: tuple) -> Any:
        """The planted bug's answer to a write it never sent: what the command would answer."""
        command = args[0].upper()
        if command in ("INCR", "INCRBY", "HINCRBY"):
            return self.counters.get(op.key, 0) + int(op.value)
        if command == "RINGKV.CAS":
            return [1, f"planted {op.index}".encode()]
        if command == "RINGKV.CAD":
            return 1
        if command in ("SADD", "SREM", "HSET", "HDEL", "RPUSH", "ZADD", "ZREM"):
            return 1  # added (removed, a new field, the list's length): what a lie would say
        if command == "LPOP":
            return None
        return b"planted"  # RINGKV.PUTV and DELV answer a context

    def _next_node(self) -> None:
        self.session.close()
        self._node = (self._node + 1) % len(self.endpoints)
        self.session = NodeSession(self.endpoints[self._node], self.strict, self.timeout_s,
                                   self.level, self.carrier)
        # Do not hammer a node that is down: the next attempt goes elsewhere a little later.
        self.stop.wait(0.05)

    def _hop(self) -> None:
        """Move to a random node: requests are coordinated everywhere, not by one node per
        client (a client stuck on a node it can no longer use moves by _next_node)."""
        self.session.close()
        self._node = self.rng.randrange(len(self.endpoints))
        self.session = NodeSession(self.endpoints[self._node], self.strict, self.timeout_s,
                                   self.level, self.carrier)

    def _unique(self, prefix: str = "w") -> str:
        self.seq += 1
        return f"{prefix}{self.index}.{self.seq}"

    def _read(self, key: str, serial: bool = False) -> tuple[bool, bytes | None, list[str]]:
        args = ("RINGKV.AT", "SERIAL", "RINGKV.GETV", key) if serial else ("RINGKV.GETV", key)
        op, ok, reply = self.request("read", key, None, args, write=False, serial=serial)
        if not ok:
            return False, None, []
        context, values = _versions(reply)
        if self.workload == "cas-register":
            op.version = version_text(context) if values else None
        recorded = values
        if self.carrier is not None:
            op.context = version_text(context)
            self.session_reads += 1
            first = self.first_reads.setdefault(key, (context, values)) if self.stale_every else None
            if first is not None and self.session_reads % self.stale_every == 0:
                # The planted bug: record what the session's first read of the key answered.
                op.context, recorded = version_text(first[0]), first[1]
        self.history.complete(op, OK, result=recorded)
        return True, context, values

    def _delete_seen(self, key: str, context: bytes, values: list[str]) -> None:
        """RINGKV.DELV with a read's context: a tombstone replacing exactly what it saw."""
        op, ok, _ = self.request("delete", key, self._unique("d"), ("RINGKV.DELV", key, "CONTEXT", context),
                             values)
        if ok:
            self.history.complete(op, OK)

    # ------------------------------------------------------------------ workloads

    def _register(self) -> None:
        key = f"reg:{self.rng.randrange(self.keys)}"
        read_only = self.rng.random() < READ_FRACTION
        ok, context, values = self._read(key)
        if read_only or (not ok and self.rng.random() < 0.5):
            return
        if ok and context is not None and values and self.rng.random() < REGISTER_DELETE_P:
            self._delete_seen(key, context, values)
            return
        value = self._unique()
        args: tuple = ("RINGKV.PUTV", key, value)
        observed = None
        if ok and context is not None:
            args += ("CONTEXT", context)
            observed = values
        elif ok:
            observed = []  # the key had no record: nothing to replace
        op, done, _ = self.request("write", key, value, args, observed)
        if done:
            self.history.complete(op, OK)

    def _set(self) -> None:
        epoch = int(self.history.now() // SET_KEY_EPOCH_S)
        key = f"set:{epoch}:{self.rng.randrange(self.keys)}"
        read_only = self.rng.random() < READ_FRACTION
        ok, context, values = self._read(key)
        if read_only or (not ok and self.rng.random() < 0.5):
            return
        if ok and context is not None and values and self.rng.random() < SET_DELETE_P:
            self._delete_seen(key, context, values)
            return
        element = self._unique()
        args: tuple = ("RINGKV.PUTV", key, set_value(values, element))
        if ok and context is not None:
            args += ("CONTEXT", context)
        # `observed` keeps the siblings the value was built from: the value written is
        # their elements plus `element` (set_value).
        op, done, _ = self.request("add", key, element, args, values if ok else None)
        if done:
            self.history.complete(op, OK)

    def _counter(self) -> None:
        hashed = self.rng.random() < HASH_COUNTER_P
        key = f"{HASH_COUNTER_PREFIX if hashed else 'ctr:'}{self.rng.randrange(max(1, self.keys // 2))}"
        if self.rng.random() < COUNTER_READ_FRACTION:
            op, ok, reply = self.request("read", key, None, ("RINGKV.AT", "SERIAL", *counter_read_args(key)),
                                     write=False, serial=True)
            if ok:
                values = [] if reply is None else [_text(reply)]
                if values:
                    self.counters[key] = int(values[0])
                self.history.complete(op, OK, result=values)
            return
        delta = INCRBY_DELTA if self.rng.random() < INCRBY_P else 1
        if hashed:
            args: tuple = ("HINCRBY", key, HASH_COUNTER_FIELD, delta)
        else:
            args = ("INCR", key) if delta == 1 else ("INCRBY", key, delta)
        op, ok, reply = self.request("incr", key, delta, args)
        if ok:
            self.counters[key] = int(reply)
            self.history.complete(op, OK, result=int(reply))

    def _cas_register(self) -> None:
        key = f"cas:{self.rng.randrange(self.keys)}"
        serial = self.rng.random() < CAS_SERIAL_READ_P
        read_only = self.rng.random() < READ_FRACTION
        ok, context, values = self._read(key, serial)
        if read_only or not ok:
            return
        # A version is that of a live value: CAS with an empty one means "no live value"
        # (a key never written or deleted: its tombstone's context is not a version).
        version = context if values else None
        if version is not None and self.rng.random() < CAD_P:
            op, done, reply = self.request("cad", key, version_text(version), ("RINGKV.CAD", key, version))
            if done:
                self.history.complete(op, OK, result=bool(reply))
            return
        new = self._unique("c")
        op, done, reply = self.request("cas", key, [version_text(version), new],
                                   ("RINGKV.CAS", key, version or b"", new))
        if done:
            applied, current = reply
            self.history.complete(op, OK, result=[bool(applied), version_text(current)])

    def _typed_read(self, key: str) -> None:
        """A whole-key read of a set-crdt or list-push key, at SERIAL or at the connection's
        level; its result as typed_result records it."""
        serial = self.rng.random() < TYPED_SERIAL_READ_P
        args = typed_read_args(key)
        op, ok, reply = self.request("read", key, None, ("RINGKV.AT", "SERIAL", *args) if serial else args,
                                     write=False, serial=serial)
        if ok:
            self.history.complete(op, OK, result=typed_result(key, reply))

    def _set_crdt(self) -> None:
        on_hash = self.rng.random() < CRDT_HASH_P
        on_zset = not on_hash and self.rng.random() < CRDT_ZSET_P
        if on_hash:
            key = f"{HASH_KEY_PREFIX}{self.rng.randrange(max(1, self.keys // 2))}"
        elif on_zset:
            key = f"{ZSET_KEY_PREFIX}{self.rng.randrange(max(1, self.keys // 2))}"
        else:
            key = f"{SET_KEY_PREFIX}{self.rng.randrange(self.keys)}"
        if self.rng.random() < TYPED_READ_FRACTION:
            self._typed_read(key)
            return
        add = self.rng.random() < SADD_P
        if on_hash:
            field = f"f{self.rng.randrange(HASH_POOL_FIELDS)}"
            if add:
                value = self._unique("h")
                f, recorded, args = "hset", [field, value], ("HSET", key, field, value)
            else:
                f, recorded, args = "hdel", field, ("HDEL", key, field)
        elif on_zset:
            member = f"f{self.rng.randrange(HASH_POOL_FIELDS)}"
            if add:
                self.seq += 1
                score = str(self.index * 10_000_000 + self.seq)  # unique, and read back as written
                f, recorded, args = "zadd", [member, score], ("ZADD", key, score, member)
            else:
                f, recorded, args = "zrem", member, ("ZREM", key, member)
        else:
            element = f"e{self.rng.randrange(SET_POOL_ELEMENTS)}"
            f, recorded = ("sadd", element) if add else ("srem", element)
            args = (f.upper(), key, element)
        op, ok, reply = self.request(f, key, recorded, args)
        if ok:
            # SADD, SREM, HDEL, ZREM: how many elements, fields or members it added or
            # removed (0 or 1); HSET, ZADD: how many fields or members were new.
            self.history.complete(op, OK, result=int(reply))

    def _list_push(self) -> None:
        key = f"{LIST_KEY_PREFIX}{self.rng.randrange(self.keys)}"
        if self.rng.random() < TYPED_READ_FRACTION:
            self._typed_read(key)
            return
        if self.rng.random() < LPOP_P:
            op, ok, reply = self.request("pop", key, None, ("LPOP", key))
            if ok:
                self.history.complete(op, OK, result=None if reply is None else _text(reply))
            return
        value = self._unique("v")
        op, ok, reply = self.request("push", key, value, ("RPUSH", key, value))
        if ok:
            self.history.complete(op, OK, result=int(reply))  # the list's length after it


def wait_all(workers: Sequence[Worker], timeout_s: float) -> list[str]:
    """Join every worker; the names of those still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    return [w.name for w in workers if w.is_alive()]
