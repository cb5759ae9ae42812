"""The Redis-protocol server: an asyncio protocol per connection, commands to service calls.

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

Bounded clients (docs/security.md, "Bounded clients and cross-protocol"): a connection has at
most `max_inflight_commands` commands started and not yet answered; past it (or while its
client does not read its replies) the commands parsed but not started wait in `_held` and the
socket is not read until replies drain. A connection that sends nothing for `idle_timeout_ms`
is closed; at most `max_connections_per_ip` connections per client address; and when every
connection's buffered input plus unsent output passes `max_client_memory_bytes` (Redis's
maxmemory-clients), the largest connections are closed first. A periodic sweep
(`_sweep_clients`) does the idle checks and recounts the memory. A connection whose request
looks like HTTP (`POST`, `Host:`, a request line `GET / HTTP/1.1`) is closed without running
anything after it, as Redis does: a web page must not be able to send commands to the port.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter

from ringkv.api.client_limits import ThrottledLog, looks_like_http
from ringkv.api.resp import (
    RESP2,
    ProtocolError,
    RequestParser,
    error,
)
from ringkv.api.resp_acl import gate
from ringkv.api.resp_commands import COMMANDS, COMMANDS_AS_SENT, CommandReply
from ringkv.errors import (
    AdminConflictError,
    AdminRequestError,
    CommandError,
    InvalidContextError,
    RingkvError,
    UnknownNamespaceError,
)
from ringkv.security.access import PROTECTED_MODE_MESSAGE, AccessControl, OpenSession
from ringkv.security.audit import Audit
from ringkv.service.contract import AdminService, KeyValueService

log = logging.getLogger("ringkv.resp")
_OPEN_SESSION = OpenSession()  # a server without access control: every command allowed

# Replies made in one go past this many bytes are written before more commands run, so a
# pipeline of GETs of large values cannot build its whole answer in memory first.
FLUSH_OUTPUT_BYTES = 1024 * 1024
# A read this large is counted in the client-memory budget at once (and every later read of
# that connection, while it holds anything); smaller ones by the periodic sweep, so small
# requests pay nothing for it.
COUNTED_CHUNK_BYTES = 16 * 1024

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
    # Bounded clients (see the module docstring); 0 turns the last three off.
    max_inflight_commands: int = 64
    idle_timeout_ms: int = 300_000
    max_connections_per_ip: int = 1_000
    max_client_memory_bytes: int = 1024 * 1024 * 1024


@dataclass
class RespStats:
    connections_received: int = 0
    connections_rejected: int = 0
    connections_current: int = 0
    protocol_errors: int = 0
    output_buffer_closes: int = 0
    connections_rejected_per_ip: int = 0  # over max_connections_per_ip
    idle_closes: int = 0  # silent for idle_timeout_ms
    client_memory_closes: int = 0  # the largest while over max_client_memory_bytes
    cross_protocol_closes: int = 0  # sent something that looks like HTTP
    inflight_pauses: int = 0  # times reading paused at max_inflight_commands
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    # name -> counts per bucket of LATENCY_BUCKETS_S (the next: above every bound), then the
    # sum of the seconds: one list per command, so counting one costs one dict lookup.
    latency: dict = field(default_factory=dict)

    def observe(self, name: bytes, seconds: float) -> None:
        """One command's latency, from parsed to reply ready (fsync waits included)."""
        buckets = self.latency.get(name)
        if buckets is None:
            buckets = self.latency[name] = [0] * (len(LATENCY_BUCKETS_S) + 1) + [0.0]
        buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        buckets[-1] += seconds

    @property
    def commands(self) -> dict[bytes, int]:
        """How many commands of each name ran to their reply (the histogram's counts)."""
        return {name: sum(buckets[:-1]) for name, buckets in list(self.latency.items())}


