"""Start and stop real `ringkv serve` processes: for tests, for benchmarks and for
`ringkv cluster up` (cli/cluster.py), which runs a cluster on this machine for an operator.

    with NodeProcess(tmp_path / "n1") as node:
        redis.Redis(port=node.resp_port).set("k", "v")
        node.kill()          # SIGKILL, as a crash
        node.start()         # same data directory, same ports

Ports not given are picked free on 127.0.0.1 at construction; all are kept across restarts, so
clients can reconnect to a restarted node. Output is appended to `<data_dir>.log`, each start
marked by a line of its own; with `pid_file=True` the pid is in `<data_dir>.pid` while the
process runs. Settings reach the node as `RINGKV_*` environment variables; the node id, data
directory and ports as flags. Only the standard library is imported here, so the command line
can use this without loading any test tooling.

Datacenters on one machine (docs/multi-dc.md): `datacenter_layout` places nodes in
datacenters dc1..dc<D>, for `ringkv cluster up --dcs` and chaos runs alike, and a LocalCluster
given `locations` names each member's datacenter and rack in `members`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_port_rng = random.Random()


def _unverified_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect_address(host: str) -> str:
    """An address that reaches a server listening on `host` (a wildcard one included)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def port_range() -> tuple[int, int]:
    """The ports free_port chooses from: 10,000 up to the ephemeral range, split into disjoint
    slices among pytest-xdist workers (PYTEST_XDIST_WORKER=gwK of PYTEST_XDIST_WORKER_COUNT),
    so that two workers never pick the same port in the second between picking and binding."""
    low, high = 10_000, _ephemeral_low() - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        k = int(worker[2:]) if worker.startswith("gw") else 0
    except ValueError:
        return low, high
    if count > 1 and 0 <= k < count and high - low > 100 * count:
        size = (high - low + 1) // count
        low, high = low + k * size, low + (k + 1) * size - 1
    return low, high


# Ports free_port handed out lately. A 4-node cluster picks 12 ports before any node binds
# one; without this, two of them were the same port about once in 150 clusters, and the
# second node failed to start ("Address already in use").
MAX_REMEMBERED_PORTS = 4096
_handed_out: set[int] = set()
_handed_order: deque[int] = deque()


def _remember(port: int) -> None:
    _handed_out.add(port)
    _handed_order.append(port)
    if len(_handed_order) > MAX_REMEMBERED_PORTS:
        _handed_out.discard(_handed_order.popleft())


