"""A node's identity on disk: its id and the epoch of its data directory.

The actor id that goes into version vectors is `node_id@epoch`. The epoch is random and chosen
when the data directory is new, so a node whose data was wiped comes back as a new actor and
never reuses counters it had handed out before (Riak's kv679 data loss).
"""

from __future__ import annotations

import json
import os
import secrets
import time

from ringkv.errors import ConfigError

IDENTITY_FILE = "IDENTITY.json"


class NodeIdentity:
    __slots__ = ("created_ms", "epoch", "node_id")

    def __init__(self, node_id: str, epoch: str, created_ms: int):
        self.node_id = node_id
        self.epoch = epoch
        self.created_ms = created_ms

    @property
    def actor(self) -> bytes:
        return f"{self.node_id}@{self.epoch}".encode()

    @classmethod
    def load_or_create(cls, data_dir: str, node_id: str) -> NodeIdentity:
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, IDENTITY_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if doc.get("node_id") != node_id:
                raise ConfigError(
                    "node_id",
                    f"data directory {data_dir} belongs to node {doc.get('node_id')!r}, not {node_id!r}",
                )
            return cls(doc["node_id"], doc["epoch"], doc["created_ms"])
        ident = cls(node_id, secrets.token_hex(4), int(time.time() * 1000))
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"node_id": node_id, "epoch": ident.epoch, "created_ms": ident.created_ms}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return ident
