"""The data commands: `get`, `put`, `del`, `scan` and `info` against one node.

Without `--json` they print for people (values as text, escaped when they are not printable
UTF-8, so a stored value cannot send escape sequences to a terminal; into a pipe, raw bytes);
with it, exactly one JSON document goes to stdout, in which bytes that are valid UTF-8 are a
string and any other bytes an object `{"base64": "<standard base64, padded>"}`. A key's version
(`get --json`, `put --if-version`) is opaque: standard base64, as the HTTP API shows it. Exit
codes: exit_codes.py; docs/client.md has examples.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys

import click
from rich.table import Table as RichTable

from ringkv.cli.exit_codes import EXIT_CODES_HELP, EXIT_NO, EXIT_OK
from ringkv.cli.session import NodeSession, node_command

# The largest value a node can be configured to accept (max_value_bytes): reading more from
# stdin could only end in the node refusing it.
MAX_STDIN_BYTES = 32 * 1024 * 1024


def json_bytes(data: bytes) -> str | dict[str, str]:
    """Bytes in JSON output: a string when they are UTF-8, else {"base64": ...}."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _for_terminal(data: bytes) -> tuple[str, bool]:
    """Bytes for a terminal: (text, False) when printable UTF-8, else (escaped as the body of
    a Python bytes literal, True). Control characters are escaped too: a stored value must not
    be able to send escape sequences to the operator's terminal."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if text.isprintable() or all(c.isprintable() or c in "\n\t" for c in text):
            return text, False
    return repr(data)[2:-1], True


def _escaped(data: bytes) -> str:
    return _for_terminal(data)[0]


def _arg_bytes(text: str) -> bytes:
    # argv bytes that are not UTF-8 reach Python as surrogate escapes: give back the originals.
    return os.fsencode(text)


def _version_text(version: bytes | None) -> str | None:
    return None if version is None else base64.b64encode(version).decode("ascii")


def _version_arg(text: str) -> bytes:
    """--if-version: the base64 `get --json` printed (the URL-safe alphabet and missing padding
    accepted too, as the HTTP API does)."""
    try:
        padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
        version = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        version = b""
    if not version:
        raise click.BadParameter(
            f"{text[:64]!r} is not a version: pass the \"version\" that `ringkv get KEY --json` printed "
            "(use --if-not-exists for a key that must not exist)", param_hint="--if-version")
    return version


_consistency_option = click.option(
    "--consistency", type=click.Choice(["ONE", "QUORUM", "ALL", "SERIAL", "SESSION", "LOCAL_ONE", "LOCAL_QUORUM",
                                        "EACH_QUORUM"], case_sensitive=False),
    help="Replicas that must answer (default: the node's). SERIAL: a linearizable read through the key's "
         "consensus path; a write at SERIAL is at QUORUM. SESSION: ONE in a session that lasts for this "
         "command (docs/consistency.md, \"Sessions\"). LOCAL_ONE, LOCAL_QUORUM: in the node's datacenter; "
         "EACH_QUORUM: a majority in every datacenter (docs/multi-dc.md).")


@click.command("get", epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.option("--raw", is_flag=True,
              help="Write the value's bytes to stdout as they are (the default when stdout is not a terminal).")
@_consistency_option
@node_command
def get_command(session: NodeSession, key: str, raw: bool, consistency: str | None) -> int:
    """Print the value of KEY; exit 1 when there is no such key.

    On a terminal the value is shown as text (escaped when it is not UTF-8); into a pipe or
    file, or with --raw, its bytes are written unchanged with no newline added. With --json the
    document also holds the key's version, for `put --if-version`.
    """
    if raw and session.as_json:
        raise click.UsageError("--raw and --json exclude each other")
    key_bytes = _arg_bytes(key)
    if session.as_json:
        return _get_json(session, key_bytes, consistency)
    value = session.client.get(key_bytes, consistency=consistency)
    if value is None:
        session.note(f"key {_escaped(key_bytes)!r} not found")
        return EXIT_NO
    if raw or not sys.stdout.isatty():
        sys.stdout.buffer.write(value)
        sys.stdout.flush()
        return EXIT_OK
    text, binary = _for_terminal(value)
    session.say(text)
    if binary:
        session.note(f"(value of {len(value)} bytes shown escaped, as it is not printable UTF-8; "
                     "--raw or --json give its bytes)")
    return EXIT_OK


def _get_json(session: NodeSession, key: bytes, consistency: str | None) -> int:
    """`get --json`: the value and the version of that very value, from one read (RINGKV.GETV),
    so that `put --if-version` with it can only overwrite what this read showed."""
    client = session.client
    versions = client.get_versions(key, consistency=consistency)
    if len(versions.siblings) == 1:
        value: bytes | None = versions.siblings[0].value
        version = versions.version
    elif versions.siblings:
        # Concurrent writes kept as siblings: the value a plain get answers (the winner), and no
        # version, which would replace siblings this read does not show.
        value, version = client.get(key, consistency=consistency), None
    else:
        value, version = None, None
    doc = {"key": json_bytes(key), "found": value is not None,
           "value": None if value is None else json_bytes(value), "version": _version_text(version)}
    if len(versions.siblings) > 1:
        doc["siblings"] = len(versions.siblings)
    session.emit(doc)
    return EXIT_NO if value is None else EXIT_OK


@click.command("put", epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.argument("value")
@click.option("--ttl", "ttl_s", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Expire the key after this many seconds (fractions allowed).")
@click.option("--if-not-exists", is_flag=True,
              help="Write only if KEY does not exist; exit 1 (writing nothing) if it does.")
@click.option("--if-version", "if_version", metavar="VERSION",
              help="Write only if KEY is still at this version (the \"version\" of `get --json`): a "
                   "compare-and-set. Exit 1, writing nothing and printing the key's version now, if it is not.")
@_consistency_option
@node_command
def put_command(session: NodeSession, key: str, value: str, ttl_s: float | None,
                if_not_exists: bool, if_version: str | None, consistency: str | None) -> int:
    """Store VALUE under KEY. A VALUE of - reads the value's bytes from stdin."""
    if if_version is not None and if_not_exists:
        raise click.UsageError("--if-version and --if-not-exists exclude each other")
    expected = None if if_version is None else _version_arg(if_version)
    if value == "-":
        data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(data) > MAX_STDIN_BYTES:
            raise click.UsageError(
                f"the value on stdin is over {MAX_STDIN_BYTES} bytes, more than any node accepts"
            )
    else:
        data = _arg_bytes(value)
    key_bytes = _arg_bytes(key)
    if expected is not None:
        return _put_if_version(session, key_bytes, data, expected, ttl_s, consistency)
    written = session.client.set(key_bytes, data, ttl_s=ttl_s, if_not_exists=if_not_exists,
                                 consistency=consistency)
    if session.as_json:
        session.emit({"key": json_bytes(key_bytes), "written": written, "bytes": len(data)})
    elif written:
        session.say("OK")
    else:
        session.note(f"not written: key {_escaped(key_bytes)!r} already exists")
    return EXIT_OK if written else EXIT_NO


