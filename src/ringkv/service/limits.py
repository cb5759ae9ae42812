"""Every limit a client can run into, defined once.

A storage key is token (8 bytes) | namespace length (1) | namespace | key (node/replica.py),
and the engine takes keys up to 64 KiB, so a key and its namespace together may hold 64 KiB
less the 9 bytes of prefix. The adapters check these before they call the service, so a
client learns of a limit in its own protocol's words; the service checks them again for
callers that are not adapters.
"""

from __future__ import annotations

STORAGE_PREFIX_BYTES = 9  # token u64 + namespace length u8
MAX_KEY_BYTES = 64 * 1024 - STORAGE_PREFIX_BYTES  # key + namespace
MAX_NAMESPACE_BYTES = 255  # its length is one byte of the storage key
MAX_TOKEN = (1 << 64) - 1  # scan cursors are ring tokens, 0..MAX_TOKEN
# The most records one SCAN page (RESP SCAN COUNT, HTTP /scan count, ScanRange between nodes)
# examines: a client asking for more gets pages of this size, so one call's work is bounded.
MAX_SCAN_COUNT = 100_000
# The largest value a client may store, unless the configuration says otherwise (max_value_bytes).
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
# An atomic batch (KeyValueService.write_atomic, docs/atomic-batches.md): at most this many
# items, and this many bytes of keys and values in all, so that the batch-log entry and each
# replica set's part travel in one inter-node frame (16 MiB) with room for the records' clocks.
MAX_ATOMIC_BATCH_ITEMS = 1000
MAX_ATOMIC_BATCH_BYTES = 8 * 1024 * 1024

# RINGKV.HOTKEYS and GET /api/v1/admin/hotkeys: keys answered by default and at most (the most
# a node's hot-key summary tracks, cluster/hotkeys.MAX_CAPACITY_KEYS).
HOTKEYS_DEFAULT_COUNT = 10
HOTKEYS_MAX_COUNT = 4096
