"""Client processes of a chaos run: each a thread with one connection to one node, doing one
workload's operations back to back and recording every one in the history.

    register  per-key registers written with causal contexts: RINGKV.GETV, then RINGKV.PUTV
              of a new unique value with the context that read returned (a blind PUTV, no
              context, when the read failed); some operations are reads only
    set       a grow-only set per key: RINGKV.GETV, union of the siblings' elements plus one
              new unique element, RINGKV.PUTV with the read's context
    counter   INCR (serialized per key on its first reachable replica, docs/cluster.md)

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
"""

from __future__ import annotations

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

WORKLOADS = ("register", "set", "counter")
READ_FRACTION = 0.2  # of register and set operations, reads only
SET_KEY_EPOCH_S = 10.0
HOP_P = 0.02  # chance, per operation, that a client moves to a random node  # a set key takes adds for this long, then the workers move to new keys


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


class NodeSession:
    """One RESP connection to one node at QUORUM, STRICT or SLOPPY; reconnected on demand,
    with the consistency command sent again on each new connection."""

    def __init__(self, endpoint: Endpoint, strict: bool, timeout_s: float, level: str = "QUORUM"):
        self.endpoint = endpoint
        self.strict = strict
        self.timeout_s = timeout_s
        self.level = level
        self._conn: redis.Connection | None = None

    def _connect(self) -> redis.Connection:
        conn = redis.Connection(
            host=self.endpoint.host, port=self.endpoint.port, socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s, protocol=2, health_check_interval=0,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), **_NO_HANDSHAKE)
        try:
            conn.connect()
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
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.exceptions.ResponseError as exc:
            raise Refused(str(exc)) from None
        except (redis.exceptions.RedisError, OSError) as exc:
            self.close()
            raise Indeterminate(f"{self.endpoint.node_id}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None


def _text(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


def _versions(reply: Any) -> tuple[bytes | None, list[str]]:
    context, siblings = reply
    return context, [_text(s[0]) for s in siblings]


def set_elements(values: Sequence[str]) -> set[str]:
    """A set value is its elements separated by spaces; siblings merge by union."""
    return {e for v in values for e in v.split()}


class Worker(threading.Thread):
    """One client: `index` numbers it among `workers`, it runs `workload` on `keys` keys."""

    def __init__(self, index: int, workers: int, workload: str, endpoints: Sequence[Endpoint],
                 history: History, seed: int, stop: threading.Event, *, keys: int = 4,
                 think_ms: float = 10.0, timeout_s: float = 2.0, level: str = "QUORUM",
                 hop_p: float = HOP_P):
        super().__init__(name=f"chaos-{workload}-{index}", daemon=True)
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
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
        self.hop_p = hop_p
        self.strict = index % 2 == 0
        self.process = index
        self.seq = 0
        self._node = index % len(self.endpoints)
        self.session = NodeSession(self.endpoints[self._node], self.strict, timeout_s, level)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        step = {"register": self._register, "set": self._set, "counter": self._counter}[self.workload]
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

    def _do(self, f: str, key: str, value: Any, args: tuple, observed: list[str] | None = None,
            write: bool = True) -> tuple[Op, Any]:
        op = self.history.invoke(self.process, self.workload, f, key, value,
                                 self.session.endpoint.node_id, self.strict, observed)
        try:
            reply = self.session.call(*args)
        except NotSent as exc:
            self.history.complete(op, FAIL, error=f"not sent: {exc}")
            self._next_node()
            return op, None
        except Indeterminate as exc:
            self.history.complete(op, UNKNOWN, error=str(exc))
            self.process += self.workers
            self._next_node()
            return op, None
        except Refused as exc:
            # A write the node refused may still be stored on the replicas that took it:
            # "not acknowledged" is not "not written" (docs/cluster.md).
            if write:
                self.history.complete(op, UNKNOWN, error=str(exc))
                self.process += self.workers
            else:
                self.history.complete(op, FAIL, error=str(exc))
            return op, None
        return op, reply

    def _next_node(self) -> None:
        self.session.close()
        self._node = (self._node + 1) % len(self.endpoints)
        self.session = NodeSession(self.endpoints[self._node], self.strict, self.timeout_s,
                                   self.level)
        # Do not hammer a node that is down: the next attempt goes elsewhere a little later.
        self.stop.wait(0.05)

    def _hop(self) -> None:
        """Move to a random node: requests are coordinated everywhere, not by one node per
        client (a client stuck on a node it can no longer use moves by _next_node)."""
        self.session.close()
        self._node = self.rng.randrange(len(self.endpoints))
        self.session = NodeSession(self.endpoints[self._node], self.strict, self.timeout_s,
                                   self.level)

    def _unique(self) -> str:
        self.seq += 1
        return f"w{self.index}.{self.seq}"

    def _read(self, key: str) -> tuple[bool, bytes | None, list[str]]:
        op, reply = self._do("read", key, None, ("RINGKV.GETV", key), write=False)
        if reply is None:
            return False, None, []
        context, values = _versions(reply)
        self.history.complete(op, OK, result=values)
        return True, context, values

    # ------------------------------------------------------------------ workloads

    def _register(self) -> None:
        key = f"reg:{self.rng.randrange(self.keys)}"
        read_only = self.rng.random() < READ_FRACTION
        ok, context, values = self._read(key)
        if read_only or (not ok and self.rng.random() < 0.5):
            return
        value = self._unique()
        args: tuple = ("RINGKV.PUTV", key, value)
        observed = None
        if ok and context is not None:
            args += ("CONTEXT", context)
            observed = values
        elif ok:
            observed = []  # the key had no record: nothing to replace
        op, reply = self._do("write", key, value, args, observed)
        if reply is not None:
            self.history.complete(op, OK)

    def _set(self) -> None:
        epoch = int(self.history.now() // SET_KEY_EPOCH_S)
        key = f"set:{epoch}:{self.rng.randrange(self.keys)}"
        read_only = self.rng.random() < READ_FRACTION
        ok, context, values = self._read(key)
        if read_only or (not ok and self.rng.random() < 0.5):
            return
        element = self._unique()
        merged = set_elements(values) | {element}
        args: tuple = ("RINGKV.PUTV", key, " ".join(sorted(merged)))
        if ok and context is not None:
            args += ("CONTEXT", context)
        op, reply = self._do("add", key, element, args)
        if reply is not None:
            self.history.complete(op, OK)

    def _counter(self) -> None:
        key = f"ctr:{self.rng.randrange(max(1, self.keys // 2))}"
        op, reply = self._do("incr", key, 1, ("INCR", key))
        if reply is not None:
            self.history.complete(op, OK, result=int(reply))


def wait_all(workers: Sequence[Worker], timeout_s: float) -> list[str]:
    """Join every worker; the names of those still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    return [w.name for w in workers if w.is_alive()]
