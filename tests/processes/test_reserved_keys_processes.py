"""Keys beginning with the bytes 0x00 0xff are ringkv's own (a collection's elements are stored
under them, service/elements.py): a client that names one, through any command or the HTTP
API, gets an error that says so, nothing is written, and the node carries on."""

from __future__ import annotations

import base64

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster, NodeProcess

RESERVED = b"\x00\xffe\x00\x01km"  # shaped like an element key of collection "k"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """A 3-node cluster and a standalone node (`ringkv serve`): the two services."""
    cluster = LocalCluster(tmp_path_factory.mktemp("reserved"), nodes=3).start()
    single = NodeProcess(tmp_path_factory.mktemp("reserved-single") / "n1", http_enabled="true").start()
    yield [cluster.nodes[0], single]
    single.stop()
    cluster.stop()


@pytest.mark.parametrize("which", ["cluster", "single"])
def test_a_reserved_key_is_refused_by_every_kind_of_command_and_nothing_is_written(nodes, which):
    node = nodes[0] if which == "cluster" else nodes[1]
    r = redis.Redis(port=node.resp_port, socket_timeout=10)
    r.set("plain", "v")
    before = r.dbsize()
    commands = [
        ("SET", RESERVED, "v"), ("GET", RESERVED), ("INCR", RESERVED), ("APPEND", RESERVED, "x"),
        ("MSET", "ok", "1", RESERVED, "2"), ("DEL", RESERVED), ("EXISTS", RESERVED),
        ("SADD", RESERVED, "m"), ("HSET", RESERVED, "f", "v"), ("RPUSH", RESERVED, "x"),
        ("EXPIRE", RESERVED, 10), ("RENAME", "plain", RESERVED), ("SET", b"\x00\xff", "v"),
    ]
    for command in commands:
        with pytest.raises(redis.ResponseError, match="0x00 0xff, which ringkv reserves"):
            r.execute_command(*command)
    assert r.dbsize() == before
    assert r.get("ok") is None  # MSET is all or nothing
    assert r.get("plain") == b"v"
    # Keys near the reserved space are plain keys.
    for key in (b"\x00", b"\x00\xfe", b"\xff\x00", b"x\x00\xff"):
        assert r.set(key, "near") and r.get(key) == b"near"

    http = httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10)
    encoded = base64.urlsafe_b64encode(RESERVED).decode()
    answer = http.put(f"/api/v1/keys/{encoded}", params={"key_encoding": "base64"}, json={"value": "v"})
    assert answer.status_code == 400, answer.text
    assert "0x00 0xff" in answer.json()["detail"]
    assert http.get("/api/v1/keys/plain").json()["value"] == "v"
