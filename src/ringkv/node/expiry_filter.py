"""The engine's compaction filter for versioned records: what compaction may drop; and the
expiry extractor that tells time-window compaction when a record stops mattering.

Runs in the engine's worker process (it is pickled with each compaction job, with the node's
clock and the anti-entropy progress as they were when the job started).

A record is dropped once every sibling is an expired value, or once every sibling is dead and
the newest death is older than the tombstone grace period (so deletes keep shadowing older
copies on other replicas for that long). In a cluster (`partitions` given), a record holding
a tombstone is kept until, besides, an anti-entropy round of its partition that started after
its grace period ended has completed: only then is every replica known to hold the delete, so
dropping it cannot bring the value back (docs/anti-entropy.md). `completed_ms` (partition ->
start of its last completed round) is the anti-entropy's own dict, shared.

`RecordExpiry` says the same in advance, per record, without a clock (storage/options.py,
ExpiryExtractor): when every sibling is an expiring value, the latest expiry (the filter drops
the record from then on); when a sibling is a tombstone, the newest death plus the grace period,
as a time from which only the filter may say (in a cluster, anti-entropy must also have run), or
a plain time on a node of one (the filter then decides by time alone); 0 when a sibling never
expires. A time-window table whose records all have a plain time past is deleted unread.
"""

from __future__ import annotations

from ringkv.clock import Clock
from ringkv.cluster.merkle import gc_horizon_ms
from ringkv.versioning import record as rec


class ExpiredRecordFilter:
    def __init__(self, tombstone_grace_ms: int, clock: Clock, partitions: int | None = None):
        self.tombstone_grace_ms = tombstone_grace_ms
        self.clock = clock
        self.partitions = partitions
        self.completed_ms: dict[int, int] = {}

    def __call__(self, key: bytes, value: bytes) -> bool:
        try:
            record = rec.decode_record(value)
        except Exception:
            return True  # never drop what we cannot read: reads will report the corruption
        now = self.clock.now_ms()
        if all(s.value is not None for s in record.siblings):
            return not record.is_dead(now)
        if not record.is_dead(now, self.tombstone_grace_ms):
            return True
        if self.partitions is None:
            return False
        partition = int.from_bytes(key[:8], "big") >> (64 - (self.partitions.bit_length() - 1))
        horizon = gc_horizon_ms(self.tombstone_grace_ms, self.completed_ms.get(partition))
        if horizon is None:
            return True  # no completed round yet: keep the tombstone
        deaths = [s.dead_since_ms() for s in record.siblings]
        return max(d for d in deaths if d is not None) > horizon


class RecordExpiry:
    """When a stored record stops mattering, as `ExpiredRecordFilter` will judge it (see the
    module docstring): picklable, it runs in the engine's flush and compaction workers."""

    def __init__(self, tombstone_grace_ms: int, clustered: bool):
        self.tombstone_grace_ms = tombstone_grace_ms
        self.clustered = clustered

    def __call__(self, key: bytes, value: bytes) -> int:
        try:
            record = rec.decode_record(value)
        except Exception:
            return 0  # never deleted unread: reads report the corruption
        latest = 0
        tombstone = False
        for s in record.siblings:
            since = s.dead_since_ms()
            if since is None:
                return 0  # a value without expiry: the record lives until overwritten
            tombstone = tombstone or s.value is None
            latest = max(latest, since)
        if not tombstone:
            return max(latest, 1)
        due = latest + self.tombstone_grace_ms
        return -due if self.clustered else max(due, 1)
