"""Backup commands: `ringkv admin snapshot` (this node's store, instant), `ringkv backup --to DIR`
and `ringkv restore --from DIR` (the whole cluster, run by the node asked as a long operation,
followed with a progress bar), `ringkv backup verify DIR` (offline), and `ringkv export` /
`ringkv import` (JSON lines through any node, for moving data between clusters or versions).

A backup directory is on the file system of the node asked (a shared mount when the CLI runs
elsewhere); `verify` reads it where the CLI runs. docs/backup.md describes each command and
what it guarantees; docs/formats/backup.md the files and the export line format.

Export lines (one JSON object a line, UTF-8): the first is the header
`{"format": "ringkv-export", "version": 1, "exported_ms": ...}`, then one per key:
`{"namespace": "default", "key": K, "siblings": [{"value": V, "expire_at_ms": 0, "timestamp": T}]}`;
a key holding a collection: `{"namespace", "key", "type", "dump": base64 DUMP payload, "expire_at_ms"}`
where K and V are a string when the bytes are valid UTF-8 and `{"base64": "..."}` otherwise,
`expire_at_ms` is absolute (0: no expiry) and `timestamp` the sibling's HLC timestamp (kept
for information: an import writes new versions).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any

import click

from ringkv.cli.exit_codes import EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE
from ringkv.cli.session import NodeSession, node_command

EXPORT_FORMAT = "ringkv-export"
EXPORT_VERSION = 1
FOLLOW_INTERVAL_S = 0.5  # how often a followed operation is asked for its progress
SCAN_PAGE_KEYS = 1000  # SCAN COUNT while exporting
IMPORT_PIPELINE_COMMANDS = 500  # writes sent together while importing


# ---------------------------------------------------------------------- talking to the node


def _redis(session: NodeSession):
    """A client of ONE connection with the session's settings, no retries: export and import
    switch its namespace, so every command and pipeline must reuse that connection (a pool of
    one; `single_connection_client` would give pipelines another)."""
    import redis
    import redis.backoff
    import redis.retry

    from ringkv.client.base import connection_class, pool_kwargs

    options = session.client.options
    kwargs = pool_kwargs(options, redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    kwargs["max_connections"] = 1
    pool = redis.BlockingConnectionPool(connection_class=connection_class(options), **kwargs)
    return redis.Redis(connection_pool=pool)


def _call(session: NodeSession, r, *args) -> Any:
    """One command; its failure exits as node_command's do (3 unreachable, 4 an error answer)."""
    import redis.exceptions

    options = session.client.options
    address = f"{options.host}:{options.port}"
    name = " ".join(str(a) for a in args[:2])
    try:
        return r.execute_command(*args)
    except redis.exceptions.AuthenticationError as exc:
        session.fail(EXIT_SERVER_ERROR, "authentication_failed", f"{name}: {address} refused the credentials: {exc}")
    except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError) as exc:
        session.fail(EXIT_UNREACHABLE, "unreachable", f"{name}: could not reach {address} or no answer "
                                                      f"within {options.timeout_ms:g} ms: {exc}")
    except redis.exceptions.ResponseError as exc:
        session.fail(EXIT_SERVER_ERROR, "server_error", f"{name} at {address}: {exc}")


def _json_call(session: NodeSession, *args) -> dict[str, Any]:
    r = _redis(session)
    try:
        return json.loads(_call(session, r, *args))
    finally:
        r.connection_pool.disconnect()


def _follow(session: NodeSession, op: dict[str, Any], wait: bool) -> int:
    """Print a started operation; with `wait`, follow it to its end with a progress bar (to
    stderr) and exit 0 only when it is done."""
    if not wait:
        if session.as_json:
            session.emit(op)
        else:
            session.say(f"{op['kind']} {op['id']} started on {op['node_id']}; follow it with "
                        f"`ringkv backup status {op['id']}`")
        return EXIT_OK
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    r = _redis(session)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                      TimeRemainingColumn(), console=session.err, disable=session.as_json or not session.err.is_terminal,
                      transient=True) as bar:
            task = bar.add_task(f"{op['kind']} {op['id']}", total=op.get("total") or None, unit=op.get("unit", ""))
            while op["state"] == "running":
                time.sleep(FOLLOW_INTERVAL_S)
                op = json.loads(_call(session, r, "RINGKV.BACKUP", "STATUS", op["id"]))
                bar.update(task, total=op.get("total") or None, completed=op.get("done", 0), unit=op.get("unit", ""))
    finally:
        r.connection_pool.disconnect()
    if session.as_json:
        session.emit(op)
    elif op["state"] == "done":
        result = op.get("result") or {}
        session.say(f"{op['kind']} {op['id']} done in {(op['finished_ms'] - op['started_ms']) / 1000:.1f} s: "
                    + ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict)))
    else:
        session.err.print(f"ringkv: {op['kind']} {op['id']} {op['state']}: {op.get('error')}", style="red", markup=False)
    return EXIT_OK if op["state"] == "done" else EXIT_SERVER_ERROR


