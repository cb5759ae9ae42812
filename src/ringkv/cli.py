"""The `ringkv` command line: run a node (`serve`, `demo`) or a cluster on this machine
(`cluster up`), and talk to one (`get`, `put`, `del`, `scan`, `info`, `cluster status`).

The data commands share `--host` and `--port` (environment `RINGKV_HOST`, `RINGKV_PORT`;
default 127.0.0.1:7379), `--timeout-ms` and `--json`. Without `--json` they print for people
(rich text and tables); with it, exactly one JSON document goes to stdout, errors included.
In JSON, bytes that are valid UTF-8 are a string and any other bytes an object
`{"base64": "<standard base64, padded>"}`. docs/client.md has examples.

Exit codes scripts can rely on:

    0  success
    1  the answer is "no": `get` found no such key, `del` deleted nothing, `put --if-not-exists`
       found the key already there (nothing written), `cluster status` found some member
       unreachable; also `serve` could not start, and `cluster up` could not start a node (or
       get it ready within 30 s) or saw every node exit
    2  usage error: a bad option or argument (click's own), a bad node configuration (`serve`),
       or a port `cluster up` needs is already in use
    3  could not reach the node: refused, unreachable or no answer within --timeout-ms (for
       `put --if-not-exists` this includes "sent, but the reply was lost: outcome unknown")
    4  the node answered with an error
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.markup import escape
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
        click.option("--rpc-port", type=int, help="Inter-node RPC port [7381]."),
        click.option("--members", help="Cluster members, comma-separated node_id@host:rpc_port[/rack] "
                     "(this node included); empty: a cluster of one."),
        click.option("--cluster-name", help="Name every member must share [ringkv]."),
        click.option("--replicas", type=int, help="N, replicas per key [3]."),
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
    _serve(config_path, flags)


def _serve(config_path, flags) -> None:
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


# ---------------------------------------------------------------------- a local cluster

DEFAULT_CLUSTER_DIR = os.path.join(DEFAULT_DATA_DIR, "cluster")
MAX_CLUSTER_NODES = 32
CLUSTER_PORT_STRIDE = 10  # node i listens on base + 10*(i-1): RESP, +1 HTTP, +2 RPC
CLUSTER_READY_TIMEOUT_S = 30.0
CLUSTER_STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 20
_PIPE_WIDTH = 200  # columns of tables written to a pipe or file

CLUSTER_UP_EXIT_CODES_HELP = """\b
Exit codes of cluster up:
  0  the cluster ran and was stopped (Ctrl-C, SIGTERM or SIGHUP)
  1  a node failed to start or get ready, or every node exited
  2  usage error, or a port is already in use"""

CLUSTER_STATUS_EXIT_CODES_HELP = """\b
Exit codes of cluster status:
  0  every member is up
  1  some member is unreachable (from the node asked)
  2  usage error
  3  could not reach the node asked (or no answer within --timeout-ms)
  4  the node answered with an error"""


def _console(stderr: bool = False) -> Console:
    """A console for tables: as wide as the terminal, or wide enough not to squeeze a table
    that goes to a pipe or file."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return console


@main.group("cluster")
def cluster_group() -> None:
    """Run a cluster on this machine (`up`) and look at one (`status`)."""


