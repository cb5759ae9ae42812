"""TLS contexts for ringkv's listeners and clients, and certificate reload without a restart.

Server side (`ServerTls`): the node's certificate and key, the CA that client certificates must
chain to, and whether clients must present one (none / optional / required), read from the
files the `tls_*` settings name. Every file is checked before it is used, and a problem is a
`ConfigError` naming the setting and the file ("tls_key_file: /etc/ringkv/n1.key does not
match the certificate in tls_cert_file /etc/ringkv/n1.crt"). TLS 1.2 is the minimum; cipher
choice is Python's default (forward-secret AEAD suites only); renegotiation is refused.

Reload (`ServerTls.reload`, on SIGHUP): the files are read again into a new context. The
listeners keep the context they were created with, whose SNI callback (OpenSSL calls it for
every ClientHello, with or without a server name) switches each new connection to the newest
context: its certificate, key and CA. Connections already open keep theirs. A reload that
fails keeps the context in use and says why; the node never serves without a certificate.

Client side (`client_context`): verify the server against a CA file (or the system's), present
a client certificate if given.

docs/security.md, "TLS on the client ports", is the user's reference.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import stat
from dataclasses import dataclass

from ringkv.errors import ConfigError

log = logging.getLogger("ringkv.tls")

CLIENT_AUTH_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# A PEM file larger than this is not a certificate chain or a key: refuse it before reading
# further (a setting that names /dev/zero or a log file must not hang or fill the node).
MAX_PEM_FILE_BYTES = 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT_MS = 5_000
MAX_HANDSHAKE_TIMEOUT_MS = 600_000


@dataclass(frozen=True)
class ServerTlsFiles:
    """What a TLS listener is made of; the settings' names are in every error."""

    cert_file: str
    key_file: str
    ca_file: str = ""
    client_auth: str = "none"

    def __post_init__(self) -> None:
        if not self.cert_file:
            raise ConfigError("tls_cert_file", "must name the node's certificate (PEM) when TLS is on")
        if not self.key_file:
            raise ConfigError("tls_key_file", "must name the node's private key (PEM) when TLS is on")
        if self.client_auth not in CLIENT_AUTH_MODES:
            raise ConfigError("tls_client_auth", f"must be none, optional or required, got {self.client_auth!r}")
        if self.client_auth != "none" and not self.ca_file:
            raise ConfigError("tls_ca_file", f"must name the CA that signs client certificates when "
                                             f"tls_client_auth={self.client_auth}")


@dataclass(frozen=True)
class CertificateSummary:
    """What a log line says about a loaded certificate."""

    subject: str
    serial: int
    not_after: datetime.datetime

    def __str__(self) -> str:
        return f"{self.subject}, serial {self.serial:x}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC"


