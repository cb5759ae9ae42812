"""Atomic batches on real processes (docs/atomic-batches.md): `POST /api/v1/batch/put` with
`"atomic": true` against a 4-node cluster with N=3, where keys spread over four replica sets,
so a batch of keys from many partitions goes through the batch log. (With 3 nodes and N=3
every key has the same three replicas, and every batch is one replica set.)"""

from __future__ import annotations

import threading

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.probes import hears_everyone, nodes_down
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, replica_timeout_ms=500,
                anti_entropy_interval_ms=0, fault_injection=True,
                batchlog_replay_delay_ms=2000, batchlog_replay_interval_ms=300)


def _batch(node, items: dict[str, str], timeout_s: float = 30) -> httpx.Response:
    ops = [{"key": k, "value": v} for k, v in items.items()]
    return httpx.post(f"http://127.0.0.1:{node.http_port}/api/v1/batch/put",
                      json={"operations": ops, "atomic": True}, timeout=timeout_s)


def _read(r: redis.Redis, keys: list[str], level: str = "QUORUM") -> list[bytes | None]:
    return r.execute_command("RINGKV.AT", level, "MGET", *keys)


def _info(node) -> dict:
    return redis.Redis(port=node.resp_port, socket_timeout=10).info("ringkv")


def test_an_atomic_batch_over_many_partitions_and_one_of_a_hash_tag_are_written_whole(tmp_path):
    with LocalCluster(tmp_path, nodes=4, **SETTINGS) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        r3 = redis.Redis(port=n3.resp_port, socket_timeout=30)

        # Keys from many partitions: several replica sets, so the batch is logged on two nodes,
        # written, and its log entries removed once every key is at W.
        accounts = {f"acct:{i}": f"balance-{i}" for i in range(100)}
        answer = _batch(n1, accounts)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["status"] == "success" and doc["success_count"] == 100 and doc["atomic"] is True
        assert _read(r3, list(accounts)) == [v.encode() for v in accounts.values()]
        assert _info(n1)["atomic_batches_logged"] == 1
        wait_until(lambda: sum(_info(n)["batchlog_entries"] for n in cluster.nodes) == 0, 20,
                   "both copies of the batch removed from the batch logs")

        # One hash tag: one replica set, so no batch log; every replica holds every key.
        cart = {f"{{cart:42}}:item{i}": f"sku-{i}" for i in range(20)}
        answer = _batch(n2, cart)
        assert answer.status_code == 200 and answer.json()["status"] == "success", answer.text
        assert _info(n2)["atomic_batches_logged"] == 0
        assert _read(redis.Redis(port=n4.resp_port, socket_timeout=30), list(cart), "ALL") == [
            v.encode() for v in cart.values()]

        # A bad item rejects the batch whole: none of its keys is written.
        bad = {"bad:1": "x", "bad:2": "y" * (2 * 1024 * 1024), "bad:3": "z"}
        answer = _batch(n1, bad)
        assert answer.status_code == 413, answer.text
        assert _read(r3, list(bad), "ALL") == [None, None, None]


def test_a_batch_whose_coordinator_is_killed_right_after_logging_it_is_written_by_the_replay(tmp_path):
    with LocalCluster(tmp_path, nodes=4, **SETTINGS) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port, socket_timeout=10)
        r2 = redis.Redis(port=n2.resp_port, socket_timeout=30)
        wait_until(lambda: hears_everyone(r1) and hears_everyone(r2), 30, "n1 and n2 to hear every node")

        # n1 stops every logged batch between its logging and its first write.
        r1.execute_command("RINGKV.FAULT", "BATCH_HOLD")
        orders = {f"order:{i}": f"placed-{i}" for i in range(120)}
        outcome: list[object] = []
        client = threading.Thread(target=lambda: outcome.append(_try(lambda: _batch(n1, orders, 60))), daemon=True)
        client.start()
        wait_until(lambda: _info(n1)["atomic_batches_logged"] == 1
                   and sum(_info(n)["batchlog_entries"] for n in (n2, n3, n4)) == 1, 30,
                   "the batch logged on n1 and on one other node")
        partner = next(n for n in (n2, n3, n4) if _info(n)["batchlog_entries"] == 1)
        assert _read(r2, list(orders), "ONE") == [None] * len(orders)  # nothing written yet

        n1.kill()  # SIGKILL: the coordinator dies with the batch logged and unwritten
        client.join(30)
        assert outcome and isinstance(outcome[0], Exception)  # the client never got an answer
        wait_until(lambda: nodes_down(r2) == {"n1"}, 30, "n2 to hold n1 down")

        # The partner replays the batch once the replay delay has passed: every key of it is
        # readable through the survivors at QUORUM (n1's place in each key's replicas is taken
        # by the two others).
        wanted = [v.encode() for v in orders.values()]
        wait_until(lambda: _read(r2, list(orders)) == wanted, 60, "every key of the batch readable at QUORUM",
                   ignore=(redis.RedisError,))
        wait_until(lambda: _info(partner)["batchlog_entries"] == 0, 20, "the partner's copy removed")
        assert _info(partner)["batchlog_replayed"] == 1

        # n1 comes back with its own copy: its replay finds the batch written, sends n1 what
        # it missed, and removes the copy.
        n1.start()
        wait_until(lambda: _info(n1)["batchlog_entries"] == 0, 60, "n1's copy replayed and removed")
        wait_until(lambda: _read(redis.Redis(port=n1.resp_port, socket_timeout=30), list(orders), "ALL") == wanted,
                   30, "every replica, n1 included, holds every key", ignore=(redis.RedisError,))


def _try(call):
    try:
        return call()
    except Exception as exc:
        return exc
