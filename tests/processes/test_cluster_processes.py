"""A real cluster: `ringkv serve` processes on loopback, driven by redis-py.

What these check is what a client of a Dynamo-style store relies on: quorum reads and writes
survive one crashed replica (of N=3) and fail with an error that names the missing replicas
when two are down, while ONE keeps working; read repair leaves every replica with the same
version; concurrent writes through different coordinators become siblings that a write with
the merged context resolves; a node whose data directory was wiped comes back as a new actor
and loses no acknowledged write (Riak's kv679); read-modify-write commands on one key are
serialized cluster-wide; SCAN, DBSIZE, MGET and KEYS cover the whole keyspace, not the
coordinator's share of it.

Whether a replica holds a version is checked on that replica alone: the other nodes are
stopped, so a read at ONE cannot be answered or repaired by anyone else.

RPC reconnects back off for up to 5 s after a peer was down, so anything that needs a
restarted peer polls with a deadline instead of asserting at once.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from ringkv.client.routing import RingMap
from ringkv.cluster.ring import RING_BOUNDED, RING_DITHERED, Member, Ring
from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until
from ringkv.versioning.dvv import decode_context

RECONNECT_DEADLINE_S = 20.0  # well past the 5 s reconnect back-off cap


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def connect(node: NodeProcess) -> Iterator[redis.Redis]:
    """One dedicated connection, so RINGKV.CONSISTENCY applies to every command sent on it."""
    r = redis.Redis(host="127.0.0.1", port=node.resp_port, socket_timeout=15,
                    single_connection_client=True)
    try:
        yield r
    finally:
        r.close()


def poll(fn: Callable[[], Any], until: Callable[[Any], bool] = lambda _: True,
         deadline_s: float = RECONNECT_DEADLINE_S) -> Any:
    """fn() once it returns without a redis error and `until` its result holds."""
    answered: list[Any] = []

    def ready() -> tuple[Any] | None:
        answered[:] = [fn()]
        return (answered[0],) if until(answered[0]) else None  # a tuple: fn() may answer None

    return wait_until(ready, deadline_s, lambda: f"an answer as wanted (last answer: {answered!r})",
                      interval_s=0.1, ignore=(redis.RedisError,))[0]


def start_all(*nodes: NodeProcess) -> None:
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready()


def actor(node: NodeProcess) -> str:
    doc = json.loads((node.data_dir / "IDENTITY.json").read_text())
    return f"{doc['node_id']}@{doc['epoch']}"


def getv(r: redis.Redis, key: str, level: str | None = None) -> tuple[bytes | None, list[bytes]]:
    """RINGKV.GETV: (context, [value, ...])."""
    cmd = ("RINGKV.GETV", key) if level is None else ("RINGKV.AT", level, "RINGKV.GETV", key)
    context, siblings = r.execute_command(*cmd)
    return context, [s[0] for s in siblings]


def getv_full(r: redis.Redis, key: str) -> tuple[bytes | None, list[tuple[bytes, int]]]:
    """RINGKV.GETV at ONE with everything that identifies a version: the context and each
    sibling's value and HLC timestamp."""
    context, siblings = r.execute_command("RINGKV.AT", "ONE", "RINGKV.GETV", key)
    return context, [(s[0], s[1]) for s in siblings]


def quorum_failure(exc: BaseException, needed: int, answered: int | tuple[int, ...],
                   missing: tuple[str, ...]) -> str:
    """Check a QuorumError reply and return its text.

    The count is the one at the moment the request was decided, which is as soon as too few
    replicas are left: a replica still on its way is neither counted nor listed. So with one
    of three down, ALL may fail with "2 answered" or (the down one failing first) "1 answered".
    """
    msg = str(exc)
    counts = (answered,) if isinstance(answered, int) else answered
    assert any(msg.startswith(f"needed {needed} replicas, {a} answered:") for a in counts), msg
    for node in missing:
        assert re.search(rf"\b{node} (unavailable|timed out)", msg), (node, msg)
    return msg


def status(r: redis.Redis) -> dict[str, dict]:
    doc = json.loads(r.execute_command("RINGKV.STATUS"))
    return {n["node_id"]: n for n in doc["nodes"]}


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """Three nodes, N=3, for the tests that kill nothing (each uses keys of its own)."""
    with LocalCluster(tmp_path_factory.mktemp("shared"), nodes=3, replicas=3) as cluster:
        yield cluster


