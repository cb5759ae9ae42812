"""Backup and restore on real clusters (docs/backup.md): a cluster backed up while writes go
on restores into a cluster of another size with every key acknowledged before the backup
began identical (siblings with their timestamps, TTLs); node snapshots, SAVE/BGSAVE/LASTSAVE,
DUMP/RESTORE through redis-py, export/import, and a damaged backup refused with the file named."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import redis
from click.testing import CliRunner

from ringkv.cli import main
from ringkv.node.backup_format import MANIFEST_NAME
from ringkv.storage import Engine, Options
from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(600)

COMMON = dict(gossip_interval_ms=200, replica_timeout_ms=3000, anti_entropy_interval_ms=0,
              namespaces="exp:replicas=2")
SOURCE = dict(replicas=3, partitions=64, **COMMON)
TARGET = dict(replicas=2, partitions=32, **COMMON)  # another size, another partition count
TTL_TOLERANCE_MS = 1500
SHORT_TTL_MS = 3000  # keys that expire between the backup and the restore


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    root = tmp_path_factory.mktemp("backup")
    with LocalCluster(root / "source", nodes=3, **SOURCE) as source, \
            LocalCluster(root / "target", nodes=2, **TARGET) as target:
        yield source, target


def cli(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(main, [*args], catch_exceptions=False)
    assert result.exit_code == expect, f"ringkv {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.output


def _state(r: redis.Redis, keys: list[str]) -> dict[str, tuple[list, int]]:
    """Each key's live siblings [(value, HLC timestamp)] and its absolute expiry (ms; 0: none)."""
    out = {}
    for i in range(0, len(keys), 200):  # small pipelines: a TTL is read within ms of `now`
        chunk = keys[i:i + 200]
        pipe = r.pipeline(transaction=False)
        for k in chunk:
            pipe.execute_command("RINGKV.GETV", k)
        before = time.time()
        replies = pipe.execute()
        now = int((before + time.time()) * 500)
        for k, reply in zip(chunk, replies, strict=True):
            siblings = reply[1] if reply else []
            expiry = max((now + ttl for _, _, ttl in siblings if ttl >= 0), default=0)
            out[k] = (sorted((v, ts) for v, ts, _ in siblings), expiry)
    return out


def _write_dataset(r: redis.Redis, prefix: str, n: int) -> list[str]:
    """n keys: plain values, a third with a TTL of an hour, one in ten with two siblings."""
    keys = []
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        key = f"{prefix}:{i}"
        keys.append(key)
        if i % 10 == 0:
            pipe.execute_command("RINGKV.PUTV", key, f"a{i}")
            pipe.execute_command("RINGKV.PUTV", key, f"b{i}", "PX", 3_600_000)
        elif i % 3 == 0:
            pipe.set(key, f"v{i}", px=3_600_000)
        else:
            pipe.set(key, b"\xff\x00" + str(i).encode())  # binary values travel too
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    return keys


def _backup_restore_scenario(source, target, tmp_path, n: int) -> dict:
    r1 = redis.Redis(port=source.nodes[0].resp_port, socket_timeout=60)
    keys = _write_dataset(r1, "bk", n)
    short = [f"short:{i}" for i in range(20)]
    for k in short:
        r1.set(k, "gone", px=SHORT_TTL_MS)
    short_written = time.monotonic()
    for i in range(0, n, 1000):
        r1.delete(*[f"bk:{j}" for j in range(i + 1, min(n, i + 1000), 97)])  # tombstones: not restored
    deleted = {f"bk:{j}" for i in range(0, n, 1000) for j in range(i + 1, min(n, i + 1000), 97)}
    keys = [k for k in keys if k not in deleted]

    # Writes go on during the backup, through another node.
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        r2 = redis.Redis(port=source.nodes[1].resp_port, socket_timeout=60)
        i = 0
        while not stop.is_set():
            r2.set(f"live:{i}", f"w{i}")
            acked.append(f"live:{i}")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while len(acked) < 50:
        time.sleep(0.01)
    expected = _state(r1, keys)
    acked_before = list(acked)
    started = time.monotonic()
    out = cli("backup", "--to", str(tmp_path / "backup"), "--port", str(source.nodes[0].resp_port),
              "--timeout-ms", "60000", "--json")
    backup_done = time.monotonic()
    backup_s = backup_done - started
    stop.set()
    thread.join()
    op = json.loads(out)
    assert op["state"] == "done" and op["kind"] == "backup", op
    verified = json.loads(cli("backup", "verify", str(tmp_path / "backup"), "--json"))
    assert verified["ok"] and verified["records"] == op["result"]["records"] >= len(keys) + len(acked_before)

    time.sleep(max(0.0, SHORT_TTL_MS / 1000 + 0.1 - (time.monotonic() - short_written)))  # the short TTLs run out
    started = time.monotonic()
    out = cli("restore", "--from", str(tmp_path / "backup"), "--port", str(target.nodes[1].resp_port),
              "--timeout-ms", "60000", "--json")
    restore_s = time.monotonic() - started
    op = json.loads(out)
    assert op["state"] == "done", op
    # Backed up while live (unless the backup outlasted them), dropped by the restore.
    if backup_done - short_written < SHORT_TTL_MS / 1000:
        assert op["result"]["expired_dropped"] == len(short)

    rt = redis.Redis(port=target.nodes[0].resp_port, socket_timeout=60)
    restored = _state(rt, keys)
    wrong = [k for k in keys if restored[k][0] != expected[k][0]
             or abs(restored[k][1] - expected[k][1]) > TTL_TOLERANCE_MS]
    assert not wrong, f"{len(wrong)} keys differ, e.g. {wrong[0]}: {expected[wrong[0]]} -> {restored[wrong[0]]}"
    assert sum(1 for k in keys if len(expected[k][0]) == 2) >= n // 10 - n // 97  # siblings were there
    assert rt.exists(*short) == 0
    assert rt.exists(*deleted) == 0
    live = [v for i in range(0, len(acked_before), 1000) for v in rt.mget(acked_before[i:i + 1000])]
    assert live == [f"w{k.split(':')[1]}".encode() for k in acked_before]
    return {"keys": len(keys), "backup_s": backup_s, "restore_s": restore_s,
            "records": verified["records"], "bytes": verified["bytes"]}


