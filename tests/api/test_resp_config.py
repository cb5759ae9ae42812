"""CONFIG GET / CONFIG SET, FUNCTION and SCRIPT against real `ringkv serve` processes, with
redis-py, redis-cli and raw sockets; the argument errors compared with a real redis-server;
GET /api/v1/admin/config answering as CONFIG GET.

A CONFIG SET is shown taking effect: KEYS refused past a lowered keys_max_count, a connection
over a lowered maxclients refused, an idle connection closed under a lowered timeout, an HTTP
connection over a lowered max_connections_per_ip refused; and refused to a user without @admin.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from typing import Any

import httpx
import pytest
import redis

LIVE_RESTORED = {"keys_max_count": "100000", "max_connections": "10000", "client_idle_timeout_ms": "300000",
                 "max_connections_per_ip": "1000"}


@pytest.fixture(scope="module")
def r(shared_node):
    client = redis.Redis(port=shared_node.resp_port, decode_responses=True)
    yield client
    client.close()


# ---------------------------------------------------------------------- CONFIG GET


def test_config_get_star_answers_ringkv_settings_and_redis_equivalents(shared_node, r):
    got = r.config_get("*")
    # ringkv's settings, named as in the configuration file
    assert int(got["max_value_bytes"]) > 0
    assert got["client_idle_timeout_ms"] == "300000"
    assert got["sync"] == "interval"
    assert got["flush_enabled"] == "true"
    # Redis's names, where ringkv has an equivalent or a fixed answer
    assert got["maxclients"] == got["max_connections"]
    assert got["timeout"] == "300"
    assert got["port"] == str(shared_node.resp_port)
    assert got["proto-max-bulk-len"] == got["max_value_bytes"]
    assert got["appendfsync"] == "everysec"
    assert (got["maxmemory"], got["save"], got["appendonly"], got["databases"]) == ("0", "", "no", "1")
    # secrets are never answered (the file's path is)
    assert "cluster_secret" not in got and "requirepass" not in got
    assert "cluster_secret_file" in got


def test_config_get_takes_several_glob_patterns_in_any_case(r):
    assert r.execute_command("CONFIG", "GET", "MAXCLIENTS", "time?ut", "nosuch*") == {
        "maxclients": "10000", "timeout": "300"}
    assert set(r.config_get("max_conn*")) == {"max_connections", "max_connections_per_ip"}
    assert r.config_get("[ps]ort") == {"port": r.config_get("port")["port"]}
    assert r.config_get("no-such-setting") == {}
    assert r.config_get("*secret") == {}


def test_config_get_is_a_flat_array_on_resp2_and_a_map_on_resp3(shared_node, raw_connect):
    conn = raw_connect(shared_node.resp_port)
    assert conn.command("CONFIG", "GET", "databases") == b"*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
    conn.command("HELLO", "3")
    assert conn.command("CONFIG", "GET", "databases") == b"%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"


def test_http_admin_config_answers_as_config_get(shared_node, r):
    with httpx.Client(base_url=f"http://127.0.0.1:{shared_node.http_port}", timeout=30) as http:
        assert http.get("/api/v1/admin/config", params={"pattern": ["MAXCLIENTS", "*secret"]}).json() == {
            "maxclients": "10000"}
        every = http.get("/api/v1/admin/config").json()
        assert every == r.config_get("*") and "requirepass" not in every
        spec = http.get("/openapi.json").json()["paths"]["/api/v1/admin/config"]["get"]
        assert "pattern" in {p["name"] for p in spec["parameters"]}


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_config_get_star(shared_node):
    out = subprocess.run([shutil.which("redis-cli"), "-p", str(shared_node.resp_port), "CONFIG", "GET", "*"],
                         capture_output=True, timeout=60, check=True).stdout.decode().splitlines()
    pairs = dict(zip(out[::2], out[1::2], strict=True))
    assert pairs["maxmemory"] == "0" and pairs["databases"] == "1"
    assert pairs["port"] == str(shared_node.resp_port)


# ---------------------------------------------------------------------- CONFIG SET


def test_config_set_changes_keys_max_count_at_once_and_reverts(r):
    r.flushall()
    r.mset({"cfg:1": "a", "cfg:2": "b", "cfg:3": "c"})
    try:
        assert r.config_set("keys_max_count", 2) is True
        assert r.config_get("keys_max_count") == {"keys_max_count": "2"}
        with pytest.raises(redis.ResponseError, match="keys_max_count=2"):
            r.keys("*")
    finally:
        r.config_set("keys_max_count", LIVE_RESTORED["keys_max_count"])
    assert sorted(r.keys("*")) == ["cfg:1", "cfg:2", "cfg:3"]


def test_config_set_is_all_or_nothing_with_redis_error_texts(r):
    def fails(*args: str) -> str:
        with pytest.raises(redis.ResponseError) as info:
            r.execute_command("CONFIG", "SET", *args)
        return str(info.value)

    assert fails("nosuch", "1") == "Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    assert fails("sync", "always").startswith(
        "CONFIG SET failed (possibly related to argument 'sync') - can't set immutable config (sync is read at start")
    assert fails("port", "1").startswith("CONFIG SET failed (possibly related to argument 'port') - can't set "
                                         "immutable config")
    assert fails("maxclients", "0") == ("CONFIG SET failed (possibly related to argument 'maxclients') - "
                                        "max_connections: must be >= 1, got 0")
    assert "max_client_memory_bytes: must be 0 (no bound) or >=" in fails("maxmemory-clients", "5")
    assert fails("timeout", "1.5").endswith("timeout is a whole number of seconds, got '1.5'")
    assert fails("keys_max_count", "5", "KEYS_MAX_COUNT", "6").endswith("- duplicate parameter")
    # a good pair beside a bad one: nothing changes
    assert "log_level: must be debug, info, warning or error" in fails("keys_max_count", "5", "log_level", "loud")
    assert r.config_get("keys_max_count") == {"keys_max_count": LIVE_RESTORED["keys_max_count"]}
    assert r.config_get("log_level") == {"log_level": "info"}
    # a fixed answer set to itself is what a harness's set-up does: nothing to change
    assert r.execute_command("CONFIG", "SET", "save", "", "appendonly", "no") == "OK"
    assert "can't set immutable config (ringkv answers save ''" in fails("save", "900 1")


def test_config_set_several_live_settings_and_log_level(r):
    try:
        assert r.execute_command("CONFIG", "SET", "timeout", "120", "log_level", "warning", "maxclients", "500") == "OK"
        got = r.config_get("*")
        assert (got["client_idle_timeout_ms"], got["timeout"], got["log_level"], got["max_connections"]) == (
            "120000", "120", "warning", "500")
    finally:
        r.execute_command("CONFIG", "SET", "client_idle_timeout_ms", "300000", "log_level", "info",
                          "max_connections", "10000")


def test_config_argument_errors_are_redis_7s(shared_node, redis_server, raw_connect):
    """Replies that do not depend on settings, byte for byte as redis-server 7 answers them."""
    cases = [
        ("CONFIG",), ("CONFIG", "GET"), ("CONFIG", "SET"), ("CONFIG", "SET", "maxclients"),
        ("CONFIG", "SET", "maxclients", "10", "timeout"), ("CONFIG", "SET", "nosuch", "1"),
        ("CONFIG", "SET", "maxclients", "10", "maxclients", "11"), ("CONFIG", "GET", "nosuch"),
        ("CONFIG", "FOO"), ("CONFIG", "RESETSTAT", "x"), ("CONFIG", "HELP", "x"),
        ("FUNCTION",), ("FUNCTION", "FLUSH"), ("FUNCTION", "FLUSH", "async"), ("FUNCTION", "FLUSH", "SYNC"),
        ("FUNCTION", "FLUSH", "x"), ("FUNCTION", "FLUSH", "async", "x"), ("FUNCTION", "LIST"),
        ("FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "x*"), ("FUNCTION", "LIST", "x"),
        ("FUNCTION", "LIST", "WITHCODE", "WITHCODE"), ("FUNCTION", "LIST", "LIBRARYNAME"),
        ("FUNCTION", "KILL"), ("FUNCTION", "STATS", "x"), ("FUNCTION", "FOO"),
        ("SCRIPT",), ("SCRIPT", "FLUSH"), ("SCRIPT", "FLUSH", "ASYNC"), ("SCRIPT", "FLUSH", "x"),
        ("SCRIPT", "FLUSH", "sync", "x"), ("SCRIPT", "EXISTS"), ("SCRIPT", "EXISTS", "a" * 40, "b"),
        ("SCRIPT", "KILL"), ("SCRIPT", "KILL", "x"), ("SCRIPT", "FOO"),
    ]
    ours, theirs = raw_connect(shared_node.resp_port), raw_connect(redis_server)
    for case in cases:
        assert ours.command(*case) == theirs.command(*case), case


def test_function_stats_has_no_running_script_and_no_engine(r):
    assert r.execute_command("FUNCTION", "STATS") == {"running_script": None, "engines": {}}
    assert r.execute_command("CONFIG", "HELP")[0].startswith("CONFIG <subcommand>")
    with pytest.raises(redis.ResponseError, match="CONFIG REWRITE is not supported: the node's configuration file"):
        r.execute_command("CONFIG", "REWRITE")


def test_config_set_needs_admin_permission(shared_node, r):
    r.acl_setuser("cfg-reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@admin"])
    user = redis.Redis(port=shared_node.resp_port, username="cfg-reader", password="pw", decode_responses=True)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError,
                           match="User cfg-reader has no permissions to run the 'config\\|set' command"):
            user.config_set("maxclients", 1)
        with pytest.raises(redis.exceptions.NoPermissionError, match="'config\\|get' command"):
            user.config_get("*")
        assert user.execute_command("FUNCTION", "FLUSH") == "OK"  # @write @slow @scripting, as Redis
        refused = httpx.get(f"http://127.0.0.1:{shared_node.http_port}/api/v1/admin/config",
                            auth=("cfg-reader", "pw"), timeout=30)
        assert refused.status_code == 403, refused.text
        assert r.config_get("maxclients") == {"maxclients": "10000"}
    finally:
        user.close()
        r.acl_deluser("cfg-reader")


# ---------------------------------------------------------------------- taking effect on connections


def _closed_within(conn: Any, timeout_s: float) -> bytes:
    conn.sock.settimeout(timeout_s)
    return conn.read_until_closed()


def test_lowered_limits_apply_to_the_next_connections(start_node, raw_connect):
    node = start_node()
    admin = raw_connect(node.resp_port)
    # maxclients: the admin connection is the only one, so a limit of 2 takes one more
    assert admin.command("CONFIG", "SET", "maxclients", "2") == b"+OK\r\n"
    second = raw_connect(node.resp_port)
    assert second.command("PING") == b"+PONG\r\n"
    third = raw_connect(node.resp_port)
    assert _closed_within(third, 5) == b"-ERR max number of clients reached\r\n"
    second.close()
    # max_connections_per_ip on HTTP too: the admin's RESP connection does not count there
    assert admin.command("CONFIG", "SET", "maxclients", "10", "max_connections_per_ip", "1") == b"+OK\r\n"
    first_http = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    second_http = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    try:
        assert second_http.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        first_http.close()
        second_http.close()
    # timeout: an idle connection is closed, the admin's too
    assert admin.command("CONFIG", "SET", "max_connections_per_ip", "0", "client_idle_timeout_ms", "300") \
        == b"+OK\r\n"
    idle = raw_connect(node.resp_port)
    assert idle.command("PING") == b"+PONG\r\n"
    assert _closed_within(idle, 5) == b""
    assert _closed_within(admin, 5) == b""
