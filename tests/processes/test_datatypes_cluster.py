"""Collections on a real 3-node cluster (docs/data-types.md, "Consistency and convergence"):
clients pushing, adding and incrementing through every node at once lose nothing, a node
SIGKILLed and restarted mid-stream loses nothing acknowledged and ends with the same
collections, and a namespace on the fast path runs multi-key commands of one hash tag."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from ringkv.client.routing import RingMap
from ringkv.testing.launcher import LocalCluster
from ringkv.testing.probes import hears_everyone
from ringkv.testing.wait import wait_until

PUSHES_PER_CLIENT = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("types"), nodes=3, replica_timeout_ms=300, gossip_interval_ms=200,
                     namespaces="quick:rmw=fast").start()
    yield c
    c.stop()


def _clients(cluster) -> list[redis.Redis]:
    # No retries: a resent push would be applied twice, and the test counts exactly.
    return [redis.Redis(port=n.resp_port, socket_timeout=15, retry=None) for n in cluster.nodes]


def _at_all(r: redis.Redis, *command):
    return r.execute_command("RINGKV.AT", "ALL", *command)


def _race(clients: list[redis.Redis], work) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i, clients[i % len(clients)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients) * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_concurrent_writes_through_every_node_lose_nothing(cluster):
    clients = _clients(cluster)

    def work(i: int, r: redis.Redis) -> None:
        for n in range(PUSHES_PER_CLIENT):
            r.rpush("race:list", f"{i}:{n}")
            r.sadd("race:set", f"{i}:{n}")
            r.hincrby("race:hash", "total", 1)
            r.zincrby("race:zset", 1, f"client{i}")

    assert _race(clients, work) == []
    writers = len(clients) * 2
    # Read at ALL: a round's commit reaches the other replicas just after its answer, so a
    # QUORUM read right after the last write may miss it (docs/data-types.md).
    items = [v.decode() for v in _at_all(clients[0], "LRANGE", "race:list", 0, -1)]
    assert len(items) == len(set(items)) == writers * PUSHES_PER_CLIENT
    for i in range(writers):  # each client's pushes in the order it made them
        mine = [int(v.split(":")[1]) for v in items if v.startswith(f"{i}:")]
        assert mine == list(range(PUSHES_PER_CLIENT))
    assert _at_all(clients[1], "SCARD", "race:set") == writers * PUSHES_PER_CLIENT
    assert _at_all(clients[2], "HGET", "race:hash", "total") == str(writers * PUSHES_PER_CLIENT).encode()
    reply = _at_all(clients[0], "ZRANGE", "race:zset", 0, -1, "WITHSCORES")
    scores = [pair[1] for pair in reply] if reply and isinstance(reply[0], list) else reply[1::2]  # RESP3 / RESP2
    assert len(scores) == writers and all(float(s) == PUSHES_PER_CLIENT for s in scores)


def test_a_node_killed_mid_stream_loses_no_acknowledged_push(cluster):
    clients = _clients(cluster)
    acked: list[str] = []
    lock = threading.Lock()
    victim = cluster.nodes[2]
    wait_until(lambda: all(hears_everyone(c) for c in clients), 30, "every node hears every other")

    def work(i: int, r: redis.Redis) -> None:
        if r is clients[2]:
            return  # the victim's own clients would only see it die
        for n in range(PUSHES_PER_CLIENT):
            value = f"{i}:{n}"
            try:
                r.rpush("kill:list", value)
            except redis.RedisError:
                continue  # not acknowledged: may or may not be there
            with lock:
                acked.append(value)
            if i == 0 and n == PUSHES_PER_CLIENT // 3:
                victim.kill()

    assert _race(clients, work) == []
    victim.start()
    wait_until(lambda: all(hears_everyone(c) for c in _clients(cluster)), 30, "the restarted node is heard again")
    assert len(acked) >= 2 * PUSHES_PER_CLIENT, "the survivors kept acknowledging pushes after the kill"
    # At ALL, once every node reaches every other again (the restarted node's peers may still
    # be in their reconnect back-off for a second after it is heard).
    final = wait_until(lambda: [v.decode() for v in _at_all(clients[0], "LRANGE", "kill:list", 0, -1)], 30,
                       "the list read at ALL", ignore=(redis.ResponseError,))
    assert set(acked) <= set(final) and len(final) == len(set(final))
    # Every replica ends with the same list: read it at ONE through each node until they agree.
    wait_until(lambda: len({tuple(c.execute_command("RINGKV.AT", "ONE", "LRANGE", "kill:list", 0, -1))
                            for c in _clients(cluster)}) == 1, 30, "every node answers the same list at ONE",
               ignore=(redis.ResponseError,))


def test_a_fast_namespace_runs_multi_key_commands_of_one_tag(cluster):
    r = _clients(cluster)[1]
    r.execute_command("RINGKV.NAMESPACE", "quick")
    r.rpush("{q}src", "a", "b", "c")
    assert r.lmove("{q}src", "{q}dst", "LEFT", "RIGHT") == b"a"
    assert r.smove("{q}nope", "{q}dst2", "x") is False
    r.sadd("{q}s1", "x", "y")
    assert r.smove("{q}s1", "{q}s2", "x") is True and r.smembers("{q}s2") == {b"x"}
    assert r.lrange("{q}src", 0, -1) == [b"b", b"c"] and r.lrange("{q}dst", 0, -1) == [b"a"]
    with pytest.raises(redis.exceptions.ClusterCrossSlotError, match="hash to the same slot"):
        r.lmove("{q}src", "elsewhere", "LEFT", "RIGHT")
    assert r.lrange("{q}src", 0, -1) == [b"b", b"c"] and r.exists("elsewhere") == 0


def test_dump_and_restore_move_collections_between_keys_through_any_node(cluster):
    """A DUMP taken through one node and restored through another: the collection is written
    one record per element on the new key's replicas, and reads back whole at ALL."""
    a, b, c = _clients(cluster)
    a.zadd("board:src", {f"m{i:03d}": i for i in range(200)})
    a.hset("profile:src", mapping={f"f{i}": f"v{i}" for i in range(50)})
    for name in ("board", "profile"):
        assert b.restore(f"{name}:dst", 0, a.dump(f"{name}:src")) == b"OK"
    assert _at_all(c, "ZREVRANGE", "board:dst", "0", "2") == [b"m199", b"m198", b"m197"]
    assert _at_all(c, "ZCARD", "board:dst") == 200 and _at_all(c, "HLEN", "profile:dst") == 50
    assert _at_all(c, "HGET", "profile:dst", "f7") == b"v7"
    with pytest.raises(redis.ResponseError, match="already exists"):
        c.restore("board:dst", 0, a.dump("board:src"))