def test_backup_during_writes_restores_into_a_cluster_of_another_size(clusters, tmp_path):
    source, target = clusters
    _backup_restore_scenario(source, target, tmp_path, 3000)


def test_a_damaged_backup_is_named_by_verify_and_refused_by_restore(clusters, tmp_path):
    source, target = clusters
    r1 = redis.Redis(port=source.nodes[0].resp_port, socket_timeout=60)
    r1.mset({f"dmg:{i}": f"v{i}" for i in range(200)})
    d = tmp_path / "damaged"
    out = json.loads(cli("backup", "--to", str(d), "--port", str(source.nodes[2].resp_port), "--replicas", "1",
                         "--timeout-ms", "60000", "--json"))
    assert out["state"] == "done" and out["params"]["replicas_per_partition"] == 1
    manifest = json.loads((d / MANIFEST_NAME).read_text())
    entry = max(manifest["partition_files"], key=lambda e: e["records"])
    path = d / entry["file"]
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x40
    path.write_bytes(bytes(data))
    out = cli("backup", "verify", str(d), expect=4)
    assert f"{entry['file']}: SHA-256" in out and "does not match the manifest" in out
    out = json.loads(cli("restore", "--from", str(d), "--port", str(target.nodes[0].resp_port), "--json",
                         "--timeout-ms", "60000", expect=4))
    assert out["state"] == "failed" and entry["file"] in out["error"] and "SHA-256" in out["error"], out


def test_node_snapshots_and_save_commands(clusters):
    source, _ = clusters
    node = source.nodes[0]
    port = str(node.resp_port)
    r = redis.Redis(port=node.resp_port, socket_timeout=60)
    r.mset({f"snap:{i}": f"s{i}" for i in range(500)})
    doc = json.loads(cli("admin", "snapshot", "--name", "nightly", "--port", port, "--json"))
    assert doc["name"] == "nightly" and doc["node_id"] == "n1" and not doc["encrypted"]
    cli("admin", "snapshot", "--name", "nightly", "--port", port, expect=4)  # names are unique
    r.set("snap:after", "x")
    listed = json.loads(cli("admin", "snapshot", "list", "--port", port, "--json"))["snapshots"]
    assert [s["name"] for s in listed if s["name"] == "nightly"] == ["nightly"]

    # The snapshot opens as a store with every write the node had acknowledged (n1 is a replica
    # of some of the keys: those are all there, and the later write is not).
    with Engine.open(os.path.join(doc["path"], "engine"), Options()) as snap, snap.scan() as it:
        mine = {k[9 + k[8]:] for k, _ in it if k[9 + k[8]:].startswith(b"snap:")}
    assert len(mine) == 500 and b"snap:after" not in mine  # N = 3 of 3 nodes: n1 holds every key

    assert r.save() is True
    assert abs(r.lastsave().timestamp() - time.time()) < 30
    assert r.bgsave() is True
    deadline = time.monotonic() + 30
    while True:  # BGSAVE refuses a second one while the first runs, then accepts again
        try:
            r.bgsave()
            break
        except redis.ResponseError as exc:
            assert "Background save already in progress" in str(exc)
            assert time.monotonic() < deadline
            time.sleep(0.05)
    out = cli("admin", "snapshot", "remove", "nightly", "--port", port)
    assert "removed snapshot nightly" in out
    assert all(s["name"] != "nightly"
               for s in json.loads(cli("admin", "snapshot", "list", "--port", port, "--json"))["snapshots"])


