"""The engine's compaction filter for versioned records: what compaction may drop.

Runs in the engine's worker process (it is pickled with each compaction job, with the node's
clock and the anti-entropy progress as they were when the job started).

A record is dropped once every sibling is an expired value, or once every sibling is dead and
the newest death is older than the tombstone grace period (so deletes keep shadowing older
copies on other replicas for that long). In a cluster (`partitions` given), a record holding
a tombstone is kept until, besides, an anti-entropy round of its partition that started after
its grace period ended has completed: only then is every replica known to hold the delete, so
dropping it cannot bring the value back (docs/anti-entropy.md). `completed_ms` (partition ->
start of its last completed round) is the anti-entropy's own dict, shared.
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
