"""The node: the async shell that wires storage, versioning and (later) the cluster together."""
