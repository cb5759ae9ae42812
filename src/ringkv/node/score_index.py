"""Each replica's index of its sorted sets' members by score (docs/formats/elements.md, "The
score index").

A sorted set is stored one record per member (node/elements.py); the member's record holds
its score. Commands that walk the score order (ZRANGE, ZREVRANGE, ZRANGEBYSCORE, ZCOUNT,
ZRANK, ZPOPMIN, ZPOPMAX, ZREMRANGEBY...) would have to read and sort every member; this index
lets them read the members in order, either way, and stop when they have what they need. Each
score a member holds has two entries, with empty values:

    ascending:  elements prefix of the set (node/replica.elements_range) | 00 | score u64 | member
    descending: elements prefix of the set | 01 | ~score u64 | ~(member escaped, terminated)

where `score u64` is the score's IEEE 754 bits made to sort as the numbers do
(`ordered_score`), `~` inverts every bit, and the member is escaped (00 -> 00 FF) and ends
with 00 00 before it is inverted, so that inverted members sort in reverse (`descending_key`).
A set's ascending entries are one contiguous run ordered by (score, member bytes), Redis's
order, and its descending ones another in the reverse order: the engine scans forward only.

The index is this replica's own, derived from its member records and nothing else:
- It lives in an engine of its own (`<data_dir>/zindex`), so replication, read repair, hinted
  handoff, anti-entropy, streaming, snapshots and backups never see it.
- LocalStore keeps it in step: every path that stores a record (a command's own writes, a
  peer's merged in, a range dropped, active expiry) calls `update` with the record before and
  after, which writes an entry for each score a live sibling holds and deletes the entries
  of scores no sibling holds any more, GRACE_S later: a walk that read the entries before
  the member's new one was written still meets the old one in a later page, and finds the
  member by its record (node/elements._load_walk); at most MAX_DEFERRED_ENTRIES wait.
- It is not made durable and not trusted across a restart: `open` empties it and LocalStore's
  start-up scan (which reads every record anyway, to count keys) fills it again, so a crash
  between a record's write and its entry's cannot leave them apart.
- An entry says "this member may have this score": a reader checks each one against the
  member's record and the set's meta record (`elements.visible`) before using it, because
  entries outlive what makes a member absent without a write of its record (a DEL of the set
  clears members by its meta record alone; a sibling's births may be cleared). Entries of
  records the engine collected without a write (compaction dropping old tombstones) are
  removed by the reader that finds them stale (`discard`).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections import deque
from collections.abc import Iterator

from ringkv.errors import CorruptionError
from ringkv.service.datatypes.base import KIND_ZSET
from ringkv.service.datatypes.convergent import decode_element, decode_score
from ringkv.service.elements import ELEMENT_MARK
from ringkv.storage import Engine, Options, WriteBatch
from ringkv.versioning.record import Record

INDEX_DIR = "zindex"
LOAD_BATCH_ENTRIES = 1000  # entries per WriteBatch while the start-up scan fills the index
GRACE_S = 5.0  # how long an entry its record no longer backs stays, for walks under way
MAX_DEFERRED_ENTRIES = 100_000  # entries waiting out GRACE_S; beyond it the oldest go at once
_DOUBLE = struct.Struct(">d")
_U64 = struct.Struct(">Q")
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
SCORE_BYTES = 8
ASCENDING, DESCENDING = b"\x00", b"\x01"
_FLIP = bytes(range(255, -1, -1))  # bytes.translate table: every bit inverted


def ordered_score(score: float) -> bytes:
    """8 bytes that sort as the scores do: a non-negative score's bits with the sign bit set,
    a negative one's bits inverted (so that -inf < -1 < -0 < 0 < 1 < inf)."""
    bits = _U64.unpack(_DOUBLE.pack(score))[0]
    return _U64.pack(bits ^ _ALL if bits & _SIGN else bits | _SIGN)


def score_of(data: bytes) -> float:
    """The score `ordered_score` wrote."""
    bits = _U64.unpack(data)[0]
    return _DOUBLE.unpack(_U64.pack(bits ^ _SIGN if bits & _SIGN else bits ^ _ALL))[0]


def split_member_key(eskey: bytes) -> tuple[bytes, bytes]:
    """(the set's elements prefix, the member) of a member's storage key."""
    n = 9 + eskey[8]
    end = n + 5 + int.from_bytes(eskey[n + 3:n + 5], "big")
    return eskey[:end], eskey[end:]


def entry_keys(prefix: bytes, score: float, member: bytes) -> tuple[bytes, bytes]:
    """The ascending and the descending entry of `member` at `score` in the set whose elements
    prefix is `prefix`."""
    ordered = ordered_score(score)
    escaped = member.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
    return (prefix + ASCENDING + ordered + member,
            prefix + DESCENDING + (ordered + escaped).translate(_FLIP))


def parse_entry(key: bytes) -> tuple[bytes, float, bytes]:
    """(index key, score, member) of an entry of either order (this replica's or a peer's)."""
    n = 9 + key[8]
    at = n + 6 + int.from_bytes(key[n + 3:n + 5], "big")
    direction = key[at - 1:at]
    if len(key) < at + SCORE_BYTES or key[n:n + 3] != ELEMENT_MARK or direction not in (ASCENDING, DESCENDING):
        raise CorruptionError(f"score index entry of {len(key)} bytes is malformed")
    if direction == ASCENDING:
        return key, score_of(key[at:at + SCORE_BYTES]), key[at + SCORE_BYTES:]
    raw = key[at:].translate(_FLIP)
    if not raw.endswith(b"\x00\x00"):
        raise CorruptionError("score index entry's member is not terminated")
    return key, score_of(raw[:SCORE_BYTES]), raw[SCORE_BYTES:-2].replace(b"\x00\xff", b"\x00")


