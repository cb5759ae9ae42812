"""`ringkv admin certs`, run as an operator runs it: the files it writes form a chain an
OpenSSL client accepts, each node certificate names its node (CN and SANs, as RPC mutual TLS
checks), keys are private to their owner, nothing is overwritten without --force and the CA
never is. And the checks a node makes of its TLS files name the setting and the file."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringkv.errors import ConfigError
from ringkv.security.certs import write_dev_certs
from ringkv.security.tls import ServerTlsFiles, check_server_files, server_context

pytestmark = pytest.mark.timeout(120)


def ringkv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, text=True, timeout=60)


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_admin_certs_writes_a_ca_node_certificates_and_a_client_certificate_that_openssl_verifies(tmp_path):
    out = tmp_path / "certs"
    done = ringkv("admin", "certs", "--out", str(out), "--nodes", "n1,n2,n3", "--hosts", "db1.example.org,10.1.2.3",
                  "--days", "30")
    assert done.returncode == 0, done.stderr
    assert "made a new CA" in done.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key", "n2.crt", "n2.key",
                            "n3.crt", "n3.key"])
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"),
                             *(str(out / f"{n}.crt") for n in ("n1", "n2", "n3", "client"))],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    ca = load(out / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for node_id in ("n1", "n2", "n3"):
        cert = load(out / f"{node_id}.crt")
        assert cert.issuer == ca.subject
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node_id
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [node_id, "localhost", "db1.example.org"]
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("10.1.2.3")]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 30 <= lifetime.days <= 31
        key = serialization.load_pem_private_key((out / f"{node_id}.key").read_bytes(), password=None)
        assert key.public_key() == cert.public_key()
    client = load(out / "client.crt")
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client"
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    for path in out.iterdir():
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), (path, oct(mode))


def test_admin_certs_refuses_to_overwrite_and_keeps_the_ca_when_forced(tmp_path):
    out = tmp_path / "certs"
    assert ringkv("admin", "certs", "--out", str(out), "--nodes", "n1").returncode == 0
    ca_before = (out / "ca.crt").read_bytes()
    n1_before = (out / "n1.crt").read_bytes()
    n1_serial_before = load(out / "n1.crt").serial_number

    again = ringkv("admin", "certs", "--out", str(out), "--nodes", "n1")
    assert again.returncode == 2
    assert f"would overwrite {out / 'n1.crt'}" in again.stderr and "--force" in again.stderr
    assert (out / "n1.crt").read_bytes() == n1_before

    forced = ringkv("admin", "certs", "--out", str(out), "--nodes", "n1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "signed with the existing CA" in forced.stdout
    assert (out / "ca.crt").read_bytes() == ca_before
    renewed = load(out / "n1.crt")
    assert renewed.serial_number != n1_serial_before
    assert renewed.issuer == load(out / "ca.crt").subject

    # A node added later is signed by the same CA; the client name moves aside to not collide.
    more = ringkv("admin", "certs", "--out", str(out), "--nodes", "n4", "--client-name", "app")
    assert more.returncode == 0, more.stderr
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "n4.crt")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("args, message", [
    (["--nodes", "n1,n1"], "--nodes: a node id is listed twice"),
    (["--nodes", "n/1"], "--nodes: 'n/1' must be"),
    (["--hosts", "not a host"], "--hosts: 'not a host' is neither an IP address nor a DNS name"),
    (["--days", "0"], "Invalid value for '--days'"),
])
def test_admin_certs_names_the_bad_argument_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "certs"
    done = ringkv("admin", "certs", "--out", str(out), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_lone_ca_key_is_refused_rather_than_replaced(tmp_path):
    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca.key").write_text("mine")
    with pytest.raises(ConfigError, match=r"ca\.key exists without its pair"):
        write_dev_certs(out, ["n1"])
    assert (out / "ca.key").read_text() == "mine"


def test_tls_file_problems_name_the_setting_and_the_file(tmp_path):
    a = write_dev_certs(tmp_path / "a", ["n1"]).out_dir
    b = write_dev_certs(tmp_path / "b", ["n1"]).out_dir
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    cases = [
        (ServerTlsFiles(str(tmp_path / "missing.crt"), str(a / "n1.key")),
         f"tls_cert_file: cannot read {tmp_path / 'missing.crt'}: No such file or directory"),
        (ServerTlsFiles(str(tmp_path / "garbage.pem"), str(a / "n1.key")),
         f"tls_cert_file: {tmp_path / 'garbage.pem'} holds no PEM certificate"),
        (ServerTlsFiles(str(a / "n1.crt"), str(a / "n1.crt")),
         f"tls_key_file: {a / 'n1.crt'} holds no PEM private key"),
        (ServerTlsFiles(str(a / "n1.crt"), str(b / "n1.key")),
         f"tls_key_file: {b / 'n1.key'} does not match the certificate in tls_cert_file {a / 'n1.crt'}"),
        (ServerTlsFiles(str(a / "n1.crt"), str(a / "n1.key"), str(tmp_path / "garbage.pem"), "required"),
         f"tls_ca_file: {tmp_path / 'garbage.pem'} holds no PEM certificate"),
        (ServerTlsFiles(str(a / "n1.crt"), str(a / "n1.key"), "/dev/zero"),
         "tls_ca_file: /dev/zero is larger than 1048576 bytes"),
    ]
    for files, message in cases:
        with pytest.raises(ConfigError) as caught:
            server_context(files)
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(ConfigError, match="tls_ca_file: must name the CA"):
        ServerTlsFiles(str(a / "n1.crt"), str(a / "n1.key"), client_auth="required")
    summary = check_server_files(ServerTlsFiles(str(a / "n1.crt"), str(a / "n1.key")))
    assert "CN=n1" in summary.subject
