"""Development TLS material: a certificate authority, a certificate per node and one for a
client, all in one directory (`ringkv admin certs`). docs/security.md, "TLS on the client
ports", says how to use them; production deployments bring certificates from their own CA.

What is made, with `DIR` the output directory:

    ca.crt, ca.key          the CA (kept when DIR already has one: see `write_dev_certs`)
    <node>.crt, <node>.key  per node: subject CN = the node id; SANs = the node id, localhost,
                            127.0.0.1 and the extra hosts; usable as a server certificate (RESP,
                            HTTP, RPC) and as a client one (RPC mutual TLS), so another node can
                            check the node id against CN and SANs
    client.crt, client.key  a client certificate (CN = `client_name`), for tls_client_auth

Keys are ECDSA P-256: every TLS 1.2+ client has it, and its handshakes cost a fraction of
RSA-2048's. Keys are written with mode 0600, certificates 0644. Nothing is overwritten without
`force`, and an existing CA is never replaced (certificates it signed stay valid): a new CA
means a new directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringkv.errors import ConfigError

DEFAULT_CERT_DAYS = 365
MAX_CERT_DAYS = 3650  # ten years: a development CA should not outlive the machine it is on
MAX_NODES = 1000
MAX_HOSTS = 100
# Certificates start this long before "now", so a peer whose clock is a little behind still
# accepts a freshly made one.
BACKDATE = datetime.timedelta(hours=1)
CA_FILE, CA_KEY_FILE = "ca.crt", "ca.key"
DEFAULT_CLIENT_NAME = "client"
KEY_MODE = 0o600
CERT_MODE = 0o644
CA_COMMON_NAME = "ringkv development CA"
ORGANIZATION = "ringkv"
# A node id or client name becomes a file name and a DNS SAN: the node_id rule of node/config.py.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A DNS name as a SAN: labels of letters, digits and '-', or a leading wildcard label.
_HOST = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class Authority:
    """A CA's key and certificate, which sign the others."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, days: int, now: datetime.datetime) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                          x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        """The CA in these files; ConfigError("out") naming the file that cannot be used."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError("out", f"{cert_path} is not a PEM certificate ringkv can use as the CA: {exc}") from None
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError("out", f"{key_path} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ConfigError("out", f"{key_path} is not the key of the CA certificate {cert_path}")
        return cls(key, cert)

    def issue(self, common_name: str, dns_names: list[str], ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
              *, server: bool, days: int, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and a certificate for it signed by this CA. `server`: valid for TLS servers
        as well as clients (a node's); otherwise a client certificate only."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                                     x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            # Never outlives the CA: a chain is only as valid as its shortest link.
            .not_valid_after(min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ip) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


@dataclass(frozen=True)
class DevCerts:
    """What `write_dev_certs` did: the files it wrote, and whether it made the CA."""

    out_dir: Path
    written: list[Path]
    ca_created: bool

    @property
    def ca_file(self) -> Path:
        return self.out_dir / CA_FILE


def parse_hosts(hosts: list[str]) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Extra SANs: each an IP address or a DNS name; ConfigError("hosts") naming a bad one."""
    if len(hosts) > MAX_HOSTS:
        raise ConfigError("hosts", f"at most {MAX_HOSTS} hosts, got {len(hosts)}")
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        try:
            ips.append(ipaddress.ip_address(host.strip("[]")))
            continue
        except ValueError:
            pass
        if len(host) > 253 or not _HOST.fullmatch(host):
            raise ConfigError("hosts", f"{host!r} is neither an IP address nor a DNS name")
        dns.append(host.lower())
    return dns, ips


def _check_name(field: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ConfigError(field, f"{name!r} must be 1..64 letters, digits, '-', '_' or '.' (a node id)")


def write_dev_certs(out_dir: str | os.PathLike, node_ids: Sequence[str], hosts: Sequence[str] = (), *,
                    days: int = DEFAULT_CERT_DAYS, force: bool = False, client_name: str = DEFAULT_CLIENT_NAME,
                    now: datetime.datetime | None = None) -> DevCerts:
    """Write the CA (unless `out_dir` has one), a certificate per node and a client certificate.

    Every argument is checked before anything is written; a file that exists is refused
    (ConfigError naming it) unless `force`. The CA in `out_dir` (ca.crt and ca.key) is reused
    when present, never overwritten, so certificates it signed earlier stay valid.
    """
    out = Path(out_dir)
    if not 1 <= days <= MAX_CERT_DAYS:
        raise ConfigError("days", f"must be 1..{MAX_CERT_DAYS}, got {days}")
    if not node_ids or len(node_ids) > MAX_NODES:
        raise ConfigError("nodes", f"must name 1..{MAX_NODES} node ids, got {len(node_ids)}")
    for node_id in node_ids:
        _check_name("nodes", node_id)
    if len(set(node_ids)) != len(node_ids):
        raise ConfigError("nodes", f"a node id is listed twice: {','.join(node_ids)}")
    _check_name("client_name", client_name)
    if client_name in node_ids or client_name == "ca":
        raise ConfigError("client_name", f"{client_name!r} is also a node id or the CA's file name")
    node_ids = list(node_ids)
    extra_dns, extra_ips = parse_hosts(list(hosts))
    now = now or datetime.datetime.now(datetime.UTC)

    ca_cert_path, ca_key_path = out / CA_FILE, out / CA_KEY_FILE
    has_ca = ca_cert_path.exists() or ca_key_path.exists()
    if has_ca and not (ca_cert_path.exists() and ca_key_path.exists()):
        lone = ca_cert_path if ca_cert_path.exists() else ca_key_path
        raise ConfigError("out", f"{lone} exists without its pair ({CA_FILE} and {CA_KEY_FILE} go together); "
                                 "remove it or use another directory")
    targets = [out / f"{name}.{ext}" for name in [*node_ids, client_name] for ext in ("crt", "key")]
    if not force:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise ConfigError("out", f"would overwrite {', '.join(existing)}; pass --force to replace them "
                                     f"(the CA in {out} is kept either way)")
    out.mkdir(parents=True, exist_ok=True)
    ca = Authority.load(ca_cert_path, ca_key_path) if has_ca else Authority.create(days, now)
    written: list[Path] = []
    if not has_ca:
        written += _write_pair(out, "ca", ca.key, ca.cert)
    loopback = [ipaddress.ip_address("127.0.0.1")]
    for node_id in node_ids:
        dns = list(dict.fromkeys([node_id.lower(), "localhost", *extra_dns]))
        ips = list(dict.fromkeys([*loopback, *extra_ips]))
        key, cert = ca.issue(node_id, dns, ips, server=True, days=days, now=now)
        written += _write_pair(out, node_id, key, cert)
    key, cert = ca.issue(client_name, [], [], server=False, days=days, now=now)
    written += _write_pair(out, client_name, key, cert)
    return DevCerts(out, written, ca_created=not has_ca)


def _write_pair(out: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> list[Path]:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = out / f"{name}.key", out / f"{name}.crt"
    _write_file(key_path, key_pem, KEY_MODE)
    _write_file(cert_path, cert_pem, CERT_MODE)
    return [cert_path, key_path]


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file created with `mode` and rename it into place: the key is
    never readable by others, not even for a moment, and a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; set exactly these
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.close(fd)
    os.replace(tmp, path)
