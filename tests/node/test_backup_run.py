"""A cluster backup's logic against replicas held in memory (node/backup.py): every partition
once, the replicas' records merged as replication merges them, pages of different lengths
lined up, a failing replica replaced, a cut-off backup resumed without reading again what it
finished; a restore drops what expired and refuses namespaces the cluster lacks."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ringkv.errors import AdminRequestError, RemoteError, RingkvError
from ringkv.node import backup_format as fmt
from ringkv.node.backup import BackupSource, ClusterBackup, ClusterRestore, RestoreTarget
from ringkv.node.messages import BackupPage, BackupRange
from ringkv.node.placement import merge_raw
from ringkv.versioning.record import apply_write, decode_record, encode_record

PARTITIONS = 8
NODES = ("n1", "n2", "n3")
PAGE_RECORDS = {"n1": 3, "n2": 5, "n3": 7}  # each replica pages differently
NOW_MS = 1_800_000_000_000


class FakeProgress:
    operation_id = "n1.1"

    def __init__(self) -> None:
        self.done = self.total = 0

    def update(self, *, done=None, total=None, phase=None, unit=None) -> None:
        self.total = self.total if total is None else total
        self.done = self.done if done is None else done

    def advance(self, units: int = 1) -> None:
        self.done += units


def skey(partition: int, key: bytes, ns: bytes = b"") -> bytes:
    token = (partition << 61) | (len(key) * 7919)
    return struct.pack(">Q", token) + bytes((len(ns),)) + ns + key


def record(value: bytes | None, actor: bytes, ts: int, expire_at_ms: int = 0, stored=None) -> bytes:
    r = apply_write(stored and decode_record(stored), actor=actor, context=None, value=value, timestamp=ts,
                    expire_at_ms=expire_at_ms)
    return encode_record(r)


class Replicas:
    """Three replicas' stores; every partition's preference list is n1, n2, n3."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[bytes, bytes]] = {n: {} for n in NODES}
        self.fetched: list[tuple[str, int]] = []
        self.fail: dict[str, int] = {}  # node -> pages answered before it fails

    def put(self, nodes, k: bytes, data: bytes) -> None:
        for n in nodes:
            self.stores[n][k] = data

    async def fetch(self, node: str, body: BackupRange) -> BackupPage:
        self.fetched.append((node, body.partition))
        if node in self.fail:
            if self.fail[node] == 0:
                raise RemoteError(node, 1, "disk on fire")
            self.fail[node] -= 1
        lo = body.partition << 61
        keys = sorted(k for k in self.stores[node] if struct.unpack(">Q", k[:8])[0] >> 61 == body.partition
                      and (body.after is None or k > body.after))
        assert all(struct.unpack(">Q", k[:8])[0] >= lo for k in keys)
        page = keys[:PAGE_RECORDS[node]]
        return BackupPage([(k, self.stores[node][k]) for k in page], len(page) == len(keys))

    def source(self) -> BackupSource:
        return BackupSource("n1", "test", PARTITIONS, 3, list(NODES), lambda p: NODES, lambda n: True, self.fetch,
                            lambda k: merge_raw, lambda: 42, lambda: NOW_MS,
                            [{"name": "default", "replicas": 3, "conflict_policy": "siblings"}])


def _backup(replicas: Replicas, directory: str, r: int = 2) -> dict:
    return asyncio.run(ClusterBackup(replicas.source(), directory, r).run(FakeProgress()))


def _records(directory: str) -> dict[bytes, bytes]:
    doc = fmt.read_manifest(directory)
    return {k: v for e in doc["partition_files"] for batch in fmt.read_partition(directory, e) for k, v in batch}


def test_replicas_are_merged_key_by_key_across_pages_of_different_lengths(tmp_path):
    reps = Replicas()
    for p in range(PARTITIONS):
        for i in range(20):
            reps.put(NODES, skey(p, b"k%02d" % i), record(b"v%d" % i, b"a", 100 + i))
    # n1 missed a write n2 took; n1 and n2 hold concurrent writes of one key (two siblings);
    # a key whose only value is deleted, and one whose value expired, are left out.
    reps.put(["n2", "n3"], skey(3, b"late"), record(b"late", b"b", 500))
    reps.stores["n1"][skey(4, b"conflict")] = record(b"from-n1", b"a", 600)
    reps.stores["n2"][skey(4, b"conflict")] = record(b"from-n2", b"b", 601)
    reps.put(NODES, skey(5, b"deleted"), record(None, b"a", 700))
    reps.put(NODES, skey(6, b"expired"), record(b"x", b"a", 800, expire_at_ms=NOW_MS - 1))
    result = _backup(reps, str(tmp_path))
    assert result["partitions"] == PARTITIONS and result["partitions_read_from_fewer_replicas"] == 0
    held = _records(str(tmp_path))
    assert len(held) == PARTITIONS * 20 + 2
    assert decode_record(held[skey(3, b"late")]).siblings[0].value == b"late"
    assert sorted(s.value for s in decode_record(held[skey(4, b"conflict")]).siblings) == [b"from-n1", b"from-n2"]
    assert skey(5, b"deleted") not in held and skey(6, b"expired") not in held
    assert {n for n, _ in reps.fetched} == {"n1", "n2"}  # a quorum of N = 3, in preference order
    assert fmt.verify(str(tmp_path))["records"] == len(held)