class RespServer:
    """Shared state of every connection: the services, limits and stats."""

    def __init__(self, service: KeyValueService, admin: AdminService | None = None, limits: RespLimits | None = None,
                 access: AccessControl | None = None):
        self.service = service  # the node's view at its configured levels, default namespace
        self.admin = admin  # None: a server with no admin side (RINGKV.ADMIN and co. refuse)
        self.access = access  # users and permissions (api/resp_acl.py); None: every command allowed
        # Admin actions are audit lines (security/audit.py) with or without access control.
        self.audit = access.audit if access is not None else Audit()
        self.limits = limits or RespLimits()
        self.stats = RespStats()
        self.connections: set[RespConnection] = set()
        self.started_ms = service.now_ms()
        self._ids = itertools.count(1)
        self._waiting: list[RespConnection] = []  # replies held until the log write
        self._commit_scheduled = False
        # Bounded clients: open connections per client address, and every connection's
        # buffered bytes as last counted (a trigger only: `enforce_client_memory` recounts).
        self.connections_per_ip: dict[str, int] = {}
        self.client_memory_bytes = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self.security_log = ThrottledLog(log)

    # ------------------------------------------------------------------ bounded clients

    def sweep_interval_s(self) -> float:
        """How often idle connections are looked for and client memory recounted: a quarter
        of the idle timeout (so one closes within 1.25 x it), between 50 ms and 1 s."""
        idle_ms = self.limits.idle_timeout_ms
        return (min(1000, max(50, idle_ms // 4)) if idle_ms else 1000) / 1000

    def start_sweeping(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.sweep_interval_s(), self._sweep_clients)

    def _sweep_clients(self) -> None:
        """Close connections idle for idle_timeout_ms; recount client memory (see the module
        docstring). A connection is idle when nothing arrived and no command of its runs."""
        interval_s = self.sweep_interval_s()
        self._sweeper = asyncio.get_running_loop().call_later(interval_s, self._sweep_clients)
        idle_ms = self.limits.idle_timeout_ms
        if idle_ms:
            ticks = max(1, -(-idle_ms // int(interval_s * 1000)))
            for conn in list(self.connections):
                if conn._pending or conn.closing:
                    conn._idle_ticks = 0
                    continue
                conn._idle_ticks += 1
                if conn._idle_ticks > ticks:
                    self.stats.idle_closes += 1
                    self.security_log.info("idle", "closing RESP connection from %s: it sent nothing for "
                                           "client_idle_timeout_ms=%d", conn.peer, idle_ms)
                    conn.closing = True
                    conn.transport.close()
        if self.limits.max_client_memory_bytes:
            self.enforce_client_memory()

    def enforce_client_memory(self) -> None:
        """Recount every connection's buffered bytes; while they pass max_client_memory_bytes,
        close the largest connection (Redis's maxmemory-clients eviction)."""
        budget = self.limits.max_client_memory_bytes
        sized = [(conn.memory_bytes(), conn) for conn in self.connections if not conn.closing]
        total = sum(size for size, _ in sized)
        if total > budget:
            sized.sort(key=lambda pair: pair[0], reverse=True)
            for size, conn in sized:
                if total <= budget:
                    break
                total -= size
                self.stats.client_memory_closes += 1
                self.security_log.warning(
                    "client-memory", "closing RESP connection from %s: it holds %d bytes of input and "
                    "output, the most of any client, while all clients hold more than "
                    "max_client_memory_bytes=%d", conn.peer, size, budget)
                conn.evict()
        self.client_memory_bytes = total

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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


class RespConnection:
    """One client's connection: an asyncio protocol (asyncio and uvloop call its methods by
    name, so it needs no base class; without one, the compiled build makes it an extension
    type whose fields are read without a lookup by name: resp_server.pxd)."""

    __slots__ = (
        "_counted_bytes",
        "_held",
        "_held_bytes",
        "_idle_ticks",
        "_ip",
        "_lingered_bytes",
        "_out",
        "_out_bytes",
        "_paused",
        "_pending",
        "_resume_scheduled",
        "base",
        "closing",
        "enc",
        "id",
        "kv",
        "kv_session",
        "levels",
        "name",
        "parser",
        "peer",
        "server",
        "session",
        "transport",
    )

    def __init__(self, server: RespServer):
        self.server = server
        self.kv = server.service  # what commands call: the namespace and levels set below
        self.base = server.service  # in the connection's namespace (RINGKV.NAMESPACE)
        self.levels = server.service.levels  # (read, write, strict), RINGKV.CONSISTENCY
        self.kv_session = None  # the connection's SessionToken (RINGKV.SESSION), None: none
        lim = server.limits
        self.parser = RequestParser(
            lim.max_bulk_bytes, lim.max_args, lim.max_inline_bytes, lim.max_query_buffer_bytes
        )
        self.enc = RESP2
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._pending: deque[list] = deque()  # [ready, reply] slots while a reply is outstanding
        self._paused = False  # the client does not read its replies fast enough
        # Commands parsed but not started (reading paused at max_inflight_commands, or the
        # client not reading): None when reading is not paused for them; their input's size.
        self._held: deque[list[bytes]] | None = None
        self._held_bytes = 0
        self._resume_scheduled = False
        self._out_bytes = 0  # reply bytes made since the last write
        self._counted_bytes = 0  # this connection's share of server.client_memory_bytes
        self._idle_ticks = 0  # sweeps since the client last sent something (RespServer._sweep_clients)
        self._ip: str | None = None  # counted in server.connections_per_ip
        self._lingered_bytes = -1  # >= 0 once the connection only drains input before closing
        self.closing = False
        self.id = server.next_id()
        self.name = b""
        self.peer = ""
        self.session = _OPEN_SESSION  # who the client is (security/access.py), set on connect

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
        ip = peer[0] if peer else "?"
        per_ip = server.connections_per_ip
        max_per_ip = server.limits.max_connections_per_ip
        if max_per_ip and per_ip.get(ip, 0) >= max_per_ip:
            server.stats.connections_rejected += 1
            server.stats.connections_rejected_per_ip += 1
            server.security_log.warning("per-ip", "refusing a RESP connection from %s: it has %d open, "
                                        "max_connections_per_ip=%d", ip, per_ip[ip], max_per_ip)
            transport.write(error(f"ERR max number of clients reached for address {ip} "
                                  f"(max_connections_per_ip={max_per_ip})"))
            self.close_after_reply()
            return
        per_ip[ip] = per_ip.get(ip, 0) + 1
        self._ip = ip
        server.connections.add(self)
        server.stats.connections_current = len(server.connections)
        server.start_sweeping()
        # --- access control (api/resp_acl.py): the session, and protected mode's refusal.
        access = server.access
        if access is not None:
            self.session = access.new_session(peer[0] if peer else "?", peer[1] if peer else None)
            if access.protected_refusal(self.session):
                access.audit.auth_failure("resp", self.session.client, None, "protected_mode")
                transport.write(error("DENIED " + PROTECTED_MODE_MESSAGE))
                self.close_after_reply()
        # --- end of access control

    def connection_lost(self, exc) -> None:
        self.closing = True
        server = self.server
        server.connections.discard(self)
        server.stats.connections_current = len(server.connections)
        server.client_memory_bytes -= self._counted_bytes
        self._counted_bytes = 0
        self._held = None
        ip = self._ip
        if ip is not None:
            self._ip = None
            left = server.connections_per_ip[ip] - 1
            if left:
                server.connections_per_ip[ip] = left
            else:
                del server.connections_per_ip[ip]

    def eof_received(self) -> None:
        """The client closed its side: returning None lets the transport close ours (the
        asyncio.Protocol default)."""
        return None

    def pause_writing(self) -> None:
        # The client reads slower than it asks: stop reading its requests until it catches up.
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._idle_ticks = 0  # the client reads: it is not idle
        if self.closing:
            return
        if self._held is None:
            self.transport.resume_reading()
        else:
            self._schedule_resume()

    # ------------------------------------------------------------------ bounded clients

    def memory_bytes(self) -> int:
        """Bytes this connection holds: its request in progress, commands parsed and not
        started, replies not yet written and what the socket has not sent yet."""
        transport = self.transport
        unsent = transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0
        return self.parser.pending_bytes + self._held_bytes + self._out_bytes + unsent

    def _count_memory(self) -> None:
        """Update this connection's share of the server's client memory; over the budget,
        the server recounts and closes the largest."""
        size = self.memory_bytes()
        server = self.server
        server.client_memory_bytes += size - self._counted_bytes
        self._counted_bytes = size
        budget = server.limits.max_client_memory_bytes
        if budget and server.client_memory_bytes > budget:
            server.enforce_client_memory()

    def evict(self) -> None:
        """Close at once, dropping what is buffered (the client-memory budget)."""
        self.closing = True
        self._held = None
        self._held_bytes = 0
        self._out.clear()
        self._out_bytes = 0
        if self.transport is not None:
            self.transport.abort()

    def _hold(self, rest: list[list[bytes]], size_bytes: int) -> None:
        """Stop reading: too many commands in flight, or the client does not read. `rest`:
        the commands parsed and not started, run when replies drain (`_resume_held`)."""
        if self._held is None:
            self._held = deque(rest)
            self._held_bytes = size_bytes if rest else 0
            self.server.stats.inflight_pauses += 1
            self.transport.pause_reading()
        else:
            self._held.extend(rest)
            if rest:
                self._held_bytes += size_bytes

    def _resume_if_drained(self) -> None:
        if (len(self._pending) < self.server.limits.max_inflight_commands and self._out_bytes < FLUSH_OUTPUT_BYTES
                and not self._paused and not self.closing):
            self._schedule_resume()

    def _schedule_resume(self) -> None:
        if not self._resume_scheduled:
            self._resume_scheduled = True
            asyncio.get_running_loop().call_soon(self._resume_held)

    def _resume_held(self) -> None:
        """Start held commands while under max_inflight_commands and the client reads; once
        none is left, read again."""
        self._resume_scheduled = False
        held = self._held
        if held is None or self.closing or self._paused:
            return
        cap = self.server.limits.max_inflight_commands
        pending = self._pending
        while held and len(pending) < cap and not self._paused:
            self._execute(held.popleft())
            if self.closing:
                break
            if self._out_bytes >= FLUSH_OUTPUT_BYTES:
                self.flush_now()
                if self._out_bytes >= FLUSH_OUTPUT_BYTES:  # behind a reply still being made
                    break
        if not held:
            self._held_bytes = 0
            if (len(pending) < cap and self._out_bytes < FLUSH_OUTPUT_BYTES and not self.closing
                    and not self._paused):
                self._held = None
                self.transport.resume_reading()
        if self.kv.has_pending_writes:
            self.server.flush_after_commit(self)
        else:
            self._flush()

    def _refuse_http(self, argv: list[bytes]) -> bool:
        """Close the connection if `argv` is a line of an HTTP request (a web page posting to
        the port, cross-protocol scripting): nothing after it runs. Only asked of commands
        that are unknown or have the wrong arity, so the hot path never pays for it."""
        if not looks_like_http(argv):
            return False
        server = self.server
        server.stats.cross_protocol_closes += 1
        server.security_log.warning(
            "cross-protocol", "closing RESP connection from %s: it sent an HTTP request line or header (%r), "
            "possibly a web page attacking this port (cross-protocol scripting)", self.peer,
            b" ".join(argv)[:80])
        self.close_after_reply()
        self._held = None
        return True

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
        if self._paused or self._held is not None:
            transport.resume_reading()
        asyncio.get_running_loop().call_later(self.server.limits.linger_ms / 1000, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            if self._lingered_bytes >= 0:
                self._lingered_bytes += len(data)
                if self._lingered_bytes > self.server.limits.linger_max_bytes:
                    self.transport.close()
            return
        self._idle_ticks = 0
        try:
            commands = self.parser.feed(data)
        except ProtocolError as exc:
            for argv in exc.commands or ():
                self._execute(argv)
                if self.closing:  # an HTTP request line: nothing after it may run
                    return
            self.server.stats.protocol_errors += 1
            log.info("closing RESP connection from %s after a protocol error: %s", self.peer, exc)
            self._reply(error("ERR " + str(exc)))
            self.flush_now()
            self.close_after_reply()
            return
        if self._held is not None:  # reading was paused after this chunk had been read
            self._hold(commands, len(data))
        else:
            cap = self.server.limits.max_inflight_commands
            pending = self._pending
            commands_left = iter(commands)
            for argv in commands_left:
                self._execute(argv)
                # Cheap tests per command on the hot path (a deque's truth is its length, in C);
                # the rest only when one trips.
                if self._out_bytes >= FLUSH_OUTPUT_BYTES or self.closing or (pending and len(pending) >= cap):
                    if self.closing:
                        break
                    if self._out_bytes >= FLUSH_OUTPUT_BYTES:
                        self.flush_now()  # large replies: write them before making more
                    if len(pending) >= cap or self._paused or self._out_bytes >= FLUSH_OUTPUT_BYTES:
                        self._hold(list(commands_left), len(data))
                        break
        if self.kv.has_pending_writes:
            self.server.flush_after_commit(self)
        else:
            self._flush()
        if self._counted_bytes or len(data) >= COUNTED_CHUNK_BYTES:
            self._count_memory()

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
        if spec is None:
            if self._refuse_http(argv):
                return
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
            if self._refuse_http(argv):
                return
            self._reply(error(f"ERR wrong number of arguments for '{name.decode()}' command"))
            return
        started = perf_counter()
        try:
            # Access control: an open session (a user who may run everything on every key)
            # skips the gate, but for the audited commands (api/resp_acl.py).
            if self.session.open and spec.direct:
                if spec.admits and self.kv.rate_limited:
                    self.kv.admit()  # the namespace's max_requests_per_s (node/quotas.py)
                result = spec.handler(self, argv)
            else:
                result = gate(self, spec, argv)
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
        self._out_bytes += len(data)
        if self._pending:
            self._pending.append([True, data])
        else:
            self._out.append(data)

    def _flush(self) -> None:
        pending = self._pending
        out = self._out
        while pending and pending[0][0]:
            out.append(pending.popleft()[1])
        transport = self.transport
        if not out or transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        if transport.is_closing():
            return
        transport.write(data)
        if self._held is not None:
            self._resume_if_drained()
        unsent = transport.get_write_buffer_size()
        if unsent or self._counted_bytes:
            self._count_memory()
            if unsent > self.server.limits.max_output_buffer_bytes:
                self.server.stats.output_buffer_closes += 1
                log.warning(
                    "closing RESP connection from %s: output buffer over max_output_buffer_bytes=%d",
                    self.peer,
                    self.server.limits.max_output_buffer_bytes,
                )
                self.closing = True
                transport.abort()

