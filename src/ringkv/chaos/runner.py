"""One chaos run, start to verdict (docs/reliability.md):

1. start a LocalCluster with fault injection on (data directories on small tmpfs mounts when
   the `disk` nemesis is asked for: root only), its nodes in `dcs` datacenters when asked
   (testing/launcher.datacenter_layout; `replicas` then counts per datacenter, and a client at
   a LOCAL level keeps to the nodes of one datacenter, so its reads can see its writes);
2. run the workload clients and the nemesis's schedule for `duration_s`;
3. stop both, heal everything (resume, restart, heal partitions, clocks to 0, free disks),
   wait until every node sees every other one up, then RINGKV.REPAIR on every node until it
   compares every partition without an error;
4. read every set-crdt and list-push key at SERIAL (recorded as reads of process -1: it
   settles any consensus round left half done, and the checks see the state it shows); then
   read each replica's own copy of every key (the node isolated by a partition of its own for
   the moment of the reads, so neither read repair nor anti-entropy can touch a copy between
   the compared reads), polling a few seconds for convergence, then every key at ALL, and
   every cas-register and counter key at SERIAL (recorded in the history as one more read,
   so the linearizability check covers the state the run left);
5. check (checker.py), save the history as JSON and return the verdict, with the faults
   applied (not only begun: nemesis.py) and those that were not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from ringkv.chaos import checker, typed_checker
from ringkv.chaos import linearizability as lin
from ringkv.chaos.history import FAIL, OK, History, save
from ringkv.chaos.nemesis import MEMBERSHIP_TIMEOUT_S, DiskFiller, Nemesis, fault_commands
from ringkv.chaos.schedule import DC_KINDS, KINDS, NETWORK_KINDS, make_schedule
from ringkv.chaos.workloads import (
    ALL_WORKLOADS,
    HASH_COUNTER_PREFIX,
    TYPED_WORKLOADS,
    WORKLOADS,
    Endpoint,
    Worker,
    counter_read_args,
    typed_kind,
    typed_read_args,
    typed_result,
    version_text,
    wait_all,
)
from ringkv.cluster.ring import DEFAULT_ALGORITHM, Member, Ring
from ringkv.testing.launcher import (
    LocalCluster,
    NodeProcess,
    datacenter_layout,
    datacenter_of,
    dc_replicas_setting,
)

HEAL_DEADLINE_S = 60.0
CONVERGE_DEADLINE_S = 10.0


@dataclasses.dataclass
class ChaosConfig:
    seed: int = 1
    nodes: int = 3
    duration_s: float = 60.0
    nemesis: tuple[str, ...] = ("kill", "pause", "partition", "skew", "restart")
    workloads: tuple[str, ...] = WORKLOADS
    clients: int = 6  # worker threads, spread over the workloads
    keys: int = 4  # registers and sets per workload (counters: half as many)
    think_ms: float = 10.0
    timeout_ms: int = 2000  # client socket timeout
    # R and W of every client: one | quorum | all | session (ONE in a session per client,
    # checked for read-your-writes and monotonic reads per session: workloads.py), or a
    # datacenter level: local_one | local_quorum | each_quorum
    consistency: str = "quorum"
    partitions: int = 64
    replicas: int = 3  # N; with dcs > 1, per datacenter
    dcs: int = 1  # datacenters dc1.. (testing/launcher.datacenter_layout)
    wan_delay_ms: int = 0  # emulated delay between datacenters, each way
    hold_s: tuple[float, float] = (2.0, 6.0)
    gap_s: tuple[float, float] = (1.0, 3.0)
    disk_mib: int = 48  # tmpfs size per node with the `disk` nemesis
    workdir: str | None = None  # default: a new directory under the system's temp dir
    keep_data: bool = False
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra node settings
    # Each node in a network namespace of its own (root; chaos/netns.py): partitions by
    # iptables, and the loss and slow nemeses. On when loss or slow is asked for.
    netns: bool = False
    # A planted bug, to test the checkers: every n-th write of each client is recorded as
    # acknowledged without being sent (workloads.py). A run with it must report anomalies.
    lie_every: int = 0
    # Another, for sessions: every n-th session read is recorded with the session's first
    # answer for the key (workloads.py). A run with it must report session anomalies.
    stale_every: int = 0
    # Clients send each request to one of its key's replicas (client/routing.py, workloads.py).
    token_aware: bool = False
    linearizability_max_steps: int = lin.DEFAULT_MAX_STEPS  # the search's budget per key

    def command(self) -> str:
        """The command line that replays this run's schedule and choices."""
        return (f"ringkv chaos --seed {self.seed} --nodes {self.nodes} --duration-s {self.duration_s:g} "
                f"--nemesis {','.join(self.nemesis) or 'none'} --workload {','.join(self.workloads)} "
                f"--clients {self.clients} --keys {self.keys}"
                + (f" --replicas {self.replicas}" if self.replicas != 3 or self.dcs > 1 else "")
                + (f" --dcs {self.dcs}" if self.dcs > 1 else "")
                + (f" --wan-delay-ms {self.wan_delay_ms}" if self.wan_delay_ms else "")
                + (" --netns" if self.netns else "")
                + (f" --consistency {self.consistency}" if self.consistency != "quorum" else "")
                + (f" --plant-lost-writes {self.lie_every}" if self.lie_every else "")
                + (f" --plant-stale-session-reads {self.stale_every}" if self.stale_every else "")
                + (" --token-aware" if self.token_aware else ""))