def test_a_replica_failing_mid_partition_is_replaced_by_the_next(tmp_path):
    reps = Replicas()
    for p in range(PARTITIONS):
        for i in range(20):
            reps.put(NODES, skey(p, b"k%02d" % i), record(b"v", b"a", 1))
    reps.fail["n2"] = 10  # answers ten pages, then fails
    _backup(reps, str(tmp_path))
    doc = fmt.read_manifest(str(tmp_path))
    assert any(e["sources"] == ["n1", "n3"] for e in doc["partition_files"])
    assert len(_records(str(tmp_path))) == PARTITIONS * 20


def test_a_backup_cut_off_resumes_without_reading_finished_partitions_again(tmp_path):
    reps = Replicas()
    for p in range(PARTITIONS):
        reps.put(NODES, skey(p, b"k"), record(b"v%d" % p, b"a", 1))
    calls = {"n": 0}
    real_fetch = reps.fetch

    async def fetch_then_stop(node, body):
        calls["n"] += 1
        if body.partition == 6:
            raise asyncio.CancelledError  # the node stops mid-backup
        return await real_fetch(node, body)

    reps.fetch = fetch_then_stop
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(ClusterBackup(reps.source(), str(tmp_path), 1).run(FakeProgress()))
    done = set(fmt.read_progress(str(tmp_path)))
    assert done and 6 not in done
    reps.fetch = real_fetch
    reps.fetched.clear()
    _backup(reps, str(tmp_path), r=1)
    assert {p for _, p in reps.fetched} == set(range(PARTITIONS)) - done
    assert len(_records(str(tmp_path))) == PARTITIONS


def test_restore_drops_expired_values_and_refuses_unknown_namespaces(tmp_path):
    reps = Replicas()
    reps.put(NODES, skey(1, b"keep"), record(b"v", b"a", 1, expire_at_ms=NOW_MS + 60_000))
    reps.put(NODES, skey(2, b"soon"), record(b"v", b"a", 1, expire_at_ms=NOW_MS + 10))
    reps.put(NODES, skey(3, b"user", ns=b"__ringkv.users"), record(b"u", b"a", 1))
    _backup(reps, str(tmp_path))
    written: list[bytes] = []

    async def write(records):
        written.extend(k for k, _ in records)

    target = RestoreTarget(write, {b""}, b"__ringkv.users", lambda: NOW_MS + 1000)
    progress = FakeProgress()
    result = asyncio.run(ClusterRestore(target, str(tmp_path)).run(progress))
    assert written == [skey(1, b"keep")]
    assert (result["records_written"], result["expired_dropped"], result["users_skipped"]) == (1, 1, 1)
    assert progress.done == progress.total == 3

    doc = fmt.read_manifest(str(tmp_path))
    doc["namespaces"].append({"name": "metrics", "replicas": 1, "conflict_policy": "lww"})
    fmt.write_json(str(tmp_path), fmt.MANIFEST_NAME, doc)
    with pytest.raises(AdminRequestError, match="namespaces this cluster does not have: metrics"):
        asyncio.run(ClusterRestore(target, str(tmp_path)).run(FakeProgress()))


def test_a_restore_batch_short_of_quorum_is_written_again(tmp_path, monkeypatch):
    monkeypatch.setattr("ringkv.node.backup.RESTORE_RETRY_FIRST_PAUSE_S", 0)
    reps = Replicas()
    reps.put(NODES, skey(1, b"k"), record(b"v", b"a", 1))
    _backup(reps, str(tmp_path))
    failures = {"left": 2}
    written: list[bytes] = []

    async def flaky_write(records):
        if failures["left"]:
            failures["left"] -= 1
            raise RingkvError("needed 2 replicas, 1 answered: n1 down (phi 208.3)")
        written.extend(k for k, _ in records)

    target = RestoreTarget(flaky_write, {b""}, b"__ringkv.users", lambda: NOW_MS)
    result = asyncio.run(ClusterRestore(target, str(tmp_path)).run(FakeProgress()))
    assert written == [skey(1, b"k")] and result["write_retries"] == 2

    async def never(records):
        raise RingkvError("needed 2 replicas, 1 answered: n1 down")

    with pytest.raises(RingkvError, match=r"gave up on a batch of 1 records after 6 attempts: needed 2 replicas"):
        asyncio.run(ClusterRestore(RestoreTarget(never, {b""}, b"", lambda: NOW_MS), str(tmp_path)).run(FakeProgress()))
