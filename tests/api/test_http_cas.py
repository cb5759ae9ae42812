"""Compare-and-set over HTTP as a client sees it: `POST /api/v1/keys/{key}/cas`, the standard
conditional requests (`If-Match`, `If-None-Match`, the `ETag` of a read), `if_not_exists`, and
`Consistency-Level: SERIAL` reads.

The single-key rules run against one real `ringkv serve` process; what only a cluster can show
(concurrent writers through different coordinators, exactly one of which wins; SERIAL reads
through another node) against three, with httpx. A SERIAL read right after read-modify-write
commands on a key can fail on a node bug: tests/client/test_client_cas.py pins it down.
"""

from __future__ import annotations

import base64
import threading
import urllib.parse
from collections.abc import Callable, Iterator

import httpx
import pytest

from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

MAX_VALUE_BYTES = 10_000
PROBLEM = "application/problem+json"
CLUSTER = dict(replicas=3, partitions=16, gossip_interval_ms=200, replica_timeout_ms=2000)
ROUNDS = 30  # concurrent compare-and-set rounds through the cluster's nodes
CREATORS = 12  # concurrent if_not_exists writers of one key


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("http-cas") / "n1", max_value_bytes=MAX_VALUE_BYTES).start()
    yield node
    assert node.stop() == 0, node.log()


@pytest.fixture
def client(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("http-cas-cluster"), nodes=3, **CLUSTER) as cluster:
        yield cluster


@pytest.fixture
def clients(cluster: LocalCluster) -> Iterator[list[httpx.Client]]:
    opened = [httpx.Client(base_url=f"http://127.0.0.1:{n.http_port}", timeout=30) for n in cluster.nodes]
    yield opened
    for c in opened:
        c.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_url(key: str, suffix: str = "") -> str:
    return "/api/v1/keys/" + urllib.parse.quote(key, safe="/") + suffix


def cas(client: httpx.Client, key: str, expected: int | str | None, value: str | None, **fields) -> httpx.Response:
    """POST /cas with a text `new_value` (None: delete); `expected`: a version number, a context
    string, or None."""
    body = {"expected_version": expected, "new_value": value, **fields}
    return client.post(key_url(key, "/cas"), json=body)


def put(client: httpx.Client, key: str, value: str, headers: dict | None = None, **fields) -> httpx.Response:
    return client.put(key_url(key), json={"value": value, **fields}, headers=headers)


def read(client: httpx.Client, key: str) -> dict:
    r = client.get(key_url(key))
    assert r.status_code == 200, r.text
    return r.json()


def version_of(client: httpx.Client, key: str) -> int:
    """The key's version number, as a read answers it."""
    return read(client, key)["version"]


def refused(current: dict | None) -> dict:
    """A compare-and-set's answer when it was not applied; `current` is the version the key is
    at (a read's, or a write's answer), None when it has no live value."""
    return {"success": False, "new_version": None, "new_context": None,
            "current_version": None if current is None else current["version"],
            "current_context": None if current is None else current["context"]}


