"""redis-cli and redis-benchmark, the tools an operator reaches for first, against a real node.

One-shot commands (`redis-cli -p PORT set k v`), the terminal formatting (`--no-raw`) and the
script formatting (`--raw`), commands read from stdin, `--scan`, RESP3 (`-3`), and mass
insertion with `--pipe`, which streams raw RESP and counts the replies.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

CLI = shutil.which("redis-cli")
BENCHMARK = shutil.which("redis-benchmark")

pytestmark = pytest.mark.skipif(CLI is None, reason="redis-cli is not installed")


@pytest.fixture
def node(shared_node):
    redis.Redis(port=shared_node.resp_port).flushall()
    return shared_node


def cli(node, *args: str, stdin: bytes | None = None, exit_code: int = 0) -> str:
    """Run redis-cli against the node, check its exit code, return its output."""
    done = subprocess.run(
        [CLI, "-p", str(node.resp_port), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == exit_code, done.stderr.decode(errors="replace")
    return done.stdout.decode(errors="replace")


def test_one_shot_set_and_get(node):
    assert cli(node, "set", "greeting", "hello world") == "OK\n"
    assert cli(node, "get", "greeting") == "hello world\n"
    assert cli(node, "exists", "greeting", "missing") == "1\n"
    assert cli(node, "del", "greeting") == "1\n"
    assert cli(node, "get", "greeting") == "\n"


def test_no_raw_output_is_formatted_as_in_a_terminal(node):
    cli(node, "set", "k", "v")
    assert cli(node, "--no-raw", "get", "k") == '"v"\n'
    assert cli(node, "--no-raw", "get", "missing") == "(nil)\n"
    assert cli(node, "--no-raw", "incr", "counter") == "(integer) 1\n"
    assert cli(node, "--no-raw", "mget", "k", "missing") == '1) "v"\n2) (nil)\n'
    assert cli(node, "--no-raw", "ttl", "k") == "(integer) -1\n"
    error = cli(node, "--no-raw", "incr", "k")
    assert error == "(error) ERR value is not an integer or out of range\n"


def test_raw_output_prints_values_unquoted(node):
    cli(node, "set", "multiline", "line one\nline two")
    assert cli(node, "--raw", "get", "multiline") == "line one\nline two\n"
    assert cli(node, "--no-raw", "get", "multiline") == '"line one\\nline two"\n'
    assert cli(node, "--raw", "incrbyfloat", "f", "2.5") == "2.5\n"


def test_commands_read_from_stdin_run_in_order(node):
    script = b"set a 1\nincrby a 41\nget a\nexpire a 100\nttl a\nselect 1\n"
    lines = cli(node, stdin=script).splitlines()
    assert lines[:5] == ["OK", "42", "42", "1", "100"]
    assert lines[5] == "ERR DB index is out of range"


def test_info_prints_the_sections(node):
    cli(node, "set", "k", "v")
    out = cli(node, "info")
    for header in ("# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"):
        assert header in out
    assert "db0:keys=1," in out
    assert cli(node, "info", "keyspace").splitlines()[1].startswith("db0:keys=1,")


def test_resp3_mode_shows_hello_as_a_map(node):
    out = cli(node, "-3", "hello", "3")
    assert "server ringkv" in out and "proto 3" in out
    assert cli(node, "-3", "--no-raw", "get", "missing") == "(nil)\n"


def test_scan_mode_lists_every_matching_key(node):
    redis.Redis(port=node.resp_port).mset({f"user:{i}": i for i in range(300)} | {"other": 1})
    keys = cli(node, "--scan", "--pattern", "user:*").split()
    assert sorted(keys) == sorted(f"user:{i}" for i in range(300))


def test_pipe_mode_mass_inserts_10000_keys(node):
    def resp(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    stream = b"".join(resp(b"SET", b"key:%d" % i, b"value:%d" % i) for i in range(10_000))
    out = cli(node, "--pipe", stdin=stream)
    assert "errors: 0, replies: 10000" in out
    client = redis.Redis(port=node.resp_port)
    assert client.dbsize() == 10_000
    assert client.mget("key:0", "key:5000", "key:9999") == [
        b"value:0",
        b"value:5000",
        b"value:9999",
    ]


def test_pipe_mode_counts_errors(node):
    stream = b"SET a 1\r\nINCR a\r\nNOSUCH\r\nGET a\r\n"
    out = cli(node, "--pipe", stdin=stream, exit_code=1)
    assert "errors: 1, replies: 4" in out
    assert redis.Redis(port=node.resp_port).get("a") == b"2"


@pytest.mark.skipif(BENCHMARK is None, reason="redis-benchmark is not installed")
def test_redis_benchmark_runs_its_standard_tests(node):
    done = subprocess.run(
        [
            BENCHMARK,
            "-p",
            str(node.resp_port),
            "-t",
            "set,get,incr,mset",
            "-n",
            "2000",
            "-c",
            "4",
            "-q",
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    for test in ("SET", "GET", "INCR", "MSET (10 keys)"):
        assert f"{test}: " in out and "requests per second" in out
    assert redis.Redis(port=node.resp_port).exists("key:__rand_int__") == 1
