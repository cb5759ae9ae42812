"""The REST/JSON API as a client sees it: one real `ringkv serve` process, driven by httpx.

Each test uses its own keys (a prefix per test), so they share the node and run in any order.
JSON values are text (`value`), with `value_base64` for bytes that are not UTF-8 and
`?encoding=base64` for ringkv's earlier shape (every `value` base64); `version` is a number that
grows by one per write and `context` the exact causal version (docs/http.md, issue 18).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess

MAX_VALUE_BYTES = 100_000  # small, so the over-the-limit cases stay cheap
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("http-api") / "n1", max_value_bytes=MAX_VALUE_BYTES).start()
    yield node
    assert node.stop() == 0, node.log()


@pytest.fixture
def client(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def key_url(key: str, suffix: str = "") -> str:
    return "/api/v1/keys/" + urllib.parse.quote(key, safe="/") + suffix


def put_json(client: httpx.Client, key: str, value: bytes, **fields) -> httpx.Response:
    """PUT any bytes through JSON: `value_base64`, which every value can travel in."""
    return client.put(key_url(key), json={"value_base64": b64(value), **fields})


def put_text(client: httpx.Client, key: str, text: str, **fields) -> httpx.Response:
    return client.put(key_url(key), json={"value": text, **fields})


def value_of(doc: dict) -> bytes:
    """The bytes of an answer's value: `value` (text) when they are UTF-8, else `value_base64`
    alone; never both."""
    assert ("value" in doc) != ("value_base64" in doc), doc
    if "value" in doc:
        text = doc["value"]
        assert isinstance(text, str), doc
        return text.encode("utf-8")
    raw = unb64(doc["value_base64"])
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # only bytes that are not UTF-8 travel as value_base64
    return raw


def assert_problem(r: httpx.Response, status: int, slug: str, *in_detail: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    doc = r.json()
    assert doc["type"] == f"urn:ringkv:problem:{slug}", doc
    assert doc["status"] == status and doc["title"] and doc["detail"], doc
    for text in in_detail:
        assert text in doc["detail"], doc
    return doc


# ---------------------------------------------------------------------- single keys


def test_put_then_get_returns_value_version_and_timestamp(client):
    before = int(time.time())
    r = put_text(client, "get:1", "hello")
    assert r.status_code == 200, r.text
    put = r.json()
    assert set(put) == {"key", "version", "timestamp", "status", "context", "hlc", "applied", "created"}
    assert put["key"] == "get:1" and put["status"] == "success"
    assert put["applied"] is True and put["created"] is True
    assert put["version"] == 1  # the key's first write
    assert before - 1 <= put["timestamp"] <= time.time() + 1  # Unix seconds
    assert isinstance(put["hlc"], int) and put["hlc"] > put["timestamp"]
    assert r.headers["etag"] == f'"{put["context"]}"'
    got = client.get(key_url("get:1"))
    doc = got.json()
    assert set(doc) == {"key", "type", "value", "version", "timestamp", "ttl_remaining", "context", "hlc"}
    assert doc["key"] == "get:1" and doc["value"] == "hello"
    assert (doc["version"], doc["context"], doc["timestamp"], doc["hlc"]) == (
        put["version"], put["context"], put["timestamp"], put["hlc"])
    assert doc["ttl_remaining"] is None
    assert got.headers["etag"] == r.headers["etag"]


def test_overwrite_is_not_created_and_advances_the_version(client):
    first = put_text(client, "over:1", "a").json()
    second = put_text(client, "over:1", "b").json()
    assert second["created"] is False
    assert second["version"] == first["version"] + 1  # one more write
    assert second["context"] != first["context"]
    assert second["hlc"] > first["hlc"]
    got = client.get(key_url("over:1")).json()
    assert got["value"] == "b"
    assert (got["version"], got["context"]) == (second["version"], second["context"])


def test_every_byte_value_round_trips_between_json_and_raw(client):
    value = bytes(range(256)) * 4  # not UTF-8
    put_json(client, "bin:json", value).raise_for_status()
    raw = client.get(key_url("bin:json"), headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.content == value
    # In JSON, bytes that are not UTF-8 travel in value_base64 alone.
    doc = client.get(key_url("bin:json")).json()
    assert "value" not in doc and unb64(doc["value_base64"]) == value
    # ?encoding=base64: every value is base64 in `value` (the earlier shape).
    doc = client.get(key_url("bin:json"), params={"encoding": "base64"}).json()
    assert "value_base64" not in doc and unb64(doc["value"]) == value

    r = client.put(key_url("bin:raw"), content=value, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert value_of(client.get(key_url("bin:raw")).json()) == value


def test_text_values_travel_as_text_and_base64_is_still_accepted(client):
    text = "héllo, wörld 😀 \\ \" \n\t\x01"
    put_text(client, "text:1", text).raise_for_status()
    assert client.get(key_url("text:1")).json()["value"] == text
    raw = client.get(key_url("text:1"), headers={"Accept": "application/octet-stream"})
    assert raw.content == text.encode("utf-8")
    assert client.get(key_url("text:1"), params={"encoding": "base64"}).json()["value"] == b64(text.encode())
    # value_base64 writes the same bytes; so does `value` under ?encoding=base64.
    put_json(client, "text:2", text.encode()).raise_for_status()
    assert client.get(key_url("text:2")).json()["value"] == text
    r = client.put(key_url("text:3"), params={"encoding": "base64"}, json={"value": b64(text.encode())})
    assert r.status_code == 200, r.text
    assert client.get(key_url("text:3")).json()["value"] == text
    # A text value that looks like base64 is the text itself.
    put_text(client, "text:4", "dg==").raise_for_status()
    raw = client.get(key_url("text:4"), headers={"Accept": "application/octet-stream"})
    assert raw.content == b"dg=="


def test_a_value_gives_value_or_value_base64_exactly_once(client):
    r = client.put(key_url("one:1"), json={"value": "v", "value_base64": b64(b"v")})
    assert_problem(r, 400, "bad-request", "value", "value_base64", "not both")
    assert_problem(client.put(key_url("one:1"), json={"ttl": 5}), 400, "bad-request", "value is required")
    # A lone surrogate is not text: refused, never stored as other bytes.
    r = client.put(key_url("one:1"), content=b'{"value": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.headers["content-type"] == PROBLEM, r.text
    assert client.head(key_url("one:1")).status_code == 404


def test_empty_value_is_a_value(client):
    client.put(key_url("empty:1"), content=b"", headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    assert client.get(key_url("empty:1")).json()["value"] == ""
    assert client.head(key_url("empty:1")).status_code == 200
    put_text(client, "empty:2", "").raise_for_status()
    assert client.get(key_url("empty:2"), headers={"Accept": "application/octet-stream"}).content == b""


def test_raw_read_carries_version_timestamp_and_ttl_in_headers(client):
    put_text(client, "rawmeta:1", "v0").raise_for_status()
    put = put_json(client, "rawmeta:1", b"v", ttl=100).json()
    r = client.get(key_url("rawmeta:1"), headers={"Accept": "application/octet-stream"})
    assert r.content == b"v"
    assert r.headers["ringkv-version"] == str(put["version"]) == "2"
    assert r.headers["ringkv-context"] == put["context"]
    assert r.headers["etag"] == f'"{put["context"]}"'
    assert r.headers["ringkv-timestamp"] == str(put["timestamp"])  # Unix seconds
    assert r.headers["ringkv-hlc"] == str(put["hlc"])
    assert 99 < float(r.headers["ringkv-ttl-remaining"]) <= 100


@pytest.mark.parametrize(
    ("accept", "raw"),
    [
        ("application/octet-stream", True),
        ("application/octet-stream, application/json;q=0.5", True),
        ("application/json, application/octet-stream", False),
        ("application/json;q=0.4, application/octet-stream;q=0.9", True),
        ("*/*", False),
        ("application/octet-stream;q=0", False),
    ],
)
def test_accept_header_chooses_raw_or_json(client, accept, raw):
    put_json(client, "accept:1", b"\x01\xff").raise_for_status()
    r = client.get(key_url("accept:1"), headers={"Accept": accept})
    assert r.status_code == 200
    if raw:
        assert r.content == b"\x01\xff"
    else:
        assert r.headers["content-type"] == "application/json"
        assert value_of(r.json()) == b"\x01\xff"


def test_head_says_whether_a_key_exists_without_a_body(client):
    put_json(client, "head:1", b"x").raise_for_status()
    r = client.head(key_url("head:1"))
    assert r.status_code == 200 and r.content == b""
    r = client.head(key_url("head:missing"))
    assert r.status_code == 404 and r.content == b""


def test_missing_key_is_a_404_problem(client):
    assert_problem(client.get(key_url("missing:1")), 404, "key-not-found", "missing:1")
    assert_problem(
        client.get(key_url("missing:1"), headers={"Accept": "application/octet-stream"}), 404, "key-not-found"
    )


def test_delete_is_idempotent_and_says_whether_it_deleted(client):
    put = put_json(client, "del:1", b"x").json()
    gone = client.delete(key_url("del:1")).json()
    # A delete is a write: the version grows by one.
    assert gone == {"key": "del:1", "deleted": True, "version": put["version"] + 1, "context": gone["context"]}
    assert gone["context"] not in (None, put["context"])
    # Nothing left to delete: nothing is written, and the version stays.
    assert client.delete(key_url("del:1")).json() == {**gone, "deleted": False}
    assert client.get(key_url("del:1")).status_code == 404
    # A deleted key can be written again, and counts as created; its version keeps growing.
    again = put_json(client, "del:1", b"y").json()
    assert again["created"] is True and again["version"] == gone["version"] + 1
    # A key never written has no version.
    assert client.delete(key_url("del:never")).json() == {
        "key": "del:never", "deleted": False, "version": 0, "context": None}


def test_if_not_exists_creates_once_then_answers_409(client):
    first = put_text(client, "nx:1", "first", if_not_exists=True)
    assert first.status_code == 200 and first.json()["created"] is True
    doc = assert_problem(put_text(client, "nx:1", "second", if_not_exists=True), 409, "key-exists", "nx:1")
    # The refusal names the version the key is at.
    assert (doc["version"], doc["context"]) == (first.json()["version"], first.json()["context"])
    r = client.put(key_url("nx:1"), content=b"third", params={"if_not_exists": "true"},
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 409, "key-exists")
    assert client.get(key_url("nx:1")).json()["value"] == "first"


def test_keys_with_slashes_spaces_and_unicode_travel_in_the_path(client):
    for key in ("a/b/c", "with space", "ключ/😀", "q?x=1#frag", "100%"):
        put_text(client, key, key).raise_for_status()
        got = client.get(key_url(key)).json()
        assert got["key"] == key
        assert got["value"] == key
    # The TTL and incr routes sit under a key with slashes too.
    r = client.post(key_url("a/b/c", "/ttl"), json={"ttl_seconds": 50}).json()
    assert r["key"] == "a/b/c" and r["changed"] is True and 49 < r["ttl_seconds"] <= 50


def test_a_path_that_is_not_utf8_is_a_400_problem(client):
    assert_problem(client.get("/api/v1/keys/%FF%FE"), 400, "bad-request", "UTF-8", "key_encoding=base64")


def test_binary_keys_travel_as_base64_everywhere(client, node):
    key = b"\xffbinkey\x00\x80"
    enc = {"key_encoding": "base64"}
    r = client.put("/api/v1/keys/" + b64(key), params=enc, json={"value": "v"})
    assert r.status_code == 200, r.text
    assert r.json()["key"] == b64(key)
    # URL-safe alphabet without padding reaches the same key.
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert client.get("/api/v1/keys/" + urlsafe, params=enc).json()["value"] == "v"
    assert client.post("/api/v1/batch/get", params=enc, json={"keys": [b64(key)]}).json() == {
        "results": [{"key": b64(key), "found": True, "value": "v"}]}
    listed = client.get("/api/v1/keys", params={**enc, "prefix": b64(b"\xffbin")}).json()
    assert listed == {"keys": [b64(key)], "cursor": None, "has_more": False}
    # The same bytes through RESP.
    with redis.Redis(port=node.resp_port) as r:
        assert r.get(key) == b"v"
        r.set(b"\xfe-from-resp", b"r")
    assert client.get("/api/v1/keys/" + b64(b"\xfe-from-resp"), params=enc).json()["value"] == "r"
    assert_problem(client.get("/api/v1/keys/not*base64", params=enc), 400, "invalid-base64", "key")


# ---------------------------------------------------------------------- expiry


def test_a_key_with_a_ttl_expires(client):
    put_json(client, "ttl:1", b"short", ttl=1).raise_for_status()
    got = client.get(key_url("ttl:1")).json()
    assert 0 < got["ttl_remaining"] <= 1
    time.sleep(1.1)  # past the TTL: a read must find it gone, whenever it is collected
    assert_problem(client.get(key_url("ttl:1")), 404, "key-not-found")
    assert client.head(key_url("ttl:1")).status_code == 404


def test_raw_put_takes_ttl_as_a_query_parameter(client):
    r = client.put(key_url("ttl:raw"), content=b"x", params={"ttl": "1.5"},
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert 0 < client.get(key_url("ttl:raw")).json()["ttl_remaining"] <= 1.5
    time.sleep(1.6)  # past the TTL: a read must find it gone, whenever it is collected
    assert client.get(key_url("ttl:raw")).status_code == 404


def test_ttl_endpoint_sets_and_removes_the_expiry(client):
    put_json(client, "ttl:2", b"x").raise_for_status()
    r = client.post(key_url("ttl:2", "/ttl"), json={"ttl_seconds": 30}).json()
    assert set(r) == {"key", "changed", "ttl_seconds"}
    assert r["key"] == "ttl:2" and r["changed"] is True and 29 < r["ttl_seconds"] <= 30
    assert 29 < client.get(key_url("ttl:2")).json()["ttl_remaining"] <= 30
    # `ttl`, the earlier name, does the same.
    r = client.post(key_url("ttl:2", "/ttl"), json={"ttl": 60}).json()
    assert r["changed"] is True and 59 < r["ttl_seconds"] <= 60
    assert 59 < client.get(key_url("ttl:2")).json()["ttl_remaining"] <= 60
    assert client.post(key_url("ttl:2", "/ttl"), json={"ttl_seconds": None}).json() == {
        "key": "ttl:2", "changed": True, "ttl_seconds": None}
    assert client.get(key_url("ttl:2")).json()["ttl_remaining"] is None
    # Removing an expiry that is not there changes nothing.
    assert client.post(key_url("ttl:2", "/ttl"), json={"ttl": None}).json()["changed"] is False
    assert_problem(client.post(key_url("ttl:missing", "/ttl"), json={"ttl_seconds": 5}), 404, "key-not-found")


@pytest.mark.parametrize("body", [{"ttl": 0}, {"ttl": -1}, {"ttl": "soon"}, {"ttl": 1, "extra": 1},
                                  {"ttl_seconds": 0}, {"ttl_seconds": -1}, {"ttl_seconds": "soon"}])
def test_ttl_endpoint_rejects_bad_bodies(client, body):
    put_json(client, "ttl:3", b"x").raise_for_status()
    assert_problem(client.post(key_url("ttl:3", "/ttl"), json=body), 422, "validation-error")
    assert client.get(key_url("ttl:3")).json()["ttl_remaining"] is None


@pytest.mark.parametrize(("body", "why"), [({}, "neither"), ({"ttl_seconds": 5, "ttl": 5}, "both"),
                                           ({"ttl_seconds": None, "ttl": 5}, "both")])
def test_ttl_endpoint_takes_exactly_one_of_ttl_seconds_and_ttl(client, body, why):
    put_json(client, "ttl:5", b"x").raise_for_status()
    assert_problem(client.post(key_url("ttl:5", "/ttl"), json=body), 400, "bad-request", "ttl_seconds", why)
    assert client.get(key_url("ttl:5")).json()["ttl_remaining"] is None


def test_a_ttl_at_put_must_be_positive(client):
    doc = assert_problem(put_json(client, "ttl:4", b"x", ttl=0), 422, "validation-error", "body.ttl")
    assert doc["errors"][0]["loc"] == ["body", "ttl"]


# ---------------------------------------------------------------------- incr


def test_incr_counts_from_zero_and_by_delta(client):
    one = client.post(key_url("incr:1", "/incr"), json={}).json()
    assert set(one) == {"key", "value", "version", "context"}
    assert (one["key"], one["value"], one["version"]) == ("incr:1", 1, 1)
    two = client.post(key_url("incr:1", "/incr"), json={"delta": 41}).json()
    assert (two["value"], two["version"]) == (42, 2)
    three = client.post(key_url("incr:1", "/incr"), json={"delta": -50}).json()
    assert (three["value"], three["version"]) == (-8, 3)
    assert len({one["context"], two["context"], three["context"]}) == 3
    got = client.get(key_url("incr:1")).json()
    assert got["value"] == "-8"
    assert (got["version"], got["context"]) == (three["version"], three["context"])


def test_incr_of_a_value_that_is_not_an_integer_is_a_409_problem(client):
    put_json(client, "incr:text", b"hello").raise_for_status()
    assert_problem(client.post(key_url("incr:text", "/incr"), json={"delta": 1}), 409, "not-an-integer",
                   "value is not an integer")


def test_incr_past_int64_is_a_409_problem(client):
    put_json(client, "incr:max", str((1 << 63) - 1).encode()).raise_for_status()
    assert_problem(client.post(key_url("incr:max", "/incr"), json={"delta": 1}), 409, "not-an-integer", "overflow")
    assert_problem(client.post(key_url("incr:max", "/incr"), json={"delta": 1 << 63}), 422, "validation-error")
    assert client.get(key_url("incr:max")).json()["value"] == str((1 << 63) - 1)


# ---------------------------------------------------------------------- batches


def test_batch_put_then_batch_get_with_a_missing_key(client):
    ops = [{"key": f"batch:{i}", "value": str(i)} for i in range(9)]
    ops.append({"key": "batch:bin", "value_base64": b64(b"\xff\x00")})
    ops.append({"key": "batch:ttl", "value": "t", "ttl": 100})
    r = client.post("/api/v1/batch/put", json={"operations": ops})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc == {"success_count": 11, "failed_keys": [], "results": doc["results"], "atomic": False,
                   "status": "success", "written": 11}
    assert [(x["key"], x["success"], x["version"]) for x in doc["results"]] == [(op["key"], True, 1) for op in ops]
    r = client.post("/api/v1/batch/get", json={"keys": ["batch:3", "batch:none", "batch:ttl", "batch:bin"]})
    assert r.json() == {"results": [
        {"key": "batch:3", "found": True, "value": "3"},
        {"key": "batch:none", "found": False},
        {"key": "batch:ttl", "found": True, "value": "t"},
        {"key": "batch:bin", "found": True, "value_base64": b64(b"\xff\x00")},
    ]}
    assert client.get(key_url("batch:ttl")).json()["ttl_remaining"] > 99
    # A second write of each key: its version grows.
    again = client.post("/api/v1/batch/put", json={"operations": ops[:2]}).json()
    assert [x["version"] for x in again["results"]] == [2, 2]


def test_batches_take_the_earlier_names_and_shapes(client):
    # `items` for `operations`, and ?encoding=base64 for base64 values in `value`.
    items = [{"key": "early:1", "value": b64(b"\xfe")}, {"key": "early:2", "value": b64(b"two")}]
    r = client.post("/api/v1/batch/put", params={"encoding": "base64"}, json={"items": items})
    assert r.status_code == 200, r.text
    assert r.json()["written"] == r.json()["success_count"] == 2
    r = client.post("/api/v1/batch/get", params={"encoding": "base64"}, json={"keys": ["early:1", "early:2", "no"]})
    assert r.json() == {"results": [{"key": "early:1", "found": True, "value": b64(b"\xfe")},
                                    {"key": "early:2", "found": True, "value": b64(b"two")},
                                    {"key": "no", "found": False}]}
    both = client.post("/api/v1/batch/put", json={"items": items, "operations": items})
    assert_problem(both, 400, "bad-request", "operations", "items", "not both")
    assert_problem(client.post("/api/v1/batch/put", json={"atomic": True}), 400, "bad-request", "operations")


def test_a_non_atomic_batch_reports_a_bad_item_and_writes_the_others(client):
    ops = [{"key": "bbad:0", "value": "ok"},
           {"key": "bbad:1", "value_base64": "***"},
           {"key": "bbad:2", "value_base64": b64(b"x" * (MAX_VALUE_BYTES + 1))},
           {"key": "bbad:3", "value": "x", "value_base64": b64(b"x")},
           {"key": "bbad:4", "value": "fine too"}]
    r = client.post("/api/v1/batch/put", json={"operations": ops, "atomic": False})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["atomic"] is False and doc["status"] == "partial"
    assert doc["success_count"] == doc["written"] == 2
    assert doc["failed_keys"] == ["bbad:1", "bbad:2", "bbad:3"]
    results = doc["results"]
    assert [x["key"] for x in results] == [op["key"] for op in ops]
    assert [x["success"] for x in results] == [True, False, False, False, True]
    assert results[0]["version"] == results[4]["version"] == 1
    errors = [x["error"] for x in results[1:4]]
    assert all("version" not in x for x in results[1:4])
    assert [e["status"] for e in errors] == [400, 413, 400]
    assert [e["type"] for e in errors] == ["urn:ringkv:problem:invalid-base64", "urn:ringkv:problem:too-large",
                                           "urn:ringkv:problem:bad-request"]
    assert "operations[1].value_base64" in errors[0]["detail"]
    assert f"max_value_bytes={MAX_VALUE_BYTES}" in errors[1]["detail"]
    assert "not both" in errors[2]["detail"]
    assert [client.head(key_url(op["key"])).status_code for op in ops] == [200, 404, 404, 404, 200]
    # Every item bad: 200 still, status failed.
    r = client.post("/api/v1/batch/put", json={"operations": [{"key": "bbad:5", "value_base64": "***"}]})
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["success_count"] == 0
    assert r.json()["failed_keys"] == ["bbad:5"]


def test_an_atomic_batch_with_a_bad_item_writes_nothing(client):
    ops = [{"key": "abad:0", "value": "ok"}, {"key": "abad:1", "value_base64": "***"}]
    assert_problem(client.post("/api/v1/batch/put", json={"operations": ops, "atomic": True}), 400,
                   "invalid-base64", "operations[1].value_base64")
    ops[1] = {"key": "abad:1", "value_base64": b64(b"x" * (MAX_VALUE_BYTES + 1))}
    doc = assert_problem(client.post("/api/v1/batch/put", json={"operations": ops, "atomic": True}), 413,
                         "too-large", "operations[1]", f"max_value_bytes={MAX_VALUE_BYTES}", "nothing was written")
    assert doc["failed_keys"] == ["abad:1"]
    # The earlier name `items` is named in the errors when it is the one given.
    items = [{"key": "abad:0", "value": "ok"}, {"key": "abad:1", "value": "x", "value_base64": b64(b"x")}]
    assert_problem(client.post("/api/v1/batch/put", json={"items": items, "atomic": True}), 400,
                   "bad-request", "items[1]", "not both")
    assert client.head(key_url("abad:0")).status_code == 404
    assert client.head(key_url("abad:1")).status_code == 404
    # Good items only: all written.
    ops[1] = {"key": "abad:1", "value": "fine"}
    r = client.post("/api/v1/batch/put", json={"operations": ops, "atomic": True})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["atomic"], doc["status"], doc["success_count"], doc["failed_keys"]) == (True, "success", 2, [])
    assert [(x["key"], x["success"]) for x in doc["results"]] == [("abad:0", True), ("abad:1", True)]
    assert client.post("/api/v1/batch/get", json={"keys": ["abad:0", "abad:1"]}).json()["results"] == [
        {"key": "abad:0", "found": True, "value": "ok"}, {"key": "abad:1", "found": True, "value": "fine"}]


def test_a_key_over_the_limit_is_a_413_for_its_item_or_for_an_atomic_batch(client):
    longest = b"k" * 65527
    enc = {"key_encoding": "base64"}
    ops = [{"key": b64(b"klimit:0"), "value": "v"}, {"key": b64(longest), "value": "v"}]
    r = client.post("/api/v1/batch/put", params=enc, json={"operations": ops})
    assert r.status_code == 200 and r.json()["success_count"] == 2, r.text
    assert client.post("/api/v1/batch/get", params=enc, json={"keys": [b64(longest)]}).json() == {
        "results": [{"key": b64(longest), "found": True, "value": "v"}]}
    # Not atomic: the long key fails on its own, the other is written.
    ops = [{"key": b64(b"klimit:1"), "value": "v"}, {"key": b64(longest + b"k"), "value": "v"}]
    doc = client.post("/api/v1/batch/put", params=enc, json={"operations": ops}).json()
    assert doc["success_count"] == 1 and doc["failed_keys"] == [b64(longest + b"k")]
    error = doc["results"][1]["error"]
    assert error["status"] == 413 and error["type"] == "urn:ringkv:problem:too-large"
    assert "operations[1].key is 65528 bytes" in error["detail"] and "65527" in error["detail"]
    assert client.head(key_url("klimit:1")).status_code == 200
    # Atomic: the whole batch is refused and nothing is written.
    ops = [{"key": b64(b"klimit:2"), "value": "v"}, {"key": b64(longest + b"k"), "value": "v"}]
    assert_problem(client.post("/api/v1/batch/put", params=enc, json={"operations": ops, "atomic": True}), 413,
                   "too-large", "operations[1].key is 65528 bytes", "65527")
    assert client.head(key_url("klimit:2")).status_code == 404


def test_batches_are_bounded(client):
    keys = [f"k{i}" for i in range(1001)]
    assert_problem(client.post("/api/v1/batch/get", json={"keys": keys}), 422, "validation-error", "body.keys")
    ops = [{"key": k, "value": "v"} for k in keys]
    for atomic in (False, True):
        r = client.post("/api/v1/batch/put", json={"operations": ops, "atomic": atomic})
        assert_problem(r, 422, "validation-error", "body.operations")
    assert client.head(key_url("k0")).status_code == 404


def test_a_lone_surrogate_key_is_a_400_problem(client):
    body = b'{"keys": ["\\ud800"]}'
    r = client.post("/api/v1/batch/get", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad-request", "keys[0]", "UTF-8")
    # A lone surrogate as a batch value: that item fails (not UTF-8 text), or the atomic batch.
    body = b'{"operations": [{"key": "sur:1", "value": "\\ud800"}, {"key": "sur:2", "value": "ok"}]'
    r = client.post("/api/v1/batch/put", content=body + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["failed_keys"] == ["sur:1"], r.text
    assert "operations[0].value_base64" in r.json()["results"][0]["error"]["detail"]
    r = client.post("/api/v1/batch/put", content=body + b', "atomic": true}',
                    headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad-request", "operations[0].value", "UTF-8")
    assert client.head(key_url("sur:1")).status_code == 404


# ---------------------------------------------------------------------- listing and scan


def list_all(client: httpx.Client, prefix: str, limit: int, **params) -> tuple[list[str], int]:
    keys: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = {"prefix": prefix, "limit": limit, **params}
        if cursor is not None:
            q["cursor"] = cursor
        r = client.get("/api/v1/keys", params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"keys", "cursor", "has_more"}
        assert len(page["keys"]) <= limit
        assert page["has_more"] is (page["cursor"] is not None)
        keys.extend(page["keys"])
        pages += 1
        cursor = page["cursor"]
        if not page["has_more"]:
            return keys, pages


def test_prefix_listing_pages_return_every_key_exactly_once(client):
    wanted = [f"list:{i:03d}" for i in range(150)]
    ops = [{"key": k, "value": "v"} for k in wanted]
    ops += [{"key": f"lisx:{i}", "value": "v"} for i in range(40)]  # a near-miss prefix
    client.post("/api/v1/batch/put", json={"operations": ops}).raise_for_status()
    keys, pages = list_all(client, "list:", 7)
    assert sorted(keys) == wanted  # each exactly once, nothing else
    assert pages >= 150 // 7
    keys, pages = list_all(client, "list:", 10_000)
    assert sorted(keys) == wanted and pages == 1


def test_prefix_glob_characters_are_literal(client):
    for key in ("g*lob:1", "g?lob:2", "g[l]ob:3", "glob:4", "g\\lob:5"):
        put_json(client, key, b"v").raise_for_status()
    assert list_all(client, "g*", 100)[0] == ["g*lob:1"]
    assert list_all(client, "g?", 100)[0] == ["g?lob:2"]
    assert list_all(client, "g[l]", 100)[0] == ["g[l]ob:3"]
    assert list_all(client, "g\\", 100)[0] == ["g\\lob:5"]


def test_listing_rejects_bad_cursors_and_limits(client):
    assert_problem(client.get("/api/v1/keys", params={"cursor": "abc"}), 400, "invalid-cursor", "abc")
    assert_problem(client.get("/api/v1/keys", params={"cursor": str(1 << 64)}), 400, "invalid-cursor")
    assert_problem(client.get("/api/v1/keys", params={"limit": 0}), 422, "validation-error", "limit")
    assert_problem(client.get("/api/v1/keys", params={"limit": 10_001}), 422, "validation-error", "limit")


def test_scan_walks_the_keyspace_with_a_decimal_cursor(client):
    wanted = {f"scan:{i}" for i in range(60)}
    client.post("/api/v1/batch/put", json={"operations": [{"key": k, "value": "v"} for k in wanted]}).raise_for_status()
    seen: list[str] = []
    cursor = "0"
    while True:
        page = client.get("/api/v1/scan", params={"cursor": cursor, "count": 25, "match": "scan:*"}).json()
        assert set(page) == {"keys", "next_cursor", "done", "cursor"}
        seen.extend(page["keys"])
        cursor = page["next_cursor"]
        assert cursor.isdigit() and page["cursor"] == cursor  # `cursor`: the earlier name
        assert page["done"] is (cursor == "0")
        if page["done"]:
            break
    assert sorted(seen) == sorted(wanted)
    assert_problem(client.get("/api/v1/scan", params={"cursor": "-1"}), 400, "invalid-cursor")
    assert_problem(client.get("/api/v1/scan", params={"count": 0}), 422, "validation-error", "count")


# ---------------------------------------------------------------------- errors


def test_a_value_over_max_value_bytes_is_a_413_naming_the_limit(client):
    too_big = b"x" * (MAX_VALUE_BYTES + 1)
    r = client.put(key_url("big:raw"), content=too_big, headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 413, "too-large", f"max_value_bytes={MAX_VALUE_BYTES}", str(MAX_VALUE_BYTES + 1))
    assert_problem(put_json(client, "big:json", too_big), 413, "too-large", f"max_value_bytes={MAX_VALUE_BYTES}")
    assert_problem(put_text(client, "big:text", too_big.decode()), 413, "too-large",
                   f"max_value_bytes={MAX_VALUE_BYTES}")
    # Far over (past what JSON text at its most escaped takes, 6 bytes a byte): refused from
    # Content-Length, before the body is read.
    r = client.put(key_url("big:huge"), content=b"x" * (7 * MAX_VALUE_BYTES),
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 413, "too-large", "request body is too large", f"max_value_bytes={MAX_VALUE_BYTES}")
    # Far over without a length (chunked): refused as it arrives.
    r = client.put(key_url("big:chunked"), content=iter([b"x" * 65536] * 12),
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 413, "too-large", "request body is too large")
    for key in ("big:raw", "big:json", "big:text", "big:huge", "big:chunked"):
        assert client.head(key_url(key)).status_code == 404
    # Exactly the limit is fine.
    r = client.put(key_url("big:ok"), content=too_big[:-1], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text


def test_a_text_value_of_max_value_bytes_fits_however_json_escapes_it(client):
    # \u0001 takes 6 bytes of JSON for 1 of the value: the body limit leaves room for it.
    text = "\x01" * MAX_VALUE_BYTES
    body = json.dumps({"value": text}).encode()
    assert len(body) > 6 * MAX_VALUE_BYTES
    r = client.put(key_url("big:escaped"), content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert client.get(key_url("big:escaped"), headers={"Accept": "application/octet-stream"}).content == text.encode()
    euro = "€" * (MAX_VALUE_BYTES // 3)  # \u20ac: 6 bytes of ASCII JSON for 3 bytes of UTF-8
    r = client.put(key_url("big:euro"), content=json.dumps({"value": euro}).encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert client.get(key_url("big:euro")).json()["value"] == euro


def test_bad_base64_is_a_400_naming_the_field(client):
    for bad in ("not base64!", "abc", "YQ==YQ=="):
        assert_problem(client.put(key_url("b64:1"), json={"value_base64": bad}), 400, "invalid-base64",
                       "value_base64")
        r = client.put(key_url("b64:1"), params={"encoding": "base64"}, json={"value": bad})
        assert_problem(r, 400, "invalid-base64", "value")
    assert client.head(key_url("b64:1")).status_code == 404


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"value": ', "body"),
        (b"[1, 2]", "body"),
        (b'{"value": 5}', "body.value"),
        (b'{"value": "v", "if_not_exists": "maybe"}', "body.if_not_exists"),
        (b'{"value": "v", "colour": "red"}', "body.colour"),
    ],
)
def test_bad_json_is_a_422_problem_with_the_validation_detail(client, body, where):
    r = client.put(key_url("json:1"), content=body, headers={"Content-Type": "application/json"})
    doc = assert_problem(r, 422, "validation-error", where)
    assert doc["errors"] and all({"type", "loc", "msg"} <= set(e) for e in doc["errors"])


def test_bad_json_on_a_model_route_is_a_422_problem(client):
    r = client.post("/api/v1/batch/get", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "validation-error", "body")


def test_query_options_with_a_json_body_are_a_400(client):
    r = client.put(key_url("qopt:1"), params={"ttl": 5}, json={"value": "v"})
    assert_problem(r, 400, "bad-request", "JSON body")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_a_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.put(key_url("ctype:1"), content=b"v", headers=headers)
    assert_problem(r, 415, "unsupported-media-type", "application/octet-stream")


def test_unknown_routes_and_methods_are_problems(client):
    assert_problem(client.get("/api/v2/keys/x"), 404, "not-found", "/api/v2/keys/x")
    doc = assert_problem(client.post("/healthz"), 405, "method-not-allowed", "GET")
    assert doc["detail"].startswith("POST")
    assert_problem(client.post(key_url("route:1")), 405, "method-not-allowed")
    assert_problem(client.get("/api/v1/keys/"), 422, "validation-error")  # an empty key


@pytest.mark.parametrize(
    ("headers", "params", "ok"),
    [
        ({"Consistency-Level": "ONE"}, {}, True),
        ({"Consistency-Level": "quorum"}, {}, True),
        ({}, {"consistency": "ALL"}, True),
        ({"Consistency-Level": "ALL"}, {"consistency": "all"}, True),
        ({"Consistency-Level": "EVENTUAL"}, {}, True),
        ({"Consistency-Level": "strong"}, {}, True),
        ({}, {"consistency": "Eventual"}, True),
        ({"Consistency-Level": "EVENTUAL"}, {"consistency": "ONE"}, True),  # the same level
        ({"Consistency-Level": "STRONG"}, {"consistency": "all"}, True),
        ({"Consistency-Level": "TWO"}, {}, False),
        ({}, {"consistency": ""}, False),
        ({"Consistency-Level": "ONE"}, {"consistency": "ALL"}, False),
        ({"Consistency-Level": "STRONG"}, {"consistency": "EVENTUAL"}, False),
    ],
)
def test_consistency_level_is_validated(client, headers, params, ok):
    put_json(client, "cl:1", b"v").raise_for_status()
    r = client.get(key_url("cl:1"), headers=headers, params=params)
    if ok:
        assert r.status_code == 200, r.text
    else:
        names = ("ONE (or EVENTUAL)", "QUORUM", "ALL (or STRONG)") if "TWO" in str(headers) else ()
        assert_problem(r, 400, "invalid-consistency", *names)
    w = client.put(key_url("cl:1"), json={"value": "w"}, headers=headers, params=params)
    assert (w.status_code == 200) == ok, w.text


# ---------------------------------------------------------------------- operations


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_cover_http_resp_engine_and_loop(client, node):
    client.get("/openapi.json").raise_for_status()
    put_json(client, "metrics:1", b"v").raise_for_status()
    client.get(key_url("metrics:1")).raise_for_status()
    client.get(key_url("metrics:missing"))
    with redis.Redis(port=node.resp_port) as r:
        r.set("metrics:resp", "1")
        r.get("metrics:resp")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for line in (
        'ringkv_http_requests_total{command="put_key",status="200"}',
        'ringkv_http_requests_total{command="get_key",status="404"}',
        'ringkv_http_requests_total{command="openapi",status="200"}',
        'ringkv_http_request_duration_seconds_bucket{command="get_key",le="0.001"}',
        'ringkv_resp_commands_total{command="set"}',
        'ringkv_resp_commands_total{command="get"}',
        "ringkv_engine_sstables ",
        "ringkv_engine_disk_bytes ",
        "ringkv_engine_write_amplification ",
        "ringkv_engine_block_cache_hit_ratio ",
        "ringkv_engine_background_error 0.0",
        "ringkv_loop_stall_max_seconds ",
    ):
        assert line in text, line


def test_openapi_and_docs_are_served(client):
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "ringkv"
    put = spec["paths"]["/api/v1/keys/{key}"]["put"]
    assert set(put["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "application/problem+json" in put["responses"]["413"]["content"]
    assert "Problem" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_keys_with_newlines_find_their_route(client):
    for key in ("line\nbreak", "trailing\n", "\n"):
        put_json(client, key, b"v").raise_for_status()
        assert client.get(key_url(key)).json()["key"] == key
        assert client.post(key_url(key, "/incr"), json={}).status_code == 409  # "v" is not an integer
    # A newline after a route's suffix is not that route.
    assert_problem(client.post("/api/v1/keys/k/incr%0A", json={}), 404, "not-found")


def test_metrics_have_a_latency_histogram_per_resp_command(node):
    """Operators read per-command RESP latency from /metrics, not only counts."""
    r = redis.Redis(port=node.resp_port, protocol=2)
    r.set("metrics:k", "v")
    r.get("metrics:k")
    r.close()
    text = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics").text
    assert 'ringkv_resp_command_seconds_bucket{command="get",le="+Inf"}' in text
    assert 'ringkv_resp_command_seconds_count{command="set"}' in text
