"""An operator or a script using `ringkv get/put/del/scan/info` against a running node.

The CLI runs as a real subprocess (`python -m ringkv.cli`), so what is checked is exactly what
a shell sees: stdout bytes, stderr text and the exit code.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("cli") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def db(node: NodeProcess) -> redis.Redis:
    """A plain Redis client of the node, to set up and check state behind the CLI's back."""
    r = redis.Redis(port=node.resp_port)
    r.flushall()
    return r


def ringkv(node: NodeProcess, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    # The node's port comes from RINGKV_PORT, as a user's shell would set it.
    env = {**os.environ, "RINGKV_PORT": str(node.resp_port)}
    return subprocess.run(
        [sys.executable, "-m", "ringkv.cli", *args],
        input=stdin, capture_output=True, env=env, timeout=30,
    )


def test_put_then_get_prints_the_value(node, db) -> None:
    put = ringkv(node, "put", "greeting", "héllo wörld")
    assert put.returncode == 0 and put.stdout.strip() == b"OK"
    got = ringkv(node, "get", "greeting")
    # Into a pipe the value's bytes come out as they are, with no newline added.
    assert got.returncode == 0 and got.stdout == "héllo wörld".encode()
    assert db.get("greeting") == "héllo wörld".encode()


def test_put_reads_the_value_from_stdin_and_get_writes_binary_raw(node, db) -> None:
    blob = bytes(range(256)) * 4
    assert ringkv(node, "put", "blob", "-", stdin=blob).returncode == 0
    assert db.get("blob") == blob
    got = ringkv(node, "get", "blob", "--raw")
    assert got.returncode == 0 and got.stdout == blob


def test_json_output_base64_encodes_values_that_are_not_utf8(node, db) -> None:
    db.set("text", "plain")
    db.set("bin", b"\x00\xff\x01")
    text = json.loads(ringkv(node, "get", "text", "--json").stdout)
    version = text.pop("version")  # the version `put --if-version` takes, base64
    assert text == {"key": "text", "found": True, "value": "plain"} and base64.b64decode(version)
    binary = json.loads(ringkv(node, "get", "bin", "--json").stdout)
    assert binary["found"] is True
    assert base64.b64decode(binary["value"]["base64"]) == b"\x00\xff\x01"


def test_put_with_ttl_and_if_not_exists(node, db) -> None:
    first = ringkv(node, "put", "session", "one", "--ttl", "30", "--if-not-exists", "--json")
    assert first.returncode == 0
    assert json.loads(first.stdout) == {"key": "session", "written": True, "bytes": 3}
    assert 29_000 < db.pttl("session") <= 30_000
    second = ringkv(node, "put", "session", "two", "--if-not-exists")
    assert second.returncode == 1 and b"already exists" in second.stderr
    assert db.get("session") == b"one"


def test_del_reports_how_many_keys_it_deleted(node, db) -> None:
    db.mset({"a": "1", "b": "2"})
    human = ringkv(node, "del", "a", "missing")
    assert human.returncode == 0 and b"deleted 1 of 2 keys" in human.stdout
    machine = ringkv(node, "del", "b", "--json")
    assert machine.returncode == 0 and json.loads(machine.stdout) == {"deleted": 1, "requested": 1}
    assert db.dbsize() == 0


def test_scan_lists_every_key_one_per_line(node, db) -> None:
    keys = {f"user:{i}".encode() for i in range(250)} | {b"order:1"}
    db.mset({k: b"v" for k in keys})
    out = ringkv(node, "scan", "--count", "20")
    assert out.returncode == 0
    assert sorted(out.stdout.splitlines()) == sorted(keys)
    matched = ringkv(node, "scan", "--match", "order:*")
    assert matched.stdout == b"order:1\n"


def test_scan_json_with_limit_says_it_was_truncated(node, db) -> None:
    db.mset({"k1": "v", "k2": "v", "k3": "v", b"\xffbin": "v"})
    limited = json.loads(ringkv(node, "scan", "--limit", "2", "--json").stdout)
    assert limited["count"] == 2 and len(limited["keys"]) == 2 and limited["truncated"] is True
    full = json.loads(ringkv(node, "scan", "--json").stdout)
    assert full["count"] == 4 and full["truncated"] is False
    assert {"base64": base64.b64encode(b"\xffbin").decode()} in full["keys"]


def test_info_shows_sections_as_tables_or_json(node, db) -> None:
    db.mset({"a": "1", "b": "2"})
    human = ringkv(node, "info")
    assert human.returncode == 0
    text = human.stdout.decode()
    for expected in ("server", "ringkv_version", "keyspace", "keys=2"):
        assert expected in text
    machine = json.loads(ringkv(node, "info", "keyspace", "--json").stdout)
    assert machine == {"keyspace": {"db0": {"keys": 2, "expires": 0, "avg_ttl": 0}}}


def test_host_and_port_options_override_the_environment(node, db) -> None:
    db.set("k", "v")
    env = {**os.environ, "RINGKV_PORT": "1", "RINGKV_HOST": "127.0.0.1"}
    got = subprocess.run(
        [sys.executable, "-m", "ringkv.cli", "get", "k", "--port", str(node.resp_port)],
        capture_output=True, env=env, timeout=30,
    )
    assert got.returncode == 0 and got.stdout == b"v"


def test_get_on_a_terminal_prints_text_and_escapes_binary(node, db) -> None:
    db.set("text", "héllo")
    db.set("bin", b"\x00\xff")
    db.set("escape", b"\x1b[2Jgotcha")  # would clear the operator's screen if printed as is
    assert _on_terminal(node, "get", "text").strip() == "héllo"
    shown = _on_terminal(node, "get", "bin")
    assert "\\x00\\xff" in shown and "value of 2 bytes shown escaped" in shown
    assert "\\x1b[2Jgotcha" in _on_terminal(node, "get", "escape")


def _on_terminal(node: NodeProcess, *args: str) -> str:
    """Run the CLI with a pseudo-terminal as stdout and stderr; return what it showed."""
    leader, follower = pty.openpty()
    env = {**os.environ, "RINGKV_PORT": str(node.resp_port), "NO_COLOR": "1", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "ringkv.cli", *args], stdout=follower,
                            stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(30) == 0
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
