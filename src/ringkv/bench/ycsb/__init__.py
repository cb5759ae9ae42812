"""YCSB's six core workloads against ringkv (3-node cluster and one node), Redis and etcd.

    ringkv bench ycsb --records 10000 --operations 20000 --processes 3 --clients 48
    python -m ringkv.bench.ycsb ...                      # the same command

The harness starts every server itself on loopback, loads the records, runs workloads A-F
from several client processes, and writes docs/benchmarks/ycsb.md with PNG plots beside it.

Modules, one concern each:

- `generators`: YCSB's zipfian, scrambled zipfian, skewed-latest and uniform generators, and
  its key names (pure).
- `workloads`: the six workloads and the operation stream a client process draws (pure).
- `drivers`: what read, update, insert and scan are on each system (in the client processes).
- `systems`: starting and stopping each system's servers, their versions and settings.
- `loadgen`: the client processes, their concurrent tasks and latency histograms.
- `harness`: one run over systems and workloads, with CPU accounting and warnings.
- `report`: the markdown report and the plots.
- `command`: the click command (`ringkv bench ycsb`).

Importing this package imports nothing heavy: the command line loads it on every start.
"""
