"""How the HTTP server lives inside a node: started in the node's loop, stopped with it, and
what it answers when the node behind it is missing, broken or read-only.

The in-process tests run a node with its servers (`ringkv.server.NodeServer`) on uvloop in the
test's thread, as `ringkv serve` does; the app-only tests drive `create_app` through httpx's
ASGI transport with stand-in services.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import SimpleNamespace

import httpx
import pytest
import uvloop

from ringkv.api.http_serving import create_app, start_http
from ringkv.errors import RingkvError
from ringkv.node.config import NodeConfig
from ringkv.server import NodeServer
from ringkv.service.contract import ServiceLimits
from ringkv.service.values import ANY_VERSION, AnyVersion, Written
from ringkv.testing.launcher import NodeProcess
from ringkv.testing.wait import wait_until_async


def node_config(tmp_path, **overrides) -> NodeConfig:
    return NodeConfig(data_dir=str(tmp_path / "data"), resp_port=0, http_port=0, **overrides)


# ---------------------------------------------------------------------- embedded in a node


def test_port_0_binds_a_free_port_and_the_node_keeps_its_signal_handlers(tmp_path):
    async def scenario() -> None:
        before = signal.getsignal(signal.SIGTERM)
        node = NodeServer(node_config(tmp_path))
        await node.start()
        try:
            host, port = node.http_address
            assert port != 0
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
                r = await client.put("/api/v1/keys/k", content=b"v", headers={"Content-Type": "application/octet-stream"})
                assert r.status_code == 200
                assert (await client.get("/api/v1/keys/k")).json()["value"] == "v"
            # uvicorn installs its own SIGTERM/SIGINT handlers unless told not to; the node's
            # own (set by `serve`) must stay in charge of shutdown.
            assert signal.getsignal(signal.SIGTERM) is before
        finally:
            await node.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://{host}:{port}/healthz")

    uvloop.run(scenario())


def test_stopping_does_not_wait_for_a_client_stuck_mid_request(tmp_path):
    async def scenario() -> float:
        node = NodeServer(node_config(tmp_path, shutdown_drain_ms=300))
        await node.start()
        host, port = node.http_address
        # One client idles on a keep-alive connection, one stopped halfway through a body.
        idle_reader, idle_writer = await asyncio.open_connection(host, port)
        idle_writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await idle_reader.readuntil(b'{"status":"ok"}')
        stuck_reader, stuck_writer = await asyncio.open_connection(host, port)
        stuck_writer.write(
            b"PUT /api/v1/keys/k HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\n\r\nonly part of it"
        )
        # The server has read the stuck request's head and waits for the rest of its body: a
        # request uvicorn began (its connection has a cycle) and has not answered.
        connections = node._http._server.server_state.connections

        def mid_request() -> bool:
            return any(getattr(c, "cycle", None) is not None and not c.cycle.response_complete
                       for c in connections)

        await wait_until_async(mid_request, 10, "the server to start on the half-sent request",
                               interval_s=0.01)
        started = time.monotonic()
        await asyncio.wait_for(node.stop(), timeout=10)
        took = time.monotonic() - started
        # The node closed both: each read reaches end-of-stream (a timeout would fail here).
        # The stuck one may first get an answer to its half-sent request.
        await asyncio.wait_for(stuck_reader.read(), 5)
        assert stuck_reader.at_eof()
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        idle_writer.close()
        stuck_writer.close()
        return took

    assert uvloop.run(scenario()) < 5


def test_a_busy_port_is_an_oserror_for_the_caller(tmp_path):
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError):
                await start_http(create_app(), "127.0.0.1", taken.getsockname()[1])

    uvloop.run(scenario())


def test_start_http_returns_a_handle_that_closes_twice_safely(tmp_path):
    async def scenario() -> None:
        handle, (host, port) = await start_http(create_app(), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            # No node behind the server: the data routes say so.
            r = await client.get("/api/v1/keys/x")
            assert r.status_code == 503 and r.json()["detail"] == "the node is not running"
        await handle.close()
        await handle.close()

    uvloop.run(scenario())


# ---------------------------------------------------------------------- the app on stand-in nodes


async def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        return await client.request(method, path, **kwargs)


def test_the_spec_builds_without_a_node():
    spec = create_app().openapi()
    assert {"/api/v1/keys/{key}", "/api/v1/keys/{key}/ttl", "/api/v1/keys/{key}/incr", "/api/v1/batch/get",
            "/api/v1/batch/put", "/api/v1/keys", "/api/v1/scan", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert {"get", "put", "delete", "head"} == set(spec["paths"]["/api/v1/keys/{key}"])
    schemas = spec["components"]["schemas"]
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["properties"])
    assert "PutKeyRequest" in schemas


def test_without_a_running_node_data_routes_are_503_and_health_is_ok():
    app = create_app()
    r = asyncio.run(call(app, "GET", "/api/v1/keys/x"))
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert asyncio.run(call(app, "GET", "/healthz")).status_code == 200
    assert asyncio.run(call(app, "GET", "/readyz")).status_code == 503
    assert asyncio.run(call(app, "GET", "/metrics")).status_code == 200


class ExplodingService:
    limits = ServiceLimits(1024, 100, True)

    async def get(self, key: bytes):
        raise ZeroDivisionError("a bug")


def test_an_unexpected_exception_is_a_logged_500_problem_and_the_app_keeps_serving(caplog):
    app = create_app(ExplodingService())
    with caplog.at_level(logging.ERROR, logger="ringkv.http"):
        r = asyncio.run(call(app, "GET", "/api/v1/keys/boom"))
    assert r.status_code == 500
    doc = r.json()
    assert doc["type"] == "urn:ringkv:problem:internal-error"
    assert "ZeroDivisionError: a bug" in doc["detail"]
    assert any("GET /api/v1/keys/boom" in rec.getMessage() for rec in caplog.records)
    assert asyncio.run(call(app, "GET", "/healthz")).status_code == 200


class ReadOnlyAdmin:
    def health(self) -> str:
        return "the storage engine is read-only after a background error: compaction failed: disk on fire"


READ_ONLY = "engine is read-only after a background error: compaction failed: disk on fire"


class ReadOnlyService:
    """A node whose engine turned read-only: reads answer, every write raises (as
    KeyValueService.write and put_versioned do then)."""

    limits = ServiceLimits(1024, 100, True)

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def get_versions(self, key: bytes):
        return SimpleNamespace(siblings=[], context=None)

    async def write(self, key: bytes, value: bytes | None, *, expire_at_ms: int = 0,
                    expected: bytes | int | AnyVersion | None = ANY_VERSION) -> Written:
        raise RingkvError(READ_ONLY)

    async def put_versioned(self, *args, **kwargs):
        raise RingkvError(READ_ONLY)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/api/v1/keys/k", {"value": "v"}),
    ("PUT", "/api/v1/keys/k", {"value": "v", "if_not_exists": True}),
    ("DELETE", "/api/v1/keys/k", None),
    ("POST", "/api/v1/keys/k/cas", {"expected_version": 1, "new_value": "v"}),
    ("PUT", "/api/v1/keys/k/versions", {"value": "v"}),
])
def test_a_read_only_engine_is_503_and_readyz_says_why(method, path, body):
    app = create_app(ReadOnlyService(), ReadOnlyAdmin())
    r = asyncio.run(call(app, method, path, json=body))
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", r.text
    assert "read-only" in r.json()["detail"]
    r = asyncio.run(call(app, "GET", "/readyz"))
    assert r.status_code == 503 and "disk on fire" in r.json()["detail"]


def test_a_read_only_engine_fails_each_write_of_a_non_atomic_batch_with_503():
    # The batch itself is answered (200); each write reports the refusal with its status.
    app = create_app(ReadOnlyService(), ReadOnlyAdmin())
    r = asyncio.run(call(app, "POST", "/api/v1/batch/put", json={"operations": [{"key": "k", "value": "v"}]}))
    assert r.status_code == 200, r.text
    assert r.json()["failed_keys"] == ["k"] and r.json()["status"] == "failed"
    error = r.json()["results"][0]["error"]
    assert error["status"] == 503 and "read-only" in error["detail"]
    r = asyncio.run(call(app, "GET", "/readyz"))
    assert r.status_code == 503 and "disk on fire" in r.json()["detail"]


# ---------------------------------------------------------------------- a real process


def test_sigterm_stops_the_node_while_a_keep_alive_client_is_connected(tmp_path):
    node = NodeProcess(tmp_path / "n1").start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10) as client:
            assert client.put("/api/v1/keys/k", json={"value": "v"}).status_code == 200
            started = time.monotonic()
            assert node.stop() == 0, node.log()
            assert time.monotonic() - started < 10
    finally:
        node.stop()
    assert "Traceback" not in node.log()


def test_a_value_written_over_http_survives_a_restart(tmp_path):
    node = NodeProcess(tmp_path / "n1").start()
    url = f"http://127.0.0.1:{node.http_port}/api/v1/keys/durable"
    try:
        httpx.put(url, content=b"\x00\xffkept", headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    finally:
        assert node.stop() == 0, node.log()
    node.start()
    try:
        r = httpx.get(url, headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200 and r.content == b"\x00\xffkept"
    finally:
        node.stop()
