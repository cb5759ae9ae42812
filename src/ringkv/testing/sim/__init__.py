"""Parts of the deterministic simulator (`ringkv.testing.simulator` is the entry point).

- `events`: virtual time, an event queue ordered by (time, sequence).
- `network`: a simulated network that loses, delays, reorders, duplicates and partitions.
- `node`: one simulated node: the real gossip Membership and phi FailureDetectors, driven as
  node/gossiper.py drives them.
- `scale`: the scale report (docs/benchmarks/scale.md).
"""
