"""RESP commands of persistence and backup: Redis's SAVE, BGSAVE, LASTSAVE, DUMP and RESTORE,
and ringkv's RINGKV.SNAPSHOT, RINGKV.BACKUP and RINGKV.RESTORE (JSON replies). docs/backup.md
describes them; the DUMP payload is ringkv's own (docs/formats/backup.md, "DUMP payload"):

    "RKDUMP" · version u8 (1) · kind u8 (0: a string value) · value · CRC32C u32 LE of all before

A payload of another version, kind or checksum is refused as Redis refuses a foreign one:
"ERR DUMP payload version or checksum are wrong".
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING

from crc32c import crc32c

from ringkv.api.resp import bulk, error, integer
from ringkv.api.resp_args import OK, SYNTAX, CommandReply, int_arg, text

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection

DUMP_MAGIC = b"RKDUMP"
DUMP_VERSION = 1
DUMP_KIND_STRING = 0
_DUMP_HEAD_BYTES = len(DUMP_MAGIC) + 2
_CRC = struct.Struct("<I")
BAD_PAYLOAD = error("ERR DUMP payload version or checksum are wrong")
BUSYKEY = error("BUSYKEY Target key name already exists.")


def dump_payload(value: bytes) -> bytes:
    body = DUMP_MAGIC + bytes((DUMP_VERSION, DUMP_KIND_STRING)) + value
    return body + _CRC.pack(crc32c(body))


def payload_value(payload: bytes) -> bytes | None:
    """The value of a DUMP payload, None when it is not one this build reads."""
    if len(payload) < _DUMP_HEAD_BYTES + _CRC.size or not payload.startswith(DUMP_MAGIC):
        return None
    body, crc = payload[:-_CRC.size], _CRC.unpack(payload[-_CRC.size:])[0]
    if crc32c(body) != crc or body[len(DUMP_MAGIC)] != DUMP_VERSION or body[len(DUMP_MAGIC) + 1] != DUMP_KIND_STRING:
        return None
    return bytes(body[_DUMP_HEAD_BYTES:])


def _backups(c: RespConnection, command: str):
    admin = c.server.admin
    if admin is None:
        raise CommandReply(error(f"ERR {command} is not available on this server"))
    return admin.backups


def _json(doc) -> bytes:
    return bulk(json.dumps(doc).encode())


# ---------------------------------------------------------------------- Redis's commands


async def cmd_save(c: RespConnection, argv):
    """SAVE: take the node's SAVE snapshot (node/snapshots.py), replacing the previous one."""
    await _backups(c, "SAVE").save()
    return OK


def cmd_bgsave(c: RespConnection, argv):
    """BGSAVE [SCHEDULE]: SAVE in the background."""
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() != b"schedule"):
        return SYNTAX
    if not _backups(c, "BGSAVE").bgsave():
        return error("ERR Background save already in progress")
    return b"+Background saving started\r\n"


def cmd_lastsave(c: RespConnection, argv):
    return integer(_backups(c, "LASTSAVE").lastsave_s())


async def cmd_dump(c: RespConnection, argv):
    """DUMP key: the value GET would answer, as a payload RESTORE takes; nil for a missing key."""
    value = await c.kv.get_value(argv[1])
    return c.enc.optional_bulk(None if value is None else dump_payload(value))


async def cmd_restore(c: RespConnection, argv):
    """RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]: write the
    payload's value under key (ttl ms, 0: no expiry; with ABSTTL a unix time in ms). IDLETIME
    and FREQ are checked and ignored: ringkv keeps no access statistics."""
    key, ttl_arg, payload = argv[1], argv[2], argv[3]
    replace = absttl = False
    i = 4
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"replace":
            replace = True
        elif opt == b"absttl":
            absttl = True
        elif opt in (b"idletime", b"freq") and i + 1 < len(argv):
            n = int_arg(argv[i + 1])
            if n < 0 or (opt == b"freq" and n > 255):
                return error("ERR Invalid IDLETIME value, must be >= 0" if opt == b"idletime"
                             else "ERR Invalid FREQ value, must be >= 0 and <= 255")
            i += 1
        else:
            return SYNTAX
        i += 1
    ttl = int_arg(ttl_arg)
    if ttl < 0:
        return error("ERR Invalid TTL value, must be >= 0")
    value = payload_value(payload)
    if value is None:
        return BAD_PAYLOAD
    kv = c.kv
    now = kv.now_ms()
    expire_at = (ttl if absttl else now + ttl) if ttl else 0
    if expire_at and expire_at <= now:
        # Already expired (an ABSTTL in the past): nothing is created, as in Redis, but an
        # existing key is still refused without REPLACE and removed with it.
        if not replace:
            if await kv.exists([key]):
                return BUSYKEY
            return OK
        await kv.delete([key])
        return OK
    applied, _ = await kv.set(key, value, expire_at_ms=expire_at, condition=None if replace else "nx")
    return OK if applied else BUSYKEY


# ---------------------------------------------------------------------- ringkv's commands


async def cmd_snapshot(c: RespConnection, argv):
    """RINGKV.SNAPSHOT [CREATE [name]] | LIST | REMOVE name: this node's snapshots; JSON."""
    backups = _backups(c, "RINGKV.SNAPSHOT")
    sub = argv[1].lower() if len(argv) > 1 else b"create"
    if sub == b"create" and len(argv) <= 3:
        name = text(argv[2], 64) if len(argv) == 3 else None
        return _json(await backups.snapshot(name))
    if sub == b"list" and len(argv) == 2:
        return _json({"snapshots": backups.snapshot_list()})
    if sub == b"remove" and len(argv) == 3:
        return _json(await backups.snapshot_remove(text(argv[2], 64)))
    return error("ERR RINGKV.SNAPSHOT: expected CREATE [name], LIST or REMOVE name")


def cmd_backup(c: RespConnection, argv):
    """RINGKV.BACKUP START directory [REPLICAS n] | STATUS operation-id: start (or resume) a backup
    of the whole cluster into a directory on this node's file system, follow it; JSON."""
    backups = _backups(c, "RINGKV.BACKUP")
    sub = argv[1].lower() if len(argv) > 1 else b""
    if sub == b"start" and len(argv) in (3, 5):
        replicas = None
        if len(argv) == 5:
            if argv[3].lower() != b"replicas":
                return SYNTAX
            replicas = int_arg(argv[4])
        return _json(backups.backup(argv[2].decode("utf-8", "surrogateescape"), replicas))
    if sub == b"status" and len(argv) == 3:
        return _json(backups.operation(text(argv[2])))
    return error("ERR RINGKV.BACKUP: expected START directory [REPLICAS n] or STATUS operation-id")


def cmd_restore_backup(c: RespConnection, argv):
    """RINGKV.RESTORE directory [WITHUSERS]: start restoring a backup (a directory on this node's
    file system) into this cluster; JSON (the operation, followed with RINGKV.BACKUP STATUS)."""
    backups = _backups(c, "RINGKV.RESTORE")
    if len(argv) > 3 or (len(argv) == 3 and argv[2].lower() != b"withusers"):
        return SYNTAX
    return _json(backups.restore(argv[1].decode("utf-8", "surrogateescape"), len(argv) == 3))
