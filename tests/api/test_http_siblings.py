"""Sibling-aware reads and writes over HTTP (`/api/v1/keys/{key}/versions`), driven by httpx
against a real `ringkv serve`.

Two clients read the same version of a key and both write with the context they read: both
values stay as siblings, until a write with the context covering both resolves them.
"""

from __future__ import annotations

import base64
import time
import urllib.parse

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("http-siblings") / "n1", max_value_bytes=100_000).start()
    yield node
    assert node.stop() == 0, node.log()


@pytest.fixture
def client(node):
    redis.Redis(port=node.resp_port).flushall()
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def versions_url(key: str, **query) -> str:
    url = "/api/v1/keys/" + urllib.parse.quote(key, safe="/") + "/versions"
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def read(client: httpx.Client, key: str) -> dict:
    r = client.get(versions_url(key))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"key", "context", "version", "siblings"}, doc
    return doc


def value_of(sibling: dict) -> bytes:
    """A sibling's bytes: `value` (text) when they are UTF-8, else `value_base64` alone."""
    assert ("value" in sibling) != ("value_base64" in sibling), sibling
    return sibling["value"].encode() if "value" in sibling else unb64(sibling["value_base64"])


def values(client: httpx.Client, key: str) -> list[bytes]:
    return sorted(value_of(s) for s in read(client, key)["siblings"])


def write(client: httpx.Client, key: str, value: bytes, context: str | None = None, **fields) -> str:
    """Write through /versions: text in `value` when it is UTF-8, else `value_base64`."""
    try:
        body = {"value": value.decode("utf-8"), **fields}
    except UnicodeDecodeError:
        body = {"value_base64": b64(value), **fields}
    if context is not None:
        body["context"] = context
    r = client.put(versions_url(key), json=body)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"context", "version"}
    return r.json()["context"]


