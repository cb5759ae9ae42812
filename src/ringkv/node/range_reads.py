"""Quorum reads of a key range: the records of a collection's elements from R replicas, merged
key by key (docs/formats/elements.md).

A collection keeps each element in a record of its own under one token, so reading the whole
collection (HGETALL, SMEMBERS) or a page of it (HSCAN, SSCAN) reads a contiguous run of storage
keys. `read_range` asks R of the range's replicas for a page each (ReplicaGetRange; the local
replica, when it is one, without a hop) and merges what they hold of each key as a point read
merges one key's records. A replica that failed is replaced by the next one up.

Pages from several replicas end at different keys, so the merge is complete only up to the
smallest last key of the replicas that have more (the others answered everything they hold up
to there): the page stops there and says where the next one starts. Every key it returns was
seen by all R replicas' pages, so a key missing from one of them is missing from that replica,
and a key one replica dropped as a tombstone beats a stale copy on another.

Replicas that answered less than the merge of a key get the merge back (read repair, as point
reads do, through ReadPath.repair and its bound), unless the node's read_repair is "off".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ringkv.errors import CommandError, QuorumError
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import MAX_RANGE_BYTES, MAX_RANGE_RECORDS, ReplicaGetRange, ReplicaRange
from ringkv.node.read_path import ReadPath
from ringkv.node.replica_calls import failure_reason
from ringkv.node.score_index import ScoreIndex


def read_range_page(store: LocalStore, body: ReplicaGetRange) -> ReplicaRange:
    """One page of this replica's records in [start, end) (the ReplicaGetRange handler)."""
    start, end = bytes(body.start), bytes(body.end)
    if len(start) < 9 or len(end) < 9 or start[:8] != end[:8] or not start < end:
        raise CommandError("ReplicaGetRange: start and end must be storage keys under one token, start < end")
    if body.after is not None and not start <= body.after < end:
        raise CommandError("ReplicaGetRange: `after` must lie in [start, end)")
    max_records = max(1, min(body.max_records, MAX_RANGE_RECORDS))
    max_bytes = max(1, min(body.max_bytes, MAX_RANGE_BYTES))
    first = start if body.after is None else bytes(body.after) + b"\x00"
    if body.index:
        if store.score_index is None:
            raise CommandError("ReplicaGetRange: this replica keeps no score index")
        return ReplicaRange(*scan_page(store.score_index, first, end, max_records, max_bytes))
    return ReplicaRange(*scan_page(store, first, end, max_records, max_bytes))


def scan_page(store: LocalStore | ScoreIndex, first: bytes, end: bytes | None, max_records: int,
              max_bytes: int) -> tuple[list[tuple[bytes, bytes]], bool]:
    """This replica's (storage key, record) pairs from `first` up to `end` (None: the last key),
    at most `max_records` and about `max_bytes` (one record always fits); and whether that was
    all of them. A range read's page, and a backup's (and of the score index: its entries)."""
    records: list[tuple[bytes, bytes]] = []
    size = 0
    with store.engine.scan(first, end) as it:
        for skey, data in it:
            if len(records) >= max_records or size >= max_bytes:
                return records, False
            records.append((bytes(skey), bytes(data)))
            size += len(skey) + len(data)
    return records, True


@dataclass(slots=True)
class RangePage:
    """What `read_range` found: (storage key, merged record) in key order, and the key to pass
    as `after` for the next page (None: the range is done)."""

    records: list[tuple[bytes, bytes]]
    after: bytes | None


async def read_range(path: ReadPath, start: bytes, end: bytes, after: bytes | None, r: int,
                     max_records: int = MAX_RANGE_RECORDS, max_bytes: int = MAX_RANGE_BYTES,
                     index: bool = False) -> RangePage:
    """A page of the merged records of [start, end) from R replicas (see the module docstring).
    QuorumError when fewer than R replicas answer (R more than the replicas: none asked), naming
    the ones that failed and why. With `index`, [start, end) is a range of the replicas' score
    indexes: the page is the union of their entries (index key, b""), with no repair (each
    replica's index is its own)."""
    placement, calls = path.placement, path.calls
    pref = placement.replicas_of(start)
    if r > len(pref):
        raise QuorumError(r, 0, {}, pref)
    body = ReplicaGetRange(start, end, after, max_records, max_bytes, index)
    me = path.node_id
    answers: dict[str, ReplicaRange] = {}
    failures: dict[str, str] = {}
    # The local replica first (no hop), then the others in preference order, those up first.
    order = ([me] if me in pref else []) + [n for n in pref if n != me and calls.is_up(n)] \
        + [n for n in pref if n != me and not calls.is_up(n)]
    pending = iter(order)
    asked: dict[asyncio.Future, str] = {}

    def ask_more() -> None:
        """Ask the next replicas until R answers are in or asked for, or none is left."""
        for node in pending:
            if node == me:
                answers[me] = read_range_page(path.store, body)
            else:
                asked[calls.send(node, body)] = node  # fails at once when the node is held down
            if len(answers) + len(asked) >= r:
                return

    if r > 0:
        ask_more()
    while len(answers) < r and asked:
        done, _ = await asyncio.wait(asked, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            node = asked.pop(fut)
            exc = fut.exception()
            if exc is None and type(fut.result()) is ReplicaRange:
                answers[node] = fut.result()
            else:
                failures[node] = failure_reason(exc) if exc is not None else "answered something else"
        if len(answers) + len(asked) < r:
            ask_more()
    for fut in asked:  # more than R answering is no use once R have
        fut.cancel()
    if len(answers) < r:
        path.stats["quorum_failures"] += 1
        raise QuorumError(r, len(answers), failures)
    return _merge(path, answers, index)


def _merge(path: ReadPath, answers: dict[str, ReplicaRange], index: bool = False) -> RangePage:
    """The page the answers make together, and the repairs they call for."""
    cutoff: bytes | None = None
    for page in answers.values():
        if not page.done and page.records:
            last = page.records[-1][0]
            if cutoff is None or last < cutoff:
                cutoff = last
    merge_of = path.placement.merger_of
    merged: dict[bytes, bytes] = {}
    held: dict[bytes, dict[str, bytes]] = {}  # skey -> node -> what it answered
    for node, page in answers.items():
        for skey, data in page.records:
            if cutoff is not None and skey > cutoff:
                break
            skey, data = bytes(skey), bytes(data)
            if index:
                merged[skey] = b""
                continue
            held.setdefault(skey, {})[node] = data
            old = merged.get(skey)
            merged[skey] = data if old is None else merge_of(skey)(old, data)
    keys = sorted(merged)
    if path.read_repair != "off" and not index:
        for skey in keys:
            record = merged[skey]
            copies = held[skey]
            stale = [node for node in answers if copies.get(node) != record]
            if stale:
                path.repair(skey, record, stale)
    path.stats["reads"] += 1
    return RangePage([(skey, merged[skey]) for skey in keys], cutoff)
