"""Whole-key commands over every type, on a real node through redis-py and redis-cli: TYPE,
RENAME, RENAMENX, COPY, OBJECT ENCODING, RANDOMKEY, SCAN ... TYPE, expiry of a whole
collection, WRONGTYPE from string commands, and a collection over max_value_bytes refused
with nothing written (docs/data-types.md)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

WRONGTYPE = r"^WRONGTYPE Operation against a key holding the wrong kind of value$"


@pytest.fixture
def r(shared_node):
    client = redis.Redis(port=shared_node.resp_port, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


def test_type_names_every_kind_and_none(r):
    r.set("s", "v")
    r.rpush("l", "a")
    assert (r.type("s"), r.type("l"), r.type("missing")) == (b"string", b"list", b"none")


def test_string_commands_on_a_collection_answer_wrongtype_and_change_nothing(r):
    r.rpush("l", "a", "b")
    for call in (lambda: r.get("l"), lambda: r.incr("l"), lambda: r.append("l", "x"), lambda: r.getdel("l"),
                 lambda: r.set("l", "v", get=True), lambda: r.strlen("l"), lambda: r.getex("l", px=100)):
        with pytest.raises(redis.ResponseError, match=WRONGTYPE):
            call()
    assert r.lrange("l", 0, -1) == [b"a", b"b"]
    # MGET answers nil for a key that is not a string, as Redis does.
    assert r.mget("l", "missing") == [None, None]
    # A plain SET replaces whatever the key holds; NX sees that it exists.
    assert r.set("l", "v", nx=True) is None
    assert r.set("l", "v") is True and r.get("l") == b"v" and r.type("l") == b"string"


def test_rename_renamenx_and_copy_move_the_value_with_its_expiry(r):
    r.rpush("src", "1", "2")
    r.pexpire("src", 60_000)
    assert r.rename("src", "dst") is True
    assert r.exists("src") == 0 and r.lrange("dst", 0, -1) == [b"1", b"2"] and 0 < r.pttl("dst") <= 60_000
    with pytest.raises(redis.ResponseError, match=r"^no such key$"):
        r.rename("src", "x")
    r.set("other", "o")
    assert r.renamenx("dst", "other") is False and r.renamenx("dst", "fresh") is True
    assert r.copy("fresh", "copy") is True and r.lrange("copy", 0, -1) == [b"1", b"2"] and r.pttl("copy") > 0
    assert r.copy("fresh", "other") is False and r.get("other") == b"o"
    assert r.copy("fresh", "other", replace=True) is True and r.type("other") == b"list"
    # The copy is its own value: changing it leaves the source alone.
    r.rpush("copy", "3")
    assert r.llen("fresh") == 2
    with pytest.raises(redis.ResponseError, match=r"^DB index is out of range$"):
        r.execute_command("COPY", "fresh", "x", "DB", "1")
    with pytest.raises(redis.ResponseError, match=r"^source and destination objects are the same$"):
        r.copy("fresh", "fresh")


def test_expiry_applies_to_the_whole_collection(r):
    r.rpush("short", "a", "b")
    assert r.pexpire("short", 150) is True
    r.rpush("short", "c")  # a write to the collection keeps its TTL, as in Redis
    assert 0 < r.pttl("short") <= 150
    time.sleep(0.3)
    assert r.exists("short") == 0 and r.type("short") == b"none" and r.lrange("short", 0, -1) == []
    # The key starts again empty, without the old elements.
    r.rpush("short", "new")
    assert r.lrange("short", 0, -1) == [b"new"] and r.ttl("short") == -1


def test_object_encoding_randomkey_and_scan_type(r):
    assert r.randomkey() is None
    r.set("n", "12345")
    r.set("text", "x" * 100)
    r.rpush("small", "a")
    r.rpush("big", *[str(i) for i in range(200)])
    r.sadd("ints", 1, 2, 3)
    r.hset("fields", "a", "1")
    assert [r.object("encoding", k) for k in ("n", "text", "small", "big", "ints", "fields")] == [
        b"int", b"raw", b"quicklist", b"quicklist", b"intset", b"listpack"]
    assert r.object("encoding", "missing") is None
    assert r.randomkey() in {b"n", b"text", b"small", b"big", b"ints", b"fields"}
    seen: dict[str, set[bytes]] = {}
    for kind in ("string", "list", "hash"):
        seen[kind] = set(r.scan_iter(_type=kind))
    assert seen == {"string": {b"n", b"text"}, "list": {b"small", b"big"}, "hash": {b"fields"}}


def test_a_collection_over_max_value_bytes_is_refused_with_nothing_written(start_node):
    node = start_node(max_value_bytes=4096)
    r = redis.Redis(port=node.resp_port)
    r.rpush("l", *([b"x" * 1000] * 3))
    with pytest.raises(redis.ResponseError, match=r"list would be \d+ bytes encoded.*max_value_bytes=4096"):
        r.rpush("l", b"y" * 1500)
    assert r.llen("l") == 3


def test_redis_cli_sees_types_and_dump_restore_round_trips(r, shared_node):
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    r.rpush("l", "a", "b")

    def run(*args: str) -> str:
        return subprocess.run([cli, "-p", str(shared_node.resp_port), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    assert run("TYPE", "l") == "list"
    assert run("LRANGE", "l", "0", "-1").splitlines() == ["a", "b"]
    payload = r.dump("l")
    assert r.restore("l2", 0, payload) == b"OK" and r.lrange("l2", 0, -1) == [b"a", b"b"]
