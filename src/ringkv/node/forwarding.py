"""Where a key's write command runs, and running it there.

A write runs on a replica of its key, which versions it (its actor names the dot) and
replicates the record at W. A blind overwrite (SET, RINGKV.PUTV) runs on this node when it is
a replica of the key. A command whose result depends on the current value (INCR, APPEND,
SET NX/XX/GET, DEL, EXPIRE, ...) runs on the key's first reachable replica in preference-list
order. There, in a namespace whose `rmw` is "paxos" (the default), it runs as a consensus
round among the key's replicas (node/consensus.py): linearizable, whichever node runs it. In
one whose `rmw` is "fast", that replica reads at R under a per-key lock, applies the command,
and writes at W: such commands on one key are serialized only while every coordinator agrees
which replica is first (docs/consistency.md). The command travels in a typed `Forward`.

`run` is the coordinator's side, `execute` the replica's, `on_forward` the RPC handler.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ringkv.cluster.paxos import majority
from ringkv.errors import (
    CommandError,
    ConnectionLostError,
    InvalidContextError,
    PeerUnavailableError,
    QuorumError,
    QuotaExceededError,
    RingkvError,
    RpcError,
    RpcTimeoutError,
)
from ringkv.node import elements
from ringkv.node.commands import Command, Replace, SerialRead, TypeWrite
from ringkv.node.consensus import Proposer, crossslot_error, register_key
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import Forward, ForwardReply, ForwardVersioned, ForwardVersionedReply
from ringkv.node.placement import Placement
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import storage_key
from ringkv.node.replica_calls import ReplicaCalls, failure_reason
from ringkv.node.write_path import WritePath
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.levels import ConsistencyLevel, Levels, resolve
from ringkv.versioning.dvv import encode_context
from ringkv.versioning.record import decode_record

# A forwarded command reads at R and writes at W on the replica: it may take two replica
# timeouts plus the hop.
FORWARD_TIMEOUTS = 3
# How a replica's refusal of a client's causal context travels in a ForwardReply, so that the
# coordinator raises the same InvalidContextError a local refusal would.
INVALID_CONTEXT_PREFIX = "invalid causal context: "


class RemoteCommandError(CommandError):
    """A command that failed on the replica it was forwarded to, with that replica's message."""


class RemoteQuorumError(QuorumError):
    """A QuorumError raised on the replica a command was forwarded to, passed on verbatim."""

    def __init__(self, message: str):
        RingkvError.__init__(self, message)
        self.needed = 0
        self.answered = 0
        self.failures = {}
        self.pending = ()