def _read_pem(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise ConfigError(setting, f"{path} is larger than {MAX_PEM_FILE_BYTES} bytes: not a PEM file")
    return data


def check_server_files(files: ServerTlsFiles, now: datetime.datetime | None = None) -> CertificateSummary:
    """Read and check the files: the certificate chain parses, the key parses and is the
    certificate's, the CA file holds certificates. Warnings (an expired certificate, a key
    others can read) are logged; anything that would make the context unusable raises
    ConfigError naming the setting and the file."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_data = _read_pem("tls_cert_file", files.cert_file)
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError as exc:
        raise ConfigError("tls_cert_file", f"{files.cert_file} holds no PEM certificate ({exc})") from None
    key_data = _read_pem("tls_key_file", files.key_file)
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise ConfigError("tls_key_file", f"{files.key_file} is encrypted: ringkv needs an unencrypted key "
                                          "(protect it with mode 0600 instead)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError("tls_key_file", f"{files.key_file} holds no PEM private key ({exc})") from None
    leaf = chain[0]
    if key.public_key() != leaf.public_key():
        raise ConfigError("tls_key_file", f"{files.key_file} does not match the certificate in tls_cert_file "
                                          f"{files.cert_file}")
    if files.ca_file:
        ca_data = _read_pem("tls_ca_file", files.ca_file)
        try:
            x509.load_pem_x509_certificates(ca_data)
        except ValueError as exc:
            raise ConfigError("tls_ca_file", f"{files.ca_file} holds no PEM certificate ({exc})") from None
    now = now or datetime.datetime.now(datetime.UTC)
    summary = CertificateSummary(leaf.subject.rfc4514_string(), leaf.serial_number, leaf.not_valid_after_utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        log.warning("tls_cert_file %s (%s) is not valid now (valid %s to %s): clients that verify will refuse it",
                    files.cert_file, summary.subject, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    try:
        mode = os.stat(files.key_file).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("tls_key_file %s can be read by other users (mode %o): chmod 600 it",
                        files.key_file, stat.S_IMODE(mode))
    except OSError:
        pass
    return summary


def server_context(files: ServerTlsFiles) -> tuple[ssl.SSLContext, CertificateSummary]:
    """A new server context from the files (checked first: see `check_server_files`)."""
    summary = check_server_files(files)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Client-initiated renegotiation costs the server a handshake per request: a cheap DoS.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    # No TLS 1.3 session tickets: they arrive just after the handshake, unasked, and a client
    # that checks a fresh connection for unread bytes (redis-py's pool does) then refuses it
    # ("Connection has data", then "Connection not ready"). Resumption is not worth that.
    ctx.num_tickets = 0
    try:
        ctx.load_cert_chain(files.cert_file, files.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_cert_file", f"{files.cert_file} with tls_key_file {files.key_file} cannot be "
                                           f"loaded: {exc}") from None
    if files.ca_file:
        try:
            ctx.load_verify_locations(cafile=files.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls_ca_file", f"{files.ca_file} cannot be loaded: {exc}") from None
    ctx.verify_mode = CLIENT_AUTH_MODES[files.client_auth]
    return ctx, summary


class ServerTls:
    """A listener's TLS: the context listeners are created with, and reload.

    `context` is what `loop.create_server(ssl=...)` takes; it never changes, and switches each
    new connection to the newest context in its SNI callback. The client_auth mode is fixed at
    start (a connection keeps the verify mode of the listener's context); the certificate, key
    and CA follow the files. Call from the event loop's thread only.
    """

    def __init__(self, files: ServerTlsFiles, handshake_timeout_ms: int = DEFAULT_HANDSHAKE_TIMEOUT_MS):
        if not 1 <= handshake_timeout_ms <= MAX_HANDSHAKE_TIMEOUT_MS:
            raise ConfigError("tls_handshake_timeout_ms", f"must be 1..{MAX_HANDSHAKE_TIMEOUT_MS}, "
                                                          f"got {handshake_timeout_ms}")
        self.files = files
        self.handshake_timeout_s = handshake_timeout_ms / 1000
        self.context, self.certificate = server_context(files)
        self._current = self.context
        self.context.sni_callback = self._choose_context
        self.reloads = 0
        self.failed_reloads = 0

    def _choose_context(self, ssl_object, server_name, context) -> None:
        current = self._current
        if current is not context:
            ssl_object.context = current
        return None  # go on with the handshake

    def reload(self) -> bool:
        """Read the files again; new connections use them. False (and the old context kept,
        the reason logged) when they cannot be used."""
        try:
            ctx, summary = server_context(self.files)
        except ConfigError as exc:
            self.failed_reloads += 1
            log.error("TLS reload failed, still serving the certificate loaded before (%s): %s",
                      self.certificate, exc)
            return False
        self._current = ctx
        self.certificate = summary
        self.reloads += 1
        log.info("TLS reloaded: new connections get %s from %s", summary, self.files.cert_file)
        return True


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "", *, verify: bool = True,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A client context: verify the server against `ca_file` (the system's CAs when empty)
    unless `verify` is False, and present `cert_file`/`key_file` when given. Errors name the
    argument and the file."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError("cert_file" if key_file else "key_file", "cert_file and key_file go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            if ca_file:
                ctx.load_verify_locations(cafile=ca_file)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("ca_file", f"{ca_file} cannot be loaded: {exc}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("cert_file", f"{cert_file} with key_file {key_file} cannot be loaded: {exc}") from None
    return ctx
