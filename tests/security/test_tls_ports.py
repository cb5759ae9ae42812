"""TLS on a node's client ports, with real clients against a real `ringkv serve`: redis-cli
--tls, redis-py over SSL, httpx over HTTPS, ringkv's own client and CLI. The node serves RESP
only over TLS (resp_port = -1, as Redis's `port 0`), HTTPS on its HTTP port, and requires a
client certificate from its CA. Strangers get nothing: a certificate from another CA, no
certificate, plain text on the TLS port, or a handshake that never finishes (dropped after
tls_handshake_timeout_ms); and the node goes on serving everyone else."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
import redis

from ringkv.client import Client
from ringkv.security.certs import write_dev_certs
from ringkv.testing.launcher import NodeProcess, free_port
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(180)

HANDSHAKE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA with n1's certificate and a client one; and a stranger's CA with its own client."""
    root = tmp_path_factory.mktemp("pki")
    ours = write_dev_certs(root / "ours", ["n1"]).out_dir
    theirs = write_dev_certs(root / "theirs", ["n1"]).out_dir
    return ours, theirs


@pytest.fixture(scope="module")
def node(pki, tmp_path_factory):
    ours, _ = pki
    with NodeProcess(tmp_path_factory.mktemp("node") / "n1", resp_port=-1, tls_port=free_port(), http_tls=True,
                     tls_cert_file=ours / "n1.crt", tls_key_file=ours / "n1.key", tls_ca_file=ours / "ca.crt",
                     tls_client_auth="required", tls_handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS) as n:
        yield n


def tls_port(node: NodeProcess) -> int:
    return int(node.settings["tls_port"])


def client_context(ca_dir, cert_dir=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.crt"))
    if cert_dir is not None:
        ctx.load_cert_chain(str(cert_dir / "client.crt"), str(cert_dir / "client.key"))
    return ctx


def ours_works(node: NodeProcess, ours) -> bool:
    r = redis.Redis(port=tls_port(node), ssl=True, ssl_ca_certs=str(ours / "ca.crt"),
                    ssl_certfile=str(ours / "client.crt"), ssl_keyfile=str(ours / "client.key"), socket_timeout=10)
    try:
        return r.ping()
    finally:
        r.close()


def test_redis_cli_over_tls_sets_and_gets(node, pki):
    ours, _ = pki
    base = ["redis-cli", "--tls", "--cacert", str(ours / "ca.crt"), "--cert", str(ours / "client.crt"),
            "--key", str(ours / "client.key"), "-p", str(tls_port(node))]

    def cli(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert cli("PING") == "PONG"
    assert cli("SET", "greeting", "hello over tls") == "OK"
    assert cli("GET", "greeting") == "hello over tls"


def test_redis_py_with_ssl_and_ringkv_client_and_cli_share_the_data(node, pki):
    ours, _ = pki
    r = redis.Redis(port=tls_port(node), ssl=True, ssl_ca_certs=str(ours / "ca.crt"),
                    ssl_certfile=str(ours / "client.crt"), ssl_keyfile=str(ours / "client.key"), socket_timeout=10)
    assert r.set("user:1", "ada")
    with Client(port=tls_port(node), timeout_ms=10_000, tls=True, ca_file=str(ours / "ca.crt"),
                cert_file=str(ours / "client.crt"), key_file=str(ours / "client.key")) as kv:
        assert kv.get("user:1") == b"ada"
        kv.set("user:2", b"grace")
    assert r.get("user:2") == b"grace"
    r.close()
    got = subprocess.run([sys.executable, "-m", "ringkv.cli", "get", "user:2", "--port", str(tls_port(node)),
                          "--cacert", str(ours / "ca.crt"), "--cert", str(ours / "client.crt"),
                          "--key", str(ours / "client.key"), "--timeout-ms", "10000"],
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "grace"


def test_httpx_over_https_verifies_the_node_with_our_ca(node, pki):
    ours, _ = pki
    base = f"https://127.0.0.1:{node.http_port}"
    with httpx.Client(verify=client_context(ours, ours), timeout=10) as http:
        put = http.put(f"{base}/api/v1/keys/city", json={"value": "Lisbon"})
        assert put.status_code == 200, put.text
        got = http.get(f"{base}/api/v1/keys/city")
        assert got.status_code == 200 and got.json()["value"] == "Lisbon"
    # The certificate names the node: a client that expects another one (n2) refuses it.
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        client_context(ours, ours).wrap_socket(raw, server_hostname="n2")
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as raw, \
            client_context(ours, ours).wrap_socket(raw, server_hostname="n1") as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_certificate_from_another_ca_or_none_is_refused(node, pki):
    ours, theirs = pki
    port = tls_port(node)
    for label, kwargs in [
        ("stranger's certificate", dict(ssl_certfile=str(theirs / "client.crt"), ssl_keyfile=str(theirs / "client.key"))),
        ("no certificate", {}),
    ]:
        r = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ours / "ca.crt"), socket_timeout=10, **kwargs)
        with pytest.raises(redis.ConnectionError):
            r.set("stolen", "yes")
            pytest.fail(f"{label}: the node answered")
        r.close()
    # HTTPS refuses them the same way.
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
            httpx.Client(verify=client_context(ours, theirs), timeout=10) as http:
        http.put(f"https://127.0.0.1:{node.http_port}/api/v1/keys/stolen", json={"value": "yes"})
    assert ours_works(node, ours)
    r = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ours / "ca.crt"), ssl_certfile=str(ours / "client.crt"),
                    ssl_keyfile=str(ours / "client.key"), socket_timeout=10)
    assert r.get("stolen") is None
    r.close()


