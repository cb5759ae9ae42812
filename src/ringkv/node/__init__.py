"""The node: the async shell that implements the service contract (ringkv.service) over the
local replica and its peers, and runs the cluster's background work.

`assembly.open_node` builds a `node.Node` by constructors; docs/architecture.md maps the
modules (local store and service, placement, read and write paths, forwarding, the replica-side
RPC service, gossip, hints, anti-entropy, membership).
"""
