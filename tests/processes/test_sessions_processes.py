"""Sessions on a 3-node cluster of real processes (docs/consistency.md, "Sessions"): a session
reads its own writes and never reads back in time, at ONE, through any node, while replicas
are paused or partitioned away; a session that cannot be served says so instead of answering
old data; tokens are bounded and refused when altered."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(180)

SETTINGS = dict(nodes=3, replicas=3, partitions=16, fault_injection="true", gossip_interval_ms=200,
                anti_entropy_interval_ms=0, read_repair="off", session_wait_ms=800)


def _clients(cluster) -> list[redis.Redis]:
    return [redis.Redis(port=n.resp_port) for n in cluster.nodes]


def _partition(clients: dict[str, redis.Redis], a: str, b: str) -> None:
    """Cut a from b, on both (each node's fault blocks both directions of its own traffic)."""
    clients[a].execute_command("RINGKV.FAULT", "PARTITION", b)
    clients[b].execute_command("RINGKV.FAULT", "PARTITION", a)


def _heal(clients) -> None:
    for r in clients.values():
        r.execute_command("RINGKV.FAULT", "HEAL")


def _local(r: redis.Redis, key: str) -> list[bytes]:
    """The values of the node's own copy (at ONE the local replica answers first)."""
    versions = r.execute_command("RINGKV.AT", "ONE", "RINGKV.GETV", key)
    return sorted(s[0] for s in versions[1]) if versions and versions[1] else []


def _resume(session_client: redis.Redis, token: bytes) -> None:
    assert session_client.execute_command("RINGKV.SESSION", token)


def test_a_session_reads_its_write_at_one_through_a_node_that_missed_it(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "k", "old") == b"OK"  # on every replica before the faults
        _partition(by, "n1", "n3")
        writer = redis.Redis(port=cluster.nodes[0].resp_port)
        token = writer.execute_command("RINGKV.SESSION")
        writer.execute_command("RINGKV.CONSISTENCY", "SESSION")
        assert writer.set("k", "mine")
        token = writer.execute_command("RINGKV.SESSION", "TOKEN")
        # n3 never got the write: its own copy, and a plain read at ONE through it, are old.
        assert _local(n3, "k") == [b"old"]
        assert n3.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"old"
        # The session, moved to n3, reads at ONE and finds the write on n2.
        reader = redis.Redis(port=cluster.nodes[2].resp_port)
        _resume(reader, token)
        assert reader.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"mine"
        # Read repair of the session read: n3's own copy has it now.
        assert _local(n3, "k") == [b"mine"]


def test_a_session_write_on_one_replica_is_read_through_another_while_the_third_is_paused(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "k", "old") == b"OK"  # on every replica before the faults
        cluster.nodes[2].pause()  # SIGSTOP: n3 hangs
        try:
            _partition(by, "n1", "n2")  # so that only n1 takes the write
            writer = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=10)
            writer.execute_command("RINGKV.SESSION")
            writer.execute_command("RINGKV.CONSISTENCY", "SESSION")
            assert writer.set("k", "mine")
            token = writer.execute_command("RINGKV.SESSION", "TOKEN")
            assert _local(n2, "k") == [b"old"]
            reader = redis.Redis(port=cluster.nodes[1].resp_port, socket_timeout=10)
            _resume(reader, token)
            # While n1 is cut off too, no reachable replica has the write: a precise error,
            # never the old value.
            with pytest.raises(redis.ResponseError, match="session: no reachable replica of key 'k' has the "
                                                          "version this session wrote or read"):
                reader.execute_command("RINGKV.AT", "SESSION", "GET", "k")
            _heal({"n1": n1, "n2": n2})  # n3 is paused: heal n1 and n2 only
            assert reader.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"mine"
            # At any level: QUORUM in the session also finds it (n3 still paused).
            assert reader.execute_command("RINGKV.AT", "QUORUM", "GET", "k") == b"mine"
        finally:
            cluster.nodes[2].resume()


def test_monotonic_reads_across_nodes(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "k", "v1") == b"OK"  # on every replica before the faults
        _partition(by, "n1", "n3")
        n1.execute_command("RINGKV.AT", "ONE", "SET", "k", "v2")  # not in a session: n1, n2 only
        assert n3.execute_command("RINGKV.AT", "ONE", "GET", "k") == b"v1"  # plain ONE goes back
        s = redis.Redis(port=cluster.nodes[0].resp_port)
        s.execute_command("RINGKV.SESSION")
        assert s.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"v2"
        token = s.execute_command("RINGKV.SESSION", "TOKEN")
        on_n3 = redis.Redis(port=cluster.nodes[2].resp_port)
        _resume(on_n3, token)
        for _ in range(3):
            assert on_n3.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"v2"