@dataclasses.dataclass
class ChaosResult:
    config: ChaosConfig
    history_path: Path
    anomalies: list[checker.Anomaly]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def summary(self) -> str:
        s = self.stats
        f = s["faults"]
        lines = [
            f"seed {self.config.seed}: {s['ops']} operations ({s['ok']} ok, {s['unknown']} unknown, "
            f"{s['fail']} failed) on {s['keys']} keys; faults {f['applied']} applied of "
            f"{f['begun']} begun ({', '.join(f'{k} {v}' for k, v in s['fault_kinds'].items()) or 'none'}); "
            f"{len(self.anomalies)} anomalies",
        ]
        lines += [f"  FAULT NOT APPLIED {e}: {why}" for e, why in f["not_applied"]]
        if s.get("sessions", {}).get("sessions"):
            ss = s["sessions"]
            lines.append(f"  sessions: {ss['sessions']} sessions, {ss['ops']} operations, {ss['reads_ok']} "
                         f"reads answered, {ss['session_errors']} session errors, {ss['moves']} moves "
                         "between nodes")
        for workload, figures in s.get("typed", {}).items():
            lines.append(f"  {workload}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        for workload, c in s.get("linearizability", {}).items():
            lines.append(f"  linearizability, {workload}: {c['keys']} keys, {c['operations']} operations, "
                         f"{c['steps']} steps, {c['seconds']:.1f} s: "
                         + {True: "linearizable", False: "NOT linearizable", None: "undecided"}[c["ok"]])
        lines += [f"  ANOMALY {a.describe()}" for a in self.anomalies]
        lines.append(f"history: {self.history_path}")
        lines.append(f"replay:  {self.config.command()}")
        return "\n".join(lines)


def run(config: ChaosConfig, log: Callable[[str], None] = print) -> ChaosResult:
    for kind in config.nemesis:
        if kind not in KINDS:
            raise ValueError(f"unknown nemesis {kind!r}; choose from {', '.join(KINDS)} or none")
    for w in config.workloads:
        if w not in ALL_WORKLOADS:
            raise ValueError(f"unknown workload {w!r}; choose from {', '.join(ALL_WORKLOADS)}")
    locations = _datacenters(config)
    if any(k in NETWORK_KINDS for k in config.nemesis):
        config = dataclasses.replace(config, netns=True)
    network = None
    if config.netns:
        from ringkv.chaos import netns

        why = netns.unavailable()
        if why is not None:
            raise RuntimeError(f"--netns (and the loss and slow nemeses) cannot run here: {why}")
        network = netns.NetnsNetwork([f"n{i + 1}" for i in range(config.nodes)]).up()
    workdir = Path(config.workdir or tempfile.mkdtemp(prefix=f"ringkv-chaos-{config.seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster_dir = workdir / "cluster"
    settings = {
        "replicas": config.replicas, "partitions": config.partitions, "fault_injection": "true",
        "gossip_interval_ms": 200, **config.settings,
    }
    if locations:
        dcs = sorted({datacenter_of(loc) for loc in locations})
        settings.update(replicas=config.replicas * len(dcs),
                        dc_replicas=dc_replicas_setting(dict.fromkeys(dcs, config.replicas)),
                        emulated_wan_delay_ms=config.wan_delay_ms)
    if network is not None:
        # Nodes in network namespaces listen on private addresses, not loopback; the harness's
        # clients and nemesis reach them there without users, as on a trusted network
        # (docs/security.md, protected mode). Members still prove the cluster secret.
        settings.setdefault("protected_mode", "false")
    cluster = LocalCluster(cluster_dir, nodes=config.nodes, network=network, locations=locations, **settings)
    node_ids = [n.node_id for n in cluster.nodes]
    schedule = make_schedule(config.seed, node_ids, config.duration_s, config.nemesis,
                             hold_s=config.hold_s, gap_s=config.gap_s, datacenters=cluster.datacenters)
    where = "; ".join(f"{dc}: {','.join(ids)}" for dc, ids in cluster.datacenters.items())
    log(f"chaos seed {config.seed}: {config.nodes} nodes{f' ({where})' if where else ''}, "
        f"{config.duration_s:g} s, nemesis "
        f"{','.join(config.nemesis) or 'none'}, workloads {','.join(config.workloads)}, "
        f"{len(schedule)} faults scheduled; data in {workdir}"
        + (f"; nodes in network namespaces on {network.subnet}.0/24" if network is not None else ""))
    mounts = _mount_tmpfs(cluster, config.disk_mib) if "disk" in config.nemesis else []
    history = History()
    doc: dict[str, Any] = {
        "seed": config.seed, "config": dataclasses.asdict(config), "command": config.command(),
        "settings": settings, "schedule": [e.to_dict() for e in schedule],
    }
    try:
        cluster.start()
        history = History()  # time 0 is when the cluster is up and the load begins
        endpoints = [Endpoint(n.node_id, n.resp_port, n.host) for n in cluster.nodes]
        stop = threading.Event()
        workers = [
            Worker(i, config.clients, config.workloads[i % len(config.workloads)],
                   _worker_endpoints(i, endpoints, cluster, config),
                   history, config.seed, stop, keys=config.keys, think_ms=config.think_ms,
                   timeout_s=config.timeout_ms / 1000, level=config.consistency.upper(),
                   lie_every=config.lie_every, stale_every=config.stale_every, token_aware=config.token_aware)
            for i in range(config.clients)
        ]
        disk = DiskFiller({n.node_id: n.data_dir for n in cluster.nodes}) if mounts else None
        nemesis = Nemesis(cluster, history, schedule, disk, log, network)
        nemesis_thread = threading.Thread(target=nemesis.run, args=(stop,), name="chaos-nemesis",
                                          daemon=True)
        for w in workers:
            w.start()
        nemesis_thread.start()
        stop.wait(config.duration_s)
        stop.set()
        # A fault in progress finishes first (a decommission is waited for, up to its timeout).
        nemesis_thread.join(max(HEAL_DEADLINE_S, MEMBERSHIP_TIMEOUT_S + 10))
        stuck = wait_all(workers, config.timeout_ms / 1000 * 3 + 5)
        log(f"load stopped at {history.now():.1f} s ({len(history.ops)} operations); healing")
        nemesis.heal()
        doc["stuck_workers"] = stuck
        doc["heal"] = _heal(cluster, log)
        keys = sorted({op.key for op in history.ops})
        unsettled = _settle_typed_keys(cluster, history)
        replicas, converge_s = _converged_replicas(cluster, keys, config)
        doc["converge_s"] = converge_s
        final = _final_reads(cluster, keys)
        doc["final"] = {k: dataclasses.asdict(v) for k, v in final.items()}
        doc["replicas"] = replicas
        unread = _final_serial_reads(cluster, history)
        stats = _stats(history, schedule, keys, nemesis)
        stats["sessions"] = checker.session_stats(history.ops)
        anomalies = checker.check(history.ops, final, replicas,
                                  read_your_writes=config.consistency not in ("one", "local_one"),
                                  max_steps=config.linearizability_max_steps, stats=stats)
        typed_stats: dict[str, Any] = {}
        anomalies += typed_checker.check(history.ops, final, config.linearizability_max_steps, typed_stats)
        for workload in ("set-crdt", "list-push"):
            if workload in typed_stats:
                stats["linearizability"][workload] = typed_stats[workload]
            if f"{workload}-figures" in typed_stats:
                stats.setdefault("typed", {})[workload] = typed_stats[f"{workload}-figures"]
        anomalies += [checker.Anomaly("final-read", k, f"read at SERIAL failed after healing: {e}")
                      for k, e in {**unsettled, **unread}.items()]
        if stuck:
            anomalies.append(checker.Anomaly("liveness", "-", f"workers still running: {stuck}"))
        stats["counters"] = {k: {"ok": b["ok"], "unknown": b["unknown"], "ok_ops": b["ok_ops"],
                                 "unknown_ops": b["unknown_ops"],
                                 "final": final[k].values if k in final else None}
                             for k, b in checker.counter_bounds(history.ops).items()}
        doc["stats"] = stats
        doc["anomalies"] = [dataclasses.asdict(a) for a in anomalies]
    except BaseException as exc:
        doc["error"] = repr(exc)
        path = save(workdir / "history.json", doc, history)
        log(f"chaos run failed ({exc!r}); history so far: {path}")
        raise
    finally:
        with contextlib.suppress(Exception):
            cluster.__exit__(None, None, None)
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False, capture_output=True)
        if network is not None:
            network.down()
    path = save(workdir / "history.json", doc, history)
    if not config.keep_data:
        shutil.rmtree(cluster_dir, ignore_errors=True)
    return ChaosResult(config, path, anomalies, stats)


def _datacenters(config: ChaosConfig) -> list[str]:
    """Each node's location with `dcs` > 1 ([] with one datacenter); ValueError for a layout
    that cannot be, or a datacenter nemesis without datacenters."""
    wanting = [k for k in config.nemesis if k in DC_KINDS]
    if config.dcs < 2:
        if wanting:
            raise ValueError(f"the {', '.join(wanting)} nemesis needs datacenters: --dcs 2 or more")
        if config.wan_delay_ms:
            raise ValueError("--wan-delay-ms delays messages between datacenters: --dcs 2 or more")
        return []
    locations = datacenter_layout(config.nodes, config.dcs)
    smallest = min(sum(datacenter_of(loc) == f"dc{d + 1}" for loc in locations) for d in range(config.dcs))
    if config.replicas > smallest:
        raise ValueError(f"--replicas {config.replicas} per datacenter, but dc{config.dcs} has {smallest} "
                         f"node{'s' if smallest != 1 else ''} of --nodes {config.nodes}")
    return locations


def _worker_endpoints(index: int, endpoints: list[Endpoint], cluster: LocalCluster,
                      config: ChaosConfig) -> list[Endpoint]:
    """The nodes client `index` may use: all of them, or with a LOCAL level those of one
    datacenter, since its reads at LOCAL_QUORUM see its writes only when both go through the
    same datacenter. Client i runs workload i mod W (of W); its datacenter is the
    ((i + i div W) mod D)-th, so each workload's clients are spread over the datacenters."""
    dcs = sorted(cluster.datacenters.items())
    if not config.consistency.startswith("local_") or not dcs:
        return endpoints
    mine = set(dcs[(index + index // len(config.workloads)) % len(dcs)][1])
    return [e for e in endpoints if e.node_id in mine]


# ------------------------------------------------------------------ healing and final state


def _redis(node: NodeProcess, timeout_s: float = 10.0) -> redis.Redis:
    # RESP2, as the workers speak: a typed read's reply is the flat array typed_result reads
    # (RESP3 would pair a sorted set's members with float scores).
    return redis.Redis(host=node.host, port=node.resp_port, socket_timeout=timeout_s,
                       socket_connect_timeout=timeout_s, single_connection_client=True, protocol=2)


def _heal(cluster: LocalCluster, log: Callable[[str], None]) -> dict[str, Any]:
    """Wait until every node's failure detector sees every node up, then repair every node."""
    started = time.monotonic()
    deadline = started + HEAL_DEADLINE_S
    ids = {n.node_id for n in cluster.nodes}
    for node in cluster.nodes:
        while True:
            try:
                with _redis(node) as r:
                    doc = json.loads(r.execute_command("RINGKV.STATUS"))
                up = {n["node_id"] for n in doc["nodes"]
                      if n.get("status") == "healthy"}  # answered, detector up, normal
                if up >= ids:
                    break
            except (redis.RedisError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.node_id} does not see every node up after healing")
            time.sleep(0.2)
    up_s = time.monotonic() - started
    repairs = {}
    for node in cluster.nodes:
        while True:
            try:
                with _redis(node, 60.0) as r:
                    summary = json.loads(r.execute_command("RINGKV.REPAIR"))
                if summary.get("error_count", 0) == 0:
                    repairs[node.node_id] = summary
                    break
            except (redis.RedisError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"RINGKV.REPAIR on {node.node_id} still failing after healing")
            time.sleep(0.5)
    pushed = sum(s.get("keys_pushed", 0) for s in repairs.values())
    pulled = sum(s.get("keys_pulled", 0) for s in repairs.values())
    log(f"healed: all up after {up_s:.1f} s, repair pushed {pushed} and pulled {pulled} keys "
        f"({time.monotonic() - started:.1f} s)")
    return {"up_s": round(up_s, 3), "repair": repairs}


def _replica_sets(cluster: LocalCluster, keys: list[str], config: ChaosConfig) -> dict[str, tuple[str, ...]]:
    dcs = cluster.datacenters
    replicas = dict.fromkeys(dcs, config.replicas) if dcs else config.replicas
    ring = Ring([Member.at(n.node_id, cluster.locations.get(n.node_id, "")) for n in cluster.nodes],
                config.partitions, replicas, config.settings.get("ring_algorithm", DEFAULT_ALGORITHM))
    return {k: ring.preference_list(ring.partition_for_key(b"", k.encode())) for k in keys}


def _local_copies(cluster: LocalCluster, keys_of: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Each node's own copy of the keys it holds, read while the node is cut off from every
    other (so the reads neither repair nor get repaired)."""
    copies: dict[str, dict[str, Any]] = {}
    ids = [n.node_id for n in cluster.nodes]
    for node in cluster.nodes:
        keys = keys_of.get(node.node_id, [])
        if not keys:
            continue
        others = [i for i in ids if i != node.node_id]
        fault_commands(node, [("PARTITION", *others)])
        try:
            with _redis(node) as r:
                for key in keys:
                    if typed_kind(key) is not None:
                        # A collection: what the local replica holds, in typed_result's form.
                        reply = r.execute_command("RINGKV.AT", "ONE", *typed_read_args(key))
                        copies.setdefault(key, {})[node.node_id] = {"items": typed_result(key, reply)}
                        continue
                    context, siblings = r.execute_command("RINGKV.AT", "ONE", "RINGKV.GETV", key)
                    copies.setdefault(key, {})[node.node_id] = {
                        "context": context.hex() if context else None,
                        "siblings": sorted([s[0].decode(), int(s[1]), int(s[2])] for s in siblings),
                    }
        finally:
            fault_commands(node, [("HEAL",)])
    return copies


def _converged_replicas(cluster: LocalCluster, keys: list[str],
                        config: ChaosConfig) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Replica copies once they agree, or the last ones read when they still do not after
    CONVERGE_DEADLINE_S; and how long it took (None: never)."""
    replicas_of = _replica_sets(cluster, keys, config)
    keys_of: dict[str, list[str]] = {}
    for key, nodes in replicas_of.items():
        for n in nodes:
            keys_of.setdefault(n, []).append(key)
    started = time.monotonic()
    while True:
        copies = _local_copies(cluster, keys_of)
        if not checker.check_convergence(copies):
            return copies, round(time.monotonic() - started, 3)
        if time.monotonic() - started > CONVERGE_DEADLINE_S:
            return copies, None
        time.sleep(1.0)


def _final_reads(cluster: LocalCluster, keys: list[str]) -> dict[str, checker.FinalRead]:
    out: dict[str, checker.FinalRead] = {}
    deadline = time.monotonic() + 20.0
    for i, key in enumerate(keys):
        error = None
        while True:
            node = cluster.nodes[i % len(cluster.nodes)]
            try:
                with _redis(node) as r:
                    if key.startswith(HASH_COUNTER_PREFIX):  # a counter: its field's value
                        reply = r.execute_command("RINGKV.AT", "ALL", *counter_read_args(key))
                        out[key] = checker.FinalRead([] if reply is None else [reply.decode()])
                        break
                    if typed_kind(key) is not None:
                        reply = r.execute_command("RINGKV.AT", "ALL", *typed_read_args(key))
                        out[key] = checker.FinalRead(typed_result(key, reply))
                        break
                    _, siblings = r.execute_command("RINGKV.AT", "ALL", "RINGKV.GETV", key)
                out[key] = checker.FinalRead([s[0].decode() for s in siblings])
                break
            except redis.RedisError as exc:
                error = str(exc)
            if time.monotonic() > deadline:
                out[key] = checker.FinalRead(None, error)
                break
            time.sleep(0.3)
    return out


def _settle_typed_keys(cluster: LocalCluster, history: History) -> dict[str, str]:
    """Read every set-crdt and list-push key at SERIAL after healing, before the replicas are
    compared: a consensus round a fault left accepted but not committed is completed by it
    (node/consensus.py), so the copies compared and the final read at ALL show what it
    settled. Each read is recorded as one by process -1, which the linearizability checks
    (typed_checker.py) take as the last word on the key. The keys no read succeeded for."""
    keys = sorted({(op.workload, op.key) for op in history.ops
                   if op.workload in TYPED_WORKLOADS and op.process >= 0})
    failed: dict[str, str] = {}
    deadline = time.monotonic() + 20.0
    for i, (workload, key) in enumerate(keys):
        while True:
            node = cluster.nodes[i % len(cluster.nodes)]
            op = history.invoke(-1, workload, "read", key, None, node.node_id, True, serial=True)
            try:
                with _redis(node) as r:
                    reply = r.execute_command("RINGKV.AT", "SERIAL", *typed_read_args(key))
                history.complete(op, OK, result=typed_result(key, reply))
                break
            except redis.RedisError as exc:
                history.complete(op, FAIL, error=str(exc))
                if time.monotonic() > deadline:
                    failed[key] = str(exc)
                    break
                time.sleep(0.3)
    return failed


def _final_serial_reads(cluster: LocalCluster, history: History) -> dict[str, str]:
    """Read every cas-register and counter key at SERIAL after healing, each recorded in the
    history as a read by process -1 (one process: they run one after another). The keys no
    read succeeded for, with the last error."""
    keys = sorted({(op.workload, op.key) for op in history.ops if op.workload in checker.LINEARIZABLE_WORKLOADS
                   and op.process >= 0})
    failed: dict[str, str] = {}
    deadline = time.monotonic() + 20.0
    for i, (workload, key) in enumerate(keys):
        while True:
            node = cluster.nodes[i % len(cluster.nodes)]
            op = history.invoke(-1, workload, "read", key, None, node.node_id, True, serial=True)
            try:
                with _redis(node) as r:
                    if workload == "counter":
                        reply = r.execute_command("RINGKV.AT", "SERIAL", *counter_read_args(key))
                        history.complete(op, OK, result=[] if reply is None else [reply.decode()])
                    else:
                        context, siblings = r.execute_command("RINGKV.AT", "SERIAL", "RINGKV.GETV", key)
                        values = [s[0].decode() for s in siblings]
                        op.version = version_text(context) if values else None
                        history.complete(op, OK, result=values)
                break
            except redis.RedisError as exc:
                # Certainly without effect on what the check looks at: a read.
                history.complete(op, FAIL, error=str(exc))
                if time.monotonic() > deadline:
                    failed[key] = str(exc)
                    break
                time.sleep(0.3)
    return failed


def _stats(history: History, schedule, keys: list[str], nemesis: Nemesis) -> dict[str, Any]:
    outcomes = {"ok": 0, "unknown": 0, "fail": 0}
    for op in history.ops:
        outcomes[op.outcome or "unknown"] = outcomes.get(op.outcome or "unknown", 0) + 1
    return {"ops": len(history.ops), **outcomes, "keys": len(keys),
            "faults": {"scheduled": len(schedule), "begun": nemesis.begun, "applied": nemesis.applied,
                       "not_applied": [[e.describe().strip(), why] for e, why in nemesis.not_applied()],
                       # [index in the schedule, when it was seen to hold]
                       "applied_at_s": sorted([i, t] for i, t in nemesis.applied_at_s.items())},
            "fault_kinds": nemesis.kinds(),
            "fault_actions_failed": sum(not f.ok for f in history.faults)}


def _mount_tmpfs(cluster: LocalCluster, size_mib: int) -> list[Path]:
    """A tmpfs of `size_mib` as each node's data directory (the `disk` nemesis fills one)."""
    mounts = []
    for n in cluster.nodes:
        n.data_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                               str(n.data_dir)], capture_output=True, text=True)
        if proc.returncode != 0:
            for m in mounts:
                subprocess.run(["umount", "-l", str(m)], check=False, capture_output=True)
            raise RuntimeError(f"the disk nemesis needs a tmpfs per node (root): {proc.stderr.strip()}")
        mounts.append(n.data_dir)
    return mounts