# --------------------------------------------------------------------------- 1. crashes


@pytest.mark.timeout(120)
def test_quorum_survives_one_crash_one_survives_two_and_read_repair_converges(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, read_repair="blocking",
                      replica_timeout_ms=2000, sync="always") as cluster:
        n1, n2, n3 = cluster.nodes

        # One replica down: QUORUM (2 of 3) writes and reads work through each survivor.
        n3.kill()
        written: dict[str, bytes] = {}
        for node in (n1, n2):
            with connect(node) as r:
                for i in range(50):
                    key = f"one-down:{node.node_id}:{i}"
                    assert r.set(key, f"value-{node.node_id}-{i}") is True
                    written[key] = f"value-{node.node_id}-{i}".encode()
        for node in (n1, n2):
            with connect(node) as r:
                assert {k: r.get(k) for k in written} == written

        # Two down: QUORUM fails and names both; ONE still serves reads and writes.
        n2.kill()
        with connect(n1) as r:
            with pytest.raises(redis.ResponseError) as err:
                r.set("two-down:quorum", "x")
            quorum_failure(err.value, 2, 1, ("n2", "n3"))
            with pytest.raises(redis.ResponseError) as err:
                r.get("one-down:n1:0")
            msg = quorum_failure(err.value, 2, 1, ("n2", "n3"))
            assert not re.search(r"\bn1 (unavailable|timed out|failed)", msg), msg

            assert r.execute_command("RINGKV.CONSISTENCY", "ONE") == b"OK"
            assert {k: r.get(k) for k in written} == written
            assert r.set("two-down:one", "written-at-one") is True
            assert r.get("two-down:one") == b"written-at-one"

        # Both back. The node that took the ONE write answers it at QUORUM once it reaches
        # a peer again (its own copy is one of the two answers).
        start_all(n2, n3)
        with connect(n1) as r:
            assert poll(lambda: r.get("two-down:one"), lambda v: v is not None) == b"written-at-one"
            # A read at ALL needs both restarted peers; with blocking read repair every
            # replica that answered with less holds the merge before the reply.
            poll(lambda: r.execute_command("RINGKV.AT", "ALL", "GET", "two-down:one"))
            checked = {**written, "two-down:one": b"written-at-one"}
            for key, value in checked.items():
                assert r.execute_command("RINGKV.AT", "ALL", "GET", key) == value

        # Each replica alone (the other two stopped) must hold the same version of every key:
        # same context, same siblings, same timestamps. Stop/start order: n1 alone, n2 alone,
        # n3 alone.
        seen: dict[str, dict[str, tuple]] = {}

        def snapshot(node: NodeProcess) -> None:
            with connect(node) as r:
                seen[node.node_id] = {k: getv_full(r, k) for k in checked}
                assert {k: r.execute_command("RINGKV.AT", "ONE", "GET", k) for k in checked} == checked

        n2.stop()
        n3.stop()
        snapshot(n1)
        n1.stop()
        n2.start()
        snapshot(n2)
        n2.stop()
        n3.start()
        snapshot(n3)

        for key, value in checked.items():
            versions = {node: seen[node][key] for node in ("n1", "n2", "n3")}
            assert len(set(map(repr, versions.values()))) == 1, (key, versions)
            context, siblings = versions["n1"]
            assert context is not None
            assert [v for v, _ in siblings] == [value], (key, siblings)


# --------------------------------------------------------------------------- 2. siblings