class _LocalNode:
    """One `ringkv serve` process of `cluster up`."""

    def __init__(self, index: int, root: str, base_port: int) -> None:
        self.node_id = f"n{index}"
        self.resp_port = base_port + CLUSTER_PORT_STRIDE * (index - 1)
        self.http_port = self.resp_port + 1
        self.rpc_port = self.resp_port + 2
        self.data_dir = os.path.join(root, self.node_id)
        self.log_path = self.data_dir + ".log"
        self.pid_path = self.data_dir + ".pid"
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0  # where this run's output starts in the (appended) log
        self.reaped = False  # its exit was seen and reported

    def ports(self) -> list[tuple[str, int]]:
        return [("RESP", self.resp_port), ("HTTP", self.http_port), ("RPC", self.rpc_port)]

    def start(self, args: list[str]) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            log.write(f"---- ringkv cluster up: {self.node_id} starting at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ----\n".encode())
            log.flush()
            # A process group of its own: a Ctrl-C at the terminal reaches `cluster up` only,
            # which then stops the nodes in order.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ringkv.cli", "serve", "--node-id", self.node_id,
                 "--data-dir", self.data_dir, "--resp-port", str(self.resp_port),
                 "--http-port", str(self.http_port), "--rpc-port", str(self.rpc_port), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, process_group=0,
            )
        with open(self.pid_path, "w") as f:
            f.write(f"{self.proc.pid}\n")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def forget(self) -> None:
        """The process has exited: its pid file no longer names it."""
        self.reaped = True
        with contextlib.suppress(OSError):
            os.unlink(self.pid_path)

    def answers_ping(self, host: str) -> bool:
        try:
            with socket.create_connection((host, self.resp_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                lines = f.read().decode("utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _connect_host(host: str) -> str:
    """An address that reaches a server listening on `host` (a wildcard one included)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port now, or None when it could. SO_REUSEADDR as
    the node's servers set it: a port held only by connections in TIME_WAIT (a node stopped a
    moment ago) counts as free."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as exc:
        return exc
    return None


def _pid_alive(pid_path: str) -> int | None:
    """The pid in a pid file, when that process still exists and is a ringkv node (a stale
    file's pid may have been reused by another program)."""
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"ringkv" not in f.read():
                return None
    except (OSError, ValueError):
        return None
    return pid


def _stop_nodes(console: Console, nodes: list[_LocalNode]) -> None:
    """SIGTERM every running node, then wait for each (SIGKILL after CLUSTER_STOP_TIMEOUT_S)."""
    running = [n for n in nodes if n.running()]
    if running:
        console.print(f"stopping {len(running)} node{'s' if len(running) != 1 else ''} ...")
    for n in running:
        with contextlib.suppress(ProcessLookupError):
            n.proc.send_signal(signal.SIGTERM)
    for n in running:
        try:
            code = n.proc.wait(CLUSTER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()
            console.print(f"[yellow]{n.node_id} did not stop within {CLUSTER_STOP_TIMEOUT_S:.0f} s: "
                          f"killed[/] (log: {escape(n.log_path)})")
        else:
            if code == 0:
                console.print(f"{n.node_id} stopped")
            else:
                console.print(f"[yellow]{n.node_id} stopped ({_exit_text(code)})[/] "
                              f"(log: {escape(n.log_path)})")
        n.forget()
    for n in nodes:
        if n.proc is not None and not n.reaped:
            n.proc.poll()
            n.forget()


def _report_exit(console: Console, node: _LocalNode, code: int, when: str) -> None:
    console.print(f"[red]node {node.node_id} exited {when} ({_exit_text(code)})[/]; "
                  f"log: {escape(node.log_path)}")
    if code > 0:
        tail = node.log_tail()
        if tail:
            console.print(f"last lines of {escape(node.log_path)}:", style="dim")
            console.print(tail, markup=False, highlight=False)


@cluster_group.command("up", epilog=CLUSTER_UP_EXIT_CODES_HELP)
@click.option("--nodes", "node_count", default=3, show_default=True,
              type=click.IntRange(1, MAX_CLUSTER_NODES), help="How many nodes (n1, n2, ...).")
@click.option("--data-dir", default=DEFAULT_CLUSTER_DIR, show_default=True,
              type=click.Path(file_okay=False),
              help="Holds each node's data directory n<i>/, log n<i>.log and pid file n<i>.pid.")
@click.option("--base-port", default=7379, show_default=True, type=click.IntRange(1, 65535),
              help="Node i listens on RESP base+10*(i-1), HTTP +1, inter-node RPC +2.")
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(min=1),
              help="N, replicas per key (at most --nodes).")
@click.option("--sync", default="interval", show_default=True,
              type=click.Choice(["always", "interval", "never"]), help="WAL sync policy of every node.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every node listens on.")
def cluster_up(node_count: int, data_dir: str, base_port: int, replicas: int, sync: str,
               host: str) -> None:
    """Start a cluster of ring nodes on this machine, each its own `ringkv serve` process,
    and run it until Ctrl-C (or SIGTERM), which stops every node cleanly.

    Node i is n<i>, with its data in DATA_DIR/n<i>, its output appended to DATA_DIR/n<i>.log
    and, while it runs, its process id in DATA_DIR/n<i>.pid (`kill -9 $(cat DATA_DIR/n2.pid)`
    simulates a crash). A node that exits is reported and the others keep running. Running
    `cluster up` again on the same DATA_DIR restarts the same nodes on their data.
    """
    out = _console()
    err = _console(stderr=True)
    last_port = base_port + CLUSTER_PORT_STRIDE * (node_count - 1) + 2
    if last_port > 65535:
        raise click.BadParameter(
            f"{node_count} nodes from {base_port} need ports up to {last_port}, over 65535",
            param_hint="'--base-port'")
    root = os.path.abspath(data_dir)
    nodes = [_LocalNode(i, root, base_port) for i in range(1, node_count + 1)]
    replicas = min(replicas, node_count)
    reach = _connect_host(host)

    busy = []
    for n in nodes:
        for what, port in n.ports():
            problem = _bind_error(host, port)
            if isinstance(problem, socket.gaierror):
                raise click.BadParameter(f"{host!r}: {problem}", param_hint="'--host'")
            if problem is not None:
                busy.append(f"port {port} ({what} of {n.node_id}) is not free on {host}: "
                            f"{problem.strerror or problem}")
    if busy:
        for line in busy:
            err.print(f"ringkv: {line}", style="red", markup=False)
        still = [(n, pid) for n in nodes if (pid := _pid_alive(n.pid_path)) is not None]
        if still:
            names = ", ".join(f"{n.node_id} (pid {pid})" for n, pid in still)
            err.print(f"nodes of a cluster started earlier from {root} are still running: {names}; "
                      f"stop it first (Ctrl-C where it runs, or kill {' '.join(str(p) for _, p in still)})",
                      markup=False)
        else:
            err.print("choose other ports with --base-port", markup=False)
        raise SystemExit(EXIT_USAGE)

    try:
        os.makedirs(root, exist_ok=True)
        entries = os.listdir(root)
    except OSError as exc:
        raise click.BadParameter(f"cannot use {root}: {exc.strerror or exc}",
                                 param_hint="'--data-dir'") from None
    extra_dirs = sorted(
        (e for e in entries if e[:1] == "n" and e[1:].isdigit() and int(e[1:]) > node_count
         and os.path.isdir(os.path.join(root, e))), key=lambda e: int(e[1:]))
    if extra_dirs:
        err.print(f"note: {root} also holds data of {', '.join(extra_dirs)}, which this run does "
                  f"not start; keys they held may be missing", style="yellow", markup=False)

    stop_signal: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop_signal.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    members = ",".join(f"{n.node_id}@{reach}:{n.rpc_port}" for n in nodes)
    args = ["--host", host, "--members", members, "--replicas", str(replicas), "--sync", sync]
    out.print(f"starting {node_count} node{'s' if node_count != 1 else ''} in {escape(root)} ...")
    try:
        for n in nodes:
            n.start(args)
    except OSError as exc:
        err.print(f"ringkv: cannot start the nodes: {exc}", style="red", markup=False)
        _stop_nodes(out, nodes)
        raise SystemExit(EXIT_NO) from None

    # Ready: every node answers PING on its RESP port.
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    waiting = list(nodes)
    while waiting and not stop_signal:
        for n in list(waiting):
            code = n.proc.poll()
            if code is not None:
                n.forget()
                _report_exit(err, n, code, "before it was ready")
                _stop_nodes(out, nodes)
                raise SystemExit(EXIT_NO)
            if n.answers_ping(reach):
                waiting.remove(n)
        if waiting and time.monotonic() > deadline:
            for n in waiting:
                err.print(f"[red]node {n.node_id} not ready after {CLUSTER_READY_TIMEOUT_S:.0f} s[/]; "
                          f"last lines of {escape(n.log_path)}:")
                err.print(n.log_tail(), markup=False)
            _stop_nodes(out, nodes)
            raise SystemExit(EXIT_NO)
        if waiting:
            time.sleep(0.1)

    if not stop_signal:
        _print_cluster(out, nodes, root, host, reach, replicas)

    # Run until told to stop; report nodes that exit meanwhile, keep the others running.
    while not stop_signal:
        for n in nodes:
            if not n.reaped and (code := n.proc.poll()) is not None:
                n.forget()
                _report_exit(err, n, code, "while the cluster was running")
                left = sum(1 for m in nodes if not m.reaped)
                if left:
                    out.print(f"{left} node{'s' if left != 1 else ''} still running; "
                              "Ctrl-C stops the cluster")
        if all(n.reaped for n in nodes):
            err.print("ringkv: every node has exited", style="red", markup=False)
            raise SystemExit(EXIT_NO)
        time.sleep(0.2)

    name = signal.Signals(stop_signal[0]).name
    out.print(f"{name}: stopping the cluster")
    _stop_nodes(out, nodes)
    out.print("cluster stopped")


def _print_cluster(out: Console, nodes: list[_LocalNode], root: str, host: str, reach: str,
                   replicas: int) -> None:
    rel = os.path.relpath(root)
    shown_root = root if rel.startswith("..") else rel
    count = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    out.print(f"[bold green]ringkv cluster ready[/]: {count}, N={replicas}, "
              f"data and logs in {escape(shown_root)}")
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("node", "RESP", "HTTP", "RPC", "data dir", "log"):
        table.add_column(column, overflow="fold")
    for n in nodes:
        table.add_row(n.node_id, f"{host}:{n.resp_port}", f"{host}:{n.http_port}",
                      f"{host}:{n.rpc_port}", n.node_id + os.sep, os.path.basename(n.log_path))
    out.print(table)
    first = nodes[0]
    h = "" if reach == "127.0.0.1" else f" -h {reach}"
    where = f"[{reach}]" if ":" in reach else reach
    out.print("Talk to any node, e.g.:", markup=False)
    for line in (f"redis-cli{h} -p {first.resp_port} set greeting hello",
                 f"curl http://{where}:{first.http_port}/api/v1/keys/greeting",
                 f"ringkv cluster status{' --host ' + reach if h else ''} --port {first.resp_port}"):
        out.print(f"  {line}", markup=False)
    out.print(f"Process ids are in {shown_root}{os.sep}n<i>.pid. A node that exits is reported "
              "and the others keep running.", markup=False)
    out.print("Ctrl-C stops the cluster.", style="bold", markup=False)


@cluster_group.command("status", epilog=CLUSTER_STATUS_EXIT_CODES_HELP)
@_node_command
def cluster_status_command(session: NodeSession) -> int:
    """Show the cluster's members as the node asked sees them: status, addresses, keys held,
    partitions owned (primary) and stored (replica), ring share and bytes on disk.

    Exits 0 when every member is up, 1 when some member is unreachable.
    """
    status = _fetch_status(session)
    nodes = status.get("nodes", [])
    down = [n for n in nodes if n.get("status") != "up"]
    if session.as_json:
        session.emit(status)
        return EXIT_NO if down else EXIT_OK
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("RESP", overflow="fold")
    table.add_column("HTTP", overflow="fold")
    for column in ("keys", "primary\npartitions", "replica\npartitions", "share", "disk\nbytes"):
        table.add_column(column, justify="right", overflow="fold")

    def number(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) else "-"

    for n in nodes:
        up = n.get("status") == "up"
        table.add_row(
            escape(str(n.get("node_id", "?"))),
            f"[green]{n.get('status')}[/]" if up else f"[red]{escape(str(n.get('status')))}[/]",
            escape(n.get("resp") or "-"),
            escape(n.get("http") or "-"),
            number(n.get("keys")),
            number(n.get("primary_partitions")),
            number(n.get("replica_partitions")),
            f"{n['share']:.1%}" if isinstance(n.get("share"), int | float) else "-",
            number(n.get("bytes_on_disk")),
        )
    out = session.out if session.out.is_terminal else _console()
    out.print(table)
    for n in down:
        session.out.print(f"{n.get('node_id')}: {n.get('error', n.get('status'))}", style="red",
                          markup=False)
    info = status.get("cluster", {})
    members = info.get("members", len(nodes))
    session.out.print(
        f"{members} member{'s' if members != 1 else ''} ({len(nodes) - len(down)} up"
        f"{f', {len(down)} unreachable' if down else ''}), {info.get('partitions', '?')} partitions, "
        f"N={info.get('replicas', '?')}", markup=False)
    return EXIT_NO if down else EXIT_OK


@main.command("repair")
@_node_command
def repair_command(session: NodeSession) -> int:
    """Run anti-entropy now on the node asked: compare every partition it holds with every
    other replica (Merkle trees) and copy what differs both ways; print what it fixed.

    It can take a while on a large node: give it time with --timeout-ms (e.g. 600000).
    Exit 0 when every comparison completed, 4 when some failed (listed).
    """
    summary = _fetch_json(session, "RINGKV.REPAIR", lambda d: "comparisons" in d)
    if session.as_json:
        session.emit(summary)
    else:
        session.say(
            f"compared {summary.get('partitions', 0)} partitions in {summary.get('comparisons', 0)} "
            f"comparisons ({summary.get('in_sync', 0)} already in sync) in {summary.get('seconds', 0)} s: "
            f"{summary.get('keys_pushed', 0)} keys pushed, {summary.get('keys_pulled', 0)} keys pulled, "
            f"{summary.get('traffic_bytes', 0):,} bytes of tree traffic")
        for line in summary.get("errors", []):
            session.note(line)
    return EXIT_SERVER_ERROR if summary.get("error_count") else EXIT_OK


@main.group("admin")
def admin_group() -> None:
    """Change the cluster's membership: join a node, decommission one, remove a dead one.

    docs/cluster.md, "Joining and leaving", says what each does and guarantees.
    """


@admin_group.command("join")
@_config_flags
def admin_join_command(config_path, **flags) -> None:
    """Start this node as a new member: it learns the cluster from the nodes in --members (give
    at least one existing node and this one), receives its partitions, then serves them.

    Same settings as `ringkv serve`; progress is in `ringkv admin status`.
    """
    flags["join"] = True
    _serve(config_path, flags)


@admin_group.command("decommission")
@_node_command
def admin_decommission_command(session: NodeSession) -> int:
    """Hand every partition of the node asked to the nodes that take it over, then leave the
    ring; stop the node afterwards. Give it time with --timeout-ms (e.g. 600000)."""
    doc = _fetch_json(session, "RINGKV.ADMIN DECOMMISSION", lambda d: "status" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"left the ring: {doc.get('partitions_handed_over', 0)} partition hand-overs, "
                    f"{doc.get('keys_moved', 0)} keys moved, {doc.get('errors', 0)} errors; "
                    "the node can be stopped now")
    return EXIT_SERVER_ERROR if doc.get("errors") else EXIT_OK


@admin_group.command("remove")
@click.argument("node_id")
@_node_command
def admin_remove_command(session: NodeSession, node_id: str) -> int:
    """Take a dead node out of the ring (ask any live node); the others rebuild its partitions
    from the remaining replicas."""
    doc = _fetch_json(session, f"RINGKV.ADMIN REMOVE {node_id}", lambda d: "removed" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"removed {doc['removed']}; its partitions are being rebuilt from the other replicas")
    return EXIT_OK


@admin_group.command("cleanup")
@_node_command
def admin_cleanup_command(session: NodeSession) -> int:
    """Remove from the node asked the data it no longer holds as a replica (left behind by
    joins and decommissions). Run it on each node once a membership change has finished."""
    doc = _fetch_json(session, "RINGKV.ADMIN CLEANUP", lambda d: "records_removed" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"removed {doc['records_removed']} records of {doc['partitions']} partitions "
                    f"this node no longer holds ({doc['seconds']} s)")
    return EXIT_OK


@admin_group.command("status")
@_node_command
def admin_status_command(session: NodeSession) -> int:
    """The ring, nodes joining or leaving, and the progress of partition moves."""
    status = _fetch_status(session)
    if session.as_json:
        session.emit(status)
        return EXIT_OK
    m = status.get("membership", {})
    session.say(f"ring: {', '.join(m.get('ring', [])) or '-'}")
    if m.get("pending"):
        session.say(f"after the moves in progress: {', '.join(m['pending'])}")
    move = m.get("move", {})
    if move.get("kind"):
        total = max(1, move.get("partitions_total", 0))
        done = move.get("partitions_done", 0)
        bar = "#" * int(30 * done / total)
        session.say(f"{move['kind']}: [{bar:<30}] {done}/{move.get('partitions_total', 0)} partitions, "
                    f"{move.get('errors', 0)} errors")
    for n in status.get("nodes", []):
        session.say(f"{n['node_id']}: {n['status']}, {'in the ring' if n.get('in_ring') else 'not in the ring'}, "
                    f"{n.get('replica_partitions', 0)} partitions, {n.get('keys', '-')} keys")
    return EXIT_OK


def _fetch_status(session: NodeSession) -> dict[str, Any]:
    """RINGKV.STATUS of the session's node."""
    return _fetch_json(session, "RINGKV.STATUS",
                       lambda d: isinstance(d.get("nodes"), list))


def _fetch_json(session: NodeSession, command: str, check) -> dict[str, Any]:
    """A ringkv command answering one JSON document (the client has no method for these: one
    raw command over redis-py, with the client's connection settings and no retries)."""
    import redis
    import redis.backoff
    import redis.exceptions
    import redis.retry

    from ringkv.client.base import pool_kwargs

    options = session.client.options
    address = f"{options.host}:{options.port}"
    pool = redis.BlockingConnectionPool(
        connection_class=redis.Connection,
        **pool_kwargs(options, redis.retry.Retry(redis.backoff.NoBackoff(), 0)))
    try:
        reply = redis.Redis(connection_pool=pool).execute_command(command)
    except redis.exceptions.TimeoutError as exc:
        session.fail(EXIT_UNREACHABLE, "unreachable",
                     f"{command}: no answer from {address} within {options.timeout_ms:g} ms ({exc})")
    except redis.exceptions.ConnectionError as exc:
        session.fail(EXIT_UNREACHABLE, "unreachable", f"{command}: could not reach {address}: {exc}")
    except redis.exceptions.ResponseError as exc:
        session.fail(EXIT_SERVER_ERROR, "server_error", f"{command} at {address}: {exc}")
    finally:
        pool.disconnect()
    try:
        doc = json.loads(reply)
        if not isinstance(doc, dict) or not check(doc):
            raise ValueError("not the expected document")
    except ValueError as exc:
        session.fail(EXIT_SERVER_ERROR, "server_error",
                     f"{command} at {address}: unexpected reply {str(reply)[:200]!r} ({exc})")
    return doc


@main.group("bench")
def bench_group() -> None:
    """Benchmarks that start their own servers and write a report (docs/benchmarks/)."""


def _add_bench_commands() -> None:
    # The command module imports only click: the benchmark's own modules load when it runs.
    from ringkv.bench.ycsb.command import ycsb

    bench_group.add_command(ycsb)


_add_bench_commands()


def _add_chaos_command() -> None:
    # Imports only click: the chaos suite's modules load when `ringkv chaos` runs.
    from ringkv.chaos.command import chaos

    main.add_command(chaos)


_add_chaos_command()


if __name__ == "__main__":
    main()
