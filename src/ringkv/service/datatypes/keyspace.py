"""Commands on whole keys of any type: TYPE, RENAME, RENAMENX, COPY, OBJECT ENCODING, DUMP,
RESTORE.

They move or describe a key's value whatever it holds (a string or a collection), with its
expiry. RENAME, RENAMENX and COPY name two keys: in a cluster those must share a hash tag
(one consensus round changes both), as Redis Cluster requires them to share a slot.
"""

from __future__ import annotations

import struct
from typing import Any

from crc32c import crc32c

from ringkv.errors import CommandError
from ringkv.service.datatypes import codec
from ringkv.service.datatypes.base import (
    KIND_HASH,
    KIND_LIST,
    KIND_SET,
    KIND_STRING,
    KIND_ZSET,
    SYNTAX_ERROR,
    TYPE_NAMES,
    Ctx,
    Entry,
    TypeCommand,
    Writes,
)
from ringkv.service.numbers import INT64_MAX, INT64_MIN


def _copy_value(entry: Entry) -> Any:
    value = entry.value
    if entry.kind == KIND_STRING:
        return value
    return type(value)(value)  # dict, list and set copy shallowly; elements are bytes or floats


def _type(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    entry = entries[args[0]]
    return {}, "none" if entry is None else TYPE_NAMES[entry.kind]


def _rename(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    src, dst = args[0], args[1]
    entry = entries[src]
    if entry is None:
        raise CommandError("no such key")
    if src == dst:
        return {}, "OK"
    return {src: None, dst: Entry(entry.kind, entry.value, entry.expire_at_ms)}, "OK"


def _renamenx(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    src, dst = args[0], args[1]
    entry = entries[src]
    if entry is None:
        raise CommandError("no such key")
    if src == dst or entries[dst] is not None:
        return {}, 0
    return {src: None, dst: Entry(entry.kind, entry.value, entry.expire_at_ms)}, 1


def _copy(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    src, dst = args[0], args[1]
    replace = False
    i = 2
    while i < len(args):
        option = args[i].lower()
        if option == b"replace":
            replace = True
        elif option == b"db" and i + 1 < len(args):
            i += 1
            try:
                db = int(args[i])
            except ValueError:
                raise CommandError("value is not an integer or out of range") from None
            if not INT64_MIN <= db <= INT64_MAX:
                raise CommandError("value is not an integer or out of range")
            if db != 0:
                # ringkv has one database per namespace (RINGKV.NAMESPACE), as Redis Cluster has db 0.
                raise CommandError("DB index is out of range")
        else:
            raise CommandError(SYNTAX_ERROR)
        i += 1
    if src == dst:
        raise CommandError("source and destination objects are the same")
    entry = entries[src]
    if entry is None:
        return {}, 0
    if entries[dst] is not None and not replace:
        return {}, 0
    return {dst: Entry(entry.kind, _copy_value(entry), entry.expire_at_ms)}, 1


# Redis 7.0's default thresholds for its compact encodings, which OBJECT ENCODING reports as
# Redis 7.0 would for the same value (docs/data-types.md: ringkv stores every value as one
# record whatever Redis would call it). 7.0 has no compact encoding of lists (always a
# quicklist) or of sets other than integer sets.
_HASH_LISTPACK_ENTRIES = 512  # hash-max-listpack-entries
_ZSET_LISTPACK_ENTRIES = 128  # zset-max-listpack-entries
_LISTPACK_VALUE_BYTES = 64  # hash-max-listpack-value, zset-max-listpack-value
_INTSET_ENTRIES = 512  # set-max-intset-entries
_EMBSTR_BYTES = 44


def _is_int(data: bytes) -> bool:
    if not data or len(data) > 20 or data != data.strip() or (data[0:1] == b"0" and len(data) > 1):
        return False
    try:
        return INT64_MIN <= int(data) <= INT64_MAX and not data.startswith((b"+", b"-0")) and b"_" not in data
    except ValueError:
        return False


def encoding_of(entry: Entry) -> str:
    """The name Redis 7.0 gives the encoding of the same value (OBJECT ENCODING)."""
    value = entry.value
    if entry.kind == KIND_STRING:
        if _is_int(value):
            return "int"
        return "embstr" if len(value) <= _EMBSTR_BYTES else "raw"
    if entry.kind == KIND_LIST:
        return "quicklist"
    if entry.kind == KIND_SET:
        return "intset" if len(value) <= _INTSET_ENTRIES and all(_is_int(m) for m in value) else "hashtable"
    if entry.kind == KIND_HASH:
        small = len(value) <= _HASH_LISTPACK_ENTRIES and all(
            len(f) <= _LISTPACK_VALUE_BYTES and len(v) <= _LISTPACK_VALUE_BYTES for f, v in value.items())
        return "listpack" if small else "hashtable"
    if entry.kind == KIND_ZSET:
        small = len(value) <= _ZSET_LISTPACK_ENTRIES and all(len(m) <= _LISTPACK_VALUE_BYTES for m in value)
        return "listpack" if small else "skiplist"
    raise CommandError(f"unknown value kind {entry.kind}")


def _object(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    sub = args[0].lower()
    entry = entries[args[1]]
    if sub == b"encoding":
        return {}, None if entry is None else encoding_of(entry).encode()
    if sub in (b"refcount", b"idletime", b"freq"):
        if entry is None:
            return {}, None
        if sub == b"freq":
            raise CommandError("An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
                               "that when switching between policies at runtime LRU and LFU data will take some time "
                               "to adjust.")
        return {}, 1 if sub == b"refcount" else 0
    raise CommandError(f"unknown subcommand '{args[0].decode(errors='replace')}'. Try OBJECT HELP.")


_OBJECT_SUBCOMMANDS = (b"encoding", b"refcount", b"idletime", b"freq")


def _object_keys(args: list[bytes]) -> list[bytes]:
    sub = args[0].lower()
    if sub not in _OBJECT_SUBCOMMANDS:
        raise CommandError(f"unknown subcommand '{args[0].decode(errors='replace')}'. Try OBJECT HELP.")
    if len(args) != 2:
        raise CommandError(f"wrong number of arguments for 'object|{sub.decode()}' command")
    return [args[1]]


# --- DUMP and RESTORE (docs/formats/backup.md, "DUMP payload"):
#     "RKDUMP" · version u8 (1) · kind u8 (KIND_*) · value · CRC32C u32 LE of all before
# The value is a string's bytes, or a collection's stored encoding (codec.py).
DUMP_MAGIC = b"RKDUMP"
DUMP_VERSION = 1
_DUMP_HEAD_BYTES = len(DUMP_MAGIC) + 2
_CRC = struct.Struct("<I")
BAD_PAYLOAD = "DUMP payload version or checksum are wrong"


def dump_payload(entry: Entry) -> bytes:
    """The DUMP payload of what a key holds."""
    data = entry.value if entry.kind == KIND_STRING else codec.encode(entry.kind, entry.value)
    body = DUMP_MAGIC + bytes((DUMP_VERSION, entry.kind)) + data
    return body + _CRC.pack(crc32c(body))


def payload_kind(payload: bytes) -> int | None:
    """The KIND_* a DUMP payload says it holds (unchecked: `payload_entry` checks it), None for
    what is not one."""
    if len(payload) < _DUMP_HEAD_BYTES + _CRC.size or not payload.startswith(DUMP_MAGIC):
        return None
    return payload[len(DUMP_MAGIC) + 1]


def payload_entry(payload: bytes) -> Entry | None:
    """The value a DUMP payload holds (expiry 0), None when it is not one this build reads."""
    if len(payload) < _DUMP_HEAD_BYTES + _CRC.size or not payload.startswith(DUMP_MAGIC):
        return None
    body, crc = payload[:-_CRC.size], _CRC.unpack(payload[-_CRC.size:])[0]
    kind = body[len(DUMP_MAGIC) + 1]
    if crc32c(body) != crc or body[len(DUMP_MAGIC)] != DUMP_VERSION or kind not in TYPE_NAMES:
        return None
    data = bytes(body[_DUMP_HEAD_BYTES:])
    if kind == KIND_STRING:
        return Entry(KIND_STRING, data)
    try:
        return Entry(kind, codec.decode(kind, data))
    except Exception:  # CorruptionError: a payload that passed its checksum but does not decode
        return None


def _dump(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    entry = entries[args[0]]
    return {}, None if entry is None else dump_payload(entry)


def _int(data: bytes) -> int:
    try:
        n = int(data)
    except ValueError:
        raise CommandError("value is not an integer or out of range") from None
    if not INT64_MIN <= n <= INT64_MAX or data != data.strip():
        raise CommandError("value is not an integer or out of range")
    return n


def _restore(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    """RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]: IDLETIME
    and FREQ are checked and ignored (ringkv keeps no access statistics)."""
    key, ttl_arg, payload = args[0], args[1], args[2]
    replace = absttl = False
    i = 3
    while i < len(args):
        option = args[i].lower()
        if option == b"replace":
            replace = True
        elif option == b"absttl":
            absttl = True
        elif option in (b"idletime", b"freq") and i + 1 < len(args):
            n = _int(args[i + 1])
            if n < 0 or (option == b"freq" and n > 255):
                raise CommandError("Invalid IDLETIME value, must be >= 0" if option == b"idletime"
                                   else "Invalid FREQ value, must be >= 0 and <= 255")
            i += 1
        else:
            raise CommandError(SYNTAX_ERROR)
        i += 1
    ttl = _int(ttl_arg)
    if ttl < 0:
        raise CommandError("Invalid TTL value, must be >= 0")
    restored = payload_entry(payload)
    if restored is None:
        raise CommandError(BAD_PAYLOAD)
    if entries[key] is not None and not replace:
        raise CommandError("Target key name already exists.", kind="BUSYKEY")
    expire_at = (ttl if absttl else ctx.now_ms + ttl) if ttl else 0
    if expire_at and expire_at <= ctx.now_ms:
        # Already expired (an ABSTTL in the past): nothing is created, as in Redis; an existing
        # key is removed (REPLACE).
        return ({key: None} if entries[key] is not None else {}), "OK"
    restored.expire_at_ms = expire_at
    return {key: restored}, "OK"


def _two_keys(args: list[bytes]) -> list[bytes]:
    return [args[0], args[1]]


COMMANDS: list[TypeCommand] = [
    TypeCommand("TYPE", 2, False, _type),
    TypeCommand("RENAME", 3, True, _rename, _two_keys, 1, 2, 1),
    TypeCommand("RENAMENX", 3, True, _renamenx, _two_keys, 1, 2, 1),
    TypeCommand("COPY", -3, True, _copy, _two_keys, 1, 2, 1),
    # A container command in Redis's table (no key positions); its key is the second argument.
    TypeCommand("OBJECT", -2, False, _object, _object_keys, 0, 0, 0),
    TypeCommand("DUMP", 2, False, _dump),
    TypeCommand("RESTORE", -4, True, _restore),
]
