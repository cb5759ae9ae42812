"""Cluster backup and restore, run by one node as long operations (node/operations.py).

**Backup** (`ClusterBackup.run`): the node takes the cut (its HLC and wall clock at start) and
the layout (members, partitions, N, namespaces), then reads every partition of the ring once,
page by page (BackupRange → BackupPage, at most BACKUP_PAGE_MAX_RECORDS records and
BACKUP_PAGE_MAX_BYTES bytes a page), from `replicas_per_partition` of its replicas in
preference order, skipping replicas the failure detector holds down. Pages of several replicas
are merged key by key with the namespace's conflict policy (the same merge replication uses),
so a write acknowledged at W reached at least one of them when R + W > N. Records with no live
sibling left (tombstones, expired values) are not kept: a restore starts an empty cluster.
Each partition becomes one file (node/backup_format.py), finished files go to a journal, and
a resumed backup (the same directory again, or the node's restart) skips them. The manifest
is written last.

**Restore** (`ClusterRestore.run`): every partition file is checked against its SHA-256 and
read record by record (CRC), each record whose values have all expired meanwhile is dropped,
and the rest go through the cluster's write path with their versions unchanged: grouped by
replica set under this cluster's ring (any size, any partition count), applied to this node's
store when it is a replica, and replicated to the others until W = a quorum of the key's N
took them (write_path.replicate_many: stand-ins and hints as for any write). Merging keeps
siblings, HLC timestamps and absolute expiries as they were.

docs/backup.md says what the cut guarantees; docs/formats/backup.md gives the files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import AdminConflictError, AdminRequestError, CommandError, RingkvError
from ringkv.node import backup_format as fmt
from ringkv.node.messages import BackupPage, BackupRange
from ringkv.node.range_reads import scan_page
from ringkv.service.limits import MAX_TOKEN
from ringkv.versioning.record import decode_record

BACKUP_PAGE_MAX_RECORDS = 2000  # records of one BackupPage
BACKUP_PAGE_MAX_BYTES = 4 * 1024 * 1024  # record bytes of one BackupPage (a frame is 16 MiB at most)
BACKUP_PARTITIONS_IN_FLIGHT = 4  # partitions read at once
RESTORE_BATCH_RECORDS = 1000  # records of one write batch (one ReplicaPutMany per replica set)
RESTORE_BATCHES_IN_FLIGHT = 4
RPC_TIMEOUT_MS = 30_000  # one page; a replica busy compacting may take a while
# A restore batch short of W (a replica stalled or restarting) is written again, after a pause
# doubling from RESTORE_RETRY_FIRST_PAUSE_S, before the restore gives up: writing a record
# twice changes nothing.
RESTORE_WRITE_ATTEMPTS = 6
RESTORE_RETRY_FIRST_PAUSE_S = 0.5
_TOKEN = struct.Struct(">Q")
log = logging.getLogger("ringkv.backup")


class BackupError(RingkvError):
    """A backup or restore could not go on; the message names the partition or file and why."""


# ---------------------------------------------------------------------- the replica's side


def read_backup_page(store, ring, body: BackupRange) -> BackupPage:
    """One page of this replica's records of a partition (the BackupRange handler)."""
    if not 0 <= body.partition < ring.partitions:
        raise CommandError(f"BackupRange: partition {body.partition} out of range 0..{ring.partitions - 1}")
    max_records = max(1, min(body.max_records, BACKUP_PAGE_MAX_RECORDS))
    max_bytes = max(1, min(body.max_bytes, BACKUP_PAGE_MAX_BYTES))
    first, last = ring.partition_range(body.partition)
    start = _TOKEN.pack(first) if body.after is None else bytes(body.after) + b"\x00"
    end = _TOKEN.pack(last + 1) if last < MAX_TOKEN else None
    return BackupPage(*scan_page(store, start, end, max_records, max_bytes))


# ---------------------------------------------------------------------- what the node gives


@dataclass
class BackupSource:
    """What a backup or restore needs of the node running it (node/node.py builds it)."""

    node_id: str
    cluster_name: str
    partitions: int
    replicas: int  # the ring's N (the largest of the namespaces')
    members: list[str]
    preference: Callable[[int], tuple[str, ...]]  # partition -> its replicas, in order
    is_up: Callable[[str], bool]
    fetch: Callable[[str, BackupRange], Awaitable[BackupPage]]  # ask a replica (this node too)
    merger_of: Callable[[bytes], Callable[[bytes | None, bytes | None], bytes | None]]
    hlc_now: Callable[[], int]
    now_ms: Callable[[], int]
    namespaces: list[dict[str, Any]]  # NamespaceSpec.as_dict() of every namespace clients name


@dataclass
class RestoreTarget:
    """Where a restore writes: `write(records)` stores records of any keys through the write
    path and returns once each is on W replicas; `known_namespaces`, the stored names."""

    write: Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
    known_namespaces: set[bytes]
    system_namespace: bytes
    now_ms: Callable[[], int]