# ---------------------------------------------------------------------- snapshots


class _DefaultCommandGroup(click.Group):
    """A group whose default subcommand runs when the first argument names none of its
    subcommands: `ringkv admin snapshot --name x` is `ringkv admin snapshot create --name x`."""

    def __init__(self, *args, default_command: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group("snapshot", cls=_DefaultCommandGroup, default_command="create")
def snapshot_group() -> None:
    """Snapshots of the node asked: `snapshot [--name NAME]` takes one (hard links to its tables
    plus its manifest and log tail, under <data_dir>/snapshots/NAME, in a moment); `snapshot
    list`; `snapshot remove NAME`."""


@snapshot_group.command("create")
@click.option("--name", default=None, help="The snapshot's name (letters, digits, '.', '_', '-') [snap-<UTC time>].")
@node_command
def snapshot_create_command(session: NodeSession, name: str | None) -> int:
    """Take a snapshot of the node asked (the default subcommand)."""
    doc = _json_call(session, "RINGKV.SNAPSHOT", "CREATE", *([name] if name else []))
    if session.as_json:
        session.emit(doc)
    else:
        e = doc["engine"]
        session.say(f"snapshot {doc['name']} of {doc['node_id']} at {doc['path']}: {e['tables']} tables linked "
                    f"({e['table_bytes']:,} bytes), {e['log_bytes']:,} log bytes copied in {e['seconds']} s")
    return EXIT_OK


@snapshot_group.command("list")
@node_command
def snapshot_list_command(session: NodeSession) -> int:
    """The snapshots kept on the node asked."""
    doc = _json_call(session, "RINGKV.SNAPSHOT", "LIST")
    if session.as_json:
        session.emit(doc)
        return EXIT_OK
    if not doc["snapshots"]:
        session.say("no snapshots")
    for s in doc["snapshots"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.get("created_ms", 0) / 1000))
        session.say(f"{s['name']}  {when} UTC  {s.get('bytes', 0):,} bytes{'  encrypted' if s.get('encrypted') else ''}"
                    f"  {s['path']}")
    return EXIT_OK


@snapshot_group.command("remove")
@click.argument("name")
@node_command
def snapshot_remove_command(session: NodeSession, name: str) -> int:
    """Delete snapshot NAME from the node asked."""
    doc = _json_call(session, "RINGKV.SNAPSHOT", "REMOVE", name)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"removed snapshot {doc['removed']} from {doc['node_id']}")
    return EXIT_OK


# ---------------------------------------------------------------------- backup and restore


@click.group("backup", cls=_DefaultCommandGroup, default_command="start")
def backup_group() -> None:
    """Back up the whole cluster: `backup --to DIR` (start, or resume an unfinished one in DIR),
    `backup status ID` (follow one), `backup verify DIR` (check one, offline)."""


@backup_group.command("start")
@click.option("--to", "directory", required=True,
              help="Directory on the node's file system: empty, or an unfinished backup to resume.")
@click.option("--replicas", type=click.IntRange(1, 16), default=None,
              help="Replicas read per partition and merged [a quorum of N].")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end with a progress bar.")
@node_command
def backup_start_command(session: NodeSession, directory: str, replicas: int | None, wait: bool) -> int:
    """Back up the whole cluster into DIR on the node asked (the default subcommand): every
    partition once, read from a quorum of its replicas with every version, checksummed, with a
    manifest (layout, HLC cut). Run it again on the same DIR to resume."""
    # A relative path means this machine's working directory (the node's would surprise).
    args = ["RINGKV.BACKUP", "START", os.path.abspath(directory)] + (["REPLICAS", str(replicas)] if replicas else [])
    return _follow(session, _json_call(session, *args), wait)


@backup_group.command("status")
@click.argument("operation_id")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow it to the end.")
@node_command
def backup_status_command(session: NodeSession, operation_id: str, wait: bool) -> int:
    """A backup's or restore's progress, by the id it was started with (on the node running it)."""
    op = _json_call(session, "RINGKV.BACKUP", "STATUS", operation_id)
    if wait:
        return _follow(session, op, True)
    if session.as_json:
        session.emit(op)
    else:
        session.say(f"{op['kind']} {op['id']}: {op['state']}, {op['done']} of {op['total']} {op['unit']}"
                    + (f", ETA {op['eta_s']} s" if op.get("eta_s") else "") + (f": {op['error']}" if op["error"] else ""))
    return EXIT_OK if op["state"] in ("running", "done") else EXIT_SERVER_ERROR


