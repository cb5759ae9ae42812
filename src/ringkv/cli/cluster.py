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

Datacenters (`up --dcs D`, docs/multi-dc.md): the nodes go in datacenters dc1..dc<D> in
contiguous blocks (testing/launcher.datacenter_layout: 6 nodes in 2 are n1-n3 in dc1 and n4-n6
in dc2), each a rack of its own there, named in every `members` entry (`n4@host:port/dc2/r1`);
`--replicas` counts per datacenter (the nodes' `dc_replicas`), and every node holds messages
to and from another datacenter `--wan-delay-ms` each way (`emulated_wan_delay_ms`). The layout,
the counts and the delay are recorded in cluster-up.json, so a restart keeps them; `cluster
join` puts its node in the datacenter with the fewest members (or `--dc`).

Network namespaces (`up --netns`, docs/cluster.md; Linux, root): every node runs in a network
namespace of its own (chaos/netns.NetnsNetwork), named `rkv<tag>-<dc>-n<i>` (`rkv<tag>-n<i>`
without datacenters), at address 10.<a>.<b>.<10+i> on a bridge `rkv<tag>br` whose address,
.1, is the root namespace's way in: the printed addresses and commands work from there. With
datacenters, the WAN delay between them is then the kernel's (`tc netem` on every node's eth0,
for packets to the other datacenters' nodes only, and `emulated_wan_delay_ms = 0`) where the
kernel has sch_netem; elsewhere the nodes keep emulating it, and a note says so. However `up`
ends (Ctrl-C, SIGTERM, a node that failed to start), it removes every namespace, veth and the
bridge it made. The tag (so the subnet and every node's address) is recorded in
cluster-up.json: the members record each other's addresses, so a restart is in the same
namespaces at the same addresses (`--netns` or not; `--no-netns` on such a cluster, or
`--netns` on one made without it, is refused), and `cluster join` refuses a cluster in
namespaces. A `cluster up` killed by SIGKILL leaves its namespaces behind; the next `up` of
that directory says which, and how to remove them.

`cluster status` prints the members as the node asked sees them; it exits 1 when some member
is down (did not answer, or its failure detector holds it down).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from typing import Any

import click
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from ringkv.chaos.netns import RECORDED_TAGS, NetnsError, NetnsNetwork, netem_available
from ringkv.chaos.netns import unavailable as netns_unavailable
from ringkv.cli.exit_codes import EXIT_NO, EXIT_OK, EXIT_USAGE
from ringkv.cli.serve import DEFAULT_DATA_DIR
from ringkv.cli.session import NodeSession, fetch_status, node_command
from ringkv.cluster.ring import MAX_REPLICAS
from ringkv.node.config import MAX_EMULATED_WAN_DELAY_MS
from ringkv.node.membership import GONE_STATUSES, LIVE_STATUSES, MEMBERSHIP_FILE, merge_records
from ringkv.testing.launcher import (
    MAX_DATACENTERS,
    SECRET_FILE_NAME,
    NodeProcess,
    connect_address,
    datacenter_layout,
    datacenter_of,
    dc_replicas_setting,
    ensure_cluster_secret,
)

DEFAULT_CLUSTER_DIR = os.path.join(DEFAULT_DATA_DIR, "cluster")
MAX_CLUSTER_NODES = 32
CLUSTER_PORT_STRIDE = 10  # node i listens on base + 10*(i-1): RESP, +1 HTTP, +2 RPC
CLUSTER_READY_TIMEOUT_S = 30.0
CLUSTER_STOP_TIMEOUT_S = 30.0
CLUSTER_JOIN_TIMEOUT_S = 600.0  # `cluster join --wait`: the new node's partitions to arrive
SETTINGS_FILE_NAME = "cluster-up.json"  # what `cluster up` started with, for `cluster join`
DEFAULT_REPLICAS = 3  # N, or per datacenter at most the smallest datacenter's nodes
DEFAULT_WAN_DELAY_MS = 40  # with --dcs 2 or more: about two regions of one continent apart
_NODE_DIR = re.compile(r"n([1-9][0-9]*)")
NETNS_TAG_TRIES = 64  # `up --netns`: tags (subnets) tried for one free on this machine
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


def _local_node(index: int, root: str, host: str, base_port: int,
                network: NetnsNetwork | None = None) -> NodeProcess:
    """Node n<index> of `cluster up`: data in root/n<index>, log root/n<index>.log, pid file
    root/n<index>.pid, and the ports its index gives it; on `host`, or in its namespace of
    `network` at its address there."""
    node_id = f"n{index}"
    resp_port = base_port + CLUSTER_PORT_STRIDE * (index - 1)
    where: dict[str, Any] = {"host": host}
    if network is not None:
        where = {"host": network.address(node_id), "exec_prefix": network.exec_prefix(node_id)}
    return NodeProcess(
        os.path.join(root, node_id), node_id=node_id, resp_port=resp_port,
        http_port=resp_port + 1, rpc_port=resp_port + 2, pid_file=True, own_process_group=True,
        started_by="ringkv cluster up", **where)


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
@click.option("--replicas", default=None, type=click.IntRange(min=1),
              help="N, replicas per key (at most --nodes; default 3). With --dcs 2 or more, replicas "
                   "per datacenter (default 3, or the smallest datacenter's node count if less).")
@click.option("--dcs", default=None, type=click.IntRange(1, MAX_DATACENTERS),
              help="Datacenters dc1..dcD, the nodes in contiguous blocks (6 nodes in 2: n1-n3 in dc1, "
                   "n4-n6 in dc2), each node a rack of its own there. Default 1 (no datacenter named).")
@click.option("--wan-delay-ms", default=None, type=click.IntRange(0, MAX_EMULATED_WAN_DELAY_MS),
              help=f"With --dcs 2 or more: each message to or from another datacenter takes this many ms "
                   f"more each way, as over a WAN (held by the nodes; with --netns by the kernel's tc netem "
                   f"where it has sch_netem; default {DEFAULT_WAN_DELAY_MS}; 0: off).")
@click.option("--sync", default="interval", show_default=True,
              type=click.Choice(["always", "interval", "never"]), help="WAL sync policy of every node.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address every node listens on (not with --netns: each node has its own there).")
@click.option("--netns/--no-netns", "netns", default=None,
              help="Run each node in a Linux network namespace of its own (needs root, ip, iptables and tc), "
                   "at an address of its own (10.24x.y.11, .12, ...) on a bridge that the root namespace "
                   "reaches; all removed when the cluster stops. With --dcs 2 or more the WAN delay is the "
                   "kernel's (tc netem, between the datacenters' namespaces), or still the nodes' where the "
                   "kernel lacks sch_netem. A restart keeps what the cluster was made with.")
def cluster_up(node_count: int, data_dir: str, base_port: int, replicas: int | None, dcs: int | None,
               wan_delay_ms: int | None, sync: str, host: str, netns: bool | None) -> None:
    """Start a cluster of ring nodes on this machine, each its own `ringkv serve` process,
    and run it until Ctrl-C (or SIGTERM), which stops every node cleanly.

    Node i is n<i>, with its data in DATA_DIR/n<i>, its output appended to DATA_DIR/n<i>.log
    and, while it runs, its process id in DATA_DIR/n<i>.pid (`kill -9 $(cat DATA_DIR/n2.pid)`
    simulates a crash). A node that exits is reported and the others keep running. Running
    `cluster up` again on the same DATA_DIR restarts the cluster's current members on their
    data, as the nodes recorded them: nodes added with `cluster join` included, nodes that
    left (decommissioned) or were removed not (--nodes then does not apply).

    With --dcs D the nodes are spread over datacenters dc1..dcD (n1-n3 in dc1 and n4-n6 in
    dc2 for 6 nodes in 2), --replicas counts per datacenter, and messages between datacenters
    take --wan-delay-ms each way. A restart keeps the datacenters and replica counts the
    cluster was made with, and the delay unless --wan-delay-ms is given.

    With --netns (Linux, root) each node runs in a network namespace of its own, named
    rkv<tag>-<dc>-n<i> (`ip netns list`), at its own address, reached from this machine through
    a bridge; the WAN delay between datacenters is then made by the kernel (tc netem) if it has
    sch_netem, else still by the nodes (a note says so). Stopping the cluster removes the
    namespaces and the bridge. A restart runs in the same namespaces at the same addresses.
    """
    out = _console()
    err = _console(stderr=True)
    root = os.path.abspath(data_dir)
    indexes, recorded = _members_to_start(root, node_count)
    if recorded:
        gone = sorted((n, e["status"]) for n, e in recorded.items() if e.get("status") in GONE_STATUSES)
        out.print(f"restarting the recorded members: {', '.join(f'n{i}' for i in indexes)}"
                  + (f" (not {', '.join(f'{n}, which {s}' for n, s in gone)})" if gone else ""), markup=False)
        layout = _recorded_layout(_read_settings(root), recorded, indexes, replicas, dcs, wan_delay_ms, err)
    else:
        layout = _new_layout(node_count, replicas, dcs, wan_delay_ms)
    replicas = layout.replicas
    last_port = base_port + CLUSTER_PORT_STRIDE * (max(indexes) - 1) + 2
    if last_port > 65535:
        raise click.BadParameter(
            f"{max(indexes)} nodes from {base_port} need ports up to {last_port}, over 65535",
            param_hint="'--base-port'")
    host_given = click.get_current_context().get_parameter_source("host") != ParameterSource.DEFAULT
    network = _cluster_network(indexes, layout, netns, bool(recorded), host_given, root)
    nodes = [_local_node(i, root, host, base_port, network) for i in indexes]
    node_count = len(nodes)

    busy = []
    for n in nodes if network is None else ():  # in namespaces made for this run, every port is free
        for what, port in n.ports:
            problem = _bind_error(host, port)
            if isinstance(problem, socket.gaierror):
                raise click.BadParameter(f"{host!r}: {problem}", param_hint="'--host'")
            if problem is not None:
                busy.append(f"port {port} ({what} of {n.node_id}) is not free on {host}: "
                            f"{problem.strerror or problem}")
    still = [(n, pid) for n in nodes if (pid := n.recorded_pid()) is not None] if busy or network else []
    if busy or still:
        for line in busy:
            err.print(f"ringkv: {line}", style="red", markup=False)
        if still:
            names = ", ".join(f"{n.node_id} (pid {pid})" for n, pid in still)
            err.print(f"nodes of a cluster started earlier from {root} are still running: {names}; "
                      f"stop it first (Ctrl-C where it runs, or kill {' '.join(str(p) for _, p in still)})",
                      markup=False)
        else:
            err.print("choose other ports with --base-port", markup=False)
        raise SystemExit(EXIT_USAGE)
    if network is not None and recorded:  # a new cluster's tag is one nothing uses
        _refuse_leftovers(network, root, err)

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

    members = ",".join(_member_entry(n.node_id, n.connect_host, n.rpc_port, layout.locations.get(n.node_id, ""))
                       for n in nodes)
    try:
        # Members prove this secret to each other at every RPC connection (docs/security.md);
        # kept with the data, so a restarted cluster keeps it.
        secret_file = ensure_cluster_secret(os.path.join(root, SECRET_FILE_NAME))
    except OSError as exc:
        raise click.BadParameter(f"cannot make the cluster secret in {root}: {exc.strerror or exc}",
                                 param_hint="'--data-dir'") from None
    # The kernel delays what crosses between the datacenters' namespaces, when it can.
    wan_by_kernel = network is not None and len(layout.dc_replicas) > 1 and layout.wan_delay_ms > 0 \
        and netem_available()
    for n in nodes:
        n.settings.update(members=members, replicas=replicas, sync=sync,
                          cluster_secret_file=str(secret_file), **layout.node_settings())
        if wan_by_kernel:
            n.settings["emulated_wan_delay_ms"] = 0
        if network is not None and "RINGKV_PROTECTED_MODE" not in os.environ:
            # In a namespace, a node's clients (this machine's root namespace, through the bridge)
            # are not on its loopback, which is all protected mode serves without users; the
            # bridge is this machine's alone, as with the chaos suite's namespaces. Members
            # still prove the cluster secret.
            n.settings["protected_mode"] = "false"
    _write_settings(root, {"replicas": replicas, "sync": sync, "base_port": base_port, "host": host,
                           **layout.recorded()})
    if network is not None and len(layout.dc_replicas) > 1 and layout.wan_delay_ms > 0 and not wan_by_kernel:
        err.print(f"note: this kernel lacks sch_netem (tc netem), so the {layout.wan_delay_ms} ms WAN delay "
                  "between the datacenters is emulated in the nodes (emulated_wan_delay_ms), not made by the "
                  "network", style="yellow", markup=False)
    try:
        if network is not None:
            _network_up(network, layout, wan_by_kernel, err)
        _run_nodes(out, err, root, nodes, layout, stop_signal, network, wan_by_kernel)
    finally:
        if network is not None:
            for n in nodes:
                if n.running:  # only when an error cut the stop short
                    n.kill()
            network.down()
            out.print(f"removed the network namespaces and bridge {network.bridge}", markup=False)


def _run_nodes(out: Console, err: Console, root: str, nodes: list[NodeProcess], layout: ClusterLayout,
               stop_signal: list[int], network: NetnsNetwork | None, wan_by_kernel: bool) -> None:
    """Start the nodes, wait until each is ready, print how to reach them, and watch them until
    a signal lands in `stop_signal`; then stop them (and the nodes `cluster join` added). Exit
    1 (SystemExit) when one fails to start or get ready, or every node exits."""
    node_count = len(nodes)
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
        _print_cluster(out, nodes, root, layout, network, wan_by_kernel)

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


@dataclasses.dataclass
class ClusterLayout:
    """Where a `cluster up` cluster's nodes are and how it replicates: `replicas` is N (the
    sum over the datacenters with `dc_replicas`), `locations` each node's `dc/rack` ({} with
    one datacenter, which names none), `wan_delay_ms` the delay between datacenters,
    `netns_tag` the tag of the network namespaces the nodes run in (None: the host's network;
    chaos/netns.NetnsNetwork)."""

    replicas: int
    dc_replicas: dict[str, int] = dataclasses.field(default_factory=dict)
    locations: dict[str, str] = dataclasses.field(default_factory=dict)
    wan_delay_ms: int = 0
    netns_tag: int | None = None

    def node_settings(self) -> dict[str, Any]:
        """The node settings beyond `replicas` (none with one datacenter)."""
        if not self.dc_replicas:
            return {}
        return {"dc_replicas": dc_replicas_setting(self.dc_replicas), "emulated_wan_delay_ms": self.wan_delay_ms}

    def recorded(self) -> dict[str, Any]:
        """What cluster-up.json keeps of it, beside `replicas`."""
        return {"dcs": max(1, len(self.dc_replicas)), "dc_replicas": self.dc_replicas,
                "wan_delay_ms": self.wan_delay_ms, "locations": self.locations,
                "netns": None if self.netns_tag is None else {"tag": self.netns_tag}}


def _new_layout(node_count: int, replicas: int | None, dcs: int | None, wan_delay_ms: int | None) -> ClusterLayout:
    """A new cluster's layout from the command line; click.BadParameter naming the option
    that cannot be."""
    dcs = dcs or 1
    if dcs == 1:
        if wan_delay_ms:
            raise click.BadParameter("delays messages between datacenters: give --dcs 2 or more too",
                                     param_hint="'--wan-delay-ms'")
        return ClusterLayout(min(replicas or DEFAULT_REPLICAS, node_count))
    try:
        locations = datacenter_layout(node_count, dcs)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (--nodes {node_count})", param_hint="'--dcs'") from None
    names = sorted({datacenter_of(loc) for loc in locations})
    smallest = min(sum(datacenter_of(loc) == dc for loc in locations) for dc in names)
    per_dc = min(DEFAULT_REPLICAS, smallest) if replicas is None else replicas
    if per_dc > smallest:
        raise click.BadParameter(
            f"{per_dc} replicas per datacenter, but dc{dcs} has {smallest} node{'s' if smallest != 1 else ''} "
            f"(--nodes {node_count} in --dcs {dcs}): give at most {smallest}, or more nodes", param_hint="'--replicas'")
    if per_dc * dcs > MAX_REPLICAS:
        raise click.BadParameter(f"{per_dc} per datacenter in {dcs} datacenters is {per_dc * dcs} replicas of "
                                 f"each key, over {MAX_REPLICAS}", param_hint="'--replicas'")
    return ClusterLayout(per_dc * dcs, {dc: per_dc for dc in names},
                         {f"n{i + 1}": loc for i, loc in enumerate(locations)},
                         DEFAULT_WAN_DELAY_MS if wan_delay_ms is None else wan_delay_ms)


def _recorded_layout(saved: dict[str, Any], recorded: dict[str, dict], indexes: list[int], replicas: int | None,
                     dcs: int | None, wan_delay_ms: int | None, err: Console) -> ClusterLayout:
    """The layout of a cluster started again: what cluster-up.json recorded (a node it does not
    place, where its membership record does), with the delay of --wan-delay-ms if given. A
    note when --dcs or --replicas asked for another layout: they apply to a new cluster."""
    dc_counts = {str(dc): int(n) for dc, n in (saved.get("dc_replicas") or {}).items()}
    locations = {str(node): str(loc) for node, loc in (saved.get("locations") or {}).items()}
    for i in indexes:
        location = recorded.get(f"n{i}", {}).get("rack", "")
        if f"n{i}" not in locations and location:
            locations[f"n{i}"] = location
    netns = saved.get("netns")
    layout = ClusterLayout(int(saved.get("replicas", replicas or DEFAULT_REPLICAS)), dc_counts, locations,
                           int(saved.get("wan_delay_ms", 0)),
                           int(netns["tag"]) if isinstance(netns, dict) and "tag" in netns else None)
    per_dc = max(dc_counts.values(), default=layout.replicas)
    if (dcs is not None and dcs != max(1, len(dc_counts))) or (replicas is not None and replicas != per_dc):
        shape = (f"{len(dc_counts)} datacenters, {per_dc} replicas in each" if dc_counts
                 else f"one datacenter, {layout.replicas} replicas")
        err.print(f"note: --dcs and --replicas apply to a new cluster; this one keeps {shape} "
                  f"(recorded in {SETTINGS_FILE_NAME})", style="yellow", markup=False)
    if wan_delay_ms is not None:
        if wan_delay_ms and not dc_counts:
            raise click.BadParameter("delays messages between datacenters, and this cluster has one",
                                     param_hint="'--wan-delay-ms'")
        layout.wan_delay_ms = wan_delay_ms
    return layout


def _cluster_network(indexes: list[int], layout: ClusterLayout, netns: bool | None, restarting: bool,
                     host_given: bool, root: str) -> NetnsNetwork | None:
    """The network namespaces the nodes n<i> (i in `indexes`) run in, not made yet, or None
    for the host's network; sets `layout.netns_tag`. A new cluster gets them with --netns, on
    a tag (subnet) no network of this machine uses. A restarted one keeps what it was made
    with (its members recorded each other's addresses, which only the same tag gives back), so
    a --netns or --no-netns that says otherwise is refused. Node n<i> is in `rkv<tag>-<dc>-n<i>`
    at address .<10+i>: its address does not depend on which other nodes run."""
    if restarting:
        if netns and layout.netns_tag is None:
            raise click.BadParameter(
                "this cluster was made without it: its members recorded each other's host addresses, which "
                "they would not have in namespaces; start a new cluster with --netns in another --data-dir",
                param_hint="'--netns'")
        if netns is False and layout.netns_tag is not None:
            raise click.BadParameter(
                "this cluster was made with --netns: its members recorded each other's addresses in their "
                "namespaces, and restart only there (leave --no-netns out)", param_hint="'--no-netns'")
        if layout.netns_tag is None:
            return None
    elif not netns:
        layout.netns_tag = None
        return None
    if host_given:
        raise click.BadParameter("does not apply with --netns: each node listens on its namespace's address",
                                 param_hint="'--host'")
    why = netns_unavailable()
    if why is not None:
        made = " (this cluster was made with --netns, and restarts only in namespaces)" if restarting else ""
        raise click.BadParameter(f"cannot run nodes in network namespaces here: {why}{made}",
                                 param_hint="'--netns'")

    def network(tag: int) -> NetnsNetwork:
        names, slots = {}, {}
        for i in indexes:
            dc = datacenter_of(layout.locations.get(f"n{i}", ""))
            names[f"n{i}"] = f"rkv{tag}-{dc}-n{i}" if dc else f"rkv{tag}-n{i}"
            slots[f"n{i}"] = i
        return NetnsNetwork([f"n{i}" for i in indexes], tag, namespace_names=names, slots=slots)

    if restarting:
        if layout.netns_tag not in RECORDED_TAGS:
            raise click.ClickException(f"{SETTINGS_FILE_NAME} in {root} records netns tag {layout.netns_tag}, "
                                       f"not one of {RECORDED_TAGS.start}..{RECORDED_TAGS.stop - 1}")
        return network(layout.netns_tag)
    start = os.getpid() % len(RECORDED_TAGS)
    try:
        for k in range(NETNS_TAG_TRIES):
            tag = RECORDED_TAGS[(start + k) % len(RECORDED_TAGS)]
            if not (candidate := network(tag)).in_use():
                layout.netns_tag = tag
                return candidate
    except NetnsError as exc:
        raise click.ClickException(f"cannot look at this machine's networks: {exc}") from None
    raise click.ClickException(f"no free subnet for the namespaces: the {NETNS_TAG_TRIES} tried "
                               f"(from rkv{RECORDED_TAGS[start]}br on) are all in use")


def _refuse_leftovers(network: NetnsNetwork, root: str, err: Console) -> None:
    """Exit 2 when the namespaces or bridge of a restarted cluster are still there (a `cluster
    up` killed by SIGKILL could not remove them), saying how to remove them."""
    try:
        taken = network.in_use()
    except NetnsError as exc:
        raise click.ClickException(f"cannot look at this machine's networks: {exc}") from None
    if not taken:
        return
    shown = [t for t in taken if not t.startswith("veth ")] or taken  # veths go with their namespaces
    err.print(f"ringkv: the network of this cluster is already there: {', '.join(shown)} (left by a "
              f"`cluster up` of {root} that was killed)", style="red", markup=False)
    removals = [f"ip netns del {network.namespace(n)}" for n in network.node_ids
                if f"namespace {network.namespace(n)}" in taken]
    removals += [f"ip link del {network.bridge}"] if f"bridge {network.bridge}" in taken else []
    if removals:
        err.print(f"remove it, then start the cluster again: {'; '.join(removals)}", markup=False)
    raise SystemExit(EXIT_USAGE)


def _network_up(network: NetnsNetwork, layout: ClusterLayout, wan_by_kernel: bool, err: Console) -> None:
    """Make the nodes' namespaces, and with `wan_by_kernel` the delay between the datacenters'
    (on failure, whatever was made is removed by the caller's network.down()); exit 1 when
    the kernel refuses."""
    try:
        network.up()
        if wan_by_kernel:
            groups = {n: datacenter_of(layout.locations.get(n, "")) for n in network.node_ids}
            network.delay_between(groups, layout.wan_delay_ms)
    except NetnsError as exc:
        err.print(f"ringkv: cannot make the nodes' network namespaces: {exc}", style="red", markup=False)
        raise SystemExit(EXIT_NO) from None


def _member_entry(node_id: str, host: str, rpc_port: int, location: str) -> str:
    """A `members` entry: `node_id@host:port`, then `/dc/rack` when the node has a location."""
    return f"{node_id}@{host}:{rpc_port}" + (f"/{location}" if location else "")


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
@click.option("--dc", default=None,
              help="The datacenter of the new node, in a cluster started with --dcs (default: the one "
                   "with the fewest members).")
def cluster_join(data_dir: str, wait: bool, dc: str | None) -> None:
    """Add a node to the cluster `cluster up` runs from DATA_DIR: n<next>, with its data, log
    and pid file under DATA_DIR beside the others, on the ports its index gives it. It joins
    (receives its partitions, then serves), runs in the background, is stopped by that
    `cluster up` with the others, and is restarted by the next `cluster up` as a member.

    In a cluster of several datacenters it goes in --dc, or in the datacenter with the fewest
    members, as a rack of its own there.

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
    if saved.get("netns"):
        # Its node would need a namespace on the running `up`'s bridge, which that `up` removes,
        # and the other nodes' netem filters to know its address.
        raise click.BadParameter(f"the cluster in {root} runs its nodes in network namespaces (cluster up "
                                 "--netns), to which `cluster join` cannot add one: start it with more --nodes "
                                 "instead (in a new --data-dir)", param_hint="'--data-dir'")
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
    layout = _recorded_layout(saved, recorded, [], None, None, None, err)
    location = _join_location(layout, live, dc)
    if location:
        layout.locations[node.node_id] = location
        _write_settings(root, {**saved, **layout.recorded()})
    seeds = ",".join(f"{n}@{e['rpc']}" + (f"/{e['rack']}" if e.get("rack") else "") for n, e in sorted(live.items()))
    node.settings.update(members=f"{seeds},{_member_entry(node.node_id, reach, node.rpc_port, location)}",
                         join="true", replicas=layout.replicas, sync=saved.get("sync", "interval"),
                         cluster_secret_file=os.path.join(root, SECRET_FILE_NAME), **layout.node_settings())
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


def _join_location(layout: ClusterLayout, live: dict[str, dict], dc: str | None) -> str:
    """Where a joining node goes: "" in a cluster of one datacenter, else `dc` (by default the
    datacenter with the fewest live members, the first by name on a tie) and a rack of its
    own there."""
    if not layout.dc_replicas:
        if dc is not None:
            raise click.BadParameter("this cluster has no datacenters (it was started without --dcs)",
                                     param_hint="'--dc'")
        return ""
    members = {name: 0 for name in layout.dc_replicas}
    for node, entry in live.items():
        where = datacenter_of(str(entry.get("rack") or layout.locations.get(node, "")))
        if where in members:
            members[where] += 1
    if dc is None:
        dc = min(sorted(members), key=lambda name: members[name])
    elif dc not in members:
        raise click.BadParameter(f"{dc!r} is not one of this cluster's datacenters ({', '.join(sorted(members))})",
                                 param_hint="'--dc'")
    # Racks are numbered in order of arrival, and never reused: a node that left keeps its.
    taken = sum(datacenter_of(loc) == dc for loc in layout.locations.values())
    return f"{dc}/r{taken + 1}"


def _print_cluster(out: Console, nodes: list[NodeProcess], root: str, layout: ClusterLayout,
                   network: NetnsNetwork | None, wan_by_kernel: bool) -> None:
    rel = os.path.relpath(root)
    shown_root = root if rel.startswith("..") else rel
    count = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    if layout.dc_replicas:
        per_dc = ", ".join(f"{dc}={n}" for dc, n in sorted(layout.dc_replicas.items()))
        delay = (f"WAN delay {layout.wan_delay_ms} ms each way (tc netem between the datacenters' namespaces)"
                 if wan_by_kernel else f"emulated WAN delay {layout.wan_delay_ms} ms each way")
        shape = f"{count} in {len(layout.dc_replicas)} datacenters, N={layout.replicas} ({per_dc}), {delay}"
    else:
        shape = f"{count}, N={layout.replicas}"
    out.print(f"[bold green]ringkv cluster ready[/]: {escape(shape)}, data and logs in {escape(shown_root)}")
    located = bool(layout.dc_replicas)
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("node", *(("dc", "rack") if located else ()), *(("netns",) if network else ()),
                   "RESP", "HTTP", "RPC", "data dir", "log"):
        table.add_column(column, overflow="fold")
    for n in nodes:
        location = layout.locations.get(n.node_id, "")
        where = (datacenter_of(location) or "-", location.rpartition("/")[2] or "-") if located else ()
        namespace = (network.namespace(n.node_id),) if network else ()
        table.add_row(n.node_id, *where, *namespace, f"{n.host}:{n.resp_port}", f"{n.host}:{n.http_port}",
                      f"{n.host}:{n.rpc_port}", n.node_id + os.sep, os.path.basename(n.log_path))
    out.print(table)

    def redis_cli(n: NodeProcess) -> str:
        return "redis-cli" + ("" if n.connect_host == "127.0.0.1" else f" -h {n.connect_host}") + f" -p {n.resp_port}"

    first = nodes[0]
    reach = first.connect_host
    where = f"[{reach}]" if ":" in reach else reach
    lines = [f"{redis_cli(first)} set greeting hello",
             f"curl http://{where}:{first.http_port}/api/v1/keys/greeting",
             f"ringkv cluster status{'' if reach == '127.0.0.1' else ' --host ' + reach} --port {first.resp_port}"]
    far = [n for n in nodes if located and datacenter_of(layout.locations.get(n.node_id, ""))
           != datacenter_of(layout.locations.get(first.node_id, ""))]
    if far:  # the same key read in another datacenter, from its replicas there only
        lines.insert(1, f"{redis_cli(far[0])} RINGKV.AT LOCAL_QUORUM GET greeting")
    out.print("Talk to any node, e.g.:", markup=False)
    for line in lines:
        out.print(f"  {line}", markup=False)
    if network is not None:
        out.print(f"Each node runs in the network namespace of its netns column (`ip netns exec NAME ss -tn` "
                  f"looks inside), behind bridge {network.bridge} ({network.gateway}/24, this machine's way in); "
                  "stopping the cluster removes them.", markup=False)
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
    (replica), ring share and disk use (KiB, MiB, GiB); then the cluster's key count. In a
    cluster of several datacenters, each member's datacenter too, and the members up in each.

    Exits 0 when no member is down, 1 when some member is down.
    """
    status = fetch_status(session)
    nodes = status.get("nodes", [])
    down = [n for n in nodes if n.get("status") == "down"]
    if session.as_json:
        session.emit(status)
        return EXIT_NO if down else EXIT_OK
    # Each member's datacenter, as the status entries name it ("" when none is named).
    datacenters = {str(n.get("node_id")): str(n.get("datacenter") or "") for n in nodes}
    located = any(datacenters.values())
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, caption=STATE_LEGEND, caption_justify="left")
    table.add_column("state", no_wrap=True)
    table.add_column("node", no_wrap=True)
    if located:
        table.add_column("dc", no_wrap=True)
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
        dc = datacenters.get(str(n.get("node_id"))) or "-"
        table.add_row(
            _state_code(n),
            escape(str(n.get("node_id", "?"))),
            *((escape(dc),) if located else ()),
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
    if located:
        per_dc: dict[str, list[dict]] = {}
        for n in nodes:
            per_dc.setdefault(datacenters.get(str(n.get("node_id"))) or "-", []).append(n)
        session.out.print("; ".join(
            f"{dc}: {len(members)} member{'s' if len(members) != 1 else ''} "
            f"({sum(m.get('status') != 'down' for m in members)} up)" for dc, members in sorted(per_dc.items())),
            markup=False)
    return EXIT_NO if down else EXIT_OK
