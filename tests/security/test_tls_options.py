"""TLS settings that cannot work are refused where they are given, naming the setting: a node's
configuration at load time, a client's arguments when it is made."""

from __future__ import annotations

import pytest

from ringkv.client import Client
from ringkv.errors import ConfigError
from ringkv.node.config import load_config


@pytest.mark.parametrize("settings, message", [
    (dict(resp_port=-1), "resp_port: is -1 (no plain RESP) but tls_port is -1 too"),
    (dict(tls_port=7389), "tls_cert_file: must name the node's certificate"),
    (dict(http_tls=True, tls_cert_file="n1.crt"), "tls_key_file: must name the node's private key"),
    (dict(tls_port=7389, tls_cert_file="n1.crt", tls_key_file="n1.key", tls_client_auth="maybe"),
     "tls_client_auth: must be none, optional or required, got 'maybe'"),
    (dict(tls_port=7389, tls_cert_file="n1.crt", tls_key_file="n1.key", tls_client_auth="optional"),
     "tls_ca_file: must name the CA that signs client certificates when tls_client_auth=optional"),
    (dict(tls_port=70000), "tls_port: must be a TCP port 0..65535 (0 picks a free one) or -1 (not served)"),
    (dict(tls_handshake_timeout_ms=0), "tls_handshake_timeout_ms: must be 1..600000"),
])
def test_node_tls_settings_that_cannot_work_are_refused_by_name(settings, message):
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, overrides=settings)
    assert str(caught.value).startswith(message), str(caught.value)


def test_tls_only_resp_is_a_valid_configuration():
    config = load_config(env={}, overrides=dict(resp_port=-1, tls_port=0, tls_cert_file="n1.crt",
                                                tls_key_file="n1.key"))
    assert config.tls_enabled() and config.tls_files().client_auth == "none"


def test_client_tls_arguments_are_checked_when_the_client_is_made(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(ConfigError, match=r"^ca_file: is given but tls is off: pass tls=True"):
        Client(ca_file=str(ca))
    with pytest.raises(ConfigError, match=r"^ca_file: must be a readable file"):
        Client(tls=True, ca_file=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match=r"^key_file: must be given with cert_file"):
        Client(tls=True, cert_file=str(ca))
    with Client(tls=True, ca_file=str(ca)) as client:  # connects lazily: nothing is read yet
        assert client.options.tls and client.options.tls_verify
