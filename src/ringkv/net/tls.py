"""Mutual TLS on the RPC port (docs/security.md, "Authenticated members").

Every member holds a certificate signed by the cluster CA that names its node id, in the
subject's CN or in a subjectAltName of type DNS. Both ends of a connection require the other's
certificate (TLS 1.2 or newer) and check that it names the node they mean to talk to: the
accepting node checks the id the connecting one claims in its Handshake, the connecting node
the id it dialled. Host names are not checked: nodes reach each other by address, and what
matters is which node answers (net/rpc.py makes both checks, after the TLS handshake).

The contexts are built once, at start, from the three files the settings name.
"""

from __future__ import annotations

import os
import ssl
import stat
from typing import Any

from ringkv.errors import ConfigError


def _readable(setting: str, path: str) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(setting, f"{path} is not a regular file")


def tls_contexts(cert_path: str, key_path: str, ca_path: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) of a member: its certificate and key, peers verified
    against the CA, a certificate required of the other side, TLS 1.2 at least. ConfigError
    naming the setting (`rpc_tls_cert`, `rpc_tls_key`, `rpc_tls_ca`) when a file cannot be
    used; a private key that any user may read is refused."""
    for setting, path in (("rpc_tls_cert", cert_path), ("rpc_tls_key", key_path),
                          ("rpc_tls_ca", ca_path)):
        _readable(setting, path)
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    if mode & stat.S_IRWXO:
        raise ConfigError("rpc_tls_key", f"{key_path} is open to every user (mode {mode:04o}): "
                                         f"whoever reads it can pose as this node; `chmod 600 {key_path}`")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The node id is checked against the certificate instead (see the module docstring).
    client.check_hostname = False
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        # A renegotiation costs the accepting side a handshake each: a cheap way to load it.
        context.options |= ssl.OP_NO_RENEGOTIATION
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ConfigError("rpc_tls_key", f"{key_path} with rpc_tls_cert {cert_path} cannot be "
                                             f"loaded (is it that certificate's key?): {exc}") from None
        except OSError as exc:
            raise ConfigError("rpc_tls_cert", f"cannot load {cert_path}: {exc}") from None
        try:
            context.load_verify_locations(cafile=ca_path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("rpc_tls_ca", f"{ca_path} holds no CA certificate: {exc}") from None
    return server, client


def certificate_names(peercert: Any) -> frozenset[str]:
    """The names a verified peer certificate gives its holder: subject CNs and DNS SANs.
    `peercert` is what `SSLObject.getpeercert()` returns (a dict, empty or None without a
    verified certificate)."""
    if not isinstance(peercert, dict):
        return frozenset()
    names = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(value)
    return frozenset(names)


def describe_names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)[:8]) or "nothing"