@backup_group.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def backup_verify_command(directory: str, as_json: bool) -> None:
    """Check a backup where this command runs: its manifest, every file's SHA-256, every
    record's CRC32C, order and count, and that every record decodes. Exit 0 when whole, 4
    naming the first damaged file and offset."""
    from ringkv.node.backup_format import BackupFormatError, verify
    from ringkv.versioning.record import decode_record

    try:
        doc = verify(directory, decode_record)
    except BackupFormatError as exc:
        if as_json:
            print(json.dumps({"error": {"kind": "damaged", "message": str(exc)}}))
        else:
            click.echo(f"ringkv: backup damaged: {exc}", err=True)
        raise SystemExit(EXIT_SERVER_ERROR) from None
    if as_json:
        print(json.dumps(doc))
    else:
        click.echo(f"backup in {doc['directory']} is whole: {doc['partition_files']} partition files, "
                   f"{doc['records']:,} records, {doc['bytes']:,} bytes; cut at HLC {doc['cut']['hlc']} "
                   f"({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(doc['cut']['wall_ms'] / 1000))} UTC)")


@click.command("restore")
@click.option("--from", "directory", required=True, help="Backup directory on the node's file system.")
@click.option("--with-users", is_flag=True, help="Restore the backup's users (the system namespace) too.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end with a progress bar.")
@node_command
def restore_command(session: NodeSession, directory: str, with_users: bool, wait: bool) -> int:
    """Restore a backup into the cluster of the node asked (any size): every record goes through
    the write path with its versions (siblings, timestamps, expiries kept); values whose TTL
    ran out since are dropped. The backup's namespaces must be configured here."""
    args = ["RINGKV.RESTORE", os.path.abspath(directory)] + (["WITHUSERS"] if with_users else [])
    return _follow(session, _json_call(session, *args), wait)


# ---------------------------------------------------------------------- export and import


def _encode(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _decode(doc: Any, field: str, line: int) -> bytes:
    if isinstance(doc, str):
        return doc.encode("utf-8")
    if isinstance(doc, dict) and isinstance(doc.get("base64"), str):
        try:
            return base64.b64decode(doc["base64"], validate=True)
        except ValueError:
            raise click.ClickException(f"line {line}: {field}: invalid base64") from None
    raise click.ClickException(f"line {line}: {field}: expected a string or {{\"base64\": ...}}")


@click.command("export")
@click.option("--namespace", "namespaces", multiple=True, help="Namespace to export (repeat) [every one].")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default="-",
              show_default=True, help="File to write (- for stdout).")
