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

Modules, a command group each: `serve` (serve, demo, the node configuration flags), `data`
(get, put, del, scan, info), `cluster` (cluster up, cluster status), `admin` (admin ...,
repair), `shell` (version, completion bash|zsh|fish); `session` is what every command that talks to a node shares, `exit_codes` the codes
above. This module assembles the `ringkv` group, `main` (pyproject.toml's console script);
`python -m ringkv.cli` runs the same (__main__.py).
"""

from __future__ import annotations

import click

from ringkv.cli import admin, backup, cluster, data, serve, shell
from ringkv.cli.exit_codes import EXIT_CODES_HELP


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(package_name="ringkv")
def main() -> None:
    """ringkv: a Dynamo-style distributed key-value store."""


for _command in (
    serve.serve_command,
    serve.demo_command,
    data.get_command,
    data.put_command,
    data.del_command,
    data.scan_command,
    data.info_command,
    cluster.cluster_group,
    admin.admin_group,
    admin.repair_command,
    admin.hotkeys_command,
    shell.version_command,
    shell.completion_command,
):
    main.add_command(_command)


# Backup and restore (cli/backup.py): `backup`, `restore`, `export`, `import`, `admin snapshot`.
for _command in (backup.backup_group, backup.restore_command, backup.export_command, backup.import_command):
    main.add_command(_command)
admin.admin_group.add_command(backup.snapshot_group)


@main.group("bench")
def bench_group() -> None:
    """Benchmarks that start their own servers and write a report (docs/benchmarks/)."""


# The bench and chaos command modules import only click: the benchmarks' and the chaos
# suite's own modules load when their command runs, so `ringkv --help` stays fast.
def _add_bench_commands() -> None:
    from ringkv.bench.consistency.command import consistency
    from ringkv.bench.ycsb.command import ycsb

    bench_group.add_command(ycsb)
    bench_group.add_command(consistency)


_add_bench_commands()


def _add_chaos_command() -> None:
    from ringkv.chaos.command import chaos

    main.add_command(chaos)


_add_chaos_command()

__all__ = ["main"]
