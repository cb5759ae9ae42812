"""The batch log: atomic batches that span several replica sets, kept on two nodes until every
key is written (docs/atomic-batches.md, "The batch log", which this module implements).

Before writing any key of such a batch, its coordinator stores it here and in one other
member's batch log (a `BatchLogStore` message); once every key is written at W, both copies
are removed. node/atomic_batches.py replays the entries left behind (a coordinator that
crashed, a part that failed). The log is an engine of its own under `<data_dir>/batchlog`,
written with the node's sync policy, as the hints (`<data_dir>/hints`) and the acceptor states
(`<data_dir>/paxos`) are.

    key    batch id: timestamp u64 BE ‖ coordinator node id (UTF-8)
    value  received_ms u64 BE ‖ entry
    entry  format version (1) ‖ msgpack array: coordinator, namespace, timestamp, w, strict,
           copies, items [[key, value, expire_at_ms], ...]

The batch's timestamp comes from the coordinator's hybrid logical clock, which never hands out
one value twice, so (timestamp, coordinator) names one batch. `received_ms` is this node's
clock when its copy was stored: the replay delay is measured from it.

Bounded: at most `max_entries` entries and `max_bytes` bytes of values; past either, a new
entry is refused with `BatchLogFullError` (503: the batch is not written). An index of every
entry's id, size and arrival is kept in memory (at most `max_entries` of them) so the replay
decodes only the entries that are due.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Annotated

import msgspec

from ringkv.clock import SYSTEM_CLOCK, Clock
from ringkv.errors import CommandError, CorruptionError
from ringkv.service.limits import MAX_ATOMIC_BATCH_BYTES, MAX_ATOMIC_BATCH_ITEMS
from ringkv.storage import Engine, Options

ENTRY_FORMAT_VERSION = 1
_U64 = struct.Struct(">Q")
_VERSION_BYTE = bytes([ENTRY_FORMAT_VERSION])
# What an entry may hold beyond its keys and values: the encoding of each item and the header.
ENTRY_OVERHEAD_BYTES = 64 * 1024 + MAX_ATOMIC_BATCH_ITEMS * 32
MAX_ENTRY_BYTES = MAX_ATOMIC_BATCH_BYTES + ENTRY_OVERHEAD_BYTES

_Count = Annotated[int, msgspec.Meta(ge=0)]


class BatchLogEntry(msgspec.Struct, frozen=True, array_like=True):
    """One logged atomic batch: what the replay needs to write it again, anywhere."""

    coordinator: str  # the node that logged it (its HLC made `timestamp`)
    namespace: bytes  # stored form ("" is the default namespace)
    timestamp: Annotated[int, msgspec.Meta(ge=1)]  # every value of the batch carries it
    w: Annotated[int, msgspec.Meta(ge=1)]  # replicas per key the batch waits for
    strict: bool  # refuse stand-ins (sloppy quorum)
    copies: tuple[str, ...]  # the nodes holding the entry, coordinator first
    items: list[tuple[bytes, bytes, _Count]]  # (key, value, expire_at_ms), keys distinct

    @property
    def batch_id(self) -> bytes:
        return batch_id(self.timestamp, self.coordinator)


def batch_id(timestamp: int, coordinator: str) -> bytes:
    return _U64.pack(timestamp) + coordinator.encode()


def coordinator_of(batch_id: bytes) -> str:
    return batch_id[8:].decode("utf-8", "replace")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BatchLogEntry)


def encode_entry(entry: BatchLogEntry) -> bytes:
    return _VERSION_BYTE + _encoder.encode(entry)


def decode_entry(data: bytes | bytearray | memoryview) -> BatchLogEntry:
    """The entry in `data`; CorruptionError on a wrong version, garbage, or an entry over the
    batch limits (a peer's entry is checked before it is kept)."""
    if len(data) == 0 or data[0] != ENTRY_FORMAT_VERSION:
        raise CorruptionError(f"batch log entry has format version {data[0] if len(data) else None}, "
                              f"this build reads version {ENTRY_FORMAT_VERSION}")
    if len(data) > MAX_ENTRY_BYTES:
        raise CorruptionError(f"batch log entry is {len(data)} bytes; the limit is {MAX_ENTRY_BYTES}")
    try:
        entry = _decoder.decode(memoryview(data)[1:])
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"batch log entry does not decode: {exc}") from None
    if not entry.items or len(entry.items) > MAX_ATOMIC_BATCH_ITEMS:
        raise CorruptionError(f"batch log entry holds {len(entry.items)} items; 1..{MAX_ATOMIC_BATCH_ITEMS} allowed")
    if not entry.copies or entry.copies[0] != entry.coordinator:
        raise CorruptionError("batch log entry does not name its coordinator first among its copies")
    return entry