class KeyLocks:
    """Per-key mutual exclusion for read-modify-write commands. An entry exists only while a
    key is held, so the table is bounded by the commands in flight."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[bytes, deque[asyncio.Future[None]]] = {}

    async def acquire(self, skey: bytes) -> None:
        waiters = self._held.get(skey)
        if waiters is None:
            self._held[skey] = deque()
            return
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(skey)  # handed the lock, then cancelled: pass it on
            raise

    def release(self, skey: bytes) -> None:
        waiters = self._held[skey]
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        del self._held[skey]

    def __len__(self) -> int:
        return len(self._held)


_NOT_ELEMENTS = object()  # Forwarder._execute_elements: not a command for node/elements.py


class Forwarder:
    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, reads: ReadPath,
                 writes: WritePath, proposer: Proposer, stats: dict[str, int]):
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.reads = reads
        self.writes = writes
        self.proposer = proposer
        self.stats = stats
        self.locks = KeyLocks()

    def clock_of(self, skey: bytes) -> bytes | None:
        """The encoded clock of this replica's record of `skey` (None: no record): what a
        session requires of its next reads after a write ran here (node/session_reads.py)."""
        data = self.store.engine.get(skey)
        return None if data is None else encode_context(decode_record(bytes(data)).clock)

    async def run(self, namespace: bytes, key: bytes, command: Command, levels: Levels,
                  clock_out: list[bytes | None] | None = None) -> Any:
        """Run `command` where it must run: here if this node may, else on the first reachable
        replica of the key. With `clock_out` (a session's write), the key's clock on the
        replica that ran it, just after, is appended to it."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        pref = self.placement.replicas_of(skey)
        me = self.node_id
        n = len(pref)
        r = resolve(levels.r, n, field="r")
        w = resolve(levels.w, n, field="w")
        w_level = levels.w if type(levels.w) is ConsistencyLevel and levels.w.per_dc else None
        if me in pref and not command.reads_current:
            result = await self.execute(namespace, key, command, r, w, levels.strict, w_level)
            if clock_out is not None:
                clock_out.append(self.clock_of(skey))
            return result
        failures: dict[str, str] = {}
        # The first replica the failure detector believes up (the list in order if none is).
        # Across datacenters, this node's come first, so that a write does not cross a WAN
        # link twice, except where every coordinator must pick the same replica (rmw = fast).
        if self.placement.multi_dc and (not command.reads_current
                                        or self.placement.namespaces.of_stored(namespace).rmw == "paxos"):
            pref = self.placement.local_first(pref)
        order = [node for node in pref if self.calls.is_up(node)] or list(pref)
        for node in pref:
            if node not in order:
                failures[node] = "down (failure detector)"
        body = None
        for node in order:
            if node == me:
                result = await self.execute(namespace, key, command, r, w, levels.strict, w_level)
                if clock_out is not None:
                    clock_out.append(self.clock_of(skey))
                return result
            if body is None:
                body = Forward(namespace, key, command, r, w, levels.strict, w_level.value if w_level else "")
                if clock_out is not None:
                    body = ForwardVersioned(body)
            timeout = self.calls.timeout_ms * FORWARD_TIMEOUTS
            try:
                reply = await self.calls.call(node, body, timeout)
            except ConnectionLostError:
                # Sent, then the connection dropped: the replica may have run it (a consensus
                # round it began may be completed later), so running it elsewhere could apply
                # it twice, and "nothing was applied" could be false.
                raise CommandError(
                    f"forwarded to replica {node}, whose connection was lost before it answered: "
                    "the write may or may not have been applied", status=504) from None
            except PeerUnavailableError as exc:
                failures[node] = failure_reason(exc)
                continue  # it never ran there: the next replica may run it
            except RpcTimeoutError:
                raise CommandError(
                    f"forwarded to replica {node}, which did not answer within {timeout:g} ms: "
                    "the write may or may not have been applied", status=504) from None
            except RpcError as exc:
                raise CommandError(f"forwarded to replica {node}: {exc}", status=502) from None
            if clock_out is not None:
                clock_out.append(reply.clock)
                reply = reply.reply
            if reply.error:
                if reply.quorum:
                    raise RemoteQuorumError(reply.error)
                if reply.error.startswith(INVALID_CONTEXT_PREFIX):
                    raise InvalidContextError(reply.error[len(INVALID_CONTEXT_PREFIX):])
                quota = QuotaExceededError.from_message(reply.error) if reply.status == 429 else None
                if quota is not None:
                    raise quota
                raise RemoteCommandError(reply.error, reply.kind, reply.status)
            return command.decode_result(reply.result)
        self.stats["quorum_failures"] += 1
        raise QuorumError(1, 0, failures)

    async def execute(self, namespace: bytes, key: bytes, command: Command, r: int, w: int, strict: bool,
                      w_level: ConsistencyLevel | None = None) -> Any:
        """Run `command` on this node, a replica of the key: (for a read-modify-write) read at
        R under the key's lock, apply it locally, replicate the result at W (at `w_level` per
        datacenter when it is a datacenter level; consensus rounds count W of all)."""
        store = self.store
        engine = store.engine
        skey = storage_key(namespace, key)
        pref = self.placement.replicas_of(skey)
        if type(command) is TypeWrite and elements.wants(command.name):
            result = await self._execute_elements(namespace, command, pref, r, w)
            if result is not _NOT_ELEMENTS:
                return result
        rmw = command.reads_current
        paxos = rmw and self.placement.namespaces.of_stored(namespace).rmw == "paxos"
        if command.group_keys() is not None and not paxos:
            if isinstance(command, TypeWrite):
                return await self._execute_group_fast(namespace, command, r, w, strict)
            raise CommandError("MSETNX of several keys runs only on the consensus path (rmw = \"paxos\")")
        # On the consensus path the lock is the register's: the keys of one hash tag share one.
        lock = register_key(skey) if paxos else skey
        if rmw:
            await self.locks.acquire(lock)
        try:
            if paxos:
                # The consensus path; the lock only keeps this node's own rounds on one key from
                # contending with each other (each then takes the one-round-trip way).
                if isinstance(command, SerialRead):
                    if command.keys:
                        for k in command.keys:
                            store.check_key(k, namespace)
                        return await self.proposer.read_many(
                            namespace, [storage_key(namespace, k) for k in command.keys], majority(len(pref)))
                    return await self.proposer.read(namespace, key, majority(len(pref)))
                return await self.proposer.run(namespace, key, command, w)
            if isinstance(command, SerialRead):
                return await self.reads.read(skey, r, pref)
            if rmw:
                merged = await self.reads.read(skey, r, pref)
                if merged is not None:
                    stored = engine.get(skey)
                    if stored is None or bytes(stored) != merged:
                        store.apply_record(skey, merged)
            before = engine.get(skey)
            try:
                result, _, lsn = store.execute(namespace, key, command)
            except InvalidContextError:
                # The client's context names versions this replica lacks. It may have read
                # them from a replica ahead of this one (a write this one missed): merge what
                # the other replicas hold, then judge the context again (docs/security.md).
                if rmw or not await self._catch_up(skey, pref, r):
                    raise
                result, _, lsn = store.execute(namespace, key, command)
            if store.has_pending_writes:
                store.commit_writes()  # in the log before any other replica is asked to hold it
            await store.durable(lsn)
            after = engine.get(skey)
            if after is not None and after is not before and after != before:
                needs = self.placement.dc_needs(w_level, pref) if w_level is not None else ()
                await self.writes.replicate(skey, bytes(after), pref, w, strict, needs=needs)
            return result
        finally:
            if rmw:
                self.locks.release(lock)

    async def _execute_elements(self, namespace: bytes, command: TypeWrite, pref: tuple[str, ...], r: int, w: int) -> Any:
        """A set command, or a keyspace write naming a set stored per element, run here on
        records that converge (node/elements.py): under its keys' locks, read at R (at least
        N - W + 1: the emptiness rule), written at W on home replicas. _NOT_ELEMENTS when a
        keyspace write names no such set (it runs as before)."""
        spec = TYPE_COMMANDS[command.name]
        args = list(command.args)
        keys = spec.keys(args)
        elements.check_one_slot(namespace, command.name, keys)
        skeys = sorted({storage_key(namespace, k) for k in keys})
        paxos = self.placement.namespaces.of_stored(namespace).rmw == "paxos"
        backend = elements.ClusterBackend(self.store, self.placement, self.reads, self.writes,
                                          max(r, len(pref) - w + 1), w, self.proposer if paxos else None)
        for skey in skeys:
            await self.locks.acquire(skey)
        try:
            if command.name not in elements.ELEMENT_COMMANDS and not elements.restores_elements(command.name, args):
                now = self.store.clock.now_ms()
                held = [elements.holds_elements(await backend.record(skey), now) for skey in skeys]
                if not any(held):
                    return _NOT_ELEMENTS
            return await elements.run(backend, namespace, command.name, args, self.store.clock.now_ms())
        finally:
            for skey in skeys:
                self.locks.release(skey)

    async def _execute_group_fast(self, namespace: bytes, command: TypeWrite, r: int, w: int, strict: bool) -> Any:
        """A data-type command of several keys of one hash tag in a namespace with rmw = "fast":
        under every key's lock (taken in key order), read each at R, decide on what they hold,
        write the keys it changes here, then replicate each at W. Atomic on this replica; as
        every fast-path command, two coordinators that disagree on the first replica can
        interleave (docs/consistency.md)."""
        store = self.store
        keys = list(dict.fromkeys(command.group_keys() or ()))
        skeys = [storage_key(namespace, k) for k in keys]
        register = register_key(skeys[0])
        for key, skey in zip(keys, skeys, strict=True):
            store.check_key(key, namespace)
            if register_key(skey) != register:
                raise crossslot_error(keys[0], key, command.name)
        pref = self.placement.replicas_of(skeys[0])
        locked = sorted(set(skeys))
        for skey in locked:
            await self.locks.acquire(skey)
        try:
            for skey in skeys:
                merged = await self.reads.read(skey, r, pref)
                stored = store.engine.get(skey)
                if merged is not None and (stored is None or bytes(stored) != merged):
                    store.apply_record(skey, merged)
            effects, result = command.apply_many({k: store.winner(s) for k, s in zip(keys, skeys, strict=True)},
                                                 store.clock.now_ms())
            for effect in effects.values():
                store.check_value(effect.value)
            lsn = 0
            for key, effect in effects.items():
                lsn = store.execute(namespace, key, Replace(effect.value, effect.expire_at_ms))[2] or lsn
            if store.has_pending_writes:
                store.commit_writes()
            await store.durable(lsn)
            await asyncio.gather(*(self.writes.replicate(skey, bytes(store.engine.get(skey)), pref, w, strict)
                                   for key, skey in zip(keys, skeys, strict=True) if key in effects))
            return result
        finally:
            for skey in locked:
                self.locks.release(skey)

    async def _catch_up(self, skey: bytes, pref: tuple[str, ...], r: int) -> bool:
        """Merge into this replica what the key's replicas store: every one the failure
        detector holds up, or failing that R of them; False when fewer than R answered."""
        up = sum(1 for node in pref if node == self.node_id or self.calls.is_up(node))
        for level in dict.fromkeys((max(r, up), r)):
            try:
                merged = await self.reads.read(skey, level, pref)
                break
            except QuorumError:
                continue
        else:
            return False
        if merged is None:
            return False
        stored = self.store.engine.get(skey)
        if stored is None or bytes(stored) != merged:
            self.store.apply_record(skey, merged)
        return True

    async def on_forward(self, body: Forward) -> ForwardReply:
        """The replica's side of `run`."""
        self.stats["forwarded"] += 1
        n = len(self.placement.replicas_of(storage_key(body.namespace, body.key)))
        if not (1 <= body.r <= n and 1 <= body.w <= n):
            return ForwardReply(error=f"forwarded levels r={body.r}, w={body.w} outside 1..{n}")
        w_level = None
        if body.w_level:
            try:
                w_level = ConsistencyLevel(body.w_level)
            except ValueError:
                return ForwardReply(error=f"forwarded write level {body.w_level[:32]!r} is not a level")
        try:
            result = await self.execute(body.namespace, body.key, body.command, body.r, body.w, body.strict, w_level)
        except QuorumError as exc:
            return ForwardReply(error=str(exc), kind="ERR", status=503, quorum=True)
        except CommandError as exc:
            return ForwardReply(error=str(exc), kind=exc.kind, status=exc.status)
        except InvalidContextError as exc:
            return ForwardReply(error=INVALID_CONTEXT_PREFIX + str(exc), status=400)
        except RingkvError as exc:
            return ForwardReply(error=str(exc), status=400)
        return ForwardReply(result=result)

    async def on_forward_versioned(self, body: ForwardVersioned) -> ForwardVersionedReply:
        """`on_forward` for a session's write: the reply carries the key's clock here after."""
        reply = await self.on_forward(body.forward)
        if reply.error:
            return ForwardVersionedReply(reply)
        return ForwardVersionedReply(reply, self.clock_of(storage_key(body.forward.namespace, body.forward.key)))
