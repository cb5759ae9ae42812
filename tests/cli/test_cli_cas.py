"""An operator or a script doing a compare-and-set from the shell: `ringkv get --json` shows
the key's version, `ringkv put --if-version` writes only while the key is still at it, and
`--consistency` (SERIAL included) on get, put and del.

The CLI runs as a real subprocess against a real node: what is checked is what a shell sees.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("cli-cas") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def db(node: NodeProcess) -> redis.Redis:
    r = redis.Redis(port=node.resp_port)
    r.flushall()
    return r


def ringkv(node: NodeProcess, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RINGKV_PORT": str(node.resp_port)}
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, env=env, timeout=30)


def get_json(node: NodeProcess, key: str, *args: str) -> dict:
    return json.loads(ringkv(node, "get", key, "--json", *args).stdout)


def test_get_json_shows_the_version_that_put_if_version_writes_at(node, db) -> None:
    assert ringkv(node, "put", "config", "v1").returncode == 0
    seen = get_json(node, "config")
    assert seen["found"] is True and seen["value"] == "v1"
    # The version is the one the node's own read gives, in standard base64.
    context, _ = db.execute_command("RINGKV.GETV", "config")
    assert base64.b64decode(seen["version"]) == context

    put = ringkv(node, "put", "config", "v2", "--if-version", seen["version"])
    assert put.returncode == 0 and put.stdout.strip() == b"OK"
    assert db.get("config") == b"v2"
    assert get_json(node, "config")["version"] != seen["version"]


def test_put_if_version_with_a_stale_version_exits_1_and_says_where_the_key_is(node, db) -> None:
    ringkv(node, "put", "config", "v1")
    stale = get_json(node, "config")["version"]
    ringkv(node, "put", "config", "v2")
    current = get_json(node, "config")["version"]

    refused = ringkv(node, "put", "config", "v3", "--if-version", stale)
    assert refused.returncode == 1 and refused.stdout == b""
    assert f"is at version {current} now".encode() in refused.stderr
    as_json = ringkv(node, "put", "config", "v3", "--if-version", stale, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"key": "config", "written": False, "bytes": 2, "version": current}
    assert db.get("config") == b"v2"

    # With the version the refusal named, the write goes through, and --json gives the new one.
    done = ringkv(node, "put", "config", "v3", "--if-version", current, "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["written"] is True and doc["version"] == get_json(node, "config")["version"]


def test_put_if_version_on_a_deleted_key_says_it_has_no_value(node, db) -> None:
    ringkv(node, "put", "gone", "v")
    version = get_json(node, "gone")["version"]
    assert ringkv(node, "del", "gone").returncode == 0
    refused = ringkv(node, "put", "gone", "again", "--if-version", version)
    assert refused.returncode == 1 and b"has no value now" in refused.stderr
    assert get_json(node, "gone") == {"key": "gone", "found": False, "value": None, "version": None}
    assert db.exists("gone") == 0


@pytest.mark.parametrize("args", [
    ("--if-version", "not base64!"),
    ("--if-version", ""),
    ("--if-version", "AYHEC24x", "--if-not-exists"),
])
def test_a_bad_if_version_is_a_usage_error_and_writes_nothing(node, db, args) -> None:
    r = ringkv(node, "put", "k", "v", *args)
    assert r.returncode == 2, r.stderr
    assert db.exists("k") == 0


def test_a_version_the_node_never_gave_out_is_a_server_error(node, db) -> None:
    r = ringkv(node, "put", "k", "v", "--if-version", base64.b64encode(b"\x00nonsense").decode())
    assert r.returncode == 4 and b"invalid causal context" in r.stderr
    assert db.exists("k") == 0


def test_consistency_on_get_put_and_del(node, db) -> None:
    assert ringkv(node, "put", "k", "v", "--consistency", "QUORUM").returncode == 0
    got = ringkv(node, "get", "k", "--consistency", "serial")
    assert got.returncode == 0 and got.stdout == b"v"
    assert get_json(node, "k", "--consistency", "SERIAL")["value"] == "v"
    assert ringkv(node, "del", "k", "--consistency", "ALL").returncode == 0
    assert ringkv(node, "get", "k", "--consistency", "ONE").returncode == 1
    bad = ringkv(node, "get", "k", "--consistency", "MOST")
    assert bad.returncode == 2 and b"--consistency" in bad.stderr


def test_get_json_of_a_key_with_siblings_shows_no_version(node, db) -> None:
    # Two blind versioned writes stay side by side: a version would replace both, while the
    # read shows only one of them, so none is given.
    db.execute_command("RINGKV.PUTV", "cart", "apple")
    db.execute_command("RINGKV.PUTV", "cart", "milk")
    doc = get_json(node, "cart")
    assert doc["found"] is True and doc["value"] in ("apple", "milk")
    assert doc["version"] is None and doc["siblings"] == 2
