"""RESP commands of persistence and backup: Redis's SAVE, BGSAVE and LASTSAVE, and ringkv's
RINGKV.SNAPSHOT, RINGKV.BACKUP and RINGKV.RESTORE (JSON replies). docs/backup.md describes
them. DUMP and RESTORE work on keys of every type: service/datatypes/keyspace.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ringkv.api.resp import bulk, error, integer
from ringkv.api.resp_args import OK, SYNTAX, CommandReply, int_arg, text

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection

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