def assert_problem(r: httpx.Response, status: int, slug: str, *in_detail: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc = r.json()
    assert doc["type"] == f"urn:ringkv:problem:{slug}", doc
    for text in in_detail:
        assert text in doc["detail"], doc


def make_siblings(a: httpx.Client, b: httpx.Client, key: str) -> str:
    """Two clients read one version of `key` and both write with its context."""
    assert a.put("/api/v1/keys/" + key, json={"value": "start"}).status_code == 200
    seen_a, seen_b = read(a, key), read(b, key)
    assert seen_a["context"] == seen_b["context"] is not None
    write(a, key, b"from-a", seen_a["context"])
    write(b, key, b"from-b", seen_b["context"])
    return seen_a["context"]


@pytest.fixture
def other(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10) as client:
        yield client


# ---------------------------------------------------------------------- siblings


def test_a_missing_key_has_no_context_and_no_siblings(client):
    assert read(client, "missing") == {"key": "missing", "context": None, "version": 0, "siblings": []}


def test_two_writers_with_the_same_context_both_survive_as_siblings(client, other):
    before = time.time()
    make_siblings(client, other, "cart")
    doc = read(other, "cart")
    assert doc["key"] == "cart" and doc["context"]
    assert doc["version"] == 3  # the context covers all three writes: start, from-a, from-b
    assert sorted(value_of(s) for s in doc["siblings"]) == [b"from-a", b"from-b"]
    for sibling in doc["siblings"]:
        assert set(sibling) == {"value", "timestamp", "hlc", "ttl_remaining"}
        assert before - 1 <= sibling["timestamp"] <= time.time() + 1  # Unix seconds
        assert isinstance(sibling["hlc"], int) and sibling["hlc"] > sibling["timestamp"]
        assert sibling["ttl_remaining"] is None
    assert len({s["hlc"] for s in doc["siblings"]}) == 2


def test_plain_get_answers_the_same_winner_every_time(client, other, node):
    make_siblings(client, other, "cart")
    versions = read(client, "cart")
    newest = max(versions["siblings"], key=lambda s: s["hlc"])
    answers = [client.get("/api/v1/keys/cart").json() for _ in range(5)]
    assert {a["value"] for a in answers} == {newest["value"]}
    assert {a["hlc"] for a in answers} == {newest["hlc"]}
    # The plain read's version covers every sibling: it is the /versions one.
    assert {(a["version"], a["context"]) for a in answers} == {(versions["version"], versions["context"])}
    assert redis.Redis(port=node.resp_port).get("cart") == value_of(newest)


def test_a_write_with_the_context_covering_both_resolves_them(client, other):
    make_siblings(client, other, "cart")
    seen = read(client, "cart")
    r = client.put(versions_url("cart"), json={"value": "from-a,from-b", "context": seen["context"]})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["context"] != seen["context"] and after["version"] == seen["version"] + 1
    doc = read(other, "cart")
    assert (doc["context"], doc["version"]) == (after["context"], after["version"])
    assert [value_of(s) for s in doc["siblings"]] == [b"from-a,from-b"]


def test_a_blind_write_adds_a_sibling(client):
    write(client, "k", b"one")
    write(client, "k", b"two")
    assert values(client, "k") == [b"one", b"two"]
    assert read(client, "k")["version"] == 2


def test_plain_put_replaces_every_sibling(client, other):
    make_siblings(client, other, "cart")
    r = client.put("/api/v1/keys/cart", json={"value": "plain"})
    assert r.status_code == 200
    assert values(client, "cart") == [b"plain"]
    assert read(client, "cart")["version"] == r.json()["version"]


def test_delete_with_the_context_leaves_no_live_sibling(client, other):
    make_siblings(client, other, "cart")
    seen = read(client, "cart")
    r = client.delete(versions_url("cart", context=seen["context"]))
    assert r.status_code == 200, r.text
    after = r.json()
    assert set(after) == {"context", "version"} and after["version"] == seen["version"] + 1
    assert read(client, "cart") == {"key": "cart", "context": after["context"], "version": after["version"],
                                    "siblings": []}
    assert client.get("/api/v1/keys/cart").status_code == 404


def test_a_blind_delete_leaves_the_siblings_it_did_not_see(client, other):
    make_siblings(client, other, "cart")
    assert client.delete(versions_url("cart")).status_code == 200
    assert values(client, "cart") == [b"from-a", b"from-b"]


def test_a_context_in_the_url_safe_alphabet_without_padding_is_accepted(client, other):
    make_siblings(client, other, "cart")
    context = read(client, "cart")["context"]
    url_safe = base64.urlsafe_b64encode(unb64(context)).decode().rstrip("=")
    r = client.delete(versions_url("cart") + "?context=" + url_safe)
    assert r.status_code == 200, r.text
    assert values(client, "cart") == []


def test_a_ttl_gives_the_sibling_an_expiry(client):
    write(client, "k", b"forever")
    write(client, "k", b"brief", ttl=1)  # long enough to read it back on a stalled machine
    ttls = sorted((s["ttl_remaining"] is not None, s["ttl_remaining"]) for s in read(client, "k")["siblings"])
    assert ttls[0] == (False, None) and 0 < ttls[1][1] <= 1
    time.sleep(1.1)  # past the TTL: a read must leave it out, whenever it is collected
    assert values(client, "k") == [b"forever"]


def test_binary_values_travel_as_value_base64_or_with_encoding_base64(client):
    write(client, "bin", b"\xff\x00")
    write(client, "bin", b"text")
    siblings = read(client, "bin")["siblings"]
    assert sorted(map(value_of, siblings)) == [b"text", b"\xff\x00"]
    assert {b64(b"\xff\x00")} == {s["value_base64"] for s in siblings if "value_base64" in s}
    # ?encoding=base64: every sibling's `value` is base64, and so is the value written.
    doc = client.get(versions_url("bin", encoding="base64")).json()
    assert sorted(unb64(s["value"]) for s in doc["siblings"]) == [b"text", b"\xff\x00"]
    assert all("value_base64" not in s for s in doc["siblings"])
    r = client.put(versions_url("bin", encoding="base64"), json={"value": b64(b"\xfe"), "context": doc["context"]})
    assert r.status_code == 200, r.text
    (sibling,) = read(client, "bin")["siblings"]
    assert "value" not in sibling and sibling["value_base64"] == b64(b"\xfe")


def test_binary_keys_travel_as_base64(client, node):
    key = b"\xff\x00/versions"  # ends like the route: reachable only as base64
    encoded = base64.urlsafe_b64encode(key).decode()
    url = f"/api/v1/keys/{encoded}/versions?key_encoding=base64"
    r = client.put(url, json={"value": "v"})
    assert r.status_code == 200, r.text
    doc = client.get(url).json()
    assert doc["key"] == b64(key)  # answers use the standard alphabet
    assert [value_of(s) for s in doc["siblings"]] == [b"v"]
    assert redis.Redis(port=node.resp_port).get(key) == b"v"


# ---------------------------------------------------------------------- errors


def test_a_garbage_context_is_a_400_and_nothing_is_written(client):
    write(client, "k", b"v")
    for garbage in (b"garbage", b"\x01\xff\xfe", b"\x07xyz"):
        r = client.put(versions_url("k"), json={"value": "w", "context": b64(garbage)})
        assert_problem(r, 400, "invalid-context", "causal context")
        assert_problem(client.delete(versions_url("k", context=b64(garbage))), 400, "invalid-context")
    assert values(client, "k") == [b"v"]


def test_an_empty_context_is_refused_rather_than_taken_as_blind(client):
    write(client, "k", b"v")
    r = client.put(versions_url("k"), json={"value": "w", "context": ""})
    assert_problem(r, 400, "invalid-context", "context is empty")
    assert_problem(client.delete(versions_url("k", context="")), 400, "invalid-context")
    assert values(client, "k") == [b"v"]


def test_bad_base64_and_bad_bodies(client):
    r = client.put(versions_url("k"), json={"value_base64": "not base64!"})
    assert_problem(r, 400, "invalid-base64", "value_base64")
    r = client.put(versions_url("k", encoding="base64"), json={"value": "not base64!"})
    assert_problem(r, 400, "invalid-base64", "value")
    r = client.put(versions_url("k"), json={"value": "v", "context": "a b"})
    assert_problem(r, 400, "invalid-base64", "context")
    r = client.put(versions_url("k"), json={"value": "v", "value_base64": b64(b"v")})
    assert_problem(r, 400, "bad-request", "not both")
    assert_problem(client.put(versions_url("k"), json={}), 400, "bad-request", "value is required")
    assert_problem(client.put(versions_url("k"), json={"value": "v", "extra": 1}), 422, "validation-error")
    assert_problem(client.put(versions_url("k"), json={"value": "v", "ttl": 0}), 422, "validation-error")
    assert_problem(client.put(versions_url("k"), json={"value": 5}), 422, "validation-error")
    r = client.put(versions_url("k"), json={"value": "x" * 100_001})
    assert_problem(r, 413, "too-large", "max_value_bytes")
    r = client.put(versions_url("k"), json={"value_base64": b64(b"x" * 100_001)})
    assert_problem(r, 413, "too-large", "max_value_bytes")
    assert read(client, "k")["context"] is None


def test_the_routes_are_in_the_openapi_spec(client):
    spec = client.get("/openapi.json").json()
    methods = spec["paths"]["/api/v1/keys/{key}/versions"]
    assert set(methods) == {"get", "put", "delete"}


# ---------------------------------------------------------------------- durability


def test_siblings_survive_a_crash_and_restart(tmp_path):
    node = NodeProcess(tmp_path / "n1").start()
    try:
        base = f"http://127.0.0.1:{node.http_port}"
        with httpx.Client(base_url=base, timeout=10) as a, httpx.Client(base_url=base, timeout=10) as b:
            make_siblings(a, b, "cart")
            before = read(a, "cart")
        node.kill()
        node.start()
        with httpx.Client(base_url=base, timeout=10) as c:
            assert read(c, "cart") == before
            write(c, "cart", b"merged", before["context"])
            assert values(c, "cart") == [b"merged"]
    finally:
        node.stop()
