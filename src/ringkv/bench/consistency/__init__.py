"""The consistency benchmark: ringkv's consensus path (INCR, CAS, SERIAL reads) on a 3-node
cluster against etcd's compare-and-swap on a 3-member etcd, in the same run, with the same
client processes.

    ringkv bench consistency --operations 20000 --repeats 3 --profile-dir /tmp/consistency-prof
    python -m ringkv.bench.consistency ...               # the same command

It starts both systems itself on loopback (bench/ycsb/systems.py's RingkvCluster and
EtcdCluster), alternates the tests between them for several repeats, and writes
docs/benchmarks/consistency.md: ops/s and latency percentiles per operation, the issue's two
targets (ringkv CAS at least 3x etcd's CAS throughput; INCR p99 at most 3x SET's p99), the
consensus counters of every node, a one-client probe of each operation's round trips, client
and server CPU, and with `--profile-dir` a py-spy profile of the nodes during INCR.

Modules, one concern each:

- `sessions`: what each operation is on each system, in the client processes.
- `loadgen`: the client processes (YCSB's pool, this benchmark's loops) and their results.
- `harness`: one run: systems, order of the phases, counters, CPU, probe, profile.
- `profile`: py-spy attached to the nodes, and the summary of its samples.
- `report`: the markdown report.
- `command`: the click command (`ringkv bench consistency`).

Importing this package imports nothing heavy: the command line loads it on every start.
"""
