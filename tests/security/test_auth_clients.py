"""ringkv's own clients with credentials, against a real `ringkv serve` process: `Client` and
`AsyncClient` (username/password arguments, `ringkv://user:password@host:port`, RINGKV_USER /
RINGKV_PASSWORD) and the command line (`--user`, `--pass`, `--url`, the same variables).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from click.testing import CliRunner

from ringkv.cli import main
from ringkv.client import AsyncClient, AuthenticationFailedError, Client, ServerError
from ringkv.client.options import parse_url
from ringkv.errors import ConfigError
from ringkv.testing.launcher import NodeProcess

ADMIN_PASSWORD = "admin-pw-for-client-tests"
PASSWORD = "p@ss:w/rd"  # needs percent-encoding in a URL
URL_PASSWORD = "p%40ss%3Aw%2Frd"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("client-auth")
    secret = root / "admin.password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    secret.chmod(0o600)
    with NodeProcess(root / "n1", admin_password_file=str(secret), auth_backoff_after_failures=1000) as n:
        admin = redis.Redis(port=n.resp_port, username="admin", password=ADMIN_PASSWORD, protocol=2)
        admin.acl_setuser("app", enabled=True, passwords=["+" + PASSWORD], keys=["app:*"], commands=["+@all",
                                                                                                  "-@dangerous"])
        admin.close()
        yield n


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch):
    for name in ("RINGKV_USER", "RINGKV_PASSWORD", "RINGKV_URL"):
        monkeypatch.delenv(name, raising=False)


def test_client_with_username_and_password(node):
    with Client("127.0.0.1", node.resp_port, username="app", password=PASSWORD, timeout_ms=30_000) as kv:
        kv.set("app:1", b"v")
        assert kv.get("app:1") == b"v"
        with pytest.raises(ServerError, match="No permissions to access a key"):
            kv.set("other", b"v")
        assert PASSWORD not in repr(kv.options)


def test_wrong_or_missing_credentials_fail_at_once_without_retries(node):
    before = _failures(node)
    with Client("127.0.0.1", node.resp_port, username="app", password="wrong", timeout_ms=30_000, retries=5) as kv:
        with pytest.raises(AuthenticationFailedError, match="invalid username-password pair") as info:
            kv.get("app:1")
        assert "wrong" not in str(info.value)
    assert _failures(node) == before + 1  # one attempt: a retry would only feed the backoff
    with Client("127.0.0.1", node.resp_port, timeout_ms=30_000) as kv, pytest.raises(AuthenticationFailedError):
        kv.get("app:1")


def _failures(node: NodeProcess) -> int:
    return sum(1 for line in node.log_path.read_text().splitlines()
               if " ringkv.audit: " in line and '"auth_failure"' in line)


def test_credentials_from_a_url(node):
    url = f"ringkv://app:{URL_PASSWORD}@127.0.0.1:{node.resp_port}"
    with Client.from_url(url, timeout_ms=30_000) as kv:
        assert kv.options.username == "app" and kv.options.password == PASSWORD
        kv.set("app:url", b"u")
        assert kv.get("app:url") == b"u"
    assert parse_url("ringkv://:pw@h") == ("h", 7379, None, "pw")
    with pytest.raises(ConfigError) as info:
        parse_url("ringkv://app:secretpw@h:1/path")
    assert "secretpw" not in str(info.value)
    with pytest.raises(ConfigError, match="without a password"):
        parse_url("ringkv://app@h")


def test_credentials_from_the_environment(node, monkeypatch):
    monkeypatch.setenv("RINGKV_USER", "app")
    monkeypatch.setenv("RINGKV_PASSWORD", PASSWORD)
    with Client("127.0.0.1", node.resp_port, timeout_ms=30_000) as kv:
        kv.set("app:env", b"e")
        assert kv.get("app:env") == b"e"
    # Arguments win over the environment.
    with Client("127.0.0.1", node.resp_port, username="app", password="wrong", timeout_ms=30_000) as kv, \
            pytest.raises(AuthenticationFailedError):
        kv.get("app:env")


def test_a_username_needs_a_password():
    with pytest.raises(ConfigError, match="password: must be given with username"):
        Client(username="app")


def test_async_client_with_credentials(node):
    async def scenario() -> None:
        async with AsyncClient("127.0.0.1", node.resp_port, username="app", password=PASSWORD,
                               timeout_ms=30_000) as kv:
            await kv.set("app:aio", b"a")
            assert await kv.get("app:aio") == b"a"
        async with AsyncClient("127.0.0.1", node.resp_port, username="app", password="bad",
                               timeout_ms=30_000) as kv:
            with pytest.raises(AuthenticationFailedError):
                await kv.get("app:aio")

    asyncio.run(scenario())


# ---------------------------------------------------------------------- the command line


def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_cli_takes_user_and_password_from_flags_env_and_url(node):
    port = str(node.resp_port)
    put = run_cli("put", "app:cli", "c", "--port", port, "--user", "app", "--pass", PASSWORD, "--timeout-ms", "30000")
    assert put.exit_code == 0, put.output
    got = run_cli("get", "app:cli", "--port", port, "--json", "--timeout-ms", "30000",
                  env={"RINGKV_USER": "app", "RINGKV_PASSWORD": PASSWORD})
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["value"] == "c"
    url = run_cli("get", "app:cli", "--raw", "--timeout-ms", "30000",
                  "--url", f"ringkv://app:{URL_PASSWORD}@127.0.0.1:{port}")
    assert url.exit_code == 0 and url.stdout.strip() == "c", url.output


def test_cli_refused_credentials_exit_4_without_showing_the_password(node):
    port = str(node.resp_port)
    bad = run_cli("get", "app:cli", "--port", port, "--json", "--timeout-ms", "30000",
                  env={"RINGKV_USER": "app", "RINGKV_PASSWORD": "not-the-password"})
    assert bad.exit_code == 4, bad.output
    doc = json.loads(bad.stdout)
    assert doc["error"]["kind"] == "authentication_failed"
    assert "not-the-password" not in bad.output
    none = run_cli("get", "app:cli", "--port", port, "--timeout-ms", "30000")
    assert none.exit_code == 4 and "RINGKV_PASSWORD" in none.output
    denied = run_cli("put", "other", "x", "--port", port, "--user", "app", "--pass", PASSWORD,
                     "--timeout-ms", "30000")
    assert denied.exit_code == 4 and "No permissions to access a key" in denied.output
