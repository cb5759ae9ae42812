"""The node's backup commands, as NodeAdmin offers them (node/node.py delegates here): named
snapshots of this node (node/snapshots.py; SAVE, BGSAVE, LASTSAVE), and cluster backup and
restore started as long operations (node/backup.py, node/operations.py).

Built from a `Node`, whatever its shape: a member of a cluster reads each partition from its
replicas over RPC and restores through the write path; a cluster of one reads and writes its
own store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ringkv.cluster.ring import Member, Ring
from ringkv.errors import AdminConflictError
from ringkv.node.backup import (
    RPC_TIMEOUT_MS,
    BackupSource,
    ClusterBackup,
    ClusterRestore,
    RestoreTarget,
    read_backup_page,
)
from ringkv.node.messages import BackupPage, BackupRange
from ringkv.node.operations import Operations
from ringkv.node.snapshots import NodeSnapshots

log = logging.getLogger("ringkv.backup")

SAVE_SNAPSHOT_NAME = "redis-save"  # SAVE and BGSAVE replace this one snapshot, as Redis replaces dump.rdb


class BackupAdmin:
    def __init__(self, node):
        self._node = node
        cfg = node.config
        self.snapshots = NodeSnapshots(cfg.data_dir, node.engine, node.node_id, node.clock.now_ms,
                                       node.store.replica.hlc_now, bool(cfg.encryption_key_file))
        self._bgsave: asyncio.Task | None = None
        self._bgsave_error = ""
        self._own_operations: Operations | None = None

    @property
    def operations(self) -> Operations:
        ops = getattr(self._node, "operations", None)
        if ops is not None:
            return ops
        if self._own_operations is None:  # a node built without a registry: kept in memory only
            self._own_operations = Operations(self._node.node_id, None, self._node.clock)
        return self._own_operations

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, name: str | None = None, replace: bool = False) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        doc = await loop.run_in_executor(None, self.snapshots.create, name, replace)
        log.info("snapshot %s taken in %s (%d tables, %d log bytes)", doc["name"], doc["path"],
                 doc["engine"]["tables"], doc["engine"]["log_bytes"])
        return doc

    def snapshot_list(self) -> list[dict[str, Any]]:
        return self.snapshots.list()

    async def snapshot_remove(self, name: str) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.snapshots.remove, name)

    async def save(self) -> dict[str, Any]:
        if self._bgsave is not None and not self._bgsave.done():
            raise AdminConflictError("Background save already in progress")
        return await self.snapshot(SAVE_SNAPSHOT_NAME, replace=True)

    def bgsave(self) -> bool:
        """Start SAVE's snapshot in the background; False when one is already running."""
        if self._bgsave is not None and not self._bgsave.done():
            return False
        self._bgsave = asyncio.ensure_future(self._run_bgsave())
        return True

    async def _run_bgsave(self) -> None:
        try:
            await self.snapshot(SAVE_SNAPSHOT_NAME, replace=True)
            self._bgsave_error = ""
        except Exception as exc:  # reported by INFO-like status, as Redis's rdb_last_bgsave_status
            self._bgsave_error = str(exc)
            log.error("BGSAVE failed: %s", exc)

    def lastsave_s(self) -> int:
        """LASTSAVE: unix seconds of the last snapshot this process made (0 before any)."""
        return self.snapshots.last_save_ms // 1000

    # ------------------------------------------------------------------ backup and restore

    def _source(self) -> BackupSource:
        node = self._node
        store = node.store
        c = node.cluster
        namespaces = [s.as_dict() for s in store.namespaces]
        if c is None:
            ring = Ring([Member(node.node_id)], node.config.partitions, 1)

            async def fetch_local(target: str, body: BackupRange) -> BackupPage:
                return read_backup_page(store, ring, body)

            return BackupSource(node.node_id, node.config.cluster_name, ring.partitions, 1, [node.node_id],
                                ring.preference_list, lambda n: True, fetch_local,
                                lambda skey: store_merger(store), store.replica.hlc_now, node.clock.now_ms,
                                namespaces)
        placement = c.placement

        async def fetch(target: str, body: BackupRange) -> BackupPage:
            if target == node.node_id:
                return read_backup_page(store, placement.ring, body)
            return await c.calls.call(target, body, RPC_TIMEOUT_MS)

        ring = placement.ring
        return BackupSource(node.node_id, node.config.cluster_name, ring.partitions, ring.replicas,
                            list(ring.node_ids), ring.preference_list, c.calls.is_up, fetch, placement.merger_of,
                            store.replica.hlc_now, node.clock.now_ms, namespaces)

    def _target(self) -> RestoreTarget:
        node = self._node
        store = node.store
        c = node.cluster
        known = {s.stored for s in store.namespaces}
        system = store.namespaces.system.stored
        if c is None:
            async def write_local(records: list[tuple[bytes, bytes]]) -> None:
                await store.durable(store.apply_records(records))

            return RestoreTarget(write_local, known, system, node.clock.now_ms)
        placement = c.placement
        writes = node.service.path.writes
        me = node.node_id

        async def write(records: list[tuple[bytes, bytes]]) -> None:
            groups: dict[tuple[str, ...], list[tuple[bytes, bytes]]] = {}
            for item in records:
                groups.setdefault(placement.replicas_of(item[0]), []).append(item)
            sends = []
            for pref, group in groups.items():
                sends.append(_write_group(store, writes, me, pref, group))
            await asyncio.gather(*sends)

        return RestoreTarget(write, known, system, node.clock.now_ms)

    def backup(self, directory: str, replicas_per_partition: int | None = None) -> dict[str, Any]:
        source = self._source()
        r = replicas_per_partition or (source.replicas // 2 + 1)
        params = {"to": directory, "replicas_per_partition": r}
        job = ClusterBackup(source, directory, r)
        op = self.operations.start("backup", lambda progress: _with_id(job, progress), params=params,
                                   unit="partitions", conflicts=("restore",))
        return op.as_dict()

    def resume_backup(self, params: dict[str, Any]):
        """The registry's resumer: a backup cut off by a restart goes on from its journal."""
        job = ClusterBackup(self._source(), params["to"], int(params["replicas_per_partition"]))
        return lambda progress: _with_id(job, progress)

    def restore(self, directory: str, with_users: bool = False) -> dict[str, Any]:
        job = ClusterRestore(self._target(), directory, with_users)
        op = self.operations.start("restore", job.run, params={"from": directory, "with_users": with_users},
                                   unit="records", conflicts=("backup",))
        return op.as_dict()

    def operation(self, op_id: str) -> dict[str, Any]:
        return self.operations.get(op_id).as_dict()


async def _with_id(job: ClusterBackup, progress) -> dict[str, Any]:
    job.operation_id = progress.operation_id
    return await job.run(progress)


def store_merger(store):
    from ringkv.node.placement import merge_raw

    return lambda a, b: merge_raw(a, b, store.policy)


async def _write_group(store, writes, me: str, pref: tuple[str, ...], group: list[tuple[bytes, bytes]]) -> None:
    """Records of one replica set: into this node's store first when it is one of them (the
    write path replicates only what the coordinator holds), then to W = a quorum of them."""
    if me in pref:
        await store.durable(store.apply_records(group))
    await writes.replicate_many(group, pref, len(pref) // 2 + 1)
