"""The `ringkv` command line: run a node (`serve`, `demo`) and talk to one (`get`, `put`, `del`,
`scan`, `info`).

The data commands share `--host` and `--port` (environment `RINGKV_HOST`, `RINGKV_PORT`;
default 127.0.0.1:7379), `--timeout-ms` and `--json`. Without `--json` they print for people
(rich text and tables); with it, exactly one JSON document goes to stdout, errors included.
In JSON, bytes that are valid UTF-8 are a string and any other bytes an object
`{"base64": "<standard base64, padded>"}`. docs/client.md has examples.

Exit codes scripts can rely on:

    0  success
    1  the answer is "no": `get` found no such key, `del` deleted nothing, `put --if-not-exists`
       found the key already there (nothing written); also `serve` could not start
    2  usage error: a bad option or argument (click's own), or a bad node configuration (`serve`)
    3  could not reach the node: refused, unreachable or no answer within --timeout-ms (for
       `put --if-not-exists` this includes "sent, but the reply was lost: outcome unknown")
    4  the node answered with an error
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table as RichTable

DEFAULT_DATA_DIR = os.path.join(os.getcwd(), "ringkv-data")


EXIT_OK = 0
EXIT_NO = 1  # not found / nothing deleted / condition not met
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_UNREACHABLE = 3
EXIT_SERVER_ERROR = 4

EXIT_CODES_HELP = """\b
Exit codes of get, put, del, scan, info:
  0  success
  1  not found (get), nothing deleted (del), key exists (put --if-not-exists)
  2  usage error
  3  could not reach the node (or no answer within --timeout-ms)
  4  the node answered with an error"""


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(package_name="ringkv")
def main() -> None:
    """ringkv: a Dynamo-style distributed key-value store."""


def _config_flags(func):
    """The most used NodeConfig fields as flags; any field can also come from TOML or env."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file."),
        click.option("--node-id", help="Node id [n1]."),
        click.option("--data-dir", help="Data directory [./ringkv-data/<node-id>]."),
        click.option("--host", help="Address to listen on [127.0.0.1]."),
        click.option("--resp-port", type=int, help="Redis-protocol port [7379]."),
        click.option("--http-port", type=int, help="HTTP API port [7380]."),
        click.option("--sync", type=click.Choice(["always", "interval", "never"]), help="WAL sync policy [interval]."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[info]"),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@main.command()
@_config_flags
def serve(config_path, **flags) -> None:
    """Run a ringkv node (a cluster of one until the cluster is configured).

    Settings come from defaults < --config TOML < RINGKV_* environment < flags.
    """
    from ringkv.errors import ConfigError
    from ringkv.node.config import load_config
    from ringkv.node.server import run

    if flags.get("node_id") and not flags.get("data_dir"):
        flags["data_dir"] = os.path.join("ringkv-data", flags["node_id"])
    try:
        config = load_config(config_path, overrides=flags)
    except ConfigError as exc:
        click.echo(f"ringkv: bad configuration: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        run(config)
    except OSError as exc:
        click.echo(f"ringkv: cannot start: {exc}", err=True)
        raise SystemExit(1) from None


@main.command()
@click.option(
    "--dir",
    "data_dir",
    default=os.path.join(DEFAULT_DATA_DIR, "demo"),
    show_default=True,
    help="Data directory of the embedded engine.",
)
@click.option("--keys", default=100_000, show_default=True, help="How many keys to write.")
def demo(data_dir: str, keys: int) -> None:
    """Write keys into the embedded storage engine, read them back, reopen and check again."""
    from ringkv.storage import Engine, Options

    console = Console()
    console.print(f"[bold]ringkv storage engine demo[/] in {data_dir}")
    value = b"v" * 100
    with Engine.open(data_dir, Options()) as db:
        started = time.perf_counter()
        for i in range(keys):
            db.put(b"demo:%08d" % i, value + b"%d" % i)
        took = time.perf_counter() - started
        console.print(f"wrote {keys:,} keys in {took:.2f} s ({keys / took:,.0f} puts/s)")
        started = time.perf_counter()
        for i in range(keys):
            assert db.get(b"demo:%08d" % i) == value + b"%d" % i
        took = time.perf_counter() - started
        console.print(f"read them back in {took:.2f} s ({keys / took:,.0f} gets/s)")
        with db.scan_prefix(b"demo:0000001") as it:
            first = [k.decode() for k, _ in it][:5]
        console.print(f"scan_prefix(b'demo:0000001') starts with {first}")
    with Engine.open(data_dir, Options()) as db:
        missing = sum(1 for i in range(keys) if db.get(b"demo:%08d" % i) != value + b"%d" % i)
        stats = db.stats()
    console.print(f"reopened: {keys - missing:,} of {keys:,} keys present")
    table = RichTable(title="engine stats after reopen")
    table.add_column("level")
    table.add_column("tables", justify="right")
    table.add_column("bytes", justify="right")
    for lv in stats["levels"]:
        if lv["tables"]:
            table.add_row(str(lv["level"]), str(lv["tables"]), f"{lv['bytes']:,}")
    console.print(table)
    if missing:
        raise SystemExit(1)


# ---------------------------------------------------------------------- talking to a node

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


class NodeSession:
    """What a data command needs: a client of the node and a way to print results and errors."""

    def __init__(self, host: str, port: int, timeout_ms: int, as_json: bool):
        from ringkv.client import Client

        self.as_json = as_json
        self.client = Client(host, port, timeout_ms=timeout_ms, connect_timeout_ms=timeout_ms)
        self.out = Console(highlight=False, emoji=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)

    def emit(self, doc: Any) -> None:
        """The one JSON document of a --json run."""
        sys.stdout.buffer.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        self.out.print(text, markup=False)

    def note(self, text: str) -> None:
        """A remark for the person at the terminal, kept off stdout so pipes get data only."""
        self.err.print(text, style="dim", markup=False)

    def fail(self, code: int, kind: str, message: str) -> NoReturn:
        if self.as_json:
            self.emit({"error": {"kind": kind, "message": message}})
        else:
            self.err.print(f"ringkv: {message}", style="red", markup=False)
        raise SystemExit(code)


def _node_command(func: Callable[..., int | None]) -> Callable[..., None]:
    """Give a data command the shared options, a NodeSession, and the exit codes of errors."""

    @functools.wraps(func)
    def command(host: str, port: int, timeout_ms: int, as_json: bool, **kwargs: Any) -> None:
        from ringkv.client import (
            ConnectionFailedError,
            RequestTimeoutError,
            ResultUnknownError,
            ServerError,
        )

        session = NodeSession(host, port, timeout_ms, as_json)
        try:
            code = func(session, **kwargs)
        except (ConnectionFailedError, RequestTimeoutError, ResultUnknownError) as exc:
            session.fail(EXIT_UNREACHABLE, "unreachable", str(exc))
        except ServerError as exc:
            session.fail(EXIT_SERVER_ERROR, "server_error", str(exc))
        finally:
            session.client.close()
        if code:
            raise SystemExit(code)

    options = [
        click.option("--host", envvar="RINGKV_HOST", show_envvar=True, default="127.0.0.1",
                     show_default=True, help="Node address."),
        click.option("--port", envvar="RINGKV_PORT", show_envvar=True, default=7379,
                     show_default=True, type=click.IntRange(1, 65535),
                     help="Node's Redis-protocol port."),
        click.option("--timeout-ms", default=1000, show_default=True, type=click.IntRange(1, 3_600_000),
                     help="Give up on a request (and on connecting) after this long."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON document on stdout (non-UTF-8 bytes as {\"base64\": ...})."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("get", epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.option("--raw", is_flag=True,
              help="Write the value's bytes to stdout as they are (the default when stdout is not a terminal).")
@_node_command
def get_command(session: NodeSession, key: str, raw: bool) -> int:
    """Print the value of KEY; exit 1 when there is no such key.

    On a terminal the value is shown as text (escaped when it is not UTF-8); into a pipe or
    file, or with --raw, its bytes are written unchanged with no newline added.
    """
    if raw and session.as_json:
        raise click.UsageError("--raw and --json exclude each other")
    key_bytes = _arg_bytes(key)
    value = session.client.get(key_bytes)
    if session.as_json:
        session.emit({"key": json_bytes(key_bytes), "found": value is not None,
                      "value": None if value is None else json_bytes(value)})
        return EXIT_NO if value is None else EXIT_OK
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


@main.command("put", epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.argument("value")
@click.option("--ttl", "ttl_s", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Expire the key after this many seconds (fractions allowed).")
@click.option("--if-not-exists", is_flag=True,
              help="Write only if KEY does not exist; exit 1 (writing nothing) if it does.")
@_node_command
def put_command(session: NodeSession, key: str, value: str, ttl_s: float | None,
                if_not_exists: bool) -> int:
    """Store VALUE under KEY. A VALUE of - reads the value's bytes from stdin."""
    if value == "-":
        data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(data) > MAX_STDIN_BYTES:
            raise click.UsageError(
                f"the value on stdin is over {MAX_STDIN_BYTES} bytes, more than any node accepts"
            )
    else:
        data = _arg_bytes(value)
    key_bytes = _arg_bytes(key)
    written = session.client.set(key_bytes, data, ttl_s=ttl_s, if_not_exists=if_not_exists)
    if session.as_json:
        session.emit({"key": json_bytes(key_bytes), "written": written, "bytes": len(data)})
    elif written:
        session.say("OK")
    else:
        session.note(f"not written: key {_escaped(key_bytes)!r} already exists")
    return EXIT_OK if written else EXIT_NO


@main.command("del", epilog=EXIT_CODES_HELP)
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@_node_command
def del_command(session: NodeSession, keys: tuple[str, ...]) -> int:
    """Delete each KEY; exit 1 when none of them existed."""
    deleted = session.client.delete(*(_arg_bytes(k) for k in keys))
    if session.as_json:
        session.emit({"deleted": deleted, "requested": len(keys)})
    else:
        session.say(f"deleted {deleted} of {len(keys)} key{'s' if len(keys) != 1 else ''}")
    return EXIT_OK if deleted else EXIT_NO


@main.command("scan", epilog=EXIT_CODES_HELP)
@click.option("--match", metavar="PATTERN", help="Only keys matching this glob (*, ?, [abc], \\x).")
@click.option("--count", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="Keys the node examines per page (a page size hint).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many keys.")
@_node_command
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


@main.command("info", epilog=EXIT_CODES_HELP)
@click.argument("section", required=False)
@_node_command
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


if __name__ == "__main__":
    main()