def test_plain_text_on_the_tls_ports_gets_nothing_usable_and_the_node_carries_on(node, pki):
    ours, _ = pki
    for port, request in [(tls_port(node), b"SET plain yes\r\nPING\r\n"),
                          (node.http_port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            answer = b""
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        # At most a TLS alert record (content type 21): never a RESP or HTTP answer.
        assert b"PONG" not in answer and b"+OK" not in answer and b"HTTP/" not in answer, answer
        assert answer == b"" or answer[0] == 0x15, answer
    assert ours_works(node, ours)
    assert node.running


def test_an_unfinished_handshake_is_dropped_after_the_bound(node, pki):
    ours, _ = pki
    for port in (tls_port(node), node.http_port):
        # Connect and send half a ClientHello's record header, then nothing.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            started = time.monotonic()
            s.sendall(b"\x16\x03\x01")
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            took = time.monotonic() - started
        assert data == b"", data
        # Dropped by the bound, not by some later timeout (a loaded machine may add seconds).
        assert HANDSHAKE_TIMEOUT_MS / 1000 * 0.9 <= took < HANDSHAKE_TIMEOUT_MS / 1000 + 15, (port, took)
    assert ours_works(node, ours)


def test_bad_tls_files_at_start_stop_the_node_with_the_setting_and_file_named(tmp_path, pki):
    ours, theirs = pki
    cases = [
        (dict(tls_cert_file=tmp_path / "nope.crt", tls_key_file=ours / "n1.key"),
         f"tls_cert_file: cannot read {tmp_path / 'nope.crt'}"),
        (dict(tls_cert_file=ours / "n1.crt", tls_key_file=theirs / "n1.key"),
         f"tls_key_file: {theirs / 'n1.key'} does not match the certificate in tls_cert_file {ours / 'n1.crt'}"),
        (dict(tls_cert_file=ours / "n1.crt", tls_key_file=ours / "n1.key", tls_client_auth="required"),
         "tls_ca_file: must name the CA that signs client certificates when tls_client_auth=required"),
    ]
    for i, (settings, message) in enumerate(cases):
        n = NodeProcess(tmp_path / f"bad{i}", tls_port=free_port(), **settings)
        n.start(wait=False)
        code = wait_until(n.poll, 60, "the node exits on its bad TLS setting")
        assert code == 2, n.log_tail()
        assert f"bad configuration: {message}" in n.log_tail(), n.log_tail()
        assert not (tmp_path / f"bad{i}").exists(), "the data directory was made before the check"


def test_a_fresh_tls_connection_has_nothing_unasked_to_read(node, pki):
    """The node sends no TLS 1.3 session tickets after the handshake: redis-py's pool checks a
    new connection for unread bytes and refuses it when there are any, which failed the test
    above under load ("Connection has data", then "Connection not ready")."""
    ours, _ = pki
    ctx = client_context(ours, ours)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", tls_port(node)), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        readable, _, _ = select.select([tls], [], [], 0.5)  # raw bytes; tickets would come within this
        assert readable == [] and tls.pending() == 0
        tls.sendall(b"PING\r\n")
        assert tls.recv(64) == b"+PONG\r\n"