@pytest.mark.timeout(120)
def test_concurrent_writes_through_two_coordinators_become_siblings(shared_cluster):
    n1, n2, n3 = shared_cluster.nodes
    key = "siblings:k"
    with connect(n1) as r1, connect(n2) as r2, connect(n3) as r3:
        assert r1.set(key, "v0") is True
        context, values = getv(r1, key)
        assert values == [b"v0"]

        ctx_a = r1.execute_command("RINGKV.PUTV", key, "a", "CONTEXT", context)
        ctx_b = r2.execute_command("RINGKV.PUTV", key, "b", "CONTEXT", context)
        assert isinstance(ctx_a, bytes) and isinstance(ctx_b, bytes) and ctx_a != ctx_b

        # Both writes were acknowledged by 2 of 3 replicas and a QUORUM read asks 2 of 3:
        # it sees both, as siblings (v0 is superseded by each).
        merged_ctx, values = getv(r3, key)
        assert sorted(values) == [b"a", b"b"]
        for r in (r1, r2, r3):
            _, vs = getv(r, key)
            assert sorted(vs) == [b"a", b"b"]

        # GET picks one winner by a total order (timestamp, then dot): the same everywhere,
        # and it is a sibling with the latest timestamp.
        winners = {r.get(key) for r in (r1, r2, r3)}
        assert len(winners) == 1, winners
        _, full = r3.execute_command("RINGKV.AT", "ALL", "RINGKV.GETV", key)
        newest = max(s[1] for s in full)
        assert winners <= {s[0] for s in full if s[1] == newest}  # a tie goes by dot

        # A write with the context that saw both replaces both.
        ctx_c = r3.execute_command("RINGKV.PUTV", key, "c", "CONTEXT", merged_ctx)
        assert isinstance(ctx_c, bytes)
        for r in (r1, r2, r3):
            assert getv(r, key)[1] == [b"c"]
            assert getv(r, key, "ALL")[1] == [b"c"]
            assert r.get(key) == b"c"

        # A write with the stale context of the first read (it saw only v0) does not
        # replace a, b or c: it becomes a sibling of c.
        r1.execute_command("RINGKV.PUTV", key, "late", "CONTEXT", context)
        assert sorted(getv(r2, key)[1]) == [b"c", b"late"]


# --------------------------------------------------------------------------- 3. kv679


@pytest.mark.timeout(120)
def test_wiped_node_comes_back_as_a_new_actor_and_loses_no_acknowledged_write(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, read_repair="blocking",
                      replica_timeout_ms=2000, sync="always") as cluster:
        n1, n2, n3 = cluster.nodes
        with connect(n1) as r:
            for key, value in (("k", "v1"), ("k2", "x"), ("k3", "y")):
                assert r.execute_command("RINGKV.AT", "ALL", "SET", key, value) == b"OK"
        old_actor = actor(n1)

        n1.kill()
        shutil.rmtree(n1.data_dir)
        n1.start()
        new_actor = actor(n1)
        assert new_actor.startswith("n1@") and old_actor.startswith("n1@")
        assert new_actor != old_actor

        with connect(n1) as r:
            me = status(r)["n1"]
            assert me["actor"] == new_actor
            assert me["keys"] == 0  # the wipe took everything; nothing repaired it yet

        # k2 is still readable at QUORUM: n2 and n3 hold it.
        for node in (n2, n3):
            with connect(node) as r:
                assert poll(lambda r=r: r.get("k2")) == b"x"

        # A plain QUORUM SET through the wiped node: its new version is made by the new
        # actor, so it cannot be mistaken for (and dropped as) the v1 the old actor made.
        with connect(n1) as r:
            assert r.set("k", "v2") is True
        for node in (n2, n3, n1):
            with connect(node) as r:
                assert poll(lambda r=r: r.execute_command("RINGKV.AT", "ALL", "GET", "k")) == b"v2"
                context, values = getv(r, "k", "ALL")
                assert b"v2" in values
                # The wiped node wrote blind (it had no record of k): v1 stays, a sibling
                # that lost the winner rule to the later v2. No acknowledged write is lost.
                assert sorted(values) == [b"v1", b"v2"]
                clock = {bytes(a) if not isinstance(a, str) else a.encode(): n
                         for a, n in decode_context(context).items()}
                assert clock.get(old_actor.encode()) == 1, clock
                assert clock.get(new_actor.encode()) == 1, clock

        # Reading at ALL through the wiped node repairs it (blocking): k3 was not read by
        # anyone since the wipe, k2 was (and may have been repaired then already).
        with connect(n1) as r:
            assert poll(lambda: r.execute_command("RINGKV.AT", "ALL", "GET", "k3")) == b"y"
            assert r.execute_command("RINGKV.AT", "ALL", "GET", "k2") == b"x"

        n2.stop()
        n3.stop()
        with connect(n1) as r:
            assert r.execute_command("RINGKV.AT", "ONE", "GET", "k2") == b"x"
            assert r.execute_command("RINGKV.AT", "ONE", "GET", "k3") == b"y"
            assert r.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"v2"
            assert sorted(getv(r, "k", "ONE")[1]) == [b"v1", b"v2"]


# --------------------------------------------------------------------------- 4. RMW