def _put_if_version(session: NodeSession, key: bytes, data: bytes, expected: bytes, ttl_s: float | None,
                    consistency: str | None) -> int:
    result = session.client.cas(key, expected, data, ttl_s=ttl_s, consistency=consistency)
    if session.as_json:
        session.emit({"key": json_bytes(key), "written": result.success, "bytes": len(data),
                      "version": _version_text(result.version)})
    elif result.success:
        session.say("OK")
    elif result.version is None:
        session.note(f"not written: key {_escaped(key)!r} has no value now")
    else:
        session.note(f"not written: key {_escaped(key)!r} is at version {_version_text(result.version)} now")
    return EXIT_OK if result.success else EXIT_NO


@click.command("del", epilog=EXIT_CODES_HELP)
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@_consistency_option
@node_command
def del_command(session: NodeSession, keys: tuple[str, ...], consistency: str | None) -> int:
    """Delete each KEY; exit 1 when none of them existed."""
    deleted = session.client.delete(*(_arg_bytes(k) for k in keys), consistency=consistency)
    if session.as_json:
        session.emit({"deleted": deleted, "requested": len(keys)})
    else:
        session.say(f"deleted {deleted} of {len(keys)} key{'s' if len(keys) != 1 else ''}")
    return EXIT_OK if deleted else EXIT_NO


@click.command("scan", epilog=EXIT_CODES_HELP)
@click.option("--match", metavar="PATTERN", help="Only keys matching this glob (*, ?, [abc], \\x).")
@click.option("--count", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="Keys the node examines per page (a page size hint).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many keys.")
@node_command
def scan_command(session: NodeSession, match: str | None, count: int, limit: int | None) -> int:
    """List keys, one per line, in the node's order (not sorted).

    Into a pipe or file, keys are written as raw bytes, one per line; on a terminal, keys that
    are not UTF-8 are shown escaped. --json is exact even for keys that contain a newline.
    """
    keys: list[bytes] = []
    truncated = False
    for key in session.client.scan_iter(match=_arg_bytes(match) if match is not None else None,
                                        count=count):
        if limit is not None and len(keys) == limit:
            truncated = True  # one more key exists beyond the limit
            break
        keys.append(key)
        if not session.as_json:
            _print_key(session, key)
    if session.as_json:
        session.emit({"keys": [json_bytes(k) for k in keys], "count": len(keys), "truncated": truncated})
    elif sys.stdout.isatty():
        more = f", stopped at --limit {limit}" if truncated else ""
        session.note(f"({len(keys)} key{'s' if len(keys) != 1 else ''}{more})")
    return EXIT_OK


def _print_key(session: NodeSession, key: bytes) -> None:
    # Printed as found rather than at the end, so a large keyspace streams into `head` or `wc`.
    if sys.stdout.isatty():
        session.say(_escaped(key))
    else:
        sys.stdout.buffer.write(key + b"\n")


@click.command("info", epilog=EXIT_CODES_HELP)
@click.argument("section", required=False)
@node_command
def info_command(session: NodeSession, section: str | None) -> int:
    """Show the node's INFO: every section, or only SECTION (server, clients, memory,
    persistence, ringkv, stats, keyspace)."""
    sections = session.client.info(section.lower() if section else None)
    if session.as_json:
        session.emit(sections)
        return EXIT_OK
    for name, fields in sections.items():
        table = RichTable(title=name or "info", title_justify="left", show_header=False,
                          box=None, padding=(0, 2), pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for field, value in fields.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            table.add_row(field, str(value))
        session.out.print(table)
        session.out.print()
    return EXIT_OK