@node_command
def export_command(session: NodeSession, namespaces: tuple[str, ...], out_path: str) -> int:
    """Write every key (with its siblings and expiries) as JSON lines, through the node asked:
    a portable copy for another cluster or version (`ringkv import`). Reads at the connection's
    default levels; keys written meanwhile may or may not be in it."""
    r = _redis(session)
    out = sys.stdout if out_path == "-" else open(out_path, "w", encoding="utf-8")  # noqa: SIM115
    keys = 0
    try:
        names = namespaces or tuple(row[0].decode() for row in _call(session, r, "RINGKV.NAMESPACES"))
        now = int(_call(session, r, "TIME")[0]) * 1000
        out.write(json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported_ms": now}) + "\n")
        for ns in names:
            _call(session, r, "RINGKV.NAMESPACE", ns)
            cursor = 0
            while True:
                cursor, page = _call(session, r, "SCAN", cursor, "COUNT", SCAN_PAGE_KEYS)
                cursor = int(cursor)
                if page:
                    pipe = r.pipeline(transaction=False)
                    for key in page:
                        pipe.execute_command("RINGKV.GETV", key)
                    now = int(time.time() * 1000)
                    for key, reply in zip(page, pipe.execute(raise_on_error=False), strict=True):
                        if isinstance(reply, Exception):
                            if not str(reply).startswith("WRONGTYPE"):
                                raise reply
                            # A collection: its DUMP payload and expiry (RESTORE takes it back).
                            keys += _export_collection(session, r, out, ns, key)
                            continue
                        siblings = [{"value": _encode(v), "expire_at_ms": now + ttl if ttl >= 0 else 0, "timestamp": ts}
                                    for v, ts, ttl in (reply[1] if reply else [])]
                        if siblings:
                            out.write(json.dumps({"namespace": ns, "key": _encode(key), "siblings": siblings},
                                                 ensure_ascii=False) + "\n")
                            keys += 1
                if cursor == 0:
                    break
    finally:
        r.connection_pool.disconnect()
        if out is not sys.stdout:
            out.close()
    session.note(f"exported {keys} keys")
    return EXIT_OK


def _export_collection(session: NodeSession, r, out, ns: str, key: bytes) -> int:
    """One export line for a key holding a collection: {"namespace", "key", "type", "dump" (the
    DUMP payload, base64), "expire_at_ms"}; 0 when it was gone by the time it was read."""
    kind = _call(session, r, "TYPE", key)
    payload = _call(session, r, "DUMP", key)
    pttl = _call(session, r, "PTTL", key)
    if payload is None:
        return 0
    expire_at = int(time.time() * 1000) + pttl if pttl >= 0 else 0
    out.write(json.dumps({"namespace": ns, "key": _encode(key), "type": kind.decode() if isinstance(kind, bytes) else kind,
                          "dump": base64.b64encode(payload).decode("ascii"), "expire_at_ms": expire_at},
                         ensure_ascii=False) + "\n")
    return 1


@click.command("import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@node_command
def import_command(session: NodeSession, path: str) -> int:
    """Write the keys of an export (JSON lines, `-` for stdin) through the node asked: each
    sibling as a write of its own (RINGKV.PUTV, blind), so a key of several siblings has them
    again, with what is left of its TTL; values already expired are skipped. A key that exists
    here gets the imported values as siblings (in an lww namespace, the last one wins)."""
    r = _redis(session)
    src = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    keys = skipped = 0
    try:
        pipe = r.pipeline(transaction=False)
        current_ns = None
        for number, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise click.ClickException(f"line {number}: not JSON: {exc}") from None
            if number == 1:
                if doc.get("format") != EXPORT_FORMAT or doc.get("version") != EXPORT_VERSION:
                    raise click.ClickException(f"line 1: not a {EXPORT_FORMAT} version {EXPORT_VERSION} header: "
                                               f"{line.strip()[:200]}")
                continue
            if isinstance(doc, dict) and isinstance(doc.get("dump"), str):
                # A collection: {"siblings": [...]} of one sibling, its DUMP payload.
                doc["siblings"] = [{"dump": _decode({"base64": doc["dump"]}, "dump", number),
                                    "expire_at_ms": doc.get("expire_at_ms", 0)}]
            if not isinstance(doc, dict) or not isinstance(doc.get("siblings"), list):
                raise click.ClickException(f"line {number}: expected an object with namespace, key and siblings "
                                           "(or a collection's dump)")
            ns = doc.get("namespace", "default")
            key = _decode(doc.get("key"), "key", number)
            now = int(time.time() * 1000)
            live = [s for s in doc["siblings"] if not 0 < int(s.get("expire_at_ms", 0)) <= now]
            if not live:
                skipped += 1
                continue
            if ns != current_ns:
                pipe.execute_command("RINGKV.NAMESPACE", ns)
                current_ns = ns
            for s in live:
                expire = int(s.get("expire_at_ms", 0))
                if "dump" in s:
                    pipe.execute_command("RESTORE", key, expire - now if expire else 0, s["dump"], "REPLACE")
                    continue
                pipe.execute_command("RINGKV.PUTV", key, _decode(s.get("value"), "value", number),
                                     *(["PX", expire - now] if expire else []))
            keys += 1
            if len(pipe) >= IMPORT_PIPELINE_COMMANDS:
                _flush(session, pipe)
        _flush(session, pipe)
    finally:
        r.connection_pool.disconnect()
        if src is not sys.stdin:
            src.close()
    if session.as_json:
        session.emit({"keys": keys, "expired_skipped": skipped})
    else:
        session.say(f"imported {keys} keys ({skipped} already expired, skipped)")
    return EXIT_OK


def _flush(session: NodeSession, pipe) -> None:
    import redis.exceptions

    try:
        pipe.execute(raise_on_error=True)
    except redis.exceptions.ResponseError as exc:
        session.fail(EXIT_SERVER_ERROR, "server_error", f"import: the node refused a write: {exc}")
    except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError) as exc:
        session.fail(EXIT_UNREACHABLE, "unreachable", f"import: {exc}")


__all__ = ["backup_group", "export_command", "import_command", "restore_command", "snapshot_group"]