@pytest.mark.timeout(120)
def test_incr_from_every_node_is_serialized_on_the_key(shared_cluster):
    key = "rmw:counter"
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(shared_cluster.nodes))

    def worker(node: NodeProcess) -> None:
        try:
            with connect(node) as r:
                start.wait()
                mine = [r.incr(key) for _ in range(100)]
            with lock:
                results.extend(mine)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in shared_cluster.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    # Every INCR saw the one before it: each returned a distinct count.
    assert sorted(results) == list(range(1, 301))
    for node in shared_cluster.nodes:
        with connect(node) as r:
            assert r.get(key) == b"300"
            assert r.execute_command("RINGKV.AT", "ALL", "GET", key) == b"300"


# --------------------------------------------------------------------------- 5. keyspace


@pytest.mark.timeout(120)
def test_scan_dbsize_mget_and_keys_cover_the_whole_cluster(tmp_path):
    with LocalCluster(tmp_path, nodes=4, replicas=2) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        data = {f"key:{i:03d}": f"value-{i}".encode() for i in range(300)}
        with connect(n1) as r:
            assert r.mset(data) is True
            # N=2 of 4 nodes: every key on exactly two, so no node holds all of them.
            per_node = {n: s["keys"] for n, s in status(r).items()}
            assert sum(per_node.values()) == 2 * len(data), per_node
            assert all(0 < k < len(data) for k in per_node.values()), per_node

        with connect(n4) as r:
            seen: list[bytes] = []
            cursor = 0
            for _ in range(10_000):
                cursor, page = r.scan(cursor, count=17)
                seen.extend(page)
                if cursor == 0:
                    break
            assert cursor == 0
            assert len(seen) == len(set(seen)), "a key was listed twice"
            assert {k.decode() for k in seen} == set(data)

        for node in cluster.nodes:
            with connect(node) as r:
                assert r.dbsize() == len(data)
        with connect(n3) as r:
            keys = list(data)
            assert r.mget(keys) == [data[k] for k in keys]
            assert sorted(k.decode() for k in r.keys("*")) == sorted(data)

        # New keys written between pages do not break the cursor: the scan still ends, lists
        # no key twice and lists every key that was there before it started.
        added: list[str] = []
        with connect(n4) as r, connect(n2) as w:
            seen = []
            cursor = 0
            for page_no in range(10_000):
                cursor, page = r.scan(cursor, count=17)
                seen.extend(page)
                if cursor == 0:
                    break
                for j in range(3):
                    new = f"added:{page_no}:{j}"
                    assert w.set(new, "new") is True
                    added.append(new)
            assert cursor == 0
            assert len(seen) == len(set(seen)), "a key was listed twice"
            names = {k.decode() for k in seen}
            assert set(data) <= names
            assert names <= set(data) | set(added)
        assert added
        with connect(n1) as r:
            assert r.dbsize() == len(data) + len(added)


# --------------------------------------------------------------------------- 6. levels


@pytest.mark.timeout(120)
def test_levels_out_of_range_and_all_with_a_replica_down(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, replica_timeout_ms=500) as cluster:
        n1, n2, n3 = cluster.nodes
        with connect(n1) as r:
            for bad in ("4", "0"):
                with pytest.raises(redis.ResponseError) as err:
                    r.execute_command("RINGKV.CONSISTENCY", bad)
                assert "1..3" in str(err.value), str(err.value)
            with pytest.raises(redis.ResponseError) as err:
                r.execute_command("RINGKV.CONSISTENCY", "READ", "ONE", "WRITE", "4")
            assert "1..3" in str(err.value), str(err.value)
            with pytest.raises(redis.ResponseError) as err:
                r.execute_command("RINGKV.AT", "4", "GET", "k")
            assert "1..3" in str(err.value), str(err.value)
            # A rejected level leaves the connection's levels as they were.
            assert r.execute_command("RINGKV.CONSISTENCY") == [b"read", b"QUORUM", b"write", b"QUORUM", b"mode", b"SLOPPY"]

            assert r.execute_command("RINGKV.AT", "ALL", "SET", "k", "v") == b"OK"
            assert r.execute_command("RINGKV.AT", "ALL", "GET", "k") == b"v"

            n3.kill()
            with pytest.raises(redis.ResponseError) as err:
                r.execute_command("RINGKV.AT", "ALL", "GET", "k")
            quorum_failure(err.value, 3, (1, 2), ("n3",))
            with pytest.raises(redis.ResponseError) as err:
                r.execute_command("RINGKV.AT", "ALL", "SET", "k2", "v")
            quorum_failure(err.value, 3, (1, 2), ("n3",))
            assert r.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"v"
            assert r.get("k") == b"v"  # the connection is still at QUORUM: 2 of 3 answer
            assert r.mget("k", "k") == [b"v", b"v"]
        with connect(n2) as r:
            # Explicit counts behave like the named levels: 3 is ALL here, 2 is QUORUM.
            with pytest.raises(redis.ResponseError) as err:
                r.execute_command("RINGKV.AT", "3", "GET", "k")
            quorum_failure(err.value, 3, (1, 2), ("n3",))
            assert r.execute_command("RINGKV.AT", "2", "GET", "k") == b"v"