def test_a_session_moves_between_nodes_mid_partition(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "k", "before") == b"OK"  # on every replica before the faults
        # n1 alone on one side, n2 and n3 on the other.
        _partition(by, "n1", "n2")
        _partition(by, "n1", "n3")
        s = redis.Redis(port=cluster.nodes[1].resp_port)
        s.execute_command("RINGKV.SESSION")
        s.execute_command("RINGKV.CONSISTENCY", "SESSION")
        assert s.set("k", "during")
        token = s.execute_command("RINGKV.SESSION", "TOKEN")
        # Same side: found at once.
        t = redis.Redis(port=cluster.nodes[2].resp_port)
        _resume(t, token)
        assert t.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"during"
        # The other side has only the old value: the session refuses to go back.
        u = redis.Redis(port=cluster.nodes[0].resp_port)
        _resume(u, t.execute_command("RINGKV.SESSION", "TOKEN"))
        started = time.monotonic()
        with pytest.raises(redis.ResponseError, match="retry, or start a new session"):
            u.execute_command("RINGKV.AT", "SESSION", "GET", "k")
        assert time.monotonic() - started < 5
        # A new session there accepts what that side has.
        fresh = redis.Redis(port=cluster.nodes[0].resp_port)
        fresh.execute_command("RINGKV.SESSION")
        assert fresh.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"before"
        _heal(by)
        assert u.execute_command("RINGKV.AT", "SESSION", "GET", "k") == b"during"


def test_http_session_token_header_carries_the_session_between_nodes(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        urls = [f"http://127.0.0.1:{n.http_port}/api/v1/keys" for n in cluster.nodes]
        # at ALL: a QUORUM write may still be on its way to n3 when the partition cuts it off
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "h", "old") == b"OK"
        _partition(by, "n1", "n3")
        with httpx.Client(timeout=10) as http:
            put = http.put(f"{urls[0]}/h", json={"value": "mine"}, headers={"Consistency-Level": "SESSION"})
            assert put.status_code == 200, put.text
            token = put.headers["Session-Token"]
            plain = http.get(f"{urls[2]}/h", headers={"Consistency-Level": "ONE"})
            assert plain.json()["value"] == "old"
            got = http.get(f"{urls[2]}/h", headers={"Consistency-Level": "ONE", "Session-Token": token})
            assert got.status_code == 200, got.text
            assert got.json()["value"] == "mine"
            assert got.headers["Session-Token"]
            bad = http.get(f"{urls[2]}/h", headers={"Session-Token": token[:-4] + ("AAAA" if token[-4:] != "AAAA"
                                                                                     else "BBBB")})
            assert bad.status_code == 400
            assert "session: the token has been altered" in bad.json()["detail"]


def test_tokens_are_bounded_and_refused_when_altered(tmp_path):
    with LocalCluster(tmp_path, **SETTINGS, session_max_keys=8) as cluster:
        r = redis.Redis(port=cluster.nodes[0].resp_port)
        r.execute_command("RINGKV.SESSION")
        r.execute_command("RINGKV.CONSISTENCY", "SESSION")
        lengths = []
        for i in range(40):
            r.set(f"key{i}", "v")
            lengths.append(len(r.execute_command("RINGKV.SESSION", "TOKEN")))
        assert max(lengths) == max(lengths[8:])  # stops growing at 8 keys
        assert max(lengths) < 600
        token = r.execute_command("RINGKV.SESSION", "TOKEN")
        other = redis.Redis(port=cluster.nodes[1].resp_port)
        altered = token[:10] + (b"A" if token[10:11] != b"A" else b"B") + token[11:]
        with pytest.raises(redis.ResponseError, match="session: the token"):
            other.execute_command("RINGKV.SESSION", altered)
        with pytest.raises(redis.ResponseError, match="not base64url"):
            other.execute_command("RINGKV.SESSION", "!!!!not-a-token!!!!")
        assert other.execute_command("RINGKV.SESSION", token) == token
        assert other.execute_command("RINGKV.SESSION", "END") == b"OK"
        assert other.execute_command("RINGKV.SESSION", "TOKEN") is None


def test_the_python_client_keeps_its_session_across_connections_and_nodes(tmp_path):
    from ringkv.client import Client

    with LocalCluster(tmp_path, **SETTINGS) as cluster:
        n1, n2, n3 = _clients(cluster)
        by = {"n1": n1, "n2": n2, "n3": n3}
        assert n1.execute_command("RINGKV.AT", "ALL", "SET", "c", "old") == b"OK"  # on every replica before the faults
        _partition(by, "n1", "n3")
        with Client(port=cluster.nodes[0].resp_port, consistency="SESSION") as writer, \
                Client(port=cluster.nodes[2].resp_port, consistency="ONE") as reader:
            writer.set("c", "mine")
            assert writer.get("c") == b"mine"
            token = writer.session_token
            assert token
            assert reader.get("c") == b"old"  # plain ONE through n3
            in_session = reader.session(token)
            assert in_session.get("c") == b"mine"
            assert in_session.session_token
            # A call at SESSION on a client without one starts the client's own session.
            assert reader.get("c", consistency="SESSION") in (b"old", b"mine")
            assert reader.session_token
