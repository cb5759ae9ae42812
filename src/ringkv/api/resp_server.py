"""The Redis-protocol server: an asyncio.Protocol per connection, commands to service calls.

Path of a request: `data_received` feeds the connection's `RequestParser`; each complete command
is looked up in the command table (api/resp_commands.py, one `CommandSpec` per command); the
handler validates arguments and calls the connection's `KeyValueService` view (its namespace
and consistency levels) or the node's `AdminService`; its reply bytes are appended to the
connection's output, which is written once per `data_received` (one `write` for a whole
pipeline).

Handlers are coroutines, run eagerly (`_run`): the first `send(None)` usually finishes them, with
no task and no loop round trip. One that suspends (an fsync wait under `sync="always"`) keeps
its place in the reply order: later replies queue behind it until it finishes.

Limits (all in `RespLimits`): bulk size, arguments per command, inline line, query buffer,
connections, per-client output buffer. A protocol error replies `-ERR Protocol error: ...` and
closes that connection only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter

from ringkv.api.resp import (
    RESP2,
    ProtocolError,
    RequestParser,
    error,
)
from ringkv.api.resp_commands import COMMANDS, COMMANDS_AS_SENT, CommandReply
from ringkv.errors import (
    AdminConflictError,
    AdminRequestError,
    CommandError,
    InvalidContextError,
    RingkvError,
    UnknownNamespaceError,
)
from ringkv.service.contract import AdminService, KeyValueService

log = logging.getLogger("ringkv.resp")

# Upper bounds of the RESP command latency histogram (/metrics), seconds.
LATENCY_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


@dataclass
class RespLimits:
    max_bulk_bytes: int = 512 * 1024 * 1024
    max_args: int = 1024 * 1024
    max_inline_bytes: int = 64 * 1024
    max_query_buffer_bytes: int = 1024 * 1024 * 1024
    max_connections: int = 10_000
    max_output_buffer_bytes: int = 64 * 1024 * 1024
    # A connection closed after a last reply (max connections, a protocol error, QUIT) reads
    # and drops what its client still sends, for at most this long and this much: closing a
    # socket with unread input makes the kernel send a reset, and a reset can reach the client
    # before it has read the reply that said why.
    linger_ms: int = 1000
    linger_max_bytes: int = 64 * 1024


@dataclass
class RespStats:
    connections_received: int = 0
    connections_rejected: int = 0
    connections_current: int = 0
    commands: dict = field(default_factory=dict)  # name -> count
    protocol_errors: int = 0
    output_buffer_closes: int = 0
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    # name -> counts per bucket of LATENCY_BUCKETS_S (the last: above every bound), and sums.
    latency: dict = field(default_factory=dict)
    latency_sum_s: dict = field(default_factory=dict)

    def observe(self, name: bytes, seconds: float) -> None:
        """One command's latency, from parsed to reply ready (fsync waits included)."""
        buckets = self.latency.get(name)
        if buckets is None:
            buckets = self.latency[name] = [0] * (len(LATENCY_BUCKETS_S) + 1)
            self.latency_sum_s[name] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s[name] += seconds


class RespServer:
    """Shared state of every connection: the services, limits and stats."""

    def __init__(self, service: KeyValueService, admin: AdminService | None = None, limits: RespLimits | None = None):
        self.service = service  # the node's view at its configured levels, default namespace
        self.admin = admin  # None: a server with no admin side (RINGKV.ADMIN and co. refuse)
        self.limits = limits or RespLimits()
        self.stats = RespStats()
        self.connections: set[RespConnection] = set()
        self.started_ms = service.now_ms()
        self._ids = itertools.count(1)
        self._waiting: list[RespConnection] = []  # replies held until the log write
        self._commit_scheduled = False

    def flush_after_commit(self, conn: RespConnection) -> None:
        """Send `conn`'s replies once this loop iteration's writes are in the log.

        Every connection that got data in one iteration of the event loop adds its writes to
        the log's queue; one `write()` then carries them all (group commit at the OS level),
        and only after it do the replies go out.
        """
        self._waiting.append(conn)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_scheduled = False
        waiting = self._waiting
        self._waiting = []
        try:
            self.service.commit_writes()
        except Exception as exc:  # the log write failed: nothing queued may be acknowledged
            log.error("log write failed, failing the requests that waited on it: %s", exc)
            for conn in waiting:
                conn.fail_pending_output(error(f"ERR write failed: {exc}"))
            return
        for conn in waiting:
            conn._flush()

    def has_pending(self) -> bool:
        """Whether any connection has a command still running (a shutdown waits for them)."""
        return any(c._pending for c in self.connections)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()

    def protocol_factory(self) -> RespConnection:
        return RespConnection(self)

    def next_id(self) -> int:
        return next(self._ids)


def error_reply(exc: Exception) -> bytes:
    """The RESP error a failed command answers with: the one place exceptions become replies."""
    if isinstance(exc, CommandReply):
        return exc.reply
    if isinstance(exc, CommandError):
        return error(f"{exc.kind} {exc}")
    if isinstance(exc, InvalidContextError):
        return error(f"ERR invalid causal context: {exc}")
    if isinstance(exc, (AdminRequestError, AdminConflictError, UnknownNamespaceError)):
        return error(f"ERR {exc}")
    if isinstance(exc, RingkvError):
        return error(f"ERR {exc}")
    # A bug must not take the connection or the node down.
    log.error("command failed", exc_info=exc)
    return error(f"ERR internal error: {type(exc).__name__}: {exc}")


