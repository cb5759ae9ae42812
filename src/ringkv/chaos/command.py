"""`ringkv chaos`: one fault-injection run against a cluster of `ringkv serve` processes
started here on loopback; prints the seed, the verdict and where the history went.

Only click is imported here; the run's modules (and redis-py) load when the command runs, so
`ringkv --help` stays fast. Exit code 0: no anomaly; 1: anomalies found (listed); 2: usage
error. Faults that were begun but did not take effect are listed as NOT APPLIED.
"""

from __future__ import annotations

import sys

import click

NEMESES = "kill,pause,partition,skew,disk,loss,slow,restart,membership,dc-partition,dc-kill"
MAX_DCS = 4  # datacenters of a chaos run (at most --nodes)
MAX_WAN_DELAY_MS = 1000  # each way: a chaos run's clients time out after 2 s
WORKLOADS = "register,set,counter,cas-register"  # the default
KNOWN_WORKLOADS = WORKLOADS + ",set-crdt,list-push"  # Redis sets, hashes and lists: opt-in


def _names(value: str, known: str, what: str, allow_none: bool = False) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    if allow_none and names == ("none",):
        return ()
    unknown = [n for n in names if n not in known.split(",")]
    if unknown or not names:
        raise click.BadParameter(f"unknown {what} {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {known}" + (" or none" if allow_none else ""))
    return names


@click.command("chaos")
@click.option("--seed", type=int, default=None,
              help="Seed of the fault schedule and of every client's choices (default: random, printed).")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(2, 9),
              help="Nodes in the cluster (N=3 replicas unless --replicas).")
@click.option("--replicas", default=None, type=click.IntRange(1, 9),
              help="N (default 3); with --dcs, per datacenter (default 3, or the smallest datacenter's "
                   "node count if less).")
@click.option("--dcs", default=1, show_default=True, type=click.IntRange(1, MAX_DCS),
              help="Datacenters dc1.. with the nodes in contiguous blocks (4 nodes in 2: n1,n2 in dc1, "
                   "n3,n4 in dc2), as `ringkv cluster up --dcs`; needed by dc-partition and dc-kill.")
@click.option("--wan-delay-ms", default=0, show_default=True, type=click.IntRange(0, MAX_WAN_DELAY_MS),
              help="With --dcs: each node holds every message to or from another datacenter this long, "
                   "each way (emulated_wan_delay_ms).")
@click.option("--duration-s", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="How long the load and the faults run, before healing and checking.")
@click.option("--nemesis", default="kill,pause,partition,skew,restart", show_default=True,
              help=f"Comma-separated faults from {NEMESES}, or none (disk needs root; loss and "
                   "slow need --netns, which they turn on; dc-partition and dc-kill need --dcs 2 or more).")
@click.option("--workload", "workloads", default=WORKLOADS, show_default=True,
              help=f"Comma-separated workloads from {KNOWN_WORKLOADS}.")
@click.option("--clients", default=6, show_default=True, type=click.IntRange(1, 64),
              help="Client threads, spread over the workloads (even ones STRICT, odd ones SLOPPY).")
@click.option("--keys", default=4, show_default=True, type=click.IntRange(1, 1000),
              help="Keys per workload (counters: half as many).")
@click.option("--consistency", default="quorum", show_default=True,
              type=click.Choice(["one", "quorum", "all", "session", "local_one", "local_quorum", "each_quorum"],
                                case_sensitive=False),
              help="R and W of every client; read-your-writes is checked unless ONE or LOCAL_ONE. "
                   "session: ONE in a session per client, checked for read-your-writes and monotonic "
                   "reads per session. local_*: each client stays in one datacenter.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where the cluster's data and history.json go (default: a new temp directory).")
@click.option("--keep-data", is_flag=True, help="Keep the nodes' data directories and logs.")
@click.option("--netns", is_flag=True,
              help="Run each node in a network namespace of its own (root): partitions by iptables.")
@click.option("--plant-lost-writes", "lie_every", default=0, type=click.IntRange(min=0), metavar="N",
              help="Test the checkers: each client records every N-th write as acknowledged "
                   "without sending it. The run must then report anomalies.")
@click.option("--plant-stale-session-reads", "stale_every", default=0, type=click.IntRange(min=0),
              metavar="N", help="Test the session checks (with --consistency session): each "
                   "client records every N-th read with its session's first answer for the key.")
@click.option("--token-aware", is_flag=True,
              help="Each client sends every request to one of its key's replicas (from RINGKV.RING), "
                   "as a token-aware driver does, instead of to its current node.")
def chaos(seed: int | None, nodes: int, replicas: int | None, dcs: int, wan_delay_ms: int, duration_s: float,
          nemesis: str, workloads: str, clients: int, keys: int, consistency: str, workdir: str | None,
          keep_data: bool, netns: bool, lie_every: int, stale_every: int, token_aware: bool) -> None:
    """Run workloads against a local cluster under a seeded schedule of faults (SIGKILL,
    SIGSTOP, partitions, clock skew, a full disk, restart churn, a datacenter cut off or
    killed), heal, repair, and check
    the history: no acknowledged write lost, no deleted value back, replicas converge,
    concurrent writes survive as siblings, read-your-writes at strict quorum, counters within
    bounds, CAS registers and counters linearizable. docs/reliability.md.

    The same --seed replays the same faults and client choices; timing does not replay.
    """
    import random

    from ringkv.chaos.runner import ChaosConfig, run

    if seed is None:
        seed = random.SystemRandom().randrange(1, 1 << 31)
    if dcs > nodes:
        raise click.BadParameter(f"--dcs ({dcs}) is more than --nodes ({nodes}): a datacenter needs a node",
                                 param_hint="'--dcs'")
    smallest = nodes // dcs  # the last datacenter's nodes (testing/launcher.datacenter_layout)
    replicas = replicas if replicas is not None else min(3, smallest) if dcs > 1 else 3
    if dcs == 1 and replicas > nodes:
        raise click.BadParameter(f"--replicas ({replicas}) is more than --nodes ({nodes})")
    if dcs > 1 and replicas > smallest:
        raise click.BadParameter(f"--replicas ({replicas}) per datacenter is more than dc{dcs}'s {smallest} "
                                 f"node{'s' if smallest != 1 else ''}", param_hint="'--replicas'")
    wanting = [k for k in _names(nemesis, NEMESES, "nemesis", allow_none=True) if k.startswith("dc-")]
    if dcs == 1 and (wanting or wan_delay_ms):
        what = f"the {', '.join(wanting)} nemesis" if wanting else "--wan-delay-ms"
        raise click.BadParameter(f"{what} needs datacenters: give --dcs 2 or more", param_hint="'--dcs'")
    config = ChaosConfig(
        seed=seed, nodes=nodes, replicas=replicas, dcs=dcs, wan_delay_ms=wan_delay_ms, duration_s=duration_s,
        nemesis=_names(nemesis, NEMESES, "nemesis", allow_none=True),
        workloads=_names(workloads, KNOWN_WORKLOADS, "workload"), clients=clients, keys=keys,
        consistency=consistency.lower(), workdir=workdir, keep_data=keep_data, netns=netns,
        lie_every=lie_every, stale_every=stale_every, token_aware=token_aware)
    click.echo(f"seed {seed}", err=True)
    result = run(config, log=lambda line: click.echo(line, err=True))
    click.echo(result.summary())
    sys.exit(0 if result.ok else 1)