class BatchLogFullError(CommandError):
    """The batch log holds as much as it may: the batch was not written (503)."""

    def __init__(self, message: str):
        super().__init__(message, status=503)


class BatchLog:
    """This node's copies of logged atomic batches (see the module docstring)."""

    def __init__(self, data_dir: str, clock: Clock = SYSTEM_CLOCK, *, max_entries: int = 10_000,
                 max_bytes: int = 256 * 1024 * 1024, sync: str = "interval", encryption_keys=None):
        self.engine = Engine.open(os.path.join(data_dir, "batchlog"),
                                  Options(sync=sync, memtable_bytes=4 * 1024 * 1024, background="thread",
                                          block_cache_bytes=1024 * 1024, max_value_bytes=2 * MAX_ENTRY_BYTES,
                                          encryption_keys=encryption_keys))
        self.clock = clock
        self.sync_always = sync == "always"
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._index: dict[bytes, tuple[int, int]] = {}  # batch id -> (received_ms, value bytes)
        with self.engine.scan() as it:
            for key, value in it:
                self._index[bytes(key)] = (_U64.unpack_from(value)[0], len(value))
        self._bytes = sum(size for _, size in self._index.values())

    @property
    def stats(self) -> dict[str, int]:
        return {"batchlog_entries": len(self._index), "batchlog_bytes": self._bytes}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, batch_id: bytes) -> bool:
        return batch_id in self._index

    def add(self, entry: bytes, batch_id: bytes) -> int:
        """Keep the encoded entry (its copy replacing an earlier one of the same batch); the LSN
        to wait on with `durable`. BatchLogFullError past `max_entries` or `max_bytes`."""
        value = _U64.pack(self.clock.now_ms()) + entry
        old = self._index.get(batch_id)
        entries = len(self._index) + (old is None)
        total = self._bytes + len(value) - (old[1] if old else 0)
        if entries > self.max_entries or total > self.max_bytes:
            raise BatchLogFullError(
                f"atomic batch refused, nothing was written: the batch log holds "
                f"{len(self._index)} batches, {self._bytes} bytes (batchlog_max_entries={self.max_entries}, "
                f"batchlog_max_bytes={self.max_bytes}); retry once logged batches are replayed")
        lsn = self.engine.put(batch_id, value, sync=False)
        self._index[batch_id] = (_U64.unpack_from(value)[0], len(value))
        self._bytes = total
        return lsn

    def get(self, batch_id: bytes) -> BatchLogEntry | None:
        """The entry, None when it is not (any longer) here; CorruptionError if unreadable."""
        value = self.engine.get(batch_id)
        return None if value is None else decode_entry(memoryview(value)[8:])

    def remove(self, batch_id: bytes) -> bool:
        """Drop the entry; False when it was not here."""
        old = self._index.pop(batch_id, None)
        if old is None:
            return False
        self._bytes -= old[1]
        self.engine.delete(batch_id, sync=False)
        return True

    def forget(self, keep_namespace: bytes) -> int:
        """After FLUSHALL: drop every entry of a namespace other than `keep_namespace` (the
        system one), for its replay would write flushed keys again. An entry that does not
        decode stays, for the replay to report as it does. Returns how many were dropped."""
        doomed = []
        for bid in list(self._index):
            try:
                entry = self.get(bid)
            except CorruptionError:
                continue
            if entry is not None and entry.namespace != keep_namespace:
                doomed.append(bid)
        for bid in doomed:
            self.remove(bid)
        return len(doomed)

    def received(self) -> list[tuple[bytes, int]]:
        """Every entry's (batch id, received_ms), oldest first."""
        return sorted(((bid, received) for bid, (received, _) in self._index.items()), key=lambda e: e[1])

    async def durable(self, lsn: int) -> None:
        """Wait (off the loop) for the fsync of `lsn` under sync=always; a no-op otherwise (the
        entry is written to the OS already, which a process crash does not lose)."""
        if self.sync_always and lsn:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.wait_durable, lsn)

    def close(self) -> None:
        self.engine.flush()
        self.engine.close()
