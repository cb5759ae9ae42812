"""Reads in a session: at the asked level, and never older than what the session saw.

A session's token (service/session.py) requires, per key it wrote or read, a clock that the
record a read returns must descend. `SessionReads.read` first reads as any read at its level
does (`ReadPath.read`: R answers, read repair), but asks every home replica whatever the node's
`read_fanout` (the `Settler` needs every replica's answer). When the answer descends the
requirement, that is the answer: the common case costs what the level costs with
`read_fanout = "all"`, plus one clock comparison. When it does not (the replicas that answered
have not received the session's write yet, or the session read a newer copy elsewhere), the
coordinator searches, in rounds until `session_wait_ms` has passed:

1. every home replica of the key (the local one without a hop), and
2. the hints kept for the key's home replicas: this node's own, and those of the key's
   stand-ins (the nodes a sloppy write would have chosen for them), by `HintGet`, which reads
   a hint without delivering it: a write a stand-in took is readable at once,

merging every answer, and stops as soon as the merge descends the requirement. The merge is
the answer; home replicas that answered with less get it back (read repair), so the next
reads find it where they look first. Between rounds it waits SESSION_RETRY_INTERVAL_MS, for
a paused replica to resume, a partition to heal, hints and repair to land. When the time is
up, `SessionError` (HTTP 503) names the key, what each node answered, and how long it looked.

A key the token has no entry for is read at the asked level, or at QUORUM when the token is
degraded (it had to drop entries nobody is known to hold: service/session.py). Every answer
updates the token (monotonic reads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ringkv.errors import QuorumError
from ringkv.node.handoff import HintStore
from ringkv.node.messages import MAX_HINT_GET_TARGETS, HintGet, ReplicaGet
from ringkv.node.read_path import ReadPath
from ringkv.node.replica_calls import outcome
from ringkv.service.session import SessionError, SessionToken
from ringkv.versioning import dvv
from ringkv.versioning import record as rec

DEFAULT_SESSION_WAIT_MS = 1000
# Pause between two search rounds: short beside a replica timeout, long enough not to spin.
SESSION_RETRY_INTERVAL_MS = 50


def _show(key: bytes) -> str:
    text = key[:64].decode("utf-8", "replace")
    return repr(text + ("..." if len(key) > 64 else ""))


class Settler:
    """Marks a session's entry for a key settled once every home replica is known to hold the
    version it read or wrote (service/session.py: a settled entry leaves the token first, and
    without degrading it). Every replica's answer often comes after the client's: the
    read or write path calls this object then, and `answered(clock)` gives the version once
    the request has observed it in the token; whichever comes second marks the entry."""

    __slots__ = ("clock", "heard", "skey", "token")

    def __init__(self, token: SessionToken, skey: bytes):
        self.token = token
        self.skey = skey
        self.clock: Mapping[bytes, int] | None = None
        self.heard = False

    def __call__(self) -> None:  # every home replica holds it
        self.heard = True
        if self.clock is not None:
            self.token.settle(self.skey, self.clock)

    def answered(self, clock: Mapping[bytes, int]) -> None:
        self.clock = clock
        if self.heard:
            self.token.settle(self.skey, clock)


class SessionReads:
    def __init__(self, reads: ReadPath, hints: HintStore | None, stats: dict[str, int], *,
                 wait_ms: int = DEFAULT_SESSION_WAIT_MS):
        self.reads = reads
        self.placement = reads.placement
        self.calls = reads.calls
        self.store = reads.store
        self.node_id = reads.node_id
        self.hints = hints
        self.stats = stats
        self.wait_ms = wait_ms

    async def read(self, key: bytes, skey: bytes, r: int, pref: tuple[str, ...],
                   token: SessionToken) -> rec.Record | None:
        """The key's record as a read at R gives it, at least as new as `token` requires; the
        token then requires what it returns. SessionError when no replica or hint that could
        be reached within `wait_ms` has it."""
        required = token.required(skey)
        settler = Settler(token, skey)
        if required is None:
            if token.degraded:
                r = max(r, len(pref) // 2 + 1)
            data = await self.reads.read(skey, r, pref, settler, fanout="all")
            record = None if data is None else rec.decode_record(data)
            if record is not None:
                token.observe(skey, record.clock)
                settler.answered(record.clock)
            return record
        failure: str = ""
        try:
            data = await self.reads.read(skey, r, pref, settler, fanout="all")
        except QuorumError as exc:
            data, failure = None, str(exc)
        else:
            record = None if data is None else rec.decode_record(data)
            if record is not None and dvv.descends(record.clock, required):
                token.observe(skey, record.clock)
                settler.answered(record.clock)
                return record
        self.stats["session_searches"] += 1
        record, settled = await self._search(key, skey, pref, required, failure)
        token.observe(skey, record.clock, settled)
        return record

    async def _search(self, key: bytes, skey: bytes, pref: tuple[str, ...], required: Mapping[bytes, int],
                      failure: str) -> tuple[rec.Record, bool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_ms / 1000
        merge = self.placement.merger_of(skey)
        me = self.node_id
        targets = list(pref[:MAX_HINT_GET_TARGETS])
        rounds = 0
        seen: dict[str, str] = {}
        while True:
            rounds += 1
            merged: bytes | None = None
            answers: dict[str, bytes | None] = {}
            futures: dict[asyncio.Future, tuple[str, bool]] = {}
            for node in pref:
                if node == me:
                    data = self.store.engine.get(skey)
                    answers[me] = None if data is None else bytes(data)
                    merged = merge(merged, answers[me])
                    seen[me] = "has no record" if data is None else "holds an older version"
                else:
                    futures[self.calls.send(node, ReplicaGet(skey))] = (node, False)
            if self.hints is not None:
                merged = merge(merged, self.hints.read(skey, targets))
            stand_ins = [node for node, _ in self.placement.fallbacks_for(skey, self.calls.is_up)(
                frozenset(pref))]
            for node in stand_ins:
                if node != me:
                    futures[self.calls.send(node, HintGet(skey, targets))] = (node, True)
            pending = set(futures)
            found = merged is not None and dvv.descends(rec.decode_record(merged).clock, required)
            while pending and not found:
                done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()),
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for fut in done:
                    node, is_hint = futures[fut]
                    ok, reply = outcome(fut)
                    if not ok:
                        seen[node] = reply
                        continue
                    if not is_hint:
                        answers[node] = reply.record
                    if reply.record is not None:
                        merged = merge(merged, reply.record)
                        seen[node] = "holds an older version" if not is_hint else "holds no newer hint"
                    else:
                        seen[node] = "has no record" if not is_hint else "holds no hint"
                found = merged is not None and dvv.descends(rec.decode_record(merged).clock, required)
            for fut in pending:
                fut.cancel()
            if found:
                record = rec.decode_record(merged)
                stale = [node for node in pref if node in answers and answers[node] != merged]
                self.reads.repair(skey, merged, stale)
                settled = all(
                    answers.get(node) is not None and dvv.descends(rec.decode_record(answers[node]).clock, required)
                    for node in pref)
                return record, settled
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, SESSION_RETRY_INTERVAL_MS / 1000))
        self.stats["session_failures"] += 1
        asked = "; ".join(f"{node}: {why}" for node, why in sorted(seen.items())) or "no peer answered"
        if failure:
            asked += f"; the read at its level: {failure}"
        raise SessionError(
            f"no reachable replica of key {_show(key)} has the version this session wrote or read "
            f"(looked for {self.wait_ms} ms, session_wait_ms, in {rounds} rounds over replicas "
            f"{', '.join(pref)} and their stand-ins' hints: {asked}); retry, or start a new session "
            "to accept older data", status=503)