def test_dump_and_restore_through_redis_py(clusters):
    source, target = clusters
    rs = redis.Redis(port=source.nodes[1].resp_port, socket_timeout=30)
    rt = redis.Redis(port=target.nodes[0].resp_port, socket_timeout=30)
    rs.set("dump:k", b"\x00binary\xffvalue")
    payload = rs.dump("dump:k")
    assert rs.dump("dump:missing") is None
    assert rt.restore("dump:k", 0, payload) == b"OK"
    assert rt.get("dump:k") == b"\x00binary\xffvalue" and rt.ttl("dump:k") == -1
    with pytest.raises(redis.ResponseError, match=r"^BUSYKEY Target key name already exists\.$"):
        rt.restore("dump:k", 0, payload)
    assert rt.restore("dump:k", 5000, payload, replace=True) == b"OK"
    assert 0 < rt.pttl("dump:k") <= 5000
    at = int(time.time() * 1000) + 60_000
    assert rt.restore("dump:abs", at, payload, absttl=True, idletime=10) == b"OK"
    assert abs(rt.pttl("dump:abs") - 60_000) < 5000
    assert rt.restore("dump:past", int(time.time() * 1000) - 1000, payload, absttl=True) == b"OK"
    assert rt.exists("dump:past") == 0
    with pytest.raises(redis.ResponseError, match=r"^DUMP payload version or checksum are wrong$"):
        rt.restore("dump:bad", 0, payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(redis.ResponseError, match="Invalid TTL value, must be >= 0"):
        rt.restore("dump:bad", -5, payload)
    # A collection travels whole, with its type and its order.
    rs.rpush("dump:list", b"a", b"\xff", b"c")
    rt.restore("dump:list", 0, rs.dump("dump:list"))
    assert rt.type("dump:list") == b"list" and rt.lrange("dump:list", 0, -1) == [b"a", b"\xff", b"c"]


def test_export_and_import_round_trip_as_json_lines(clusters, tmp_path):
    source, target = clusters
    rs = redis.Redis(port=source.nodes[2].resp_port, socket_timeout=30)
    rs.execute_command("RINGKV.NAMESPACE", "exp")
    for i in range(300):
        rs.set(f"e:{i}", f"x{i}" if i % 2 else b"\xfe\xff" + bytes([i % 256]), px=3_600_000 if i % 5 == 0 else None)
    rs.execute_command("RINGKV.PUTV", b"e:\xffbin", "one")
    rs.execute_command("RINGKV.PUTV", b"e:\xffbin", "two")
    rs.rpush("e:list", "x", b"\xfe", "z")
    rs.pexpire("e:list", 3_600_000)
    out_file = tmp_path / "exp.jsonl"
    cli("export", "--namespace", "exp", "--out", str(out_file), "--port", str(source.nodes[2].resp_port))
    lines = out_file.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "ringkv-export" and len(lines) == 303
    binary = next(json.loads(line) for line in lines[1:] if isinstance(json.loads(line)["key"], dict))
    assert len(binary["siblings"]) == 2
    assert next(json.loads(line) for line in lines[1:] if json.loads(line)["key"] == "e:list")["type"] == "list"
    out = json.loads(cli("import", str(out_file), "--port", str(target.nodes[1].resp_port), "--json"))
    assert out == {"keys": 302, "expired_skipped": 0}
    rt = redis.Redis(port=target.nodes[0].resp_port, socket_timeout=30)
    rt.execute_command("RINGKV.NAMESPACE", "exp")
    assert rt.lrange("e:list", 0, -1) == [b"x", b"\xfe", b"z"] and abs(rt.pttl("e:list") - 3_600_000) < 60_000
    rs_state = {k: (v, e) for k, (v, e) in _state(rs, [f"e:{i}" for i in range(300)]).items()}
    rt_state = _state(rt, [f"e:{i}" for i in range(300)])
    for k, (siblings, expiry) in rs_state.items():
        assert [v for v, _ in rt_state[k][0]] == [v for v, _ in siblings], k
        assert abs(rt_state[k][1] - expiry) <= TTL_TOLERANCE_MS, k
    assert sorted(v for v, _, _ in rt.execute_command("RINGKV.GETV", b"e:\xffbin")[1]) == [b"one", b"two"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_backup_and_restore_of_200k_keys(tmp_path, capsys):
    with LocalCluster(tmp_path / "source", nodes=3, **SOURCE) as source, \
            LocalCluster(tmp_path / "target", nodes=2, **TARGET) as target:
        figures = _backup_restore_scenario(source, target, tmp_path, 200_000)
    with capsys.disabled():
        print(f"\n200k backup/restore: {figures} -> backup {figures['records'] / figures['backup_s']:,.0f} "
              f"records/s, restore {figures['records'] / figures['restore_s']:,.0f} records/s")