# --------------------------------------------------------------------------- 7. a stalled replica


@pytest.mark.timeout(180)
def test_reads_at_quorum_and_one_do_not_wait_for_a_paused_replica_asked_first(tmp_path):
    """read_fanout = "quorum" (the default) asks one other replica at QUORUM: for about half the
    keys that is the paused one. The failure detector is told never to hold a node down
    (phi_threshold), so what keeps those reads well under replica_timeout_ms is the speculative
    retry alone: after the asked replica's recent p99 the coordinator asks the third."""
    timeout_ms = 2000
    keys = [f"stall:{i}" for i in range(120)]
    with LocalCluster(tmp_path, nodes=3, replicas=3, replica_timeout_ms=timeout_ms, phi_threshold=1e6,
                      anti_entropy_interval_ms=0) as cluster:
        n1, n2, n3 = cluster.nodes
        with connect(n1) as r:
            for key in keys:
                assert r.execute_command("RINGKV.AT", "ALL", "SET", key, key) == b"OK"
            # Reads for over a second, so that each coordinator has measured its peers' p99.
            for node in (n1, n3):
                with connect(node) as other:
                    for _ in range(2):
                        assert [other.get(k) for k in keys] == [k.encode() for k in keys]
            time.sleep(1.1)
            before = int(r.info("ringkv")["cluster_speculative_reads"])
        n2.pause()
        worst: dict[tuple[str, str], float] = {}  # the slowest read, ms
        try:
            latencies: dict[tuple[str, str], list[float]] = {}
            for node in (n1, n3):
                with connect(node) as r:
                    for level in ("QUORUM", "ONE"):
                        took = latencies[node.node_id, level] = []
                        for key in keys:
                            started = time.perf_counter()
                            assert r.execute_command("RINGKV.AT", level, "GET", key) == key.encode()
                            took.append(time.perf_counter() - started)
            with connect(n1) as r:
                speculated = int(r.info("ringkv")["cluster_speculative_reads"]) - before
            # MGET: one ReplicaGetMany per replica asked; its keys that asked n2 retry together.
            for node in (n1, n3):
                with connect(node) as r:
                    started = time.perf_counter()
                    assert r.mget(keys) == [k.encode() for k in keys]
                    worst[node.node_id, "MGET"] = (time.perf_counter() - started) * 1000
        finally:
            n2.resume()
        worst.update({k: max(v) * 1000 for k, v in latencies.items()})
        print(f"slowest read with n2 paused, ms: {worst}; n1 speculated {speculated} times")
        # Well under the replica timeout (2000 ms): each read that asked n2 first waited its
        # p99 plus one round trip to n3, not the timeout.
        assert all(ms < timeout_ms / 10 for ms in worst.values()), worst
        # About half of n1's QUORUM reads asked n2 first (its ONE reads ask nobody).
        assert len(keys) // 4 <= speculated <= len(keys), speculated
        with connect(n1) as r:  # and n2, resumed, answers again
            assert poll(lambda: r.execute_command("RINGKV.AT", "ALL", "GET", keys[0])) == keys[0].encode()


def cluster_stat(nodes: list[NodeProcess], name: str) -> int:
    """INFO ringkv's cluster_<name>, summed over the nodes."""
    return sum(int(redis.Redis(port=n.resp_port).info("ringkv")[f"cluster_{name}"]) for n in nodes)


