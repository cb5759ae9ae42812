"""Running ringkv on this machine: `ringkv serve` (a node), `ringkv demo` (the embedded engine
on its own), and the node configuration flags `serve` and `admin join` share.

Settings come from defaults < --config TOML < RINGKV_* environment < flags (node/config.py);
a bad configuration exits 2, a node that cannot start (a port in use, say) exits 1.
"""

from __future__ import annotations

import os
import time

import click
from rich.console import Console
from rich.table import Table as RichTable

# Where `demo` and `cluster up` keep their data unless told otherwise.
DEFAULT_DATA_DIR = os.path.join(os.getcwd(), "ringkv-data")


def config_flags(func):
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
        click.option("--cluster-secret-file", help="File holding the secret every member proves to "
                     "the others on the RPC port (mode 0600)."),
        click.option("--replicas", type=int, help="N, replicas per key [3]."),
        click.option("--sync", type=click.Choice(["always", "interval", "never"]), help="WAL sync policy [interval]."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[info]"),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@click.command("serve")
@config_flags
def serve_command(config_path, **flags) -> None:
    """Run a ringkv node (a cluster of one until the cluster is configured).

    Settings come from defaults < --config TOML < RINGKV_* environment < flags.
    """
    run_node(config_path, flags)


def run_node(config_path, flags) -> None:
    """Load the configuration (exit 2 if it is bad) and run the node until it stops (exit 1
    if it cannot start)."""
    from ringkv.errors import ConfigError
    from ringkv.node.config import load_config
    from ringkv.server import run

    if flags.get("node_id") and not flags.get("data_dir"):
        flags["data_dir"] = os.path.join("ringkv-data", flags["node_id"])
    try:
        config = load_config(config_path, overrides=flags)
    except ConfigError as exc:
        click.echo(f"ringkv: bad configuration: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        run(config)
    except ConfigError as exc:  # found at start: a TLS file that cannot be used, say
        click.echo(f"ringkv: bad configuration: {exc}", err=True)
        raise SystemExit(2) from None
    except OSError as exc:
        click.echo(f"ringkv: cannot start: {exc}", err=True)
        raise SystemExit(1) from None


@click.command("demo")
@click.option(
    "--dir",
    "data_dir",
    default=os.path.join(DEFAULT_DATA_DIR, "demo"),
    show_default=True,
    help="Data directory of the embedded engine.",
)
@click.option("--keys", default=100_000, show_default=True, help="How many keys to write.")
def demo_command(data_dir: str, keys: int) -> None:
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