def walk_range(prefix: bytes, low: float, high: float, reverse: bool) -> tuple[bytes, bytes]:
    """[start, end) of the entries of the members with scores in [low, high], in the order a
    walk takes (ascending, or descending when `reverse`)."""
    if reverse:
        first, last, direction = ordered_score(high).translate(_FLIP), ordered_score(low).translate(_FLIP), DESCENDING
    else:
        first, last, direction = ordered_score(low), ordered_score(high), ASCENDING
    after = _U64.unpack(last)[0] + 1
    end = prefix + direction + _U64.pack(after) if after <= _ALL else prefix + bytes((direction[0] + 1,))
    return prefix + direction + first, end


def record_scores(record: Record | None) -> set[float]:
    """The scores the live siblings of a member's record hold (none for another kind's
    element, a tombstone or no record)."""
    scores: set[float] = set()
    if record is not None:
        for s in record.siblings:
            if s.value is not None:
                kind, _, value = decode_element(s.value)
                if kind == KIND_ZSET:
                    scores.add(decode_score(value))
    return scores


class ScoreIndex:
    """The index of one replica's store (see the module docstring)."""

    def __init__(self, engine: Engine, now_s=time.monotonic):
        self.engine = engine
        self.stale_dropped = 0  # entries readers found stale and removed
        self._now_s = now_s
        self._doomed: dict[bytes, float] = {}  # entry -> when it goes (`update`)
        self._order: deque[tuple[float, bytes]] = deque()

    @classmethod
    def open(cls, data_dir: str, encryption_keys=None) -> ScoreIndex:
        """An empty index under `data_dir` (whatever an earlier run left there is removed:
        LocalStore.load fills it from the records). Its log is never synced: it is rebuilt
        at every start. Encrypted as the records are (its keys hold members)."""
        path = os.path.join(data_dir, INDEX_DIR)
        shutil.rmtree(path, ignore_errors=True)
        return cls(Engine.open(path, Options(sync="never", memtable_bytes=4 * 1024 * 1024, background="thread",
                                             block_cache_bytes=8 * 1024 * 1024, encryption_keys=encryption_keys)))

    def close(self) -> None:
        self.engine.close()

    def update(self, eskey: bytes, old: Record | None, new: Record | None) -> None:
        """Keep the entries of the member stored under `eskey` in step with its record."""
        if self._order:
            self._collect(self._now_s())
        before = record_scores(old)
        after = record_scores(new)
        if before == after:
            return
        prefix, member = split_member_key(eskey)
        now = self._now_s()
        doomed = self._doomed
        for score in before - after:
            for key in entry_keys(prefix, score, member):
                doomed[key] = now + GRACE_S
                self._order.append((now + GRACE_S, key))
        for score in after - before:
            for key in entry_keys(prefix, score, member):
                doomed.pop(key, None)  # a score the member had again before its entry went
                self.engine.put(key, b"", sync=False)
        if len(self._order) > MAX_DEFERRED_ENTRIES:
            self._collect(now)

    def _collect(self, now: float) -> None:
        """Delete the entries whose grace is over (or the oldest, beyond the bound)."""
        order, doomed = self._order, self._doomed
        while order and (order[0][0] <= now or len(order) > MAX_DEFERRED_ENTRIES):
            due, key = order.popleft()
            if doomed.get(key) == due:
                del doomed[key]
                self.engine.delete(key, sync=False)

    def loader(self) -> _Loader:
        """Fills the index from the records, one at a time (LocalStore.load's scan)."""
        return _Loader(self.engine)

    def entries(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, float, bytes]]:
        """`parse_entry` of each entry in [start, end), in order, over a snapshot (a
        `walk_range`)."""
        with self.engine.scan(start, end) as it:
            for key, _ in it:
                yield parse_entry(bytes(key))

    def discard(self, key: bytes) -> None:
        """Remove an entry a reader found stale against this replica's own record (after
        GRACE_S, as `update` does: other walks may be reading it)."""
        if key not in self._doomed and self.engine.get(key) is not None:
            now = self._now_s()
            self._doomed[key] = now + GRACE_S
            self._order.append((now + GRACE_S, key))
            self.stale_dropped += 1
            self._collect(now)

    def clear(self, keep: bytes) -> None:
        """Remove every entry but those of namespace `keep` (FLUSHALL)."""
        self._doomed.clear()
        self._order.clear()
        with self.engine.scan() as it:
            doomed = [bytes(k) for k, _ in it if bytes(k[9:9 + k[8]]) != keep]
        for key in doomed:
            self.engine.delete(key, sync=False)


class _Loader:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.batch = WriteBatch()
        self.pending = 0

    def add(self, eskey: bytes, record: Record) -> None:
        scores = record_scores(record)
        if scores:
            prefix, member = split_member_key(eskey)
            for score in scores:
                for key in entry_keys(prefix, score, member):
                    self.batch.put(key, b"")
            self.pending += 2 * len(scores)
            if self.pending >= LOAD_BATCH_ENTRIES:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            self.engine.write_batch(self.batch, sync=False)
            self.batch = WriteBatch()
            self.pending = 0