class RespConnection(asyncio.Protocol):
    __slots__ = (
        "_lingered_bytes",
        "_out",
        "_paused",
        "_pending",
        "base",
        "closing",
        "enc",
        "id",
        "kv",
        "levels",
        "name",
        "parser",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: RespServer):
        self.server = server
        self.kv = server.service  # what commands call: the namespace and levels set below
        self.base = server.service  # in the connection's namespace (RINGKV.NAMESPACE)
        self.levels = server.service.levels  # (read, write, strict), RINGKV.CONSISTENCY
        lim = server.limits
        self.parser = RequestParser(
            lim.max_bulk_bytes, lim.max_args, lim.max_inline_bytes, lim.max_query_buffer_bytes
        )
        self.enc = RESP2
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._pending: deque[list] = deque()  # [ready, reply] slots while a reply is outstanding
        self._paused = False
        self._lingered_bytes = -1  # >= 0 once the connection only drains input before closing
        self.closing = False
        self.id = server.next_id()
        self.name = b""
        self.peer = ""

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.stats.connections_received += 1
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if len(server.connections) >= server.limits.max_connections:
            server.stats.connections_rejected += 1
            transport.write(error("ERR max number of clients reached"))
            self.close_after_reply()
            return
        server.connections.add(self)
        server.stats.connections_current = len(server.connections)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.server.stats.connections_current = len(self.server.connections)

    def pause_writing(self) -> None:
        # The client reads slower than it asks: stop reading its requests until it catches up.
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if not self.closing:
            self.transport.resume_reading()

    def close_after_reply(self) -> None:
        """Close once the replies written so far have left: half-close, then drain and drop
        what the client still sends (bounded by `linger_ms` and `linger_max_bytes`), so the
        client reads the last reply instead of a connection reset."""
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingered_bytes = 0
        if self._paused:
            transport.resume_reading()
        asyncio.get_running_loop().call_later(self.server.limits.linger_ms / 1000, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            if self._lingered_bytes >= 0:
                self._lingered_bytes += len(data)
                if self._lingered_bytes > self.server.limits.linger_max_bytes:
                    self.transport.close()
            return
        try:
            commands = self.parser.feed(data)
        except ProtocolError as exc:
            for argv in exc.commands or ():
                self._execute(argv)
            self.server.stats.protocol_errors += 1
            log.info("closing RESP connection from %s after a protocol error: %s", self.peer, exc)
            self._reply(error("ERR " + str(exc)))
            self.flush_now()
            self.close_after_reply()
            return
        for argv in commands:
            self._execute(argv)
            if self.closing:
                break
        if self.kv.has_pending_writes:
            self.server.flush_after_commit(self)
        else:
            self._flush()

    def flush_now(self) -> None:
        """Write the log and then the replies at once (before closing the connection)."""
        if self.kv.has_pending_writes:
            self.kv.commit_writes()
        self._flush()

    def fail_pending_output(self, reply: bytes) -> None:
        """Replace this batch's replies with `reply` (each command gets it) and close."""
        n = len(self._out)
        self._out = [reply] * n
        self._flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ execution

    def _execute(self, argv: list[bytes]) -> None:
        # Clients send names in one case or the other: look the name up as sent first.
        spec = COMMANDS_AS_SENT.get(argv[0]) or COMMANDS.get(argv[0].lower())
        stats = self.server.stats.commands
        if spec is None:
            args = "".join(f"'{a.decode('utf-8', 'replace')[:128]}' " for a in argv[1:20])
            self._reply(
                error(
                    f"ERR unknown command '{argv[0].decode('utf-8', 'replace')[:128]}', with args beginning with: {args}"
                )
            )
            return
        name = spec.name
        arity = spec.arity
        n = len(argv)
        if (arity >= 0 and n != arity) or (arity < 0 and n < -arity):
            self._reply(error(f"ERR wrong number of arguments for '{name.decode()}' command"))
            return
        stats[name] = stats.get(name, 0) + 1
        started = perf_counter()
        try:
            result = spec.handler(self, argv)
        except Exception as exc:
            result = error_reply(exc)
        if result is None:  # RINGKV.AT ran the inner command, which replied
            return
        if type(result) is bytes:
            self._reply(result)
            self.server.stats.observe(name, perf_counter() - started)
        else:
            self._run(result, None, name, started)

    def _run(self, coro, slot, name: bytes, started: float) -> None:
        """Drive a handler coroutine until it finishes or suspends (see the module docstring)."""
        try:
            fut = coro.send(None)
        except StopIteration as stop:
            reply = stop.value
        except Exception as exc:
            reply = error_reply(exc)
        else:
            if slot is None:
                slot = [False, None]
                self._pending.append(slot)
            if fut is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
                asyncio.get_running_loop().call_soon(self._resume, coro, slot, name, started)
            else:
                fut._asyncio_future_blocking = False
                fut.add_done_callback(lambda _f: self._resume(coro, slot, name, started))
            return
        self.server.stats.observe(name, perf_counter() - started)
        if slot is None:
            self._reply(reply)
        else:
            slot[0] = True
            slot[1] = reply

    def _resume(self, coro, slot, name: bytes, started: float) -> None:
        self._run(coro, slot, name, started)
        if self.kv.has_pending_writes:
            self.server.flush_after_commit(self)
        else:
            self._flush()

    def _reply(self, data: bytes) -> None:
        if self._pending:
            self._pending.append([True, data])
        else:
            self._out.append(data)

    def _flush(self) -> None:
        pending = self._pending
        out = self._out
        while pending and pending[0][0]:
            out.append(pending.popleft()[1])
        if not out or self.transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.server.limits.max_output_buffer_bytes:
            self.server.stats.output_buffer_closes += 1
            log.warning(
                "closing RESP connection from %s: output buffer over max_output_buffer_bytes=%d",
                self.peer,
                self.server.limits.max_output_buffer_bytes,
            )
            self.closing = True
            self.transport.abort()

