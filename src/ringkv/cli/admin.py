"""Changing and repairing a running cluster: `ringkv admin` (join a node, admit one by its
address, decommission one, remove a dead one, clean up after a move, show the moves, follow
long operations; `admin certs`, in cli/certs.py, makes development TLS certificates; `admin
keys`, in cli/keys.py, manages the encryption-at-rest key file) and `ringkv repair`
(anti-entropy now, on the node asked).

Each command but `admin join` asks one node over RESP and prints what it answered (exit codes:
exit_codes.py; a command whose work partly failed exits 4). `admin join` runs this machine's
node as a new member, with the same flags as `ringkv serve`. docs/cluster.md, "Joining and
leaving", says what each does and guarantees.

Long operations (repair, cleanup, decommission, remove; docs/operations.md) are started on
the node and then followed (`follow_operation`): by default the command polls the operation
with a progress bar and an ETA on stderr and exits 0 only when it is done (4 when it failed, was
interrupted, or finished with errors); `--no-wait` prints its id at once, and `ringkv admin
wait ID` follows it later. Each poll is one short request (--timeout-ms applies to it, not to
the operation); a node that stops answering for FOLLOW_UNREACHABLE_S is given up on (exit 3).
"""

from __future__ import annotations

import time
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table as RichTable

from ringkv.cli.certs import certs_command
from ringkv.cli.exit_codes import EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE
from ringkv.cli.keys import keys_group
from ringkv.cli.serve import config_flags, run_node
from ringkv.cli.session import NodeSession, fetch_json, fetch_status, node_command

FOLLOW_POLL_S = 0.5  # between two polls of an operation
FOLLOW_UNREACHABLE_S = 60.0  # a node restarting may not answer for this long; then give up
FINISHED = ("done", "failed", "interrupted")


def wait_options(func):
    """--wait/--no-wait and --wait-timeout-s, for commands that start a long operation."""
    func = click.option("--wait-timeout-s", type=click.FloatRange(min=0), default=0, show_default=True,
                        help="Stop following after this long (exit 3, the operation goes on); 0: no limit.")(func)
    return click.option("--wait/--no-wait", "wait", default=True, show_default=True,
                        help="Follow the operation to its end with a progress bar, or print its id at once.")(func)


def _is_operation(doc: dict) -> bool:
    return isinstance(doc.get("id"), str) and doc.get("state") in ("running", *FINISHED)


class _Unanswered(Exception):
    def __init__(self, code: int, kind: str, message: str):
        super().__init__(message)
        self.code, self.kind, self.message = code, kind, message


def _poll(session: NodeSession, op_id: str) -> dict | None:
    """The operation's document, or None when the node does not answer now (said nowhere:
    a node restarting is expected; the caller gives up after FOLLOW_UNREACHABLE_S)."""
    def unanswered(code: int, kind: str, message: str):
        raise _Unanswered(code, kind, message)

    session.fail = unanswered  # type: ignore[method-assign]  # this poll only: see finally
    try:
        return fetch_json(session, f"RINGKV.ADMIN OPERATION {op_id}", _is_operation)
    except _Unanswered as exc:
        if exc.code == EXIT_UNREACHABLE:
            return None
        del session.fail
        session.fail(exc.code, exc.kind, exc.message)
    finally:
        session.__dict__.pop("fail", None)


