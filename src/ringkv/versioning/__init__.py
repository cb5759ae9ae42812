"""Versioning: hybrid logical clocks, dotted version vectors and the stored record format.

Pure code: no IO, no clock or randomness of its own; time comes in as arguments. The node
layer feeds it physical time and actor ids; the storage layer stores `encode_record` bytes.
Formats: docs/formats/record.md.
"""

from ringkv.versioning.dvv import (
    Actor,
    Dot,
    VersionVector,
    concurrent,
    decode_context,
    descends,
    dominates,
    encode_context,
    equal,
    join,
)
from ringkv.versioning.hlc import (
    HybridLogicalClock,
    make_timestamp,
    split_timestamp,
    timestamp_ms,
)
from ringkv.versioning.record import (
    ConflictPolicy,
    DottedValue,
    Record,
    apply_write,
    decode_record,
    encode_record,
    merge,
    pick_winner,
)

__all__ = [
    "Actor",
    "ConflictPolicy",
    "Dot",
    "DottedValue",
    "HybridLogicalClock",
    "Record",
    "VersionVector",
    "apply_write",
    "concurrent",
    "decode_context",
    "decode_record",
    "descends",
    "dominates",
    "encode_context",
    "encode_record",
    "equal",
    "join",
    "make_timestamp",
    "merge",
    "pick_winner",
    "split_timestamp",
    "timestamp_ms",
]
