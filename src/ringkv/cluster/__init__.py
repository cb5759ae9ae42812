"""Pure cluster logic: the ring, quorum decisions, and (in sibling modules) gossip state,
failure detection and Merkle trees.

Nothing in this package does IO or keeps its own time: no asyncio, sockets, files, `time`,
`random` or `os`. Time, randomness and messages are inputs; decisions are outputs. The async
shell in `ringkv.node` feeds these classes, and the simulator in `ringkv.testing` drives the
same code with virtual time (docs/ring.md, docs/architecture.md).
"""
