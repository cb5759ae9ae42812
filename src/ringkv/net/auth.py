"""Member authentication on the RPC port: the cluster secret's challenge and response, and the
security a transport is built with (docs/formats/rpc.md, "Authentication"; docs/security.md).

Theory of operation. Every member holds the same cluster secret K. The connecting node (the
client) puts a fresh random nonce Nc in its Handshake. The accepting node (the server) answers
with a fresh nonce Ns of its own and the proof HMAC-SHA256(K, transcript("server")); the client
checks that proof, then sends HandshakeProof(HMAC-SHA256(K, transcript("client"))), which the
server checks before it reads any Request. The transcript is the msgpack array

    ["ringkv rpc handshake", role, protocol_version, cluster_name, client_id, server_id, Nc, Ns]

so both node ids are bound in (a proof made for n1 proves nothing for n9), both nonces too (each
side chose its own fresh one, so no recorded handshake can be replayed against it), and the
role keeps either side's proof from serving as the other's. Proofs are compared in constant
time (hmac.compare_digest).

What the secret does not do: it authenticates both ends when a connection starts, but neither
encrypts nor seals the frames that follow. Whoever can change traffic on the path can take an
authenticated connection over; TLS on the RPC port (net/tls.py) is the answer to that, alone or
together with the secret.

Contract: everything here is pure but for `new_nonce` (the OS's random source) and
`read_secret_file` (one file read); nothing is thread-unsafe.
"""

from __future__ import annotations

import hmac
import os
import secrets
import ssl
import stat
from dataclasses import dataclass, field

import msgspec

from ringkv.errors import ConfigError

NONCE_BYTES = 32
PROOF_BYTES = 32  # SHA-256
MIN_CLUSTER_SECRET_BYTES = 16
MAX_CLUSTER_SECRET_BYTES = 1024
MAX_SECRET_FILE_BYTES = 4096  # the secret and whitespace around it
_DOMAIN = "ringkv rpc handshake"
SERVER, CLIENT = "server", "client"


@dataclass(frozen=True, slots=True)
class RpcSecurity:
    """How a node's RPC connections authenticate their peers: the cluster secret, mutual TLS
    (a server context and a client context, both requiring the other side's certificate from
    the cluster CA), both, or neither. The secret is never shown by repr."""

    secret: bytes | None = field(default=None, repr=False)
    server_tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.secret is not None:
            check_secret(self.secret, "cluster_secret")
        if (self.server_tls is None) != (self.client_tls is None):
            raise ConfigError("rpc_tls", "needs both a server and a client context, or neither")

    @property
    def tls(self) -> bool:
        return self.server_tls is not None

    @property
    def authenticates(self) -> bool:
        """Whether a stranger is refused: a secret, TLS, or both."""
        return self.secret is not None or self.tls

    def describe(self) -> str:
        parts = [name for name, on in (("mutual TLS", self.tls), ("cluster secret", self.secret))
                 if on]
        return " and ".join(parts) or "none"


NO_SECURITY = RpcSecurity()


def check_secret(secret: bytes, field_name: str) -> bytes:
    """`secret` if its length is within bounds; ConfigError naming `field_name` otherwise."""
    if not MIN_CLUSTER_SECRET_BYTES <= len(secret) <= MAX_CLUSTER_SECRET_BYTES:
        raise ConfigError(
            field_name,
            f"the cluster secret must be {MIN_CLUSTER_SECRET_BYTES}..{MAX_CLUSTER_SECRET_BYTES} "
            f"bytes, got {len(secret)} (make one with `head -c 32 /dev/urandom | base64`)",
        )
    return secret


def read_secret_file(path: str, field_name: str = "cluster_secret_file") -> bytes:
    """The secret held in the file at `path`, surrounding whitespace removed (an `echo`'s
    newline is not part of it). Refused, naming `field_name`, when the file is not a regular
    file, is readable or writable by group or others (it must be 0600 or stricter, as ssh asks
    of a private key), is over MAX_SECRET_FILE_BYTES, or holds a secret of a length out of
    bounds. A symbolic link is followed (orchestrators mount secrets that way): the mode
    checked is the file's."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(field_name, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(field_name, f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                field_name,
                f"{path} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"whoever reads it can join the cluster; `chmod 600 {path}`",
            )
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(field_name, f"{path} is over {MAX_SECRET_FILE_BYTES} bytes: is it the "
                                      "secret file?")
    return check_secret(data.strip(), field_name)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def handshake_proof(secret: bytes, role: str, protocol_version: int, cluster_name: str,
                    client_id: str, server_id: str, client_nonce: bytes,
                    server_nonce: bytes) -> bytes:
    """HMAC-SHA256 of the handshake's transcript for `role` (SERVER or CLIENT)."""
    transcript = msgspec.msgpack.encode(
        (_DOMAIN, role, protocol_version, cluster_name, client_id, server_id, client_nonce,
         server_nonce))
    return hmac.digest(secret, transcript, "sha256")


def proof_matches(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison: how much of a forged proof was right never shows in timing."""
    return hmac.compare_digest(expected, given)
