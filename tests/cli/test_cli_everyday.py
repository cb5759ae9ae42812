"""The everyday CLI against a real 3-node cluster, as a shell runs it: `--consistency` on
get/put/del decides whether a request with a replica down succeeds; several `--host` seeds
fail over (in the CLI and in the Python client) when one refuses; `cluster status` shows a
nodetool-like state column and human units; `ringkv version` and `ringkv completion`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ringkv.client import AsyncClient, Client, ConnectionFailedError
from ringkv.testing.launcher import LocalCluster, free_port
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, replica_timeout_ms=1000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("everyday"), nodes=3, **SETTINGS) as c:
        yield c


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}


def ringkv(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, text=True,
                          env={**_env(), **(env or {})}, timeout=60)


def at(node, *args: str) -> subprocess.CompletedProcess:
    return ringkv(*args, "--host", "127.0.0.1", "--port", str(node.resp_port))


def test_consistency_decides_whether_a_request_with_a_replica_down_succeeds(cluster):
    n1, _, n3 = cluster.nodes
    redis.Redis(port=n1.resp_port).execute_command("RINGKV.AT", "ALL", "SET", "c:key", "v1")
    n3.kill()
    try:
        refused = at(n1, "put", "c:key", "v2", "--consistency", "ALL", "--json")
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert json.loads(refused.stdout)["error"]["kind"] == "server_error"
        assert at(n1, "put", "c:key", "v3", "--consistency", "one").returncode == 0
        got = at(n1, "get", "c:key", "--consistency", "QUORUM")
        assert (got.returncode, got.stdout) == (0, "v3")
        deleted = at(n1, "del", "c:key", "--consistency", "quorum", "--json")
        assert deleted.returncode == 0 and json.loads(deleted.stdout)["deleted"] == 1
        status = at(n1, "cluster", "status")
        assert status.returncode == 1  # a member is down
        rows = {m.group(2): m.group(1) for m in re.finditer(r"^\s*(UN|DN)\s+(n\d)\b", status.stdout, re.M)}
        assert rows == {"n1": "UN", "n2": "UN", "n3": "DN"}, status.stdout
    finally:
        n3.start()
        # The next tests share the cluster: n1 must see n3 up again (its calls to n3 back off
        # for a second or so after the refusals), not only n3 answer PING.
        wait_until(lambda: at(n1, "cluster", "status").returncode == 0, 30,
                   "n1 to see every member up again", interval_s=0.5)


def test_cluster_status_shows_state_and_human_units(cluster):
    n1 = cluster.nodes[0]
    done = at(n1, "cluster", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {m.group(2): m.group(1) for m in re.finditer(r"^\s*(UN|DN|UJ|UL)\s+(n\d)\b", done.stdout, re.M)}
    assert rows == {"n1": "UN", "n2": "UN", "n3": "UN"}, done.stdout
    # Memory in MiB (a Python process holds tens of them) and disk in B, KiB or MiB.
    assert len(re.findall(r"\b\d[\d.]* MiB\b", done.stdout)) >= 3, done.stdout
    assert "N/J/L" in done.stdout  # the legend


def test_several_hosts_fail_over_to_the_next_seed(cluster):
    n1, n2, _ = cluster.nodes
    redis.Redis(port=n1.resp_port).set("seed:key", "via-seeds")
    dead, other = free_port(), free_port()
    got = ringkv("get", "seed:key", "--host", f"127.0.0.1:{dead}", "--host", f"127.0.0.1:{n2.resp_port}")
    assert (got.returncode, got.stdout) == (0, "via-seeds"), got.stderr
    # RINGKV_HOST holds several, separated by spaces (or commas); cluster status follows them too.
    status = ringkv("cluster", "status", "--json", env={"RINGKV_HOST": f"127.0.0.1:{dead} 127.0.0.1:{n1.resp_port}"})
    assert status.returncode == 0 and len(json.loads(status.stdout)["nodes"]) == 3, status.stderr
    # Every seed refusing: exit 3, naming the seeds tried.
    failed = ringkv("get", "seed:key", "--host", f"127.0.0.1:{dead},127.0.0.1:{other}", "--json")
    assert failed.returncode == 3
    message = json.loads(failed.stdout)["error"]["message"]
    assert str(dead) in message and str(other) in message


def test_python_client_moves_to_the_next_seed_and_stays_there(cluster):
    n1, n2, _ = cluster.nodes
    dead = free_port()
    with Client("127.0.0.1", dead, seeds=[f"127.0.0.1:{n1.resp_port}", ("127.0.0.1", n2.resp_port)],
                retries=0) as kv:
        kv.set("py:seed", "x")  # not idempotent: a refused connect is safe to move on from
        assert kv.get("py:seed") == b"x"
        assert kv.address == f"127.0.0.1:{n1.resp_port}"
    with (Client("127.0.0.1", dead, seeds=[f"127.0.0.1:{free_port()}"], retries=1, backoff_base_ms=1) as kv,
          pytest.raises(ConnectionFailedError)):
        kv.get("py:seed")


def test_async_client_moves_to_the_next_seed_and_stays_there(cluster):
    n1, n2, _ = cluster.nodes
    dead = free_port()

    async def scenario():
        async with AsyncClient("127.0.0.1", dead, seeds=[("127.0.0.1", n2.resp_port), f"127.0.0.1:{n1.resp_port}"],
                               retries=0) as kv:
            await kv.set("aio:seed", "y")
            assert await kv.get("aio:seed") == b"y"
            assert kv.address == f"127.0.0.1:{n2.resp_port}"
        async with AsyncClient("127.0.0.1", dead, seeds=[f"127.0.0.1:{free_port()}"], retries=1,
                               backoff_base_ms=1) as kv:
            with pytest.raises(ConnectionFailedError):
                await kv.get("aio:seed")

    asyncio.run(scenario())


def test_version_and_completion_scripts():
    version = ringkv("version")
    assert version.returncode == 0 and re.fullmatch(r"ringkv \d+\.\d+\.\d+\S* \(Python 3\.\d+\.\d+\)\n",
                                                      version.stdout), version.stdout
    doc = json.loads(ringkv("version", "--json").stdout)
    assert doc["version"] and doc["python"].startswith("3.")
    # bash's script is run by the next test.
    for shell, marker in (("zsh", "#compdef ringkv"), ("fish", "complete --no-files --command ringkv")):
        script = ringkv("completion", shell)
        assert script.returncode == 0 and marker in script.stdout, (shell, script.stdout[:300])


RINGKV_SCRIPT = Path(sys.executable).with_name("ringkv")  # the console script (pyproject.toml)


@pytest.mark.skipif(shutil.which("bash") is None or not RINGKV_SCRIPT.exists(),
                    reason="needs bash and the ringkv console script")
def test_bash_completes_subcommands_and_options_through_the_script():
    script = ringkv("completion", "bash").stdout
    env = {**_env(), "PATH": f"{RINGKV_SCRIPT.parent}:{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        ["bash", "-c", script + '\nCOMP_WORDS=(ringkv clu); COMP_CWORD=1; _ringkv_completion ringkv; '
         'printf "%s\\n" "${COMPREPLY[@]}"; echo --; COMPREPLY=(); COMP_WORDS=(ringkv get --cons); '
         'COMP_CWORD=2; _ringkv_completion ringkv; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, timeout=60, env=env)
    assert run.stdout.split() == ["cluster", "--", "--consistency"], run.stdout + run.stderr
