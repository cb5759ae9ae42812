"""A REST user working with hashes, sets, sorted sets and lists over HTTP, against a real node:
the element routes, the whole-collection read of GET /api/v1/keys/{key}, WRONGTYPE as a 409,
binary elements, and ACL rules applied as the Redis command each route runs."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("http-types") / "n1") as n:
        yield n


@pytest.fixture
def r(node: NodeProcess) -> redis.Redis:
    client = redis.Redis(port=node.resp_port)
    client.flushall()
    return client


@pytest.fixture
def http(node: NodeProcess, r: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1", timeout=10) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_hash_fields_set_read_and_delete(http: httpx.Client, r: redis.Redis) -> None:
    put = http.put("/keys/user:1/fields/name", json={"value": "ada"})
    assert put.status_code == 200 and put.json() == {"key": "user:1", "field": "name", "created": True}
    assert http.put("/keys/user:1/fields/name", json={"value": "grace"}).json()["created"] is False
    patched = http.patch("/keys/user:1/fields", json={"fields": {"lang": "cobol", "born": "1906"}})
    assert patched.json() == {"key": "user:1", "added": 2}
    assert r.hgetall("user:1") == {b"name": b"grace", b"lang": b"cobol", b"born": b"1906"}

    assert http.get("/keys/user:1/fields/lang").json() == {"key": "user:1", "field": "lang", "value": "cobol"}
    assert http.get("/keys/user:1/fields").json() == {
        "key": "user:1", "fields": {"name": "grace", "lang": "cobol", "born": "1906"}}
    missing = http.get("/keys/user:1/fields/nope")
    assert missing.status_code == 404 and missing.json()["type"] == "urn:ringkv:problem:field-not-found"

    assert http.delete("/keys/user:1/fields/lang").json() == {"key": "user:1", "removed": True}
    assert http.delete("/keys/user:1/fields/lang").json() == {"key": "user:1", "removed": False}
    assert http.get("/keys/nobody/fields").status_code == 404


def test_a_hash_fields_versions_over_http_and_resp(http: httpx.Client, r: redis.Redis) -> None:
    r.hset("user:2", "name", "ada")
    doc = http.get("/keys/user:2/fields/name/versions").json()
    assert doc["key"] == "user:2" and doc["field"] == "name" and doc["version"] > 0 and doc["context"]
    assert [s["value"] for s in doc["siblings"]] == ["ada"] and doc["siblings"][0]["hlc"] > 0
    context, siblings = r.execute_command("RINGKV.HGETV", "user:2", "name")
    assert context == base64.b64decode(doc["context"]) and [s[0] for s in siblings] == [b"ada"]
    assert siblings[0][2] == -1  # a field has no expiry of its own
    assert http.get("/keys/user:2/fields/nope/versions").json()["siblings"] == []
    assert r.execute_command("RINGKV.HGETV", "nobody", "f") == [None, []]
    r.set("plain", "v")
    wrong = http.get("/keys/plain/fields/f/versions")
    assert wrong.status_code == 409 and wrong.json()["type"] == "urn:ringkv:problem:wrong-type"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.execute_command("RINGKV.HGETV", "plain", "f")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("RINGKV.HGETV", "user:2")


def test_a_sorted_set_members_scores_over_http_and_resp(http: httpx.Client, r: redis.Redis) -> None:
    r.zadd("board", {"ada": 2.5, "top": float("inf")})
    doc = http.get("/keys/board/scores/ada/versions").json()
    assert doc["key"] == "board" and doc["member"] == "ada" and doc["version"] > 0 and doc["context"]
    assert [s["score"] for s in doc["siblings"]] == [2.5] and doc["siblings"][0]["hlc"] > 0
    assert [s["score"] for s in http.get("/keys/board/scores/top/versions").json()["siblings"]] == ["inf"]
    context, siblings = r.execute_command("RINGKV.ZSCOREV", "board", "ada")
    assert context == base64.b64decode(doc["context"]) and [s[0] for s in siblings] == [b"2.5"]
    assert http.get("/keys/board/scores/nope/versions").json()["siblings"] == []
    r.zadd("board", {"tenth": 0.1, "big": 2.0**60})
    # The text ZSCORE answers over RESP2 (the shortest that reads back):
    for member, text in (("tenth", b"0.1"), ("big", b"1.152921504606847e+18"), ("ada", b"2.5")):
        assert r.execute_command("RINGKV.ZSCOREV", "board", member)[1][0][0] == text
    assert r.execute_command("RINGKV.ZSCOREV", "nobody", "m") == [None, []]
    r.hset("fields", "f", "v")
    wrong = http.get("/keys/fields/scores/f/versions")
    assert wrong.status_code == 409 and wrong.json()["type"] == "urn:ringkv:problem:wrong-type"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.execute_command("RINGKV.ZSCOREV", "fields", "f")


def test_set_members_add_check_remove(http: httpx.Client, r: redis.Redis) -> None:
    added = http.post("/keys/tags/members", json={"members": ["b", "a", "c", "a"]})
    assert added.json() == {"key": "tags", "added": 3}
    assert http.get("/keys/tags/members").json() == {"key": "tags", "members": ["a", "b", "c"]}
    assert http.get("/keys/tags/members/b").json() == {"key": "tags", "member": "b", "is_member": True}
    assert http.get("/keys/tags/members/z").json()["is_member"] is False
    assert http.delete("/keys/tags/members/b").json() == {"key": "tags", "removed": True}
    assert r.smembers("tags") == {b"a", b"c"}


def test_sorted_set_scores_and_ranges(http: httpx.Client, r: redis.Redis) -> None:
    for member, score in (("ann", 30), ("bob", 10), ("cy", 20), ("top", "inf")):
        assert http.put(f"/keys/board/scores/{member}", json={"score": score}).json()["changed"] is True
    assert http.put("/keys/board/scores/bob", json={"score": 5, "condition": "gt"}).json()["changed"] is False
    assert http.put("/keys/board/scores/bob", json={"score": 15, "condition": "gt"}).json()["changed"] is True
    assert http.get("/keys/board/scores/bob").json() == {"key": "board", "member": "bob", "score": 15.0}
    assert http.get("/keys/board/scores/top").json()["score"] == "inf"
    assert http.get("/keys/board/scores/zed").status_code == 404

    ranked = http.get("/keys/board/range").json()["members"]
    assert ranked == [{"member": "bob", "score": 15.0}, {"member": "cy", "score": 20.0},
                      {"member": "ann", "score": 30.0}, {"member": "top", "score": "inf"}]
    assert [m["member"] for m in http.get("/keys/board/range", params={"start": 0, "stop": 1, "rev": True})
            .json()["members"]] == ["top", "ann"]
    by_score = http.get("/keys/board/range", params={"min": "(15", "max": "30"}).json()["members"]
    assert [m["member"] for m in by_score] == ["cy", "ann"]
    limited = http.get("/keys/board/range", params={"min": "-inf", "rev": True, "offset": 1, "count": 2})
    assert [m["member"] for m in limited.json()["members"]] == ["ann", "cy"]
    both = http.get("/keys/board/range", params={"min": "1", "start": 0})
    assert both.status_code == 400

    assert http.delete("/keys/board/scores/cy").json()["removed"] is True
    assert r.zrange("board", 0, -1) == [b"bob", b"ann", b"top"]


def test_list_push_range_and_pop(http: httpx.Client, r: redis.Redis) -> None:
    assert http.post("/keys/queue/items", json={"values": ["a", "b", "c"]}).json() == {"key": "queue", "length": 3}
    assert http.post("/keys/queue/items", json={"values": ["z"], "side": "left"}).json()["length"] == 4
    assert http.get("/keys/queue/items").json() == {"key": "queue", "values": ["z", "a", "b", "c"]}
    assert http.get("/keys/queue/items", params={"start": 1, "stop": 2}).json()["values"] == ["a", "b"]
    assert http.delete("/keys/queue/items", params={"count": 2}).json() == {"key": "queue", "values": ["z", "a"]}
    assert http.delete("/keys/queue/items", params={"side": "right"}).json()["values"] == ["c"]
    assert http.post("/keys/nolist/items", json={"values": ["x"], "if_exists": True}).json()["length"] == 0
    assert r.lrange("queue", 0, -1) == [b"b"]
    assert http.delete("/keys/queue/items", params={"count": 5}).json()["values"] == ["b"]
    assert http.delete("/keys/queue/items").json()["values"] == []
    assert r.exists("queue") == 0


def test_get_key_answers_every_type_as_json(http: httpx.Client, r: redis.Redis) -> None:
    r.set("s", "text")
    r.hset("h", mapping={"f": "v"})
    r.rpush("l", "x", "y")
    r.sadd("st", "q", "p")
    r.zadd("z", {"m": 1.5, "n": -2})
    r.expire("h", 100)
    string = http.get("/keys/s").json()
    assert string["type"] == "string" and string["value"] == "text" and "version" in string
    h = http.get("/keys/h").json()
    assert h["type"] == "hash" and h["value"] == {"f": "v"} and 99 < h["ttl_remaining"] <= 100
    assert http.get("/keys/l").json() == {"key": "l", "type": "list", "value": ["x", "y"], "ttl_remaining": None}
    assert http.get("/keys/st").json()["value"] == ["p", "q"]
    assert http.get("/keys/z").json()["value"] == [{"member": "n", "score": -2.0}, {"member": "m", "score": 1.5}]
    raw = http.get("/keys/h", headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 409 and raw.json()["type"] == "urn:ringkv:problem:wrong-type"
    assert http.get("/keys/nothing").status_code == 404


def test_binary_elements_travel_base64(http: httpx.Client, r: redis.Redis) -> None:
    r.hset("bin", mapping={b"\xff": b"v", b"ok": b"\x00\xfe"})
    whole = http.get("/keys/bin").json()
    assert "value" not in whole and whole["value_base64"] == {b64(b"\xff"): "dg==", "b2s=": b64(b"\x00\xfe")}
    assert http.get("/keys/bin/fields").json()["fields_base64"][b64(b"\xff")] == "dg=="
    # A binary field in the path: URL-safe base64 with encoding=base64.
    url_safe = base64.urlsafe_b64encode(b"\xff").decode()
    assert http.get(f"/keys/bin/fields/{url_safe}", params={"encoding": "base64"}).json()["value"] == "dg=="
    assert http.get("/keys/bin/fields/ok").json()["value_base64"] == b64(b"\x00\xfe")
    assert http.post("/keys/bs/members", json={"members_base64": [b64(b"\x01\x02")]}).json()["added"] == 1
    assert r.smembers("bs") == {b"\x01\x02"}
    pushed = http.post("/keys/bl/items", params={"encoding": "base64"}, json={"values": [b64(b"\xfa")]})
    assert pushed.json()["length"] == 1 and r.lrange("bl", 0, -1) == [b"\xfa"]
    both = http.post("/keys/bs/members", json={"members": ["a"], "members_base64": ["YQ=="]})
    assert both.status_code == 400


def test_wrong_type_is_a_409_naming_what_the_key_holds(http: httpx.Client, r: redis.Redis) -> None:
    r.set("plain", "v")
    r.rpush("lst", "a")
    refused = http.put("/keys/plain/fields/f", json={"value": "x"})
    assert refused.status_code == 409
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:ringkv:problem:wrong-type"
    assert "WRONGTYPE" in problem["detail"] and "holds a string" in problem["detail"]
    assert "a hash" in problem["detail"]
    assert http.post("/keys/lst/members", json={"members": ["a"]}).json()["detail"].count("holds a list") == 1
    assert http.get("/keys/lst/range").status_code == 409
    assert http.post("/keys/lst/incr", json={"delta": 1}).status_code == 409


def test_routes_are_checked_as_the_redis_command_they_run(node: NodeProcess, r: redis.Redis) -> None:
    r.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+hget", "+hgetall", "+get", "+type",
                      "+pttl")
    r.hset("acl:h", "f", "v")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1", auth=("reader", "pw"),
                          timeout=10) as http:
            assert http.get("/keys/acl:h/fields/f").json()["value"] == "v"
            assert http.get("/keys/acl:h").json()["value"] == {"f": "v"}
            refused = http.put("/keys/acl:h/fields/f", json={"value": "w"})
            assert refused.status_code == 403 and "'hset'" in refused.json()["detail"]
            assert http.delete("/keys/acl:h/items").status_code == 403
    finally:
        r.execute_command("ACL", "DELUSER", "reader")
