"""The exit codes and help scripts rely on: 0 ok, 1 no such key / nothing deleted / key
exists, 2 usage, 3 node unreachable, 4 node error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ringkv.testing.launcher import NodeProcess, free_port


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("cli-exit") / "n1", http_enabled="false") as n:
        yield n


def ringkv(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RINGKV_HOST", "RINGKV_PORT")}
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], input=stdin,
                          capture_output=True, env=env, timeout=30)


def test_get_of_a_missing_key_exits_1(node) -> None:
    port = str(node.resp_port)
    human = ringkv("get", "no-such-key", "--port", port)
    assert human.returncode == 1 and human.stdout == b"" and b"not found" in human.stderr
    machine = ringkv("get", "no-such-key", "--port", port, "--json")
    assert machine.returncode == 1
    assert json.loads(machine.stdout) == {"key": "no-such-key", "found": False, "value": None, "version": None}


def test_del_of_keys_that_do_not_exist_exits_1(node) -> None:
    result = ringkv("del", "nothing", "here", "--port", str(node.resp_port))
    assert result.returncode == 1 and b"deleted 0 of 2 keys" in result.stdout


def test_an_unreachable_node_exits_3_naming_the_address() -> None:
    port = str(free_port())
    human = ringkv("get", "k", "--port", port, "--timeout-ms", "200")
    assert human.returncode == 3
    assert f"127.0.0.1:{port}".encode() in human.stderr and b"could not reach" in human.stderr
    machine = ringkv("put", "k", "v", "--port", port, "--json")
    assert machine.returncode == 3
    error = json.loads(machine.stdout)["error"]
    assert error["kind"] == "unreachable" and f"127.0.0.1:{port}" in error["message"]


def test_an_error_from_the_node_exits_4(node) -> None:
    # Over the node's default max_value_bytes (1 MiB): the node refuses it.
    too_big = b"x" * (1024 * 1024 + 1)
    result = ringkv("put", "big", "-", "--port", str(node.resp_port), "--json", stdin=too_big)
    assert result.returncode == 4
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "server_error" and "max_value_bytes" in error["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["get"],  # KEY missing
        ["put", "k"],  # VALUE missing
        ["del"],  # at least one KEY
        ["put", "k", "v", "--ttl", "0"],
        ["scan", "--count", "0"],
        ["get", "k", "--port", "70000"],
        ["get", "k", "--raw", "--json"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    # Caught before any connection is tried: no node is needed to see them.
    result = ringkv(*args)
    assert result.returncode == 2, result.stderr
    assert b"Usage:" in result.stderr or b"Error:" in result.stderr


@pytest.mark.parametrize("command", ["get", "put", "del", "scan", "info"])
def test_every_command_has_help_with_the_shared_options(command: str) -> None:
    result = ringkv(command, "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for option in ("--host", "--port", "--timeout-ms", "--json", "RINGKV_PORT", "Exit codes"):
        assert option in text


def test_top_level_help_lists_the_commands_and_exit_codes() -> None:
    text = ringkv("--help").stdout.decode()
    for word in ("get", "put", "del", "scan", "info", "serve", "demo", "could not reach"):
        assert word in text
