"""Certificate rotation without a restart, as an operator does it: replace the node's files
(`ringkv admin certs --force`: a new serial from the same CA), send SIGHUP, and new connections
on both TLS ports get the new certificate while a connection opened before carries on. A
broken file sent in by mistake changes nothing but a log line saying why. Plain RESP is served
beside TLS all along."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys

import pytest
import redis
from cryptography import x509

from ringkv.testing.launcher import NodeProcess, free_port
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(180)


def admin_certs(out, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "certs", "--out", str(out), "--nodes", "n1",
                           *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def served_serial(port: int, ca) -> int:
    """The serial of the certificate a new connection to `port` is shown (verified by `ca`)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def file_serial(path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_sighup_rotates_certificates_for_new_connections_and_keeps_open_ones(tmp_path):
    certs = tmp_path / "certs"
    admin_certs(certs)
    ca = certs / "ca.crt"
    first = file_serial(certs / "n1.crt")
    tls_port = free_port()
    with NodeProcess(tmp_path / "n1", tls_port=tls_port, http_tls=True, tls_cert_file=certs / "n1.crt",
                     tls_key_file=certs / "n1.key") as node:
        assert served_serial(tls_port, ca) == first
        assert served_serial(node.http_port, ca) == first
        before = redis.Redis(port=tls_port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=10,
                             single_connection_client=True)
        assert before.set("k", "before rotation")

        admin_certs(certs, "--force")
        second = file_serial(certs / "n1.crt")
        assert second != first
        os.kill(node.proc.pid, signal.SIGHUP)
        wait_until(lambda: served_serial(tls_port, ca) == second, 30, "new RESP connections get the new certificate")
        assert served_serial(node.http_port, ca) == second
        assert "TLS reloaded" in node.log_tail()
        # The connection made before the rotation is the same one, and still works.
        assert before.get("k") == b"before rotation"
        assert before.set("k", "after rotation")
        after = redis.Redis(port=tls_port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=10)
        assert after.get("k") == b"after rotation"
        assert redis.Redis(port=node.resp_port, socket_timeout=10).get("k") == b"after rotation"

        # A key file half-written or mistyped: the node keeps what it had and says why.
        (certs / "n1.key").write_text("-----BEGIN PRIVATE KEY-----\ntruncated\n")
        os.kill(node.proc.pid, signal.SIGHUP)
        wait_until(lambda: "TLS reload failed" in node.log_tail(), 30, "the failed reload is logged")
        line = next(ln for ln in node.log_tail().splitlines() if "TLS reload failed" in ln)
        assert f"tls_key_file: {certs / 'n1.key'} holds no PEM private key" in line
        assert f"serial {second:x}" in line
        assert served_serial(tls_port, ca) == second
        assert after.get("k") == b"after rotation"
        assert before.get("k") == b"after rotation"
        before.close()
        after.close()
        assert node.running
