"""`ringkv cluster`: run a cluster on this machine (`up`) and look at one (`status`).

`cluster up` starts node i as n<i> on ports base+10*(i-1) (RESP), +1 (HTTP), +2 (RPC), each a
`ringkv serve` process of its own (testing/launcher.NodeProcess, in a process group of its own
so that a Ctrl-C reaches `cluster up` only), waits until every node answers PING, and then
watches them: a node that exits is reported and the others keep running. Ctrl-C, SIGTERM or
SIGHUP stops every node cleanly. Its exit codes are in CLUSTER_UP_EXIT_CODES_HELP. Members
authenticate each other with the cluster secret in DATA_DIR/cluster.secret (made on the first
`up`, mode 0600, kept afterwards), which a node joining the cluster needs too.

Membership is what the cluster decided, not the command line (docs/membership.md): on a
directory that already holds nodes, `cluster up` reads every node's membership record
(n<i>/membership.json), and starts the current members (joined nodes included) and not the
nodes that left or were removed. `cluster join` adds a node n<next> to a cluster started by
`cluster up`, with its data under the same directory (the settings `up` recorded in
cluster-up.json); it runs in the background, and the running `cluster up` stops it with the
others; the next `cluster up` restarts it as a member.

`cluster status` prints the members as the node asked sees them; it exits 1 when some member
is down (did not answer, or its failure detector holds it down).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from ringkv.cli.exit_codes import EXIT_NO, EXIT_OK, EXIT_USAGE
from ringkv.cli.serve import DEFAULT_DATA_DIR
from ringkv.cli.session import NodeSession, fetch_status, node_command
from ringkv.node.membership import GONE_STATUSES, LIVE_STATUSES, MEMBERSHIP_FILE, merge_records
from ringkv.testing.launcher import (
    SECRET_FILE_NAME,
    NodeProcess,
    connect_address,
    ensure_cluster_secret,
)

DEFAULT_CLUSTER_DIR = os.path.join(DEFAULT_DATA_DIR, "cluster")
MAX_CLUSTER_NODES = 32
CLUSTER_PORT_STRIDE = 10  # node i listens on base + 10*(i-1): RESP, +1 HTTP, +2 RPC
CLUSTER_READY_TIMEOUT_S = 30.0
CLUSTER_STOP_TIMEOUT_S = 30.0
CLUSTER_JOIN_TIMEOUT_S = 600.0  # `cluster join --wait`: the new node's partitions to arrive
SETTINGS_FILE_NAME = "cluster-up.json"  # what `cluster up` started with, for `cluster join`
_NODE_DIR = re.compile(r"n([1-9][0-9]*)")
_PIPE_WIDTH = 200  # columns of tables written to a pipe or file

CLUSTER_UP_EXIT_CODES_HELP = """\b
Exit codes of cluster up:
  0  the cluster ran and was stopped (Ctrl-C, SIGTERM or SIGHUP)
  1  a node failed to start or get ready, or every node exited
  2  usage error, or a port is already in use"""

CLUSTER_STATUS_EXIT_CODES_HELP = """\b
Exit codes of cluster status:
  0  no member is down (each is healthy, joining or leaving)
  1  some member is down (as the node asked sees it)
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


@click.group("cluster")
def cluster_group() -> None:
    """Run a cluster on this machine (`up`) and look at one (`status`)."""


def _local_node(index: int, root: str, host: str, base_port: int) -> NodeProcess:
    """Node n<index> of `cluster up`: data in root/n<index>, log root/n<index>.log, pid file
    root/n<index>.pid, and the ports its index gives it."""
    resp_port = base_port + CLUSTER_PORT_STRIDE * (index - 1)
    return NodeProcess(
        os.path.join(root, f"n{index}"), node_id=f"n{index}", host=host, resp_port=resp_port,
        http_port=resp_port + 1, rpc_port=resp_port + 2, pid_file=True, own_process_group=True,
        started_by="ringkv cluster up")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


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


