"""Changing and repairing a running cluster: `ringkv admin` (join a node, admit one by its
address, decommission one, remove a dead one, clean up after a move, show the moves; `admin
certs`, in cli/certs.py, makes development TLS certificates; `admin keys`, in cli/keys.py,
manages the encryption-at-rest key file) and `ringkv repair` (anti-entropy
now, on the node asked).

Each command but `admin join` asks one node over RESP and prints what it answered (exit codes:
exit_codes.py; a command whose work partly failed exits 4). `admin join` runs this machine's
node as a new member, with the same flags as `ringkv serve`. docs/cluster.md, "Joining and
leaving", says what each does and guarantees.
"""

from __future__ import annotations

import click

from ringkv.cli.certs import certs_command
from ringkv.cli.exit_codes import EXIT_OK, EXIT_SERVER_ERROR
from ringkv.cli.keys import keys_group
from ringkv.cli.serve import config_flags, run_node
from ringkv.cli.session import NodeSession, fetch_json, fetch_status, node_command


@click.command("repair")
@node_command
def repair_command(session: NodeSession) -> int:
    """Run anti-entropy now on the node asked: compare every partition it holds with every
    other replica (Merkle trees) and copy what differs both ways; print what it fixed.

    It can take a while on a large node: give it time with --timeout-ms (e.g. 600000).
    Exit 0 when every comparison completed, 4 when some failed (listed).
    """
    summary = fetch_json(session, "RINGKV.REPAIR", lambda d: "comparisons" in d)
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
@node_command
def admin_decommission_command(session: NodeSession) -> int:
    """Hand every partition of the node asked to the nodes that take it over, then leave the
    ring; stop the node afterwards. Give it time with --timeout-ms (e.g. 600000)."""
    doc = fetch_json(session, "RINGKV.ADMIN DECOMMISSION", lambda d: "status" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"left the ring: {doc.get('partitions_handed_over', 0)} partition hand-overs, "
                    f"{doc.get('keys_moved', 0)} keys moved, {doc.get('errors', 0)} errors; "
                    "the node can be stopped now")
    return EXIT_SERVER_ERROR if doc.get("errors") else EXIT_OK


@admin_group.command("remove")
@click.argument("node_id")
@click.option("--force", is_flag=True, help="Remove it even though the node asked still hears from it.")
@node_command
def admin_remove_command(session: NodeSession, node_id: str, force: bool) -> int:
    """Take a dead node out of the ring (ask any live node); the others rebuild its partitions
    from the remaining replicas. A node that is up is refused (decommission it instead) unless
    --force."""
    command = f"RINGKV.ADMIN REMOVE {node_id}" + (" FORCE" if force else "")
    doc = fetch_json(session, command, lambda d: "removed" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"removed {doc['removed']}; its partitions are being rebuilt from the other replicas")
    return EXIT_OK


@admin_group.command("cleanup")
@node_command
def admin_cleanup_command(session: NodeSession) -> int:
    """Remove from the node asked the data it no longer holds as a replica (left behind by
    joins and decommissions). Run it on each node once a membership change has finished."""
    doc = fetch_json(session, "RINGKV.ADMIN CLEANUP", lambda d: "records_removed" in d)
    if session.as_json:
        session.emit(doc)
    else:
        session.say(f"removed {doc['records_removed']} records of {doc['partitions']} partitions "
                    f"this node no longer holds ({doc['seconds']} s)")
    return EXIT_OK


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
