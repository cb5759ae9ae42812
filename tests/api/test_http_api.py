"""The REST/JSON API as a client sees it: one real `ringkv serve` process, driven by httpx.

Each test uses its own keys (a prefix per test), so they share the node and run in any order.
"""

from __future__ import annotations

import base64
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
    return client.put(key_url(key), json={"value": b64(value), **fields})


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
    r = put_json(client, "get:1", b"hello")
    assert r.status_code == 200
    put = r.json()
    assert put["key"] == "get:1" and put["applied"] is True and put["created"] is True
    got = client.get(key_url("get:1")).json()
    assert unb64(got["value"]) == b"hello"
    assert got["version"] == put["version"]
    assert got["ttl_remaining"] is None
    assert isinstance(got["timestamp"], int) and got["timestamp"] > 0


def test_overwrite_is_not_created_and_advances_the_version(client):
    first = put_json(client, "over:1", b"a").json()
    second = put_json(client, "over:1", b"b").json()
    assert second["created"] is False
    assert second["version"] != first["version"]
    got = client.get(key_url("over:1")).json()
    assert unb64(got["value"]) == b"b"
    assert got["version"] == second["version"]


def test_every_byte_value_round_trips_between_json_and_raw(client):
    value = bytes(range(256)) * 4
    put_json(client, "bin:json", value).raise_for_status()
    raw = client.get(key_url("bin:json"), headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.content == value

    r = client.put(key_url("bin:raw"), content=value, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert unb64(client.get(key_url("bin:raw")).json()["value"]) == value


def test_empty_value_is_a_value(client):
    client.put(key_url("empty:1"), content=b"", headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    assert client.get(key_url("empty:1")).json()["value"] == ""
    assert client.head(key_url("empty:1")).status_code == 200


def test_raw_read_carries_version_timestamp_and_ttl_in_headers(client):
    put = put_json(client, "rawmeta:1", b"v", ttl=100).json()
    r = client.get(key_url("rawmeta:1"), headers={"Accept": "application/octet-stream"})
    assert r.headers["ringkv-version"] == put["version"]
    assert int(r.headers["ringkv-timestamp"]) > 0
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
    put_json(client, "accept:1", b"\x01\x02").raise_for_status()
    r = client.get(key_url("accept:1"), headers={"Accept": accept})
    assert r.status_code == 200
    if raw:
        assert r.content == b"\x01\x02"
    else:
        assert unb64(r.json()["value"]) == b"\x01\x02"


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
    put_json(client, "del:1", b"x").raise_for_status()
    assert client.delete(key_url("del:1")).json() == {"deleted": True}
    assert client.delete(key_url("del:1")).json() == {"deleted": False}
    assert client.get(key_url("del:1")).status_code == 404
    # A deleted key can be written again, and counts as created.
    assert put_json(client, "del:1", b"y").json()["created"] is True


def test_if_not_exists_creates_once_then_answers_409(client):
    assert put_json(client, "nx:1", b"first", if_not_exists=True).status_code == 200
    assert_problem(put_json(client, "nx:1", b"second", if_not_exists=True), 409, "key-exists", "nx:1")
    r = client.put(key_url("nx:1"), content=b"third", params={"if_not_exists": "true"},
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 409, "key-exists")
    assert unb64(client.get(key_url("nx:1")).json()["value"]) == b"first"


def test_keys_with_slashes_spaces_and_unicode_travel_in_the_path(client):
    for key in ("a/b/c", "with space", "ключ/😀", "q?x=1#frag", "100%"):
        put_json(client, key, key.encode()).raise_for_status()
        got = client.get(key_url(key)).json()
        assert got["key"] == key
        assert unb64(got["value"]) == key.encode()
    # The TTL and incr routes sit under a key with slashes too.
    assert client.post(key_url("a/b/c", "/ttl"), json={"ttl": 50}).json() == {"key": "a/b/c", "changed": True}


def test_a_path_that_is_not_utf8_is_a_400_problem(client):
    assert_problem(client.get("/api/v1/keys/%FF%FE"), 400, "bad-request", "UTF-8", "key_encoding=base64")


def test_binary_keys_travel_as_base64_everywhere(client, node):
    key = b"\xffbinkey\x00\x80"
    enc = {"key_encoding": "base64"}
    r = client.put("/api/v1/keys/" + b64(key), params=enc, json={"value": b64(b"v")})
    assert r.status_code == 200, r.text
    assert r.json()["key"] == b64(key)
    # URL-safe alphabet without padding reaches the same key.
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert unb64(client.get("/api/v1/keys/" + urlsafe, params=enc).json()["value"]) == b"v"
    assert client.post("/api/v1/batch/get", params=enc, json={"keys": [b64(key)]}).json() == {"values": [b64(b"v")]}
    listed = client.get("/api/v1/keys", params={**enc, "prefix": b64(b"\xffbin")}).json()
    assert listed == {"keys": [b64(key)], "cursor": None}
    # The same bytes through RESP.
    with redis.Redis(port=node.resp_port) as r:
        assert r.get(key) == b"v"
        r.set(b"\xfe-from-resp", b"r")
    assert unb64(client.get("/api/v1/keys/" + b64(b"\xfe-from-resp"), params=enc).json()["value"]) == b"r"
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
    assert client.post(key_url("ttl:2", "/ttl"), json={"ttl": 30}).json() == {"key": "ttl:2", "changed": True}
    assert 29 < client.get(key_url("ttl:2")).json()["ttl_remaining"] <= 30
    assert client.post(key_url("ttl:2", "/ttl"), json={"ttl": None}).json()["changed"] is True
    assert client.get(key_url("ttl:2")).json()["ttl_remaining"] is None
    # Removing an expiry that is not there changes nothing.
    assert client.post(key_url("ttl:2", "/ttl"), json={"ttl": None}).json()["changed"] is False
    assert_problem(client.post(key_url("ttl:missing", "/ttl"), json={"ttl": 5}), 404, "key-not-found")


@pytest.mark.parametrize("body", [{"ttl": 0}, {"ttl": -1}, {"ttl": "soon"}, {}, {"ttl": 1, "extra": 1}])
def test_ttl_endpoint_rejects_bad_bodies(client, body):
    put_json(client, "ttl:3", b"x").raise_for_status()
    assert_problem(client.post(key_url("ttl:3", "/ttl"), json=body), 422, "validation-error")


def test_a_ttl_at_put_must_be_positive(client):
    doc = assert_problem(put_json(client, "ttl:4", b"x", ttl=0), 422, "validation-error", "body.ttl")
    assert doc["errors"][0]["loc"] == ["body", "ttl"]


# ---------------------------------------------------------------------- incr


def test_incr_counts_from_zero_and_by_delta(client):
    assert client.post(key_url("incr:1", "/incr"), json={}).json() == {"value": 1}
    assert client.post(key_url("incr:1", "/incr"), json={"delta": 41}).json() == {"value": 42}
    assert client.post(key_url("incr:1", "/incr"), json={"delta": -50}).json() == {"value": -8}
    assert client.get(key_url("incr:1")).json()["value"] == b64(b"-8")


def test_incr_of_a_value_that_is_not_an_integer_is_a_409_problem(client):
    put_json(client, "incr:text", b"hello").raise_for_status()
    assert_problem(client.post(key_url("incr:text", "/incr"), json={"delta": 1}), 409, "not-an-integer",
                   "value is not an integer")


def test_incr_past_int64_is_a_409_problem(client):
    put_json(client, "incr:max", str((1 << 63) - 1).encode()).raise_for_status()
    assert_problem(client.post(key_url("incr:max", "/incr"), json={"delta": 1}), 409, "not-an-integer", "overflow")
    assert_problem(client.post(key_url("incr:max", "/incr"), json={"delta": 1 << 63}), 422, "validation-error")


# ---------------------------------------------------------------------- batches


def test_batch_put_then_batch_get_with_a_missing_key(client):
    items = [{"key": f"batch:{i}", "value": b64(b"%d" % i)} for i in range(10)]
    items.append({"key": "batch:ttl", "value": b64(b"t"), "ttl": 100})
    assert client.post("/api/v1/batch/put", json={"items": items}).json() == {"written": 11}
    r = client.post("/api/v1/batch/get", json={"keys": ["batch:3", "batch:none", "batch:ttl"]})
    assert r.json() == {"values": [b64(b"3"), None, b64(b"t")]}
    assert client.get(key_url("batch:ttl")).json()["ttl_remaining"] > 99


def test_a_bad_item_rejects_the_whole_batch(client):
    items = [{"key": "bbad:0", "value": b64(b"ok")}, {"key": "bbad:1", "value": "***"}]
    assert_problem(client.post("/api/v1/batch/put", json={"items": items}), 400, "invalid-base64", "items[1].value")
    items[1] = {"key": "bbad:1", "value": b64(b"x" * (MAX_VALUE_BYTES + 1))}
    assert_problem(client.post("/api/v1/batch/put", json={"items": items}), 413, "too-large",
                   "items[1].value", f"max_value_bytes={MAX_VALUE_BYTES}")
    assert client.head(key_url("bbad:0")).status_code == 404


def test_a_key_over_the_limit_is_a_413_and_rejects_the_whole_batch(client):
    longest = b"k" * 65527
    enc = {"key_encoding": "base64"}
    items = [{"key": b64(b"klimit:0"), "value": b64(b"v")}, {"key": b64(longest), "value": b64(b"v")}]
    assert client.post("/api/v1/batch/put", params=enc, json={"items": items}).json() == {"written": 2}
    assert client.post("/api/v1/batch/get", params=enc, json={"keys": [b64(longest)]}).json() == {"values": [b64(b"v")]}
    items = [{"key": b64(b"klimit:1"), "value": b64(b"v")}, {"key": b64(longest + b"k"), "value": b64(b"v")}]
    assert_problem(client.post("/api/v1/batch/put", params=enc, json={"items": items}), 413, "too-large",
                   "items[1].key is 65528 bytes", "65527")
    assert client.head(key_url("klimit:1")).status_code == 404


def test_batches_are_bounded(client):
    keys = [f"k{i}" for i in range(1001)]
    assert_problem(client.post("/api/v1/batch/get", json={"keys": keys}), 422, "validation-error", "body.keys")


def test_a_lone_surrogate_key_is_a_400_problem(client):
    body = b'{"keys": ["\\ud800"]}'
    r = client.post("/api/v1/batch/get", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad-request", "keys[0]", "UTF-8")


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
        assert len(page["keys"]) <= limit
        keys.extend(page["keys"])
        pages += 1
        cursor = page["cursor"]
        if cursor is None:
            return keys, pages


def test_prefix_listing_pages_return_every_key_exactly_once(client):
    wanted = [f"list:{i:03d}" for i in range(150)]
    items = [{"key": k, "value": b64(b"v")} for k in wanted]
    items += [{"key": f"lisx:{i}", "value": b64(b"v")} for i in range(40)]  # a near-miss prefix
    client.post("/api/v1/batch/put", json={"items": items}).raise_for_status()
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
    client.post("/api/v1/batch/put", json={"items": [{"key": k, "value": b64(b"v")} for k in wanted]}).raise_for_status()
    seen: list[str] = []
    cursor = "0"
    while True:
        page = client.get("/api/v1/scan", params={"cursor": cursor, "count": 25, "match": "scan:*"}).json()
        seen.extend(page["keys"])
        cursor = page["cursor"]
        assert cursor.isdigit()
        if cursor == "0":
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
    # Far over: refused from Content-Length, before the body is read.
    r = client.put(key_url("big:huge"), content=b"x" * (3 * MAX_VALUE_BYTES),
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 413, "too-large", f"max_value_bytes={MAX_VALUE_BYTES}")
    # Far over without a length (chunked): refused as it arrives.
    r = client.put(key_url("big:chunked"), content=iter([b"x" * 65536] * 8),
                   headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 413, "too-large")
    assert client.head(key_url("big:raw")).status_code == 404
    # Exactly the limit is fine.
    r = client.put(key_url("big:ok"), content=too_big[:-1], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text


def test_bad_base64_is_a_400_naming_the_field(client):
    for bad in ("not base64!", "abc", "YQ==YQ=="):
        assert_problem(client.put(key_url("b64:1"), json={"value": bad}), 400, "invalid-base64", "value")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"value": ', "body"),
        (b"[1, 2]", "body"),
        (b'{"ttl": 5}', "body.value"),
        (b'{"value": "dg==", "if_not_exists": "maybe"}', "body.if_not_exists"),
        (b'{"value": "dg==", "colour": "red"}', "body.colour"),
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
    r = client.put(key_url("qopt:1"), params={"ttl": 5}, json={"value": b64(b"v")})
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
        ({"Consistency-Level": "TWO"}, {}, False),
        ({}, {"consistency": ""}, False),
        ({"Consistency-Level": "ONE"}, {"consistency": "ALL"}, False),
    ],
)
def test_consistency_level_is_validated(client, headers, params, ok):
    put_json(client, "cl:1", b"v").raise_for_status()
    r = client.get(key_url("cl:1"), headers=headers, params=params)
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert_problem(r, 400, "invalid-consistency", "ONE, QUORUM or ALL" if "TWO" in str(headers) else "")
    w = client.put(key_url("cl:1"), json={"value": b64(b"w")}, headers=headers, params=params)
    assert (w.status_code == 200) == ok


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