def assert_problem(r: httpx.Response, status: int, slug: str, *in_detail: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    doc = r.json()
    assert doc["type"] == f"urn:ringkv:problem:{slug}", doc
    for text in in_detail:
        assert text in doc["detail"], doc
    return doc


def all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls on threads released together, and return their answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = calls[i]()
        except BaseException as exc:  # reported below, with the others' answers
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed = [a for a in answers if not isinstance(a, httpx.Response)]
    assert not failed, failed
    return answers  # type: ignore[return-value]


# ---------------------------------------------------------------------- POST /cas


def test_cas_with_expected_null_creates_an_absent_key_once(client):
    first = cas(client, "cas:new", None, "one")
    assert first.status_code == 200
    doc = first.json()
    assert set(doc) == {"success", "new_version", "current_version", "new_context", "current_context"}
    assert doc["success"] is True and doc["new_version"] == doc["current_version"] == 1
    assert doc["new_context"] == doc["current_context"] is not None
    assert first.headers["etag"] == f'"{doc["new_context"]}"'
    got = read(client, "cas:new")
    assert (got["version"], got["context"]) == (doc["new_version"], doc["new_context"])

    # The key exists now: expecting "absent" fails, and says what the key is at.
    again = cas(client, "cas:new", None, "two")
    assert again.status_code == 200
    assert again.json() == refused(got)
    # 0, the version number of a key that has no live value, is the same expectation.
    assert cas(client, "cas:new", 0, "two").json() == refused(got)
    assert read(client, "cas:new")["value"] == "one"
    assert cas(client, "cas:zero", 0, "created").json()["success"] is True
    assert read(client, "cas:zero")["value"] == "created"


def test_cas_writes_at_the_version_a_read_returned_and_refuses_a_stale_one(client):
    put(client, "cas:rw", "v1").raise_for_status()
    seen = read(client, "cas:rw")
    won = cas(client, "cas:rw", seen["version"], "v2", ttl=100).json()
    assert won["success"] is True and won["new_version"] == seen["version"] + 1
    assert won["current_version"] == won["new_version"] and won["current_context"] == won["new_context"]
    got = read(client, "cas:rw")
    assert got["value"] == "v2" and (got["version"], got["context"]) == (won["new_version"], won["new_context"])
    assert 99 < got["ttl_remaining"] <= 100

    # A second writer that read the same version is refused, and learns the new one.
    lost = cas(client, "cas:rw", seen["version"], "v3").json()
    assert lost == refused(got)
    assert read(client, "cas:rw")["value"] == "v2"
    # With the version the refusal named, it goes through.
    assert cas(client, "cas:rw", lost["current_version"], "v3").json()["success"] is True
    assert read(client, "cas:rw")["value"] == "v3"


def test_cas_with_a_context_compares_the_exact_version(client):
    put(client, "cas:ctx", "v1").raise_for_status()
    seen = read(client, "cas:ctx")
    won = cas(client, "cas:ctx", seen["context"], "v2").json()
    assert won["success"] is True and won["new_version"] == seen["version"] + 1
    # The context read before that write is stale now.
    assert cas(client, "cas:ctx", seen["context"], "v3").json() == refused(read(client, "cas:ctx"))
    # The context the refusal (or the write) named goes through, as its number does.
    assert cas(client, "cas:ctx", won["current_context"], "v3").json()["success"] is True
    assert read(client, "cas:ctx")["value"] == "v3"
    # A version number that is ahead of the key's, or behind it, is refused.
    now = read(client, "cas:ctx")
    for wrong in (now["version"] + 1, now["version"] - 1, 1000):
        assert cas(client, "cas:ctx", wrong, "no").json() == refused(now)
    assert read(client, "cas:ctx")["value"] == "v3"


def test_cas_with_new_value_null_deletes_only_at_that_version(client):
    put(client, "cas:del", "x").raise_for_status()
    seen = version_of(client, "cas:del")
    put(client, "cas:del", "y").raise_for_status()
    assert cas(client, "cas:del", seen, None).json() == refused(read(client, "cas:del"))
    assert client.get(key_url("cas:del")).status_code == 200

    current = read(client, "cas:del")
    gone = cas(client, "cas:del", current["version"], None)
    doc = gone.json()
    # A delete is a write: it makes a new version; the key has no live value after it.
    assert doc == {"success": True, "new_version": current["version"] + 1, "new_context": doc["new_context"],
                   "current_version": None, "current_context": None}
    assert doc["new_context"] not in (None, current["context"])
    assert "etag" not in gone.headers
    assert client.get(key_url("cas:del")).status_code == 404
    # A deleted key has no live value: the next compare-and-set expects null (or 0), and creates it.
    assert cas(client, "cas:del", current["version"], "z").json() == refused(None)
    assert cas(client, "cas:del", current["context"], "z").json() == refused(None)
    assert cas(client, "cas:del", doc["new_version"], "z").json() == refused(None)
    created = cas(client, "cas:del", None, "z").json()
    assert created["success"] is True and created["new_version"] == doc["new_version"] + 1


def test_cas_refuses_malformed_requests_and_writes_nothing(client):
    assert_problem(cas(client, "cas:bad", "not base64!", "v"), 400, "invalid-base64", "expected_version")
    assert_problem(cas(client, "cas:bad", "", "v"), 400, "invalid-context", "expected_version")
    assert_problem(cas(client, "cas:bad", "AAAA", "v"), 400, "invalid-context")
    assert_problem(cas(client, "cas:bad", -1, "v"), 400, "bad-request", "expected_version", ">= 0")
    assert_problem(cas(client, "cas:bad", None, None), 400, "bad-request", "no live value to delete")
    assert_problem(cas(client, "cas:bad", 1.5, "v"), 422, "validation-error", "expected_version")
    seen = cas(client, "cas:bad2", None, "v").json()["new_version"]
    assert_problem(cas(client, "cas:bad2", seen, None, ttl=5), 400, "bad-request", "ttl")
    r = client.post(key_url("cas:bad", "/cas"), json={"new_value": "v"})
    assert_problem(r, 422, "validation-error", "expected_version")
    r = client.post(key_url("cas:bad", "/cas"), json={"expected_version": None})
    assert_problem(r, 400, "bad-request", "new_value is required", "new_value_base64")
    r = client.post(key_url("cas:bad", "/cas"), json={"expected_version": None, "new_value": "v",
                                                      "new_value_base64": b64(b"v")})
    assert_problem(r, 400, "bad-request", "new_value", "new_value_base64", "not both")
    r = client.post(key_url("cas:bad", "/cas"), json={"expected_version": None, "new_value_base64": "***"})
    assert_problem(r, 400, "invalid-base64", "new_value_base64")
    r = client.post(key_url("cas:bad", "/cas"), params={"encoding": "base64"},
                    json={"expected_version": None, "new_value": "***"})
    assert_problem(r, 400, "invalid-base64", "new_value")
    assert_problem(cas(client, "cas:bad", None, "x" * (MAX_VALUE_BYTES + 1)), 413, "too-large",
                   f"max_value_bytes={MAX_VALUE_BYTES}")
    assert client.get(key_url("cas:bad")).status_code == 404
    assert read(client, "cas:bad2")["value"] == "v"


def test_cas_takes_binary_keys_and_values_and_the_url_safe_alphabet_for_contexts(client):
    key = base64.urlsafe_b64encode(b"\xff\x00cas").decode().rstrip("=")
    enc = {"key_encoding": "base64"}
    r = client.post(f"/api/v1/keys/{key}/cas", params=enc,
                    json={"expected_version": None, "new_value_base64": b64(b"\xffbin")})
    context = r.json()["new_context"]
    url_safe = context.replace("+", "-").replace("/", "_").rstrip("=")
    r = client.post(f"/api/v1/keys/{key}/cas", params=enc,
                    json={"expected_version": url_safe, "new_value_base64": b64(b"\xffbin2")})
    assert r.json()["success"] is True
    got = client.get(f"/api/v1/keys/{key}", params=enc).json()
    assert "value" not in got and got["value_base64"] == b64(b"\xffbin2")
    # ?encoding=base64: new_value is base64, as the read's value is.
    r = client.post(f"/api/v1/keys/{key}/cas", params={**enc, "encoding": "base64"},
                    json={"expected_version": got["version"], "new_value": b64(b"\xfebin3")})
    assert r.json()["success"] is True
    assert client.get(f"/api/v1/keys/{key}", params={**enc, "encoding": "base64"}).json()["value"] == b64(b"\xfebin3")


# ---------------------------------------------------------------------- ETag, If-Match, If-None-Match


def test_reads_and_writes_answer_the_context_as_an_etag(client):
    written = put(client, "etag:1", "v")
    assert written.headers["etag"] == f'"{written.json()["context"]}"'
    got = client.get(key_url("etag:1"))
    assert got.headers["etag"] == f'"{got.json()["context"]}"' == written.headers["etag"]
    raw = client.get(key_url("etag:1"), headers={"Accept": "application/octet-stream"})
    assert raw.headers["etag"] == written.headers["etag"]
    assert raw.headers["ringkv-context"] == got.json()["context"]


def test_put_with_if_match_writes_only_while_the_key_is_at_that_version(client):
    put(client, "im:1", "v1").raise_for_status()
    tag = client.get(key_url("im:1")).headers["etag"]
    r = put(client, "im:1", "v2", headers={"If-Match": tag})
    assert r.status_code == 200 and r.json()["created"] is False
    new_tag = r.headers["etag"]
    assert new_tag != tag

    # The read-modify-write dance of a second client that read before that write: 412, with
    # the version the key is at now in the body and the ETag, and nothing written.
    stale = put(client, "im:1", "v3", headers={"If-Match": tag})
    doc = assert_problem(stale, 412, "precondition-failed", "If-Match", "im:1")
    assert stale.headers["etag"] == new_tag and f'"{doc["current_context"]}"' == new_tag
    assert doc["current_version"] == r.json()["version"]
    assert read(client, "im:1")["value"] == "v2"
    # Raw bodies take the headers too.
    r = client.put(key_url("im:1"), content=b"raw", headers={"If-Match": new_tag,
                                                               "Content-Type": "application/octet-stream"})
    assert r.status_code == 200


def test_delete_with_if_match_deletes_only_at_that_version(client):
    put(client, "im:del", "v1").raise_for_status()
    tag = client.get(key_url("im:del")).headers["etag"]
    put(client, "im:del", "v2").raise_for_status()
    assert_problem(client.delete(key_url("im:del"), headers={"If-Match": tag}), 412, "precondition-failed")
    assert client.get(key_url("im:del")).status_code == 200

    current = client.get(key_url("im:del"))
    gone = client.delete(key_url("im:del"), headers={"If-Match": current.headers["etag"]}).json()
    assert gone == {"key": "im:del", "deleted": True, "version": current.json()["version"] + 1,
                    "context": gone["context"]}
    # No live value, so no version for If-Match to name: 412 with a null current version.
    gone = client.delete(key_url("im:del"), headers={"If-Match": current.headers["etag"]})
    doc = assert_problem(gone, 412, "precondition-failed", "has no live value")
    assert doc["current_version"] is None and doc["current_context"] is None
    assert "etag" not in gone.headers


def test_if_none_match_star_creates_only_a_key_that_has_no_value(client):
    r = put(client, "inm:1", "first", headers={"If-None-Match": "*"})
    assert r.status_code == 200 and r.json()["created"] is True
    again = put(client, "inm:1", "second", headers={"If-None-Match": "*"})
    doc = assert_problem(again, 412, "precondition-failed", "If-None-Match")
    assert f'"{doc["current_context"]}"' == again.headers["etag"] == r.headers["etag"]
    assert doc["current_version"] == r.json()["version"]
    assert read(client, "inm:1")["value"] == "first"


def test_if_match_star_lists_and_weak_tags(client):
    # `*`: any live value, none is a 412.
    assert_problem(put(client, "iml:1", "v", headers={"If-Match": "*"}), 412, "precondition-failed")
    put(client, "iml:1", "v1").raise_for_status()
    assert put(client, "iml:1", "v2", headers={"If-Match": "*"}).status_code == 200
    current = client.get(key_url("iml:1")).headers["etag"]
    stale = '"AYHEC24xQDAwMDAwMDAwAQ=="'
    # A list matches when any of its versions is the key's.
    assert put(client, "iml:1", "v3", headers={"If-Match": f"{stale}, {current}"}).status_code == 200
    # If-Match compares strongly: a weak tag never matches.
    current = client.get(key_url("iml:1")).headers["etag"]
    assert_problem(put(client, "iml:1", "v4", headers={"If-Match": f"W/{current}"}), 412, "precondition-failed")
    # If-None-Match with a version: write unless the key is at it.
    assert_problem(put(client, "iml:1", "v4", headers={"If-None-Match": current}), 412, "precondition-failed")
    assert put(client, "iml:1", "v4", headers={"If-None-Match": stale}).status_code == 200
    assert read(client, "iml:1")["value"] == "v4"


@pytest.mark.parametrize(
    ("headers", "slug", "in_detail"),
    [
        ({"If-Match": "AYHEC24x"}, "bad-request", "quoted versions"),  # unquoted
        ({"If-Match": '*, "AYHEC24x"'}, "bad-request", "stands alone"),
        ({"If-Match": '"a" "b"'}, "bad-request", "quoted versions"),
        ({"If-Match": '"not_base64!"'}, "invalid-base64", "If-Match"),
        ({"If-Match": '""'}, "invalid-context", "If-Match"),
        ({"If-None-Match": ""}, "bad-request", "If-None-Match"),
    ],
)
def test_malformed_conditional_headers_are_a_400(client, headers, slug, in_detail):
    assert_problem(put(client, "bad:h", "v", headers=headers), 400, slug, in_detail)
    assert client.get(key_url("bad:h")).status_code == 404


def test_if_not_exists_and_a_conditional_header_exclude_each_other(client):
    r = put(client, "bad:nx", "v", headers={"If-None-Match": "*"}, if_not_exists=True)
    assert_problem(r, 400, "bad-request", "not both")


def test_if_not_exists_answers_as_before(client):
    r = put(client, "nx:cas", "first", if_not_exists=True)
    assert r.status_code == 200 and r.json()["created"] is True
    got = read(client, "nx:cas")
    assert (r.json()["version"], r.json()["context"]) == (got["version"], got["context"])
    doc = assert_problem(put(client, "nx:cas", "second", if_not_exists=True), 409, "key-exists", "nx:cas")
    assert (doc["version"], doc["context"]) == (got["version"], got["context"])
    assert read(client, "nx:cas")["value"] == "first"


# ---------------------------------------------------------------------- SERIAL


@pytest.mark.parametrize(("headers", "params"), [
    ({"Consistency-Level": "SERIAL"}, {}),
    ({"Consistency-Level": "serial"}, {}),
    ({}, {"consistency": "Serial"}),
    ({"Consistency-Level": "SERIAL"}, {"consistency": "serial"}),
])
def test_serial_is_accepted_for_every_read(client, headers, params):
    put(client, "serial:1", "s").raise_for_status()
    got = client.get(key_url("serial:1"), headers=headers, params=params)
    assert got.status_code == 200 and got.json()["value"] == "s"
    assert client.head(key_url("serial:1"), headers=headers, params=params).status_code == 200
    assert client.get(key_url("serial:missing"), headers=headers, params=params).status_code == 404
    versions = client.get(key_url("serial:1", "/versions"), headers=headers, params=params).json()
    assert (versions["context"], versions["version"]) == (got.json()["context"], got.json()["version"])
    batch = client.post("/api/v1/batch/get", json={"keys": ["serial:1", "serial:missing"]},
                        headers=headers, params=params)
    assert batch.json() == {"results": [{"key": "serial:1", "found": True, "value": "s"},
                                        {"key": "serial:missing", "found": False}]}


def test_an_unknown_level_names_serial_among_the_accepted_ones(client):
    r = client.get(key_url("serial:1"), headers={"Consistency-Level": "LINEARIZABLE"})
    assert_problem(r, 400, "invalid-consistency", "ONE (or EVENTUAL)", "QUORUM", "ALL (or STRONG)", "SERIAL")
    r = client.get(key_url("serial:1"), headers={"Consistency-Level": "SERIAL"}, params={"consistency": "ONE"})
    assert_problem(r, 400, "invalid-consistency", "SERIAL", "ONE")


# ---------------------------------------------------------------------- a cluster


def value_everywhere(clients: list[httpx.Client], key: str, value: str) -> None:
    """Wait until every node reads `value` under `key` at its default level (a chosen value
    reaches the replicas that did not vote for it a moment later)."""
    for c in clients:
        wait_until(lambda c=c: c.get(key_url(key)).json().get("value") == value, 30,
                   f"{value!r} under {key!r} at {c.base_url}")


def test_concurrent_cas_with_one_expected_version_through_different_nodes_one_wins(clients):
    """Each round, three writers that read the same version send their CAS at once, each to
    another coordinator: exactly one is told success, the others the winner's version, which
    the next round expects (a round that let two win would show there). Even rounds expect the
    version number, odd ones the context."""
    first = cas(clients[0], "race:cas", None, "start").json()
    seen = {"version": first["current_version"], "context": first["current_context"]}
    value = "start"
    for round_ in range(ROUNDS):
        values = [f"r{round_}-w{i}" for i in range(3)]
        order = [(round_ + i) % 3 for i in range(3)]  # a different node first each round
        expected = seen["version"] if round_ % 2 == 0 else seen["context"]
        answers = all_at_once([
            (lambda c=clients[n], v=values[i], e=expected: cas(c, "race:cas", e, v)) for i, n in enumerate(order)
        ])
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        docs = [a.json() for a in answers]
        winners = [i for i, d in enumerate(docs) if d["success"]]
        assert len(winners) == 1, (round_, docs)
        won = docs[winners[0]]
        assert won["new_version"] == seen["version"] + 1, (round_, docs)
        seen, value = {"version": won["new_version"], "context": won["new_context"]}, values[winners[0]]
        for i, d in enumerate(docs):
            if i != winners[0]:
                assert d == refused(seen), (round_, docs)
    value_everywhere(clients, "race:cas", value)


def test_concurrent_if_not_exists_creators_one_wins(clients):
    answers = all_at_once([
        (lambda c=clients[i % 3], i=i: put(c, "race:nx", f"creator {i}", if_not_exists=True))
        for i in range(CREATORS)
    ])
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1 and statuses.count(409) == CREATORS - 1, [a.text for a in answers]
    value_everywhere(clients, "race:nx", f"creator {statuses.index(200)}")


def test_concurrent_if_match_writers_one_wins_the_others_get_412(clients):
    put(clients[0], "race:im", "base").raise_for_status()
    tag = clients[1].get(key_url("race:im"), headers={"Consistency-Level": "SERIAL"}).headers["etag"]
    answers = all_at_once([
        (lambda c=c, i=i: put(c, "race:im", f"w{i}", headers={"If-Match": tag}))
        for i, c in enumerate(clients)
    ])
    statuses = [a.status_code for a in answers]
    assert sorted(statuses) == [200, 412, 412], [a.text for a in answers]
    winner = statuses.index(200)
    for a in answers:
        if a.status_code == 412:
            assert a.headers["etag"] == answers[winner].headers["etag"]
            assert a.json()["current_version"] == answers[winner].json()["version"]
    value_everywhere(clients, "race:im", f"w{winner}")


def test_a_serial_read_through_any_node_sees_the_last_acknowledged_write(clients):
    for i in range(20):
        written = put(clients[i % 3], "serial:any", f"v{i}").json()
        got = clients[(i + 1) % 3].get(key_url("serial:any"), headers={"Consistency-Level": "SERIAL"})
        assert got.status_code == 200, got.text
        doc = got.json()
        assert doc["value"] == f"v{i}"
        assert (doc["version"], doc["context"]) == (written["version"], written["context"])
