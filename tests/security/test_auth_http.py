"""Users and permissions on the HTTP API, with a real `ringkv serve` process and httpx: Basic
credentials and bearer tokens (issue, use, expiry, revocation), 401 with a WWW-Authenticate
challenge, 403 when the user's ACL rules refuse the request, admin routes needing @admin, and
the audit trail (log lines and /metrics).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess
from ringkv.testing.wait import wait_until

ADMIN_PASSWORD = "admin-pw-for-http-tests"
ADMIN = ("admin", ADMIN_PASSWORD)


def audit_lines(node: NodeProcess) -> list[dict]:
    return [json.loads(line.split(" ringkv.audit: ", 1)[1])
            for line in node.log_path.read_text(errors="replace").splitlines() if " ringkv.audit: " in line]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-auth")
    secret = root / "admin.password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    secret.chmod(0o600)
    with NodeProcess(root / "n1", admin_password_file=str(secret), auth_backoff_after_failures=1000,
                     auth_token_ttl_s=60, auth_token_max_ttl_s=600) as n:
        admin = redis.Redis(port=n.resp_port, username="admin", password=ADMIN_PASSWORD, protocol=2)
        admin.acl_setuser("reader", enabled=True, passwords=["+rpw"], keys=["%R~*"], commands=["+@read"])
        admin.acl_setuser("writer", enabled=True, passwords=["+wpw"], keys=["user:*"],
                          commands=["+@read", "+@write", "+@keyspace"])
        admin.close()
        yield n


@pytest.fixture
def http(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as c:
        yield c


def put(http: httpx.Client, key: str, value: str, auth=None, headers=None) -> httpx.Response:
    return http.put(f"/api/v1/keys/{key}", json={"value": value}, auth=auth, headers=headers)


def test_no_credentials_is_401_with_a_challenge(http):
    r = http.get("/api/v1/keys/user:1")
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert 'Basic realm="ringkv"' in challenge and 'Bearer realm="ringkv"' in challenge
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "authentication required" in r.json()["detail"]


def test_probes_and_the_api_description_answer_anyone(http):
    assert http.get("/healthz").status_code == 200
    assert http.get("/openapi.json").status_code == 200


def test_basic_credentials_of_a_user(http):
    assert put(http, "user:1", "one", auth=("writer", "wpw")).status_code in (200, 201, 204)
    got = http.get("/api/v1/keys/user:1", auth=("writer", "wpw"))
    assert got.status_code == 200 and got.json()["value"] == "one"
    wrong = http.get("/api/v1/keys/user:1", auth=("writer", "nope"))
    assert wrong.status_code == 401 and "Basic" in wrong.headers["www-authenticate"]
    assert "invalid username-password pair" in wrong.json()["detail"]
    assert http.get("/api/v1/keys/user:1", auth=("nosuch", "x")).status_code == 401
    malformed = http.get("/api/v1/keys/user:1", headers={"Authorization": "Basic !!!"})
    assert malformed.status_code == 401


def test_permissions_refuse_with_403_naming_what_is_missing(http):
    r = put(http, "user:2", "x", auth=("reader", "rpw"))
    assert r.status_code == 403
    assert "user reader has no permission to run 'set'" in r.json()["detail"]
    r = put(http, "other", "x", auth=("writer", "wpw"))
    assert r.status_code == 403 and "key 'other'" in r.json()["detail"]
    r = http.delete("/api/v1/keys/other", auth=("writer", "wpw"))
    assert r.status_code == 403
    assert http.get("/api/v1/keys/other", auth=("reader", "rpw")).status_code == 404  # allowed, absent
    r = http.post("/api/v1/batch/put", json={"items": [{"key": "user:3", "value": "a"}, {"key": "x", "value": "b"}]},
                  auth=("writer", "wpw"))
    # A batch that is not atomic answers per key: the refused one says 403, the other is written.
    doc = r.json()
    assert r.status_code == 200 and doc["failed_keys"] == ["x"], r.text
    assert doc["results"][1]["error"]["status"] == 403
    assert http.get("/api/v1/keys/x", auth=ADMIN).status_code == 404


def test_admin_routes_need_admin(http, node):
    for method, path in (("GET", "/api/v1/admin/cluster/status"), ("POST", "/api/v1/admin/cluster/repair"),
                         ("DELETE", "/api/v1/admin/cluster/nodes/n9")):
        r = http.request(method, path, auth=("writer", "wpw"))
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "no permission" in r.json()["detail"]
    assert http.get("/api/v1/admin/cluster/status", auth=ADMIN).status_code == 200
    assert http.post("/api/v1/admin/cluster/repair", auth=ADMIN).status_code == 200
    lines = wait_until(lambda: [x for x in audit_lines(node) if x["event"] == "admin" and x["protocol"] == "http"],
                       10, "audit lines of HTTP admin actions")
    assert any(x["user"] == "writer" and x["result"] == "denied" and x["command"] == "ringkv.repair" for x in lines)
    assert any(x["user"] == "admin" and x["result"] == "ok" and x["command"] == "ringkv.repair" for x in lines)


def test_metrics_need_info_permission_and_count_failures(http, node):
    assert http.get("/metrics", auth=("writer", "wpw")).status_code == 403
    http.get("/api/v1/keys/user:1", auth=("writer", "not-it"))
    text = http.get("/metrics", auth=ADMIN).text
    assert 'ringkv_auth_failures_total{protocol="http",reason="wrongpass"}' in text
    assert 'ringkv_permission_denials_total{protocol="http"}' in text
    assert 'ringkv_admin_actions_total{' in text
    lines = audit_lines(node)
    failure = next(x for x in lines if x["event"] == "auth_failure" and x["protocol"] == "http"
                   and x["reason"] == "wrongpass")
    assert failure["user"] == "writer" and failure["client"].startswith("127.0.0.1")
    assert "not-it" not in node.log_path.read_text()


# ---------------------------------------------------------------------- bearer tokens


def issue(http: httpx.Client, auth, **body) -> httpx.Response:
    return http.post("/api/v1/auth/token", json=body or None, auth=auth)


def test_a_token_is_issued_for_a_password_and_used_as_bearer(http):
    r = issue(http, ("writer", "wpw"))
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["token_type"] == "Bearer" and doc["user"] == "writer" and doc["expires_in"] == 60
    bearer = {"Authorization": f"Bearer {doc['token']}"}
    assert put(http, "user:tok", "t", headers=bearer).status_code in (200, 201, 204)
    assert http.get("/api/v1/keys/user:tok", headers=bearer).json()["value"] == "t"
    assert put(http, "other", "t", headers=bearer).status_code == 403  # the user's rules apply
    # A token is not issued for a token, nor without credentials.
    assert http.post("/api/v1/auth/token", headers=bearer).status_code == 401
    assert http.post("/api/v1/auth/token").status_code == 401


def test_a_bad_expired_or_revoked_token_is_401(http):
    assert http.get("/api/v1/keys/user:1", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    forged = "rkv1.d3JpdGVy.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # user "writer", an invented secret
    r = http.get("/api/v1/keys/user:1", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "unknown or was revoked" in r.json()["detail"]
    assert "Bearer" in r.headers["www-authenticate"]

    short = issue(http, ("writer", "wpw"), ttl_s=1).json()["token"]
    bearer = {"Authorization": f"Bearer {short}"}
    assert http.get("/api/v1/keys/user:1", headers=bearer).status_code == 200
    time.sleep(1.2)
    expired = http.get("/api/v1/keys/user:1", headers=bearer)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    too_long = issue(http, ("writer", "wpw"), ttl_s=100_000)
    assert too_long.status_code == 400 and "auth_token_max_ttl_s" in too_long.json()["detail"]

    token = issue(http, ("writer", "wpw")).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert http.delete("/api/v1/auth/token", headers=bearer).status_code == 204
    assert http.get("/api/v1/keys/user:1", headers=bearer).status_code == 401


def test_deleting_the_user_or_its_password_revokes_its_tokens(http, node):
    admin = redis.Redis(port=node.resp_port, username="admin", password=ADMIN_PASSWORD, protocol=2)
    admin.acl_setuser("temp", enabled=True, passwords=["+one", "+two"], keys=["*"], commands=["+@read"])
    one = issue(http, ("temp", "one")).json()["token"]
    two = issue(http, ("temp", "two")).json()["token"]
    for token in (one, two):
        assert http.get("/api/v1/keys/k", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    admin.acl_setuser("temp", enabled=True, passwords=["-one"])
    assert http.get("/api/v1/keys/k", headers={"Authorization": f"Bearer {one}"}).status_code == 401
    assert http.get("/api/v1/keys/k", headers={"Authorization": f"Bearer {two}"}).status_code == 404
    admin.acl_deluser("temp")
    assert http.get("/api/v1/keys/k", headers={"Authorization": f"Bearer {two}"}).status_code == 401
    admin.close()