def _stop_nodes(console: Console, nodes: list[NodeProcess]) -> None:
    """SIGTERM every running node, then wait for each (SIGKILL after CLUSTER_STOP_TIMEOUT_S)."""
    running = [n for n in nodes if n.running]
    if running:
        console.print(f"stopping {len(running)} node{'s' if len(running) != 1 else ''} ...")
    for n in running:
        n.terminate()
    for n in running:
        try:
            code = n.stop(CLUSTER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            console.print(f"[yellow]{n.node_id} did not stop within {CLUSTER_STOP_TIMEOUT_S:.0f} s: "
                          f"killed[/] (log: {escape(str(n.log_path))})")
        else:
            if code == 0:
                console.print(f"{n.node_id} stopped")
            else:
                console.print(f"[yellow]{n.node_id} stopped ({_exit_text(code)})[/] "
                              f"(log: {escape(str(n.log_path))})")
    for n in nodes:
        n.poll()  # a node that exited unseen: its pid file goes too


def _report_exit(console: Console, node: NodeProcess, code: int, when: str) -> None:
    log_path = escape(str(node.log_path))
    console.print(f"[red]node {node.node_id} exited {when} ({_exit_text(code)})[/]; "
                  f"log: {log_path}")
    if code > 0:
        tail = node.log_tail()
        if tail:
            console.print(f"last lines of {log_path}:", style="dim")
            console.print(tail, markup=False, highlight=False)


def recorded_membership(root: str) -> dict[str, dict]:
    """What the nodes under `root` recorded of the cluster's membership: node id -> its newest
    entry (status, generation, rpc...) over every n<i>/membership.json; {} for a directory
    whose nodes recorded none (new, or made before membership was recorded)."""
    docs = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return {}
    for entry in entries:
        path = os.path.join(root, entry, MEMBERSHIP_FILE)
        if _NODE_DIR.fullmatch(entry) and os.path.isfile(path):
            try:
                with open(path) as f:
                    docs.append(json.load(f))
            except (OSError, ValueError):
                continue  # a node's unreadable record: the others' still say who is a member
    return merge_records(docs)


def _members_to_start(root: str, node_count: int) -> tuple[list[int], dict[str, dict]]:
    """The indexes of the nodes `cluster up` starts, and the recorded membership: the members
    the records hold as joining, normal or leaving (with a data directory here), or, with no
    record, n1..n<node_count>."""
    recorded = recorded_membership(root)
    live = sorted(int(m.group(1)) for node, e in recorded.items()
                  if e.get("status") in LIVE_STATUSES and (m := _NODE_DIR.fullmatch(node))
                  and os.path.isdir(os.path.join(root, node)))
    if not live:
        return list(range(1, node_count + 1)), recorded
    return live, recorded


def _stop_joined(console: Console, root: str, started: list[NodeProcess]) -> None:
    """Stop the nodes `cluster join` added under `root` while this `cluster up` ran (their
    pid files name them)."""
    known = {n.node_id for n in started}
    for entry in sorted(os.listdir(root)):
        node, ext = os.path.splitext(entry)
        if ext != ".pid" or node in known or not _NODE_DIR.fullmatch(node):
            continue
        proc = NodeProcess(os.path.join(root, node), node_id=node, pid_file=True, resp_port=1, http_port=1,
                           rpc_port=1)
        pid = proc.recorded_pid()
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + CLUSTER_STOP_TIMEOUT_S
        while time.monotonic() < deadline and proc.recorded_pid() is not None and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            console.print(f"[yellow]{node} did not stop within {CLUSTER_STOP_TIMEOUT_S:.0f} s: killed[/]")
        else:
            console.print(f"{node} stopped")
        with_pid = os.path.join(root, entry)
        if os.path.exists(with_pid):
            os.unlink(with_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive; reap it
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


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
    `cluster up` again on the same DATA_DIR restarts the cluster's current members on their
    data, as the nodes recorded them: nodes added with `cluster join` included, nodes that
    left (decommissioned) or were removed not (--nodes then does not apply).
    """
    out = _console()
    err = _console(stderr=True)
    root = os.path.abspath(data_dir)
    indexes, recorded = _members_to_start(root, node_count)
    if recorded:
        gone = sorted((n, e["status"]) for n, e in recorded.items() if e.get("status") in GONE_STATUSES)
        out.print(f"restarting the recorded members: {', '.join(f'n{i}' for i in indexes)}"
                  + (f" (not {', '.join(f'{n}, which {s}' for n, s in gone)})" if gone else ""), markup=False)
        saved = _read_settings(root)
        replicas = saved.get("replicas", replicas)
    last_port = base_port + CLUSTER_PORT_STRIDE * (max(indexes) - 1) + 2
    if last_port > 65535:
        raise click.BadParameter(
            f"{max(indexes)} nodes from {base_port} need ports up to {last_port}, over 65535",
            param_hint="'--base-port'")
    nodes = [_local_node(i, root, host, base_port) for i in indexes]
    node_count = len(nodes)
    replicas = min(replicas, node_count) if not recorded else replicas
    reach = connect_address(host)  # where this process and the nodes reach each other

    busy = []
    for n in nodes:
        for what, port in n.ports:
            problem = _bind_error(host, port)
            if isinstance(problem, socket.gaierror):
                raise click.BadParameter(f"{host!r}: {problem}", param_hint="'--host'")
            if problem is not None:
                busy.append(f"port {port} ({what} of {n.node_id}) is not free on {host}: "
                            f"{problem.strerror or problem}")
    if busy:
        for line in busy:
            err.print(f"ringkv: {line}", style="red", markup=False)
        still = [(n, pid) for n in nodes if (pid := n.recorded_pid()) is not None]
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
    started_ids = {n.node_id for n in nodes}
    extra_dirs = sorted(
        (e for e in entries if _NODE_DIR.fullmatch(e) and e not in started_ids
         and recorded.get(e, {}).get("status") not in GONE_STATUSES
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
    try:
        # Members prove this secret to each other at every RPC connection (docs/security.md);
        # kept with the data, so a restarted cluster keeps it.
        secret_file = ensure_cluster_secret(os.path.join(root, SECRET_FILE_NAME))
    except OSError as exc:
        raise click.BadParameter(f"cannot make the cluster secret in {root}: {exc.strerror or exc}",
                                 param_hint="'--data-dir'") from None
    for n in nodes:
        n.settings.update(members=members, replicas=replicas, sync=sync,
                          cluster_secret_file=str(secret_file))
    _write_settings(root, {"replicas": replicas, "sync": sync, "base_port": base_port, "host": host})
    out.print(f"starting {node_count} node{'s' if node_count != 1 else ''} in {escape(root)} ...")
    try:
        for n in nodes:
            os.makedirs(n.data_dir, exist_ok=True)
            n.start(wait=False)
    except OSError as exc:
        err.print(f"ringkv: cannot start the nodes: {exc}", style="red", markup=False)
        _stop_nodes(out, nodes)
        raise SystemExit(EXIT_NO) from None

    # Ready: every node answers PING on its RESP port.
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    waiting = list(nodes)
    while waiting and not stop_signal:
        for n in list(waiting):
            code = n.poll()
            if code is not None:
                _report_exit(err, n, code, "before it was ready")
                _stop_nodes(out, nodes)
                raise SystemExit(EXIT_NO)
            if n.answers_ping():
                waiting.remove(n)
        if waiting and time.monotonic() > deadline:
            for n in waiting:
                err.print(f"[red]node {n.node_id} not ready after {CLUSTER_READY_TIMEOUT_S:.0f} s[/]; "
                          f"last lines of {escape(str(n.log_path))}:")
                err.print(n.log_tail(), markup=False)
            _stop_nodes(out, nodes)
            raise SystemExit(EXIT_NO)
        if waiting:
            time.sleep(0.1)

    if not stop_signal:
        _print_cluster(out, nodes, root, host, reach, replicas)

    # Run until told to stop; report nodes that exit meanwhile, keep the others running.
    exited: set[str] = set()
    while not stop_signal:
        for n in nodes:
            if n.node_id not in exited and (code := n.poll()) is not None:
                exited.add(n.node_id)
                _report_exit(err, n, code, "while the cluster was running")
                left = len(nodes) - len(exited)
                if left:
                    out.print(f"{left} node{'s' if left != 1 else ''} still running; "
                              "Ctrl-C stops the cluster")
        if len(exited) == len(nodes):
            err.print("ringkv: every node has exited", style="red", markup=False)
            raise SystemExit(EXIT_NO)
        time.sleep(0.2)

    name = signal.Signals(stop_signal[0]).name
    out.print(f"{name}: stopping the cluster")
    _stop_joined(out, root, nodes)
    _stop_nodes(out, nodes)
    out.print("cluster stopped")


def _follow_join(node: NodeProcess, reach: str, err: Console) -> None:
    """Follow the new node's join operation (docs/operations.md) to its end, with a progress
    bar; exit 1 if it fails or the node exits."""
    import redis

    from ringkv.cli.admin import follow_operation

    r = redis.Redis(host=reach, port=node.resp_port, socket_timeout=5)
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    while True:  # the node starts its join operation as it starts serving
        ops = json.loads(r.execute_command("RINGKV.ADMIN", "OPERATIONS"))["operations"]
        joins = [op for op in ops if op["kind"] == "join"]
        if joins:
            break
        if node.poll() is not None or time.monotonic() > deadline:
            err.print(f"ringkv: {node.node_id} did not start joining; log: {node.log_path}", style="red",
                      markup=False)
            raise SystemExit(EXIT_NO)
        time.sleep(0.2)
    r.close()
    session = NodeSession(reach, node.resp_port, 5000, False)
    try:
        code = follow_operation(session, joins[0], True, CLUSTER_JOIN_TIMEOUT_S)
    finally:
        session.client.close()
    if code:
        err.print(f"ringkv: {node.node_id} has not joined; it runs on (log: {node.log_path})", style="red",
                  markup=False)
        raise SystemExit(EXIT_NO)


def _read_settings(root: str) -> dict[str, Any]:
    try:
        with open(os.path.join(root, SETTINGS_FILE_NAME)) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_settings(root: str, doc: dict[str, Any]) -> None:
    tmp = os.path.join(root, SETTINGS_FILE_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(root, SETTINGS_FILE_NAME))


@cluster_group.command("join")
@click.option("--data-dir", default=DEFAULT_CLUSTER_DIR, show_default=True, type=click.Path(file_okay=False),
              help="The directory of a cluster started by `cluster up` (and running).")
@click.option("--wait/--no-wait", "wait", default=True, show_default=True,
              help="Wait until the new node has received its partitions and serves them.")
def cluster_join(data_dir: str, wait: bool) -> None:
    """Add a node to the cluster `cluster up` runs from DATA_DIR: n<next>, with its data, log
    and pid file under DATA_DIR beside the others, on the ports its index gives it. It joins
    (receives its partitions, then serves), runs in the background, is stopped by that
    `cluster up` with the others, and is restarted by the next `cluster up` as a member.

    Exit 0 once it has joined (with --no-wait: once it runs), 1 when it could not start.
    """
    out = _console()
    err = _console(stderr=True)
    root = os.path.abspath(data_dir)
    saved = _read_settings(root)
    recorded = recorded_membership(root)
    live = {n: e for n, e in recorded.items() if e.get("status") in LIVE_STATUSES and e.get("rpc")}
    if not saved or not live:
        raise click.BadParameter(f"{root} holds no cluster started by `ringkv cluster up` (no {SETTINGS_FILE_NAME} "
                                 "or no recorded member): start one first", param_hint="'--data-dir'")
    taken = [int(m.group(1)) for e in os.listdir(root) if (m := _NODE_DIR.fullmatch(e))]
    index = max(taken, default=0) + 1
    node = _local_node(index, root, saved.get("host", "127.0.0.1"), int(saved.get("base_port", 7379)))
    for what, port in node.ports:
        problem = _bind_error(node.host, port)
        if problem is not None:
            err.print(f"ringkv: port {port} ({what} of {node.node_id}) is not free: {problem.strerror or problem}",
                      style="red", markup=False)
            raise SystemExit(EXIT_USAGE)
    reach = connect_address(node.host)
    seeds = ",".join(f"{n}@{e['rpc']}" for n, e in sorted(live.items()))
    node.settings.update(members=f"{seeds},{node.node_id}@{reach}:{node.rpc_port}", join="true",
                         replicas=saved.get("replicas", 3), sync=saved.get("sync", "interval"),
                         cluster_secret_file=os.path.join(root, SECRET_FILE_NAME))
    node.started_by = "ringkv cluster join"
    os.makedirs(node.data_dir, exist_ok=True)
    out.print(f"starting {node.node_id} (RESP {node.host}:{node.resp_port}) to join {', '.join(sorted(live))} ...",
              markup=False)
    node.start(wait=False)
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    while not node.answers_ping():
        code = node.poll()
        if code is not None or time.monotonic() > deadline:
            _report_exit(err, node, code if code is not None else -1, "before it was ready")
            node.kill()
            raise SystemExit(EXIT_NO)
        time.sleep(0.1)
    if wait:
        _follow_join(node, reach, err)
    # The process goes on without us: its pid file names it to `cluster up`, which stops it.
    node.proc = None
    out.print(f"{node.node_id} {'joined' if wait else 'is joining'}: RESP {node.host}:{node.resp_port}, data in "
              f"{node.data_dir}, log {node.log_path}", markup=False)


def _print_cluster(out: Console, nodes: list[NodeProcess], root: str, host: str, reach: str,
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
    out.print(f"Members authenticate with the secret in {os.path.join(shown_root, SECRET_FILE_NAME)}: "
              "a node joining this cluster needs it (`ringkv admin join --cluster-secret-file ...`).",
              markup=False)
    out.print("Ctrl-C stops the cluster.", style="bold", markup=False)


MIB = 1024 * 1024
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
# nodetool status's two letters: Up or Down, then Normal, Joining or Leaving.
STATE_LEGEND = "state: U/D = up/down (answered and held up by the failure detector), N/J/L = normal/joining/leaving"


def human_bytes(n: int) -> str:
    """Bytes in binary units, three significant figures: 512 B, 1.50 KiB, 23.4 MiB, 118 GiB."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    if unit == "B":
        return f"{n} B"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"


def _state_code(n: dict) -> str:
    """UN, UJ, UL, DN, DJ, DL (nodetool status's), from the member's status document entry;
    left and removed members show as such."""
    role = str(n.get("role") or "")
    if role in ("left", "removed"):
        return role
    up = n.get("status") != "down"
    code = ("U" if up else "D") + {"joining": "J", "leaving": "L"}.get(role, "N")
    return f"[{'green' if code == 'UN' else 'yellow' if up else 'red'}]{code}[/]"


@cluster_group.command("status", epilog=CLUSTER_STATUS_EXIT_CODES_HELP)
@node_command
def cluster_status_command(session: NodeSession) -> int:
    """Show the cluster's members as the node asked sees them: state (as nodetool status:
    U/D for up/down, then N/J/L for normal/joining/leaving), status (healthy, joining,
    leaving, down), role, addresses, keys held, memory, partitions owned (primary) and stored
    (replica), ring share and disk use (KiB, MiB, GiB); then the cluster's key count.

    Exits 0 when no member is down, 1 when some member is down.
    """
    status = fetch_status(session)
    nodes = status.get("nodes", [])
    down = [n for n in nodes if n.get("status") == "down"]
    if session.as_json:
        session.emit(status)
        return EXIT_NO if down else EXIT_OK
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, caption=STATE_LEGEND, caption_justify="left")
    table.add_column("state", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("RESP", overflow="fold")
    table.add_column("HTTP", overflow="fold")
    for column in ("keys", "memory", "primary\npartitions", "replica\npartitions", "share", "disk"):
        table.add_column(column, justify="right", overflow="fold")

    def number(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) else "-"

    colours = {"healthy": "green", "joining": "yellow", "leaving": "yellow"}
    for n in nodes:
        move = n.get("move") or {}
        state = str(n.get("status"))
        if state == "joining" and move.get("kind") == "join":
            state += f" {move.get('partitions_done', 0)}/{move.get('partitions_total', 0)}"
        table.add_row(
            _state_code(n),
            escape(str(n.get("node_id", "?"))),
            f"[{colours.get(str(n.get('status')), 'red')}]{escape(state)}[/]",
            escape(str(n.get("role") or "-")),
            escape(n.get("address") or n.get("resp") or "-"),
            escape(n.get("http") or "-"),
            number(n.get("keys_count")),
            human_bytes(n["rss_bytes"]) if isinstance(n.get("rss_bytes"), int)
            else human_bytes(int(n["memory_used_mb"] * MIB)) if isinstance(n.get("memory_used_mb"), int | float)
            else "-",
            number(n.get("primary_partitions")),
            number(n.get("replica_partitions")),
            f"{n['share']:.1%}" if isinstance(n.get("share"), int | float) else "-",
            human_bytes(n["bytes_on_disk"]) if isinstance(n.get("bytes_on_disk"), int) else "-",
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
        f"{f', {len(down)} down' if down else ''}), {info.get('partitions', '?')} partitions, "
        f"N={info.get('replicas', '?')}, {number(status.get('total_keys'))} keys"
        + (f" (at least: {status['total_keys_unknown_partitions']} partitions unanswered)"
           if status.get("total_keys_unknown_partitions") else ""), markup=False)
    return EXIT_NO if down else EXIT_OK