def follow_operation(session: NodeSession, doc: dict, wait: bool, wait_timeout_s: float = 0,
                     summary=None) -> int:
    """Follow the operation `doc` (as the node answered its start) to its end; the exit code.

    `summary(result)`: the line printed when it is done (default: the result's fields)."""
    op_id = doc["id"]
    if not wait:
        if session.as_json:
            session.emit(doc)
        else:
            session.say(op_id)
            session.note(f"{doc['kind']} {op_id} started on {doc['node_id']}; follow it with "
                         f"`ringkv admin wait {op_id}`")
        return EXIT_OK
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.monotonic()
    quiet_since: float | None = None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[unit]} {task.fields[phase]}"), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=session.err,
                        disable=session.as_json or not session.err.is_terminal, transient=False)
    try:
        with progress:
            task = progress.add_task(f"{doc['kind']} {op_id}", total=doc.get("total") or None, completed=doc["done"],
                                     unit=doc.get("unit", ""), phase=doc.get("phase", ""))
            while doc["state"] == "running":
                if wait_timeout_s and time.monotonic() - started > wait_timeout_s:
                    session.fail(EXIT_UNREACHABLE, "still_running",
                                 f"{doc['kind']} {op_id} still running after {wait_timeout_s:g} s "
                                 f"({doc['done']} of {doc['total']} {doc['unit']}); follow it with "
                                 f"`ringkv admin wait {op_id}`")
                time.sleep(FOLLOW_POLL_S)
                polled = _poll(session, op_id)
                if polled is None:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > FOLLOW_UNREACHABLE_S:
                        session.fail(EXIT_UNREACHABLE, "unreachable",
                                     f"{doc['node_id']} has not answered for {FOLLOW_UNREACHABLE_S:g} s; "
                                     f"{doc['kind']} {op_id} may still run there: `ringkv admin wait {op_id}`")
                    continue
                quiet_since = None
                doc = polled
                progress.update(task, total=doc.get("total") or None, completed=doc["done"],
                                unit=doc.get("unit", ""), phase=doc.get("phase", ""))
    except KeyboardInterrupt:
        session.note(f"stopped following; {doc['kind']} {op_id} goes on on {doc['node_id']}: "
                     f"`ringkv admin wait {op_id}`")
        return EXIT_UNREACHABLE
    result = doc.get("result") or {}
    if session.as_json:
        # What the command answered before it ran as an operation (the result), and the
        # operation; or the error, as every command's --json prints one.
        described = {k: v for k, v in doc.items() if k != "result"}
        if doc["state"] == "done":
            session.emit({**result, "operation": described})
        else:
            session.emit({"error": {"kind": f"operation_{doc['state']}", "message": doc.get("error", "")},
                          "operation": described})
    if doc["state"] != "done":
        if not session.as_json:
            session.err.print(f"ringkv: {doc['kind']} {op_id} {doc['state']}: {doc.get('error')}",
                              style="red", markup=False)
        return EXIT_SERVER_ERROR
    summary = summary or SUMMARIES.get(doc["kind"])
    if not session.as_json:
        session.say(summary(result) if summary is not None else
                    f"{doc['kind']} {op_id} done: " + ", ".join(f"{k} {v}" for k, v in result.items()))
    failed = result.get("error_count") or result.get("errors") or (result.get("repair") or {}).get("error_count")
    return EXIT_SERVER_ERROR if failed else EXIT_OK


def _repair_summary(summary: dict) -> str:
    if "repair" in summary:  # a removal resumed after a restart: its repair
        return f"removed {summary.get('removed')}; " + _repair_summary(summary["repair"])
    return (f"compared {summary.get('partitions', 0)} partitions in {summary.get('comparisons', 0)} "
            f"comparisons ({summary.get('in_sync', 0)} already in sync) in {summary.get('seconds', 0)} s: "
            f"{summary.get('keys_pushed', 0)} keys pushed, {summary.get('keys_pulled', 0)} keys pulled, "
            f"{summary.get('traffic_bytes', 0):,} bytes of tree traffic"
            + "".join(f"\n  {line}" for line in summary.get("errors", [])))


# The line printed when an operation of a kind is done (others: its result's fields).
SUMMARIES = {
    "repair": _repair_summary,
    "decommission": lambda doc: (f"left the ring: {doc.get('partitions_handed_over', 0)} partition hand-overs, "
                                 f"{doc.get('keys_moved', 0)} keys moved, {doc.get('errors', 0)} errors; "
                                 "the node can be stopped now"),
    "remove": lambda doc: (_repair_summary(doc) if "repair" in doc else
                           f"removed {doc.get('removed')}; {doc.get('partitions_rebuilt_here', 0)} partitions "
                           "rebuilt on the node asked (the other members rebuild theirs)"),
    "cleanup": lambda doc: (f"removed {doc.get('records_removed', 0)} records of {doc.get('partitions', 0)} "
                            f"partitions this node no longer holds ({doc.get('seconds', 0)} s)"),
    "join": lambda doc: (f"joined: {doc.get('partitions_received', 0)} partitions received, "
                         f"{doc.get('keys_moved', 0)} keys moved"),
}