@pytest.mark.timeout(120)
def test_digest_reads_ask_one_replica_for_the_record_and_still_find_and_repair_a_stale_one(tmp_path):
    """read_digests = true: of the replicas a QUORUM read asks, one sends its
    record (the coordinator's own copy, when it is a replica) and the other only a digest. Four
    nodes, N = 3, so each node coordinates reads of keys it holds and of keys it does not. A
    replica that missed a write (partitioned from the coordinator, which kept a hint it cannot
    deliver yet) answers its record instead of a digest; the read returns the write and repairs
    the replica."""
    keys = [f"digest:{i}" for i in range(40)]
    with LocalCluster(tmp_path, nodes=4, replicas=3, anti_entropy_interval_ms=0, read_digests=True,
                      fault_injection=True) as cluster:
        nodes = cluster.nodes
        with connect(nodes[0]) as r:
            for key in keys:
                assert r.execute_command("RINGKV.AT", "ALL", "SET", key, key * 50) == b"OK"
            ring = RingMap(json.loads(r.execute_command("RINGKV.RING")), "127.0.0.1")
        names = [n.node_id for n in nodes]
        by_name = dict(zip(names, nodes))
        before = cluster_stat(nodes, "replica_digest_reads")
        for node in nodes:
            with connect(node) as r:
                assert [r.get(k) for k in keys] == [k.encode() * 50 for k in keys]
        # One digest ask per QUORUM read, whoever coordinates it (plus a speculative retry now
        # and then, which is a digest ask too), and every digest matched.
        digests = cluster_stat(nodes, "replica_digest_reads") - before
        assert len(keys) * 4 <= digests <= len(keys) * 4 * 1.1, digests
        assert cluster_stat(nodes, "digest_mismatches") == 0
        # MGET asks for records (one ReplicaGetMany per replica asked): no digest ask.
        with connect(nodes[1]) as r:
            assert r.mget(keys) == [k.encode() * 50 for k in keys]
        assert cluster_stat(nodes, "replica_digest_reads") - before == digests

        # A stale replica: the key's first replica coordinates a write while it cannot reach
        # the third, so the third misses it (the hint waits for the partition to heal).
        key = keys[0]
        first, _, third = (names[i] for i in ring.replicas_of(b"", key.encode()))  # the default namespace
        coordinator, stale = by_name[first], by_name[third]
        with connect(coordinator) as r, connect(stale) as s:
            assert r.execute_command("RINGKV.FAULT", "PARTITION", third) == f"blocked {third}".encode()
            assert s.execute_command("RINGKV.FAULT", "PARTITION", first) == f"blocked {first}".encode()
            assert r.set(key, "newer") is True
            assert s.execute_command("RINGKV.AT", "ONE", "GET", key) == key.encode() * 50  # stale
            # Through the stale replica at QUORUM: its own copy and the second replica's digest
            # ask, answered with the newer record because the digests differ.
            mismatches = int(s.info("ringkv")["cluster_digest_mismatches"])
            assert s.get(key) == b"newer"
            assert int(s.info("ringkv")["cluster_digest_mismatches"]) == mismatches + 1
            # read repair fixed the stale copy
            assert poll(lambda: s.execute_command("RINGKV.AT", "ONE", "GET", key), lambda v: v == b"newer")
            r.execute_command("RINGKV.FAULT", "HEAL")
            s.execute_command("RINGKV.FAULT", "HEAL")


def test_a_cluster_created_with_the_bounded_ring_places_keys_by_it(tmp_path):
    """ring_algorithm = "bounded" reaches every node's ring: the cluster's ring map is the
    bounded ring of its members, not the default one."""
    with LocalCluster(tmp_path, nodes=4, partitions=64, ring_algorithm="bounded") as cluster:
        doc = json.loads(redis.Redis(port=cluster.nodes[2].resp_port).execute_command("RINGKV.RING"))
        members = [Member(n.node_id) for n in cluster.nodes]
        names = [n["node_id"] for n in doc["nodes"]]
        served = [tuple(names[i] for i in replicas) for replicas in doc["replicas"]]
        bounded, dithered = Ring(members, 64, 3, RING_BOUNDED), Ring(members, 64, 3, RING_DITHERED)
        assert served == [bounded.preference_list(p) for p in range(64)]
        assert served != [dithered.preference_list(p) for p in range(64)]
        r = redis.Redis(port=cluster.nodes[0].resp_port)
        for i in range(50):
            assert r.set(f"k{i}", i) is True
        assert [int(r.get(f"k{i}")) for i in range(50)] == list(range(50))
