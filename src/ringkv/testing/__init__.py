"""Test support: launching real node processes and local clusters (`launcher`), waiting for
conditions (`wait`), and the deterministic simulator (`simulator`, `sim/`): many nodes on
virtual time over a simulated network, gossip and the data path, from one seed."""