def _start(session: NodeSession, command: str) -> dict[str, Any]:
    return fetch_json(session, command, _is_operation)


@click.command("repair")
@wait_options
@node_command
def repair_command(session: NodeSession, wait: bool, wait_timeout_s: float) -> int:
    """Run anti-entropy now on the node asked: compare every partition it holds with every
    other replica (Merkle trees) and copy what differs both ways; print what it fixed.

    Runs as an operation on the node, followed here with a progress bar (or --no-wait: its id
    at once). Exit 0 when every comparison completed, 4 when some failed (listed).
    """
    return follow_operation(session, _start(session, "RINGKV.REPAIR ASYNC"), wait, wait_timeout_s)


@click.command("hotkeys")
@click.option("--count", type=click.IntRange(1, 4096), default=10, show_default=True,
              help="Keys to show (and to ask each node for).")
@node_command
def hotkeys_command(session: NodeSession, count: int) -> int:
    """Show the cluster's hottest keys now (docs/hot-keys.md): every member's own summary of
    the keys it coordinated (RINGKV.HOTKEYS), added up per key. `per_s` is an estimate from a
    sample of the requests; `hot` counts the nodes whose hot set holds the key (where a
    namespace's hot_reads and hot_cache_ms act on it).

    Exits 0, or 1 when some member could not be asked (the others are shown).
    """
    status = fetch_status(session)
    members = [n for n in status.get("nodes", []) if n.get("status") != "down" and n.get("address")]
    per_key: dict[tuple[str, str], dict[str, Any]] = {}
    asked, missed = [], []
    for member in members or [{"node_id": "(this node)", "address": None}]:
        address = member["address"]
        where = None if address is None else [_host_port(address)]
        # The node asked first reports its own failure and ends the command; another member's
        # is listed and the others still shown.
        doc = fetch_json(session, f"RINGKV.HOTKEYS COUNT {count}", lambda d: isinstance(d.get("keys"), list), where,
                         quiet=len(members) > 1)
        if doc is None:
            missed.append(str(member.get("node_id")))
            continue
        asked.append(str(doc.get("node_id")))
        for k in doc["keys"]:
            entry = per_key.setdefault((k["namespace"], k["key_base64"]), {
                "namespace": k["namespace"], "key": k["key"], "key_base64": k["key_base64"],
                "per_s": 0.0, "reads": 0, "writes": 0, "hot": 0, "nodes": []})
            entry["per_s"] = round(entry["per_s"] + k["per_s"], 1)
            entry["reads"] += k["reads"]
            entry["writes"] += k["writes"]
            entry["hot"] += bool(k["hot"])
            entry["nodes"].append(doc.get("node_id"))
    ranked = sorted(per_key.values(), key=lambda e: (-e["per_s"], e["namespace"], e["key"]))[:count]
    if session.as_json:
        session.emit({"nodes_asked": asked, "nodes_missed": missed, "keys": ranked})
        return 1 if missed else 0
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False)
    for column, justify in (("namespace", "left"), ("key", "left"), ("per_s", "right"), ("reads", "right"),
                            ("writes", "right"), ("hot on", "right"), ("seen by", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for e in ranked:
        table.add_row(escape(e["namespace"]), escape(e["key"]), f"{e['per_s']:,.1f}", f"{e['reads']:,}",
                      f"{e['writes']:,}", str(e["hot"]), escape(",".join(map(str, e["nodes"]))))
    session.out.print(table)
    session.out.print(f"asked {len(asked)} node{'s' if len(asked) != 1 else ''}"
                      + (f"; could not ask {', '.join(missed)}" if missed else ""), markup=False)
    return 1 if missed else 0


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@click.group("admin")
def admin_group() -> None:
    """Change the cluster's membership (join a node, decommission one, remove a dead one) and a
    namespace's compaction strategy (`admin compaction`).

    docs/cluster.md, "Joining and leaving", says what each does and guarantees.
    """


admin_group.add_command(certs_command)
admin_group.add_command(keys_group)


@admin_group.command("join")
@config_flags
def admin_join_command(config_path, **flags) -> None:
    """Start this node as a new member: it learns the cluster from the nodes in --members (at
    least one existing node and this one), receives its partitions, then serves them. Without
    --members it waits until a member admits it: `ringkv admin add-node HOST:PORT` (this
    node's RESP address) asked of any member, or POST /api/v1/admin/cluster/nodes.

    Same settings as `ringkv serve`; progress is in `ringkv admin status`.
    """
    flags["join"] = True
    run_node(config_path, flags)


@admin_group.command("add-node")
@click.argument("address", metavar="HOST:PORT")
@node_command
def admin_add_node_command(session: NodeSession, address: str) -> int:
    """Admit the node whose RESP port is at HOST:PORT into the cluster of the node asked (any
    member). The new node must be running as a joining node (`ringkv admin join`, with no
    --members needed) and not yet be a member; it is given the members as seeds, receives its
    partitions and turns normal. Follow it with `ringkv cluster status`."""
    doc = fetch_json(session, f"RINGKV.ADMIN ADMIT {address}", lambda d: "node_id" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"{doc['node_id']} at {doc['address']} (RPC {doc.get('rpc_address')}) is {doc['state']}: "
                    f"it will receive {doc['partitions_to_receive']} of {doc['partitions']} partitions; "
                    f"seeds {', '.join(doc['seeds'])}")
    return EXIT_OK


@admin_group.command("decommission")
@wait_options
@node_command
def admin_decommission_command(session: NodeSession, wait: bool, wait_timeout_s: float) -> int:
    """Hand every partition of the node asked to the nodes that take it over, then leave the
    ring; stop the node afterwards (it then refuses to serve its old data: to bring it back,
    wipe its data directory and join it again).

    Runs as an operation on the node (it goes on, and survives a restart of the node, whether
    this command follows it or not); exit 0 once the node has left."""
    return follow_operation(session, _start(session, "RINGKV.ADMIN DECOMMISSION ASYNC"), wait, wait_timeout_s)


@admin_group.command("remove")
@click.argument("node_id")
@click.option("--force", is_flag=True, help="Remove it even though the node asked still hears from it.")
@wait_options
@node_command
def admin_remove_command(session: NodeSession, node_id: str, force: bool, wait: bool, wait_timeout_s: float) -> int:
    """Take a dead node out of the ring (ask any live node); the others rebuild its partitions
    from the remaining replicas. A node that is up is refused (decommission it instead) unless
    --force. The removal is recorded at once (on every member's disk as gossip spreads it: the
    node is refused if it comes back with its old data); the command then follows the asked
    node's rebuild of the partitions it gained."""
    command = f"RINGKV.ADMIN REMOVE {node_id}" + (" FORCE" if force else "") + " ASYNC"
    return follow_operation(session, _start(session, command), wait, wait_timeout_s)


@admin_group.command("cleanup")
@wait_options
@node_command
def admin_cleanup_command(session: NodeSession, wait: bool, wait_timeout_s: float) -> int:
    """Remove from the node asked the data it no longer holds as a replica (left behind by
    joins and decommissions). Run it on each node once a membership change has finished."""
    return follow_operation(session, _start(session, "RINGKV.ADMIN CLEANUP ASYNC"), wait, wait_timeout_s)


@admin_group.command("wait")
@click.argument("operation_id")
@click.option("--wait-timeout-s", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Stop following after this long (exit 3, the operation goes on); 0: no limit.")
@node_command
def admin_wait_command(session: NodeSession, operation_id: str, wait_timeout_s: float) -> int:
    """Follow operation OPERATION_ID of the node asked to its end, with a progress bar; exit 0
    when it is done, 4 when it failed or was interrupted (the error is printed)."""
    doc = fetch_json(session, f"RINGKV.ADMIN OPERATION {operation_id}", _is_operation)
    return follow_operation(session, doc, True, wait_timeout_s)


@admin_group.command("operations")
@click.option("--running", is_flag=True, help="Only the operations in flight.")
@node_command
def admin_operations_command(session: NodeSession, running: bool) -> int:
    """The long operations of the node asked, newest first: running ones and the last ones
    finished, with their progress and outcome."""
    doc = fetch_json(session, "RINGKV.ADMIN OPERATIONS" + (" RUNNING" if running else ""),
                     lambda d: isinstance(d.get("operations"), list))
    if session.as_json:
        session.emit(doc)
        return EXIT_OK
    for op in doc["operations"]:
        session.say(_operation_line(op))
    if not doc["operations"]:
        session.note("no operations" + (" in flight" if running else ""))
    return EXIT_OK


def _operation_line(op: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(op.get("started_ms", 0) / 1000))
    line = f"{op['id']}  {op['kind']:<12} {op['state']:<11} {op['done']}/{op['total']} {op['unit']}"
    if op["state"] == "running":
        line += f" {op.get('phase', '')}" + (f", ETA {op['eta_s']:.0f} s" if op.get("eta_s") is not None else "")
    elif op.get("error"):
        line += f": {op['error']}"
    return f"{line}  (started {when})"


@admin_group.command("status")
@node_command
def admin_status_command(session: NodeSession) -> int:
    """The ring, nodes joining or leaving, and the progress of partition moves."""
    status = fetch_status(session)
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
    ops = status.get("operations", [])
    session.say("operations in flight on the node asked:" + (" none" if not ops else ""))
    for op in ops:
        session.say("  " + _operation_line(op))
    return EXIT_OK


@admin_group.command("compaction")
@click.argument("namespace")
@click.argument("strategy", required=False, type=click.Choice(["leveled", "tiered", "time_window"]))
@click.argument("settings", nargs=-1, metavar="[SETTING=VALUE]...")
@node_command
def admin_compaction_command(session: NodeSession, namespace: str, strategy: str | None,
                             settings: tuple[str, ...]) -> int:
    """Show how NAMESPACE is compacted on the node asked, or, with STRATEGY, compact it by that
    strategy from now on: new merges and the tables they and later flushes write follow it.

    SETTING=VALUE pairs are the strategy's settings, named as in the configuration (the
    `compaction_` prefix may be left out): for tiered, size_ratio_percent, min_merge_runs,
    max_runs; for time_window, window_s and ttl_rule (safe or aggressive). Only on the node
    asked, and not stored: ask each node, and write the change into the configuration too.
    The namespace must have an LSM tree of its own (a `compaction` setting in its
    configuration), or be the default one. docs/compaction.md says when to pick each.
    """
    words = []
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or not name or not value or any(c.isspace() for c in item):
            raise click.BadParameter(f"{item!r}: expected SETTING=VALUE, e.g. window_s=600", param_hint="SETTING=VALUE")
        words += [name, value]
    if settings and strategy is None:
        raise click.BadParameter("settings need a STRATEGY before them", param_hint="SETTING=VALUE")
    if any(c.isspace() for c in namespace):
        raise click.BadParameter(f"{namespace!r} is not a namespace name", param_hint="NAMESPACE")
    command = " ".join(["RINGKV.ADMIN COMPACTION", namespace, *([strategy] if strategy else []), *words])
    doc = fetch_json(session, command, lambda d: "compaction" in d)
    if session.as_json:
        session.emit(doc)
        return EXIT_OK
    fixed = {"namespace", "family", "compaction", "sorted_runs"}
    shown = ", ".join(f"{k}={v}" for k, v in doc.items() if k not in fixed) or "no settings"
    verb = "is now compacted" if strategy else "is compacted"
    runs = f"; {doc['sorted_runs']} sorted runs" if "sorted_runs" in doc else ""
    session.say(f"namespace {doc['namespace']} (column family {doc['family']}) {verb} {doc['compaction']} "
                f"({shown}){runs}")
    return EXIT_OK
