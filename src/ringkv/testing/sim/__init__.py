"""Parts of the deterministic simulator (`ringkv.testing.simulator` is the entry point).

- `events`: virtual time, an event queue ordered by (time, sequence).
- `network`: a simulated network that loses, delays, reorders, duplicates and partitions.
- `topology`: datacenters and racks of the nodes, and the delays within and between
  datacenters the network draws from.
- `node`: one simulated node: the real gossip Membership and phi FailureDetectors, driven as
  node/gossiper.py drives them.
- `kv`: the data path: replicas that keep records in memory, coordinators that run reads and
  writes through cluster/plans.py, hints and their delivery (`KvSimulation`).
- `history`: what the simulated clients did and saw, and the checks over it (no acknowledged
  write lost, replicas converged).
- `datapath`: the `kv` scenario: clients, the fault schedule, the safety and liveness phases.
- `datacenters`: gossip, failure detection and placement across datacenters (`dc-*` scenarios).
- `scale`: the scale report (docs/benchmarks/scale.md); `scale_datacenters`, its section 7.

docs/simulator.md describes the scenarios, the checks and how to replay a failure.
"""