def free_port() -> int:
    """A port free on 127.0.0.1 now, chosen below the kernel's ephemeral range.

    A node binds its ports a moment after the launcher picks them; a port from the ephemeral
    range (what binding port 0 returns) can meanwhile be taken by any outgoing connection on
    the machine, e.g. another node's RPC client, and the node then fails with "Address already
    in use". Ports below that range are never handed out implicitly.
    """
    low, high = port_range()
    for _ in range(200):
        port = _port_rng.randint(low, high) if high > low else 0
        if port in _handed_out:
            continue  # free now, but a node started a moment ago may not have bound it yet
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _remember(port)
            return s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    """One `ringkv serve` process, started, restarted and stopped from this process.

    Not thread-safe: one thread drives a NodeProcess. `poll`, `stop` and `kill` notice the
    exit and then remove the pid file, so the file names a process only while it runs.
    """

    def __init__(self, data_dir: str | os.PathLike, node_id: str = "n1", env: dict | None = None,
                 exec_prefix: list[str] | None = None, *, pid_file: bool = False,
                 own_process_group: bool = False, started_by: str = "ringkv.testing.launcher",
                 **settings):
        """`settings`: NodeConfig fields (`replicas=3`, `sync="always"`), `host` and the three
        ports included. `own_process_group`: a Ctrl-C at the terminal does not reach the node,
        so that whoever started it can stop it in order. `started_by` names the starter in the
        line that marks each start in the log."""
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        # The address it listens on (RESP, HTTP, RPC): loopback unless it runs in a network
        # namespace of its own, started through `exec_prefix` (chaos/netns.py), or is given.
        self.host = settings.pop("host", "127.0.0.1")
        self.connect_host = connect_address(self.host)
        self.exec_prefix = list(exec_prefix or [])
        self.resp_port = settings.pop("resp_port", None) or free_port()
        self.http_port = settings.pop("http_port", None) or free_port()
        self.rpc_port = settings.pop("rpc_port", None) or free_port()
        self.settings = settings
        self.env = env or {}
        self.log_path = Path(str(self.data_dir) + ".log")
        self.pid_path = Path(str(self.data_dir) + ".pid") if pid_file else None
        self.own_process_group = own_process_group
        self.started_by = started_by
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0  # where the current run's output starts in the log
        self._terminated = False  # SIGTERM sent to the current run

    @property
    def ports(self) -> list[tuple[str, int]]:
        """The ports it listens on, each with what it serves."""
        return [("RESP", self.resp_port), ("HTTP", self.http_port), ("RPC", self.rpc_port)]

    def start(self, wait: bool = True) -> NodeProcess:
        """Start the node's process; when this launcher's process is still running (a start
        whose ready-wait timed out, say), wait for that one instead of starting a second
        process on the same data directory and ports."""
        if self.running:
            if wait:
                self.wait_ready()
            return self
        env = dict(os.environ)
        env.update({f"RINGKV_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["RINGKV_HOST"] = self.host
        env.update(self.env)
        cmd = [
            *self.exec_prefix, sys.executable, "-m", "ringkv.cli", "serve",
            "--node-id", self.node_id,
            "--data-dir", str(self.data_dir),
            "--resp-port", str(self.resp_port),
            "--http-port", str(self.http_port),
            "--rpc-port", str(self.rpc_port),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            log.write(f"---- {self.started_by}: {self.node_id} starting at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                process_group=0 if self.own_process_group else None)
        self._terminated = False
        if self.pid_path is not None:
            self.pid_path.write_text(f"{self.proc.pid}\n")
        if wait:
            self.wait_ready()
        return self

    def answers_ping(self) -> bool:
        """Whether the node answers PING on its RESP port now: one try of at most 0.5 s to
        connect and 0.5 s for the answer. A node serving RESP only over TLS (resp_port=-1, an
        explicit tls_port) is asked there, its certificate unchecked: the question is "is it
        up", not "is it who it says"."""
        if self.resp_port < 0:
            return self._answers_tls_handshake(int(self.settings["tls_port"]))
        try:
            with socket.create_connection((self.connect_host, self.resp_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                # A node whose users need a password answers NOAUTH, and one in protected
                # mode DENIED to a client not on loopback: up and serving either way.
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH", b"-DENIED"))
        except OSError:
            return False

    def _answers_tls_handshake(self, port: int) -> bool:
        try:
            with socket.create_connection((self.connect_host, port), timeout=0.5) as raw, \
                    _unverified_tls().wrap_socket(raw) as s:
                # A node with tls_client_auth=required closes on a client without a certificate
                # (an alert, or EOF), but only once its listener has done the handshake: it is up.
                try:
                    s.sendall(b"PING\r\n")
                    answer = s.recv(16)
                except ssl.SSLError:
                    return True
                return answer == b"" or answer.startswith((b"+PONG", b"-NOAUTH", b"-DENIED"))
        except OSError:  # ssl.SSLError included
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the node answers PING; RuntimeError if it exits first, TimeoutError
        after `timeout_s`, both with the end of its log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode}:\n{self.log()}")
            if self.answers_ping():
                return
            time.sleep(0.05)
        raise TimeoutError(f"node {self.node_id} not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the current run's output (the log keeps earlier runs')."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode("utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return "\n".join(text[-lines:])

    def poll(self) -> int | None:
        """The exit code once the process has exited (None before, or if never started)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None:
            self._remove_pid_file()
        return code

    def terminate(self) -> None:
        """SIGTERM without waiting: a clean shutdown begins (drain, flush, exit).

        Sent once per start: a second SIGTERM that arrives after the node's event loop has
        closed can meet the default handler again and kill the node while it exits."""
        if self.running and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait: a clean shutdown. After `timeout_s`, SIGKILL, then TimeoutExpired."""
        if self.proc is None or self.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.terminate()
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._remove_pid_file()
        return code

    def pause(self) -> None:
        """SIGSTOP: the process hangs, its sockets stay open (a stalled node)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._remove_pid_file()

    def recorded_pid(self) -> int | None:
        """The pid in the pid file when that process still exists and is a ringkv node: one
        an earlier starter left running. (A stale file's pid may since have been reused by
        another program, hence the look at its command line.)"""
        if self.pid_path is None:
            return None
        try:
            pid = int(self.pid_path.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ringkv" not in f.read():
                    return None
        except (OSError, ValueError):
            return None
        return pid

    def _remove_pid_file(self) -> None:
        if self.pid_path is not None:
            with contextlib.suppress(OSError):
                self.pid_path.unlink()

    def __enter__(self) -> NodeProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            pass


MAX_DATACENTERS = 8  # `cluster up --dcs`, chaos runs: dc1..dc8


def datacenter_layout(nodes: int, dcs: int) -> list[str]:
    """Where nodes n1..n<nodes> go in datacenters dc1..dc<dcs>: each node's location as a
    `members` entry names it (`dc1/r1`, docs/multi-dc.md). Contiguous blocks, so a node's name
    tells its datacenter (6 nodes in 2: n1-n3 in dc1, n4-n6 in dc2); when the count does not
    divide, the first datacenters have one node more (5 in 2: n1-n3, n4-n5). Each node is a rack
    of its own within its datacenter (r1, r2, ... there), so replicas in one datacenter are on
    distinct racks. ValueError unless 1 <= dcs <= min(nodes, MAX_DATACENTERS)."""
    if not 1 <= dcs <= MAX_DATACENTERS:
        raise ValueError(f"datacenters must be 1..{MAX_DATACENTERS}, got {dcs}")
    if dcs > nodes:
        raise ValueError(f"{dcs} datacenters need at least {dcs} nodes (one each), got {nodes}")
    out = []
    for d in range(dcs):
        size = nodes // dcs + (d < nodes % dcs)
        out += [f"dc{d + 1}/r{k + 1}" for k in range(size)]
    return out


def datacenter_of(location: str) -> str:
    """The datacenter of a location (`dc1/r1` -> `dc1`; "" for a bare rack or none)."""
    dc, sep, _ = location.rpartition("/")
    return dc if sep else ""


def dc_replicas_setting(counts: Mapping[str, int]) -> str:
    """The `dc_replicas` setting of replica counts per datacenter: "dc1=3,dc2=3"."""
    return ",".join(f"{dc}={n}" for dc, n in sorted(counts.items()))


SECRET_FILE_NAME = "cluster.secret"
SECRET_BYTES = 32


def ensure_cluster_secret(path: str | os.PathLike) -> Path:
    """The cluster secret file at `path`, made if absent: 32 random bytes, hex, mode 0600
    (created with that mode, so no other user can ever read it). An existing file is kept:
    a cluster started again on its directory keeps its secret."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(SECRET_BYTES).hex() + "\n")
    return path


class LocalCluster:
    """N `ringkv serve` processes that form one cluster (static membership) on loopback.

        with LocalCluster(tmp_path, nodes=3) as cluster:
            redis.Redis(port=cluster.nodes[0].resp_port).set("k", "v")
            cluster.nodes[2].kill()

    Node i is `n<i+1>`, its data in `<root>/n<i+1>`, its log in `<root>/n<i+1>.log`. Settings
    apply to every node (as RINGKV_* variables), e.g. `replicas=3, read_repair="blocking"`.

    With `locations` (one per node, `datacenter_layout`'s), each member's entry names its
    datacenter and rack (`n1@127.0.0.1:port/dc1/r1`); settings such as `dc_replicas` are the
    caller's to give.

    Members authenticate each other: the cluster's secret is `<root>/cluster.secret` (made on
    first use, mode 0600), given to every node. A node started later to join the cluster gets
    it with `**cluster.secret_settings`. `cluster_secret_file=""` starts a cluster without one
    (loopback only), and settings naming their own secret or RPC TLS files are kept as given.
    """

    def __init__(self, root: str | os.PathLike, nodes: int = 3, network=None,
                 locations: Sequence[str] | None = None, **settings):
        """`network`: a chaos.netns.NetnsNetwork that is up, to run each node in its own
        network namespace at its own address (None: every node on loopback). `locations`:
        each node's `dc/rack` in order (None or empty: no datacenter, no rack)."""
        if locations and len(locations) != nodes:
            raise ValueError(f"{len(locations)} locations for {nodes} nodes")
        self.root = Path(root)
        self.secret_file: Path | None = None
        if not any(settings.get(k) is not None for k in ("cluster_secret_file", "cluster_secret",
                                                          "rpc_tls_cert")):
            self.secret_file = ensure_cluster_secret(self.root / SECRET_FILE_NAME)
            settings["cluster_secret_file"] = str(self.secret_file)
        elif settings.get("cluster_secret_file"):
            self.secret_file = Path(settings["cluster_secret_file"])
        self.nodes = [
            NodeProcess(self.root / f"n{i + 1}", node_id=f"n{i + 1}", **settings,
                        **({} if network is None else {"host": network.address(f"n{i + 1}"),
                                                       "exec_prefix": network.exec_prefix(f"n{i + 1}")}))
            for i in range(nodes)
        ]
        # node id -> its location ("dc1/r1"), as its members entry names it
        self.locations = {n.node_id: loc for n, loc in zip(self.nodes, locations or (), strict=False)}
        members = ",".join(f"{n.node_id}@{n.host}:{n.rpc_port}"
                           + (f"/{self.locations[n.node_id]}" if n.node_id in self.locations else "")
                           for n in self.nodes)
        for n in self.nodes:
            n.settings["members"] = members

    @property
    def members(self) -> str:
        return self.nodes[0].settings["members"]

    @property
    def datacenters(self) -> dict[str, list[str]]:
        """Each datacenter's node ids, in node order ({} when no node names one)."""
        out: dict[str, list[str]] = {}
        for node_id, location in self.locations.items():
            if datacenter_of(location):
                out.setdefault(datacenter_of(location), []).append(node_id)
        return out

    @property
    def secret_settings(self) -> dict[str, str]:
        """What a node needs to be let in by this cluster's members: its secret file (empty
        when the cluster runs without one)."""
        return {} if self.secret_file is None else {"cluster_secret_file": str(self.secret_file)}

    def node(self, node_id: str) -> NodeProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self) -> LocalCluster:
        """Start every node and wait until each answers; if one cannot start, stop the others
        before raising (a `with` block's exit does not run when its enter raises)."""
        try:
            for n in self.nodes:
                n.start(wait=False)
            for n in self.nodes:
                n.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.terminate()
        for n in self.nodes:
            try:
                n.stop()
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.resume()  # a paused node cannot act on SIGTERM
        self.stop()
