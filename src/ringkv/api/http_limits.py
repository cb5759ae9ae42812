"""Bounds on HTTP clients: which Host names the API answers for, and uvicorn's h11 protocol
with timeouts and a per-address connection limit.

- `AllowedHosts` and `HostCheckMiddleware`: the HTTP API answers only requests whose `Host`
  names this node (`http_allowed_hosts`), the defence against DNS rebinding.
- `bounded_h11_protocol`: uvicorn's h11 protocol class with a request-head timeout
  (`http_header_timeout_ms`), a body idle timeout (`client_idle_timeout_ms`) and
  `max_connections_per_ip`; uvicorn itself closes a keep-alive connection idle between
  requests (`timeout_keep_alive`, set by api/http_serving.py).

docs/security.md, "Bounded clients and cross-protocol", says what each protects against.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ringkv.api.client_limits import ThrottledLog
from ringkv.api.http_problems import ProblemError

# ------------------------------------------------------------------------------ Host check


def _host_of(value: str) -> str:
    """The host of a Host header value, lower case, without its port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    host, sep, port = value.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else value


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The names the HTTP API answers for. A DNS rebinding attack sends the attacker's own name
    (a page on evil.example whose name now resolves to this node), never an IP address, so IP
    literals are always accepted; names must be "localhost", the node's configured host, a
    member's host, or listed in http_allowed_hosts ("*": any)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(_host_of(n) for n in names if n.strip())
        self.any = "*" in self.names

    def allows(self, host: str) -> bool:
        return self.any or host in self.names or _is_ip_literal(host)


def default_allowed_hosts(configured: str, host: str, member_hosts: Iterable[str]) -> AllowedHosts:
    """`http_allowed_hosts` (comma-separated) plus "localhost", the node's host and its members'."""
    names = ["localhost", host, *member_hosts, *configured.split(",")]
    return AllowedHosts(n for n in names if n.strip() and not _is_wildcard(n.strip()))


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "[::]")


class HostCheckMiddleware:
    """Pure ASGI: a request whose Host is not allowed is answered 421 (no Host: 400) before
    anything else runs."""

    def __init__(self, app: Any, allowed: AllowedHosts, on_refused: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.allowed = allowed
        self.on_refused = on_refused

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.allowed.any:
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == b"host"), None)
        if raw is None:
            problem = ProblemError(400, "bad-request", "the request has no Host header: the HTTP API answers "
                                                       "only requests naming one of http_allowed_hosts")
        else:
            host = _host_of(raw.decode("latin-1"))
            if self.allowed.allows(host):
                await self.app(scope, receive, send)
                return
            problem = ProblemError(
                421, "misdirected-request",
                f"this node does not answer for host {host[:100]!r}: add it to http_allowed_hosts "
                "(this check stops web pages that rebind a DNS name to this node)")
        if self.on_refused is not None:
            self.on_refused(scope["client"][0] if scope.get("client") else "?")
        await problem.response()(scope, receive, send)


# ------------------------------------------------------------------------------ HTTP connections


@dataclass
class HttpClientLimits:
    header_timeout_ms: int = 10_000  # from connection (or a request's first byte) to its last header
    idle_timeout_ms: int = 300_000  # a request body that stops arriving; keep-alive idle (<= 5 s)
    max_connections_per_ip: int = 1_000  # 0: no limit


@dataclass
class HttpClientStats:
    header_timeouts: int = 0
    body_timeouts: int = 0
    connections_rejected_per_ip: int = 0
    hosts_refused: int = 0


_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
             b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def bounded_h11_protocol(limits: HttpClientLimits, stats: HttpClientStats, security_log: ThrottledLog) -> type:
    """uvicorn's h11 protocol class with the bounds of `limits`; uvicorn makes one per
    connection (`Config(http=...)`)."""
    per_ip: dict[str, int] = {}
    # `limits` is read at each use, not copied: CONFIG SET changes it on a running node.

    class BoundedH11Protocol(H11Protocol):
        """Closes a connection whose request head is not complete within header_timeout_ms of
        its start (or of the connection's, for the first: a client that connects and sends
        nothing is closed too), and one whose request body stops arriving for idle_timeout_ms."""

        _ringkv_ip: str | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ip = self.client[0] if self.client else "?"
            most = limits.max_connections_per_ip
            if most and per_ip.get(ip, 0) >= most:
                stats.connections_rejected_per_ip += 1
                security_log.warning("http-per-ip", "refusing an HTTP connection from %s: it has %d open, "
                                     "max_connections_per_ip=%d", ip, per_ip[ip], most)
                body = f"too many connections from {ip} (max_connections_per_ip={most})\n".encode()
                transport.write(_TOO_MANY % (len(body), body))
                transport.close()
                return
            per_ip[ip] = per_ip.get(ip, 0) + 1
            self._ringkv_ip = ip
            self._head_timer = self.loop.call_later(limits.header_timeout_ms / 1000, self._head_timed_out)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            ip = self._ringkv_ip
            if ip is not None:
                self._ringkv_ip = None
                if per_ip[ip] > 1:
                    per_ip[ip] -= 1
                else:
                    del per_ip[ip]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                self._cancel_timers()
                return
            state = self.conn.their_state
            if state is h11.IDLE:  # a request head still arriving
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(limits.header_timeout_ms / 1000, self._head_timed_out)
                return
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if state is h11.SEND_BODY and limits.idle_timeout_ms > 0:
                self._body_timer = self.loop.call_later(limits.idle_timeout_ms / 1000, self._body_timed_out)

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                stats.header_timeouts += 1
                security_log.info("http-header-timeout", "closing HTTP connection from %s: no complete request "
                                  "head within http_header_timeout_ms=%d", self._ringkv_ip, limits.header_timeout_ms)
                self.transport.close()

        def _body_timed_out(self) -> None:
            self._body_timer = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                stats.body_timeouts += 1
                security_log.info("http-body-timeout", "closing HTTP connection from %s: its request body stopped "
                                  "arriving for client_idle_timeout_ms=%d", self._ringkv_ip, limits.idle_timeout_ms)
                self.transport.close()

    return BoundedH11Protocol