def _live(record: bytes, now_ms: int) -> bool:
    return bool(decode_record(record).live_siblings(now_ms))


# ---------------------------------------------------------------------- backup


class ClusterBackup:
    def __init__(self, source: BackupSource, directory: str, replicas_per_partition: int, operation_id: str = ""):
        if not 1 <= replicas_per_partition <= source.replicas:
            raise AdminRequestError(f"replicas per partition must be 1..{source.replicas} (the ring's N), "
                                    f"got {replicas_per_partition}")
        self.source = source
        self.directory = os.path.abspath(directory)
        self.replicas_per_partition = replicas_per_partition
        self.operation_id = operation_id

    def prepare(self) -> dict[str, Any]:
        """Check the directory and write STARTED.json (or read it back: a resumed backup keeps its
        cut). Blocking file IO: run it off the loop."""
        d = self.directory
        if os.path.exists(os.path.join(d, fmt.MANIFEST_NAME)):
            raise AdminConflictError(f"{d} already holds a finished backup ({fmt.MANIFEST_NAME}); choose an empty "
                                     f"directory")
        started_path = os.path.join(d, fmt.STARTED_NAME)
        if os.path.exists(started_path):
            import json

            with open(started_path) as f:
                started = json.load(f)
            if started.get("cluster", {}).get("partitions") != self.source.partitions:
                raise AdminConflictError(
                    f"{d} holds an unfinished backup of a ring of {started.get('cluster', {}).get('partitions')} "
                    f"partitions; this cluster has {self.source.partitions}: choose another directory")
            return started
        if os.path.isdir(d) and os.listdir(d):
            raise AdminConflictError(f"{d} is not empty and holds no backup to resume; choose an empty directory")
        os.makedirs(os.path.join(d, fmt.PARTITIONS_DIR), exist_ok=True)
        s = self.source
        started = {
            "format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "operation": self.operation_id,
            "node_id": s.node_id,
            "cluster": {"name": s.cluster_name, "partitions": s.partitions, "replicas": s.replicas,
                        "members": list(s.members)},
            "namespaces": s.namespaces,
            "cut": {"hlc": s.hlc_now(), "wall_ms": s.now_ms()},
            "replicas_per_partition": self.replicas_per_partition,
        }
        fmt.write_json(d, fmt.STARTED_NAME, started)
        return started

    async def run(self, progress) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = await loop.run_in_executor(None, self.prepare)
        done = await loop.run_in_executor(None, fmt.read_progress, self.directory)
        total = self.source.partitions
        progress.update(total=total, done=len(done), phase="copying", unit="partitions")
        todo = [p for p in range(total) if p not in done]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for p in todo:
            queue.put_nowait(p)
        short: list[int] = []

        async def worker() -> None:
            while True:
                try:
                    p = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                entry = await self._partition(p)
                if len(entry["sources"]) < self.replicas_per_partition:
                    short.append(p)
                await loop.run_in_executor(None, fmt.append_progress, self.directory, entry)
                done[p] = entry
                progress.advance()

        await asyncio.gather(*(worker() for _ in range(min(BACKUP_PARTITIONS_IN_FLIGHT, max(1, len(todo))))))
        entries = [done[p] for p in range(total)]
        manifest = {
            **started,
            "finished_ms": self.source.now_ms(),
            "records": sum(e["records"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
            "partition_files": entries,
        }
        await loop.run_in_executor(None, fmt.write_json, self.directory, fmt.MANIFEST_NAME, manifest)
        progress.update(phase="done")
        return {"directory": self.directory, "records": manifest["records"], "bytes": manifest["bytes"],
                "partitions": total, "cut": started["cut"],
                "partitions_read_from_fewer_replicas": len({e["partition"] for e in entries
                                                            if len(e["sources"]) < self.replicas_per_partition})}

    def _sources(self, partition: int, failed: set[str]) -> list[str]:
        pref = [n for n in self.source.preference(partition) if n not in failed]
        up = [n for n in pref if n == self.source.node_id or self.source.is_up(n)]
        return up[:self.replicas_per_partition]

    async def _partition(self, partition: int) -> dict[str, Any]:
        """Copy one partition to its file; retried with other replicas when one fails."""
        failed: dict[str, str] = {}
        while True:
            sources = self._sources(partition, set(failed))
            if not sources:
                why = "; ".join(f"{n}: {r}" for n, r in failed.items()) or "every replica is down"
                raise BackupError(f"partition {partition}: no replica could be read ({why})")
            loop = asyncio.get_running_loop()
            writer = await loop.run_in_executor(None, fmt.PartitionWriter, self.directory, partition)
            try:
                await self._copy(partition, sources, writer)
            except _SourceFailed as exc:
                await loop.run_in_executor(None, writer.abort)
                failed[exc.node] = exc.reason
                continue
            except BaseException:
                await loop.run_in_executor(None, writer.abort)
                raise
            return await loop.run_in_executor(
                None, writer.finish, {"sources": sources, "read_ms": self.source.now_ms()})

    async def _copy(self, partition: int, sources: list[str], writer: fmt.PartitionWriter) -> None:
        after: bytes | None = None
        now = self.source.now_ms()
        loop = asyncio.get_running_loop()
        while True:
            pages = await asyncio.gather(*(self._fetch(n, partition, after) for n in sources))
            # Records past the smallest last key of an unfinished page may be missing from that
            # replica's next page: keep them for the next round.
            bound = min((page.records[-1][0] for page in pages if not page.done and page.records), default=None)
            merged: dict[bytes, bytes] = {}
            for page in pages:
                for skey, data in page.records:
                    if bound is not None and skey > bound:
                        break
                    old = merged.get(skey)
                    merged[skey] = data if old is None else self.source.merger_of(skey)(old, data)
            keep = [(k, merged[k]) for k in sorted(merged) if _live(merged[k], now)]
            if keep:
                await loop.run_in_executor(None, writer.add_many, keep)
            if bound is None:
                return
            after = bound

    async def _fetch(self, node: str, partition: int, after: bytes | None) -> BackupPage:
        try:
            return await self.source.fetch(
                node, BackupRange(partition, after, BACKUP_PAGE_MAX_RECORDS, BACKUP_PAGE_MAX_BYTES))
        except (TimeoutError, RingkvError, OSError) as exc:
            raise _SourceFailed(node, str(exc) or type(exc).__name__) from None


class _SourceFailed(Exception):
    def __init__(self, node: str, reason: str):
        self.node = node
        self.reason = reason


# ---------------------------------------------------------------------- restore


class ClusterRestore:
    def __init__(self, target: RestoreTarget, directory: str, with_users: bool = False):
        self.target = target
        self.directory = os.path.abspath(directory)
        self.with_users = with_users
        self.retries = 0  # batches written again after a failure

    async def _write(self, records: list[tuple[bytes, bytes]]) -> None:
        pause = RESTORE_RETRY_FIRST_PAUSE_S
        for attempt in range(1, RESTORE_WRITE_ATTEMPTS + 1):
            try:
                await self.target.write(records)
                return
            except RingkvError as exc:
                if attempt == RESTORE_WRITE_ATTEMPTS:
                    raise BackupError(f"restore gave up on a batch of {len(records)} records after {attempt} "
                                      f"attempts: {exc}") from exc
                self.retries += 1
                log.warning("restore: a batch of %d records failed (%s); writing it again in %.1f s",
                            len(records), exc, pause)
                await asyncio.sleep(pause)
                pause *= 2

    def check(self) -> dict[str, Any]:
        """The manifest, checked against this cluster (blocking: run it off the loop)."""
        manifest = fmt.read_manifest(self.directory)
        names = [ns["name"] for ns in manifest.get("namespaces", [])]
        missing = [n for n in names if n != "default" and n.encode() not in self.target.known_namespaces]
        if missing:
            raise AdminRequestError(
                f"the backup holds namespaces this cluster does not have: {', '.join(missing)}; configure them "
                f"(namespaces = ...) on every node first")
        return manifest

    async def run(self, progress) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            manifest = await loop.run_in_executor(None, self.check)
        except fmt.BackupFormatError as exc:
            raise AdminRequestError(str(exc)) from None
        progress.update(total=manifest["records"], done=0, phase="restoring", unit="records")
        written = dropped_expired = skipped_users = 0
        in_flight: set[asyncio.Task] = set()
        for entry in manifest["partition_files"]:
            try:
                await loop.run_in_executor(None, fmt.check_file, self.directory, entry)
                batches = await loop.run_in_executor(None, lambda e=entry: list(
                    fmt.read_partition(self.directory, e, RESTORE_BATCH_RECORDS)))
            except fmt.BackupFormatError as exc:
                for task in in_flight:
                    task.cancel()
                raise BackupError(f"restore stopped at a damaged file, after writing {written} records: {exc}"
                                  ) from None
            for batch in batches:
                now = self.target.now_ms()
                keep = []
                for skey, data in batch:
                    if skey[8] and bytes(skey[9:9 + skey[8]]) == self.target.system_namespace and not self.with_users:
                        skipped_users += 1
                    elif _live(data, now):
                        keep.append((skey, data))
                    else:
                        dropped_expired += 1
                progress.advance(len(batch) - len(keep))
                if not keep:
                    continue
                while len(in_flight) >= RESTORE_BATCHES_IN_FLIGHT:
                    finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()
                task = asyncio.ensure_future(self._write(keep))
                count = len(keep)
                task.add_done_callback(lambda _t, n=count: progress.advance(n))
                in_flight.add(task)
                written += len(keep)
        if in_flight:
            for result in await asyncio.gather(*in_flight, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
        progress.update(phase="done")
        return {"directory": self.directory, "records_written": written, "write_retries": self.retries, "expired_dropped": dropped_expired,
                "users_skipped": skipped_users, "cut": manifest.get("cut"),
                "source_cluster": manifest.get("cluster")}

