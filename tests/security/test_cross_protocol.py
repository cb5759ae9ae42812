"""Cross-protocol requests: a web page must not reach a node through the browser.

A browser that loads a hostile page can be made to send an HTTP request to any address,
loopback included. Sent to the RESP port, a form POST's body would be read as commands (before
this issue, a page wrote a key that way); the RESP port now closes a connection at the first
line that looks like HTTP (`POST`, `Host:`, a request line) and runs nothing after it, as
Redis does. The HTTP API answers only the Host names it serves: a page that rebinds its own
DNS name to the node's address gets 421 (DNS rebinding).
"""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest
import redis

from ringkv.testing.launcher import NodeProcess

READ_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProcess(tmp_path_factory.mktemp("xproto") / "n1", http_allowed_hosts="kv.internal")
    n.start()
    yield n
    n.stop()


def send_and_read_until_closed(port: int, data: bytes) -> bytes:
    """Send `data`, then read what the node answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as conn:
        conn.sendall(data)
        got = b""
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        else:
            raise AssertionError(f"the node kept the connection open; it answered {got!r}")
        return got


def full_log(node: NodeProcess) -> str:
    return node.log_path.read_text(errors="replace")


def info_stats(port: int) -> dict:
    return redis.Redis(port=port).info("stats")


def browser_form_post(port: int, body: bytes) -> bytes:
    """What a browser sends for <form method=post enctype=text/plain action=http://127.0.0.1:PORT>."""
    return (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: Mozilla/5.0\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body))


def test_a_browser_form_post_to_the_resp_port_writes_nothing_and_is_closed(node):
    key = f"xproto:{uuid.uuid4().hex}"
    before = info_stats(node.resp_port)["cross_protocol_disconnections"]
    reply = send_and_read_until_closed(node.resp_port, browser_form_post(node.resp_port, b"SET %s pwned\r\n" % key.encode()))
    assert b"+OK" not in reply and b"pwned" not in reply, reply
    r = redis.Redis(port=node.resp_port)
    assert r.get(key) is None
    assert r.ping() is True  # the node carries on
    assert info_stats(node.resp_port)["cross_protocol_disconnections"] == before + 1
    assert "cross-protocol" in full_log(node)


@pytest.mark.parametrize("request_head", [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"PUT /api/v1/kv/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"DELETE /api/v1/kv/x HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
    b"Host: attacker.example\r\n",
    b'*2\r\n$4\r\nPOST\r\n$1\r\n/\r\n',  # the same word as a RESP array
])
def test_http_looking_input_closes_the_resp_connection(node, request_head):
    key = f"xproto:{uuid.uuid4().hex}"
    # A command after the HTTP line, in the same packet: it must not run.
    reply = send_and_read_until_closed(node.resp_port, request_head + b"SET %s 1\r\n" % key.encode())
    assert b"+OK" not in reply, reply
    r = redis.Redis(port=node.resp_port)
    assert r.get(key) is None
    assert r.ping() is True


def test_http_lines_before_a_protocol_error_still_stop_everything_after_them(node):
    key = f"xproto:{uuid.uuid4().hex}"
    data = b"POST / HTTP/1.1\r\nSET " + key.encode() + b" 1\r\nUser-Agent: \"unbalanced\r\n"
    send_and_read_until_closed(node.resp_port, data)
    assert redis.Redis(port=node.resp_port).get(key) is None


def test_commands_that_only_resemble_http_words_still_work(node):
    r = redis.Redis(port=node.resp_port)
    assert r.set("GET", "/") is True  # a key named like a method, a value like a path
    assert r.get("GET") == b"/"
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("HEADX", "x")
    assert r.ping() is True


def test_many_http_probes_log_a_few_lines_and_count_every_one(node):
    before = info_stats(node.resp_port)["cross_protocol_disconnections"]
    log_before = full_log(node).count("cross-protocol")
    for _ in range(20):
        send_and_read_until_closed(node.resp_port, b"POST / HTTP/1.1\r\n\r\n")
    assert info_stats(node.resp_port)["cross_protocol_disconnections"] == before + 20
    assert full_log(node).count("cross-protocol") - log_before <= 2  # rate-limited
    metrics = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics").text
    assert 'ringkv_resp_client_closes_total{reason="cross_protocol"}' in metrics


# ---------------------------------------------------------------------------- Host check


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "kv.internal", "KV.Internal", "[::1]"])
def test_the_http_api_answers_its_own_names(node, host):
    answer = httpx.get(f"http://127.0.0.1:{node.http_port}/healthz", headers={"Host": f"{host}:{node.http_port}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "localhost.attacker.example"])
def test_a_rebound_dns_name_is_refused_with_421(node, host):
    answer = httpx.put(f"http://127.0.0.1:{node.http_port}/api/v1/kv/rebound", headers={"Host": host},
                       json={"value": "x"})
    assert answer.status_code == 421, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert "http_allowed_hosts" in problem["detail"]
    assert redis.Redis(port=node.resp_port).get("rebound") is None


def test_a_request_without_host_is_refused_with_400(node):
    reply = send_and_read_until_closed(node.http_port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"Host" in reply


def test_allowed_hosts_star_answers_any_name(tmp_path):
    with NodeProcess(tmp_path / "n1", http_allowed_hosts="*") as n:
        answer = httpx.get(f"http://127.0.0.1:{n.http_port}/healthz", headers={"Host": "anything.example"})
        assert answer.status_code == 200