INCREMENTS_PER_SIDE = 40


def _replica_clients(cluster, key: bytes) -> list[tuple[str, redis.Redis]]:
    """(node id, a client of it) of each replica of `key`, in preference order."""
    r = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=15, retry=None)
    ring = RingMap(json.loads(r.execute_command("RINGKV.RING")), "127.0.0.1")
    nodes = cluster.nodes
    return [(nodes[i].node_id, redis.Redis(port=nodes[i].resp_port, socket_timeout=15, retry=None))
            for i in ring.replicas_of(b"", key)]


def _cut_apart(one: tuple[str, redis.Redis], other: tuple[str, redis.Redis]) -> None:
    """Two nodes stop hearing each other (RINGKV.FAULT PARTITION on both sides)."""
    assert one[1].execute_command("RINGKV.FAULT", "PARTITION", other[0]) == f"blocked {other[0]}".encode()
    assert other[1].execute_command("RINGKV.FAULT", "PARTITION", one[0]) == f"blocked {one[0]}".encode()


def test_hincrby_and_zincrby_from_both_sides_of_a_bridge_partition_lose_no_increment(tmp_path):
    """The key's first two replicas cannot reach each other; the third reaches both. A client
    of each of the two runs HINCRBY on one field and ZINCRBY on one member: each of them
    believes it is the first reachable replica and runs the command itself, at once. Each
    increment is a consensus round of the element's record (the third replica is in both
    majorities), so each element ends with every increment; a command run on each side
    without a round would lose some (two writes that each read the same value)."""
    with LocalCluster(tmp_path, nodes=3, replica_timeout_ms=300, gossip_interval_ms=200,
                      fault_injection=True) as cluster:
        first, second, (_, r) = _replica_clients(cluster, b"{bridge}:hash")
        a, b = first[1], second[1]
        assert a.hset("{bridge}:hash", "other", "x") == 1
        assert a.zadd("{bridge}:zset", {"other": 5}) == 1
        _cut_apart(first, second)
        replies: list[list[int]] = [[], []]
        scores: list[list[float]] = [[], []]
        errors: list[BaseException] = []

        def work(side: int, client: redis.Redis) -> None:
            try:
                for _ in range(INCREMENTS_PER_SIDE):
                    replies[side].append(client.hincrby("{bridge}:hash", "total", 1))
                    scores[side].append(client.zincrby("{bridge}:zset", 1, "total"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        # Linearizable: every reply is distinct, and the field holds their number.
        assert sorted(replies[0] + replies[1]) == list(range(1, 2 * INCREMENTS_PER_SIDE + 1))
        assert sorted(scores[0] + scores[1]) == [float(i) for i in range(1, 2 * INCREMENTS_PER_SIDE + 1)]
        a.execute_command("RINGKV.FAULT", "HEAL")
        b.execute_command("RINGKV.FAULT", "HEAL")
        assert _at_all(r, "HGET", "{bridge}:hash", "total") == str(2 * INCREMENTS_PER_SIDE).encode()
        assert _at_all(r, "HGET", "{bridge}:hash", "other") == b"x"
        assert _at_all(r, "ZSCORE", "{bridge}:zset", "total") == 2 * INCREMENTS_PER_SIDE
        assert _at_all(r, "ZSCORE", "{bridge}:zset", "other") == 5


def test_a_replica_that_missed_a_sorted_sets_writes_walks_it_through_the_others_indexes(tmp_path):
    """Each replica keeps its own score index (node/score_index.py). One replica is cut off from
    the coordinator while members are added at QUORUM; a walk in score order through that
    replica at QUORUM reads the union of its index and another replica's, so it finds the
    members it never stored, and answers as the replicas that hold them do."""
    with LocalCluster(tmp_path, nodes=3, replica_timeout_ms=300, gossip_interval_ms=200,
                      fault_injection=True) as cluster:
        first, _, third = _replica_clients(cluster, b"board")
        a, c = first[1], third[1]
        assert a.zadd("board", {"early": 0}) == 1
        _cut_apart(first, third)
        scores = {f"m{i:03d}": float((i * 37) % 101) for i in range(100)}
        assert a.zadd("board", scores) == 100
        order = [m.encode() for m in sorted(scores, key=lambda m: (scores[m], m))]
        # Through the replica that missed them (its own index has only "early"):
        assert c.zrange("board", 0, 4) == [b"early", *order[:4]]
        assert c.zrangebyscore("board", 10, 20, start=1, num=3) == [
            m.encode() for m in sorted((m for m in scores if 10 <= scores[m] <= 20),
                                       key=lambda m: (scores[m], m))][1:4]
        assert c.zrank("board", order[50]) == 51
        assert c.zcount("board", "-inf", "(50") == 1 + sum(1 for s in scores.values() if s < 50)
        assert a.zrange("board", 0, 4) == c.zrange("board", 0, 4)
