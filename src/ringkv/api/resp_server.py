"""The Redis-protocol server: an asyncio.Protocol per connection, commands to coordinator calls.

Path of a request: `data_received` feeds the connection's `RequestParser`; each complete command
is looked up in `COMMANDS` (name -> handler, arity); the handler validates arguments and calls
the coordinator; its reply bytes are appended to the connection's output, which is written
once per `data_received` (one `write` for a whole pipeline).

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
import os
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter

from ringkv import __version__
from ringkv.api.resp import (
    RESP2,
    RESP3,
    ProtocolError,
    RequestParser,
    SimpleString,
    bulk,
    error,
    integer,
)
from ringkv.errors import InvalidContextError, RingkvError
from ringkv.node.coordinator import PENDING, CommandError, parse_float, parse_int
from ringkv.node.replica import now_ms

log = logging.getLogger("ringkv.resp")

OK = b"+OK\r\n"
# Upper bounds of the RESP command latency histogram (/metrics), seconds.
LATENCY_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
PONG = b"+PONG\r\n"
SYNTAX = error("ERR syntax error")


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
    """Shared state of every connection: the coordinator, limits, stats, INFO sources."""

    def __init__(self, coordinator, limits: RespLimits | None = None, info_sources=None, status_source=None,
                 repair_source=None, fault_source=None, admin_source=None):
        self.coordinator = coordinator
        self.status_source = status_source  # async () -> dict, RINGKV.STATUS
        self.repair_source = repair_source  # async () -> dict, RINGKV.REPAIR
        self.fault_source = fault_source  # (argv) -> str, RINGKV.FAULT; None unless fault_injection
        self.admin_source = admin_source  # async (argv) -> dict, RINGKV.ADMIN
        self.limits = limits or RespLimits()
        self.stats = RespStats()
        self.connections: set[RespConnection] = set()
        self.started_ms = now_ms()
        self.info_sources = info_sources or {}  # section name -> callable returning dict
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
            self.coordinator.commit_writes()
        except Exception as exc:  # the log write failed: nothing queued may be acknowledged
            log.error("log write failed, failing the requests that waited on it: %s", exc)
            for conn in waiting:
                conn.fail_pending_output(error(f"ERR write failed: {exc}"))
            return
        for conn in waiting:
            conn._flush()

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
    if isinstance(exc, RingkvError):
        return error(f"ERR {exc}")
    # A bug must not take the connection or the node down.
    log.error("command failed", exc_info=exc)
    return error(f"ERR internal error: {type(exc).__name__}: {exc}")


class CommandReply(Exception):
    """Raised by argument parsing to answer with a ready-made error reply."""

    def __init__(self, reply: bytes):
        self.reply = reply


class RespConnection(asyncio.Protocol):
    __slots__ = (
        "_lingered_bytes",
        "_out",
        "_paused",
        "_pending",
        "base",
        "closing",
        "coord",
        "enc",
        "id",
        "levels",
        "name",
        "parser",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: RespServer):
        self.server = server
        self.coord = server.coordinator
        self.base = server.coordinator  # bound to the connection's namespace (RINGKV.NAMESPACE)
        self.levels = server.coordinator.levels  # (read, write), RINGKV.CONSISTENCY
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
        if self.coord.has_pending_writes:
            self.server.flush_after_commit(self)
        else:
            self._flush()

    def flush_now(self) -> None:
        """Write the log and then the replies at once (before closing the connection)."""
        if self.coord.has_pending_writes:
            self.coord.commit_writes()
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
        spec = _COMMANDS_AS_SENT.get(argv[0])
        if spec is not None:
            name = spec[2]
        else:
            name = argv[0].lower()
            spec = COMMANDS.get(name)
        stats = self.server.stats.commands
        if spec is None:
            args = "".join(f"'{a.decode('utf-8', 'replace')[:128]}' " for a in argv[1:20])
            self._reply(
                error(
                    f"ERR unknown command '{argv[0].decode('utf-8', 'replace')[:128]}', with args beginning with: {args}"
                )
            )
            return
        handler, arity = spec[0], spec[1]
        n = len(argv)
        if (arity >= 0 and n != arity) or (arity < 0 and n < -arity):
            self._reply(error(f"ERR wrong number of arguments for '{name.decode()}' command"))
            return
        stats[name] = stats.get(name, 0) + 1
        started = perf_counter()
        try:
            result = handler(self, argv)
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
        if self.coord.has_pending_writes:
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


# ---------------------------------------------------------------------- argument helpers


def _int_arg(data: bytes) -> int:
    try:
        return parse_int(data)
    except CommandError:
        raise CommandReply(error("ERR value is not an integer or out of range")) from None


def _expire_ms(seconds_or_ms: bytes, unit_ms: int, absolute: bool, command: str) -> int:
    n = _int_arg(seconds_or_ms)
    if n <= 0:  # relative or absolute: 0 would mean "no expiry" downstream
        raise CommandReply(error(f"ERR invalid expire time in '{command}' command"))
    ms = n * unit_ms
    if ms > (1 << 62):
        raise CommandReply(error(f"ERR invalid expire time in '{command}' command"))
    return ms if absolute else now_ms() + ms


# ---------------------------------------------------------------------- connection commands


def cmd_ping(c: RespConnection, argv):
    if len(argv) > 2:
        return error("ERR wrong number of arguments for 'ping' command")
    return PONG if len(argv) == 1 else bulk(argv[1])


def cmd_echo(c: RespConnection, argv):
    return bulk(argv[1])


def cmd_quit(c: RespConnection, argv):
    c._reply(OK)
    c.flush_now()
    c.close_after_reply()
    return b""  # already replied


def cmd_select(c: RespConnection, argv):
    db = _int_arg(argv[1])
    if db != 0:
        return error("ERR DB index is out of range")
    return OK


def _server_map(c: RespConnection) -> dict:
    return {
        "server": "ringkv",
        "version": __version__,
        "proto": c.enc.protocol,
        "id": c.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


def cmd_hello(c: RespConnection, argv):
    i = 1
    if len(argv) > 1:
        try:
            proto = parse_int(argv[1])
        except CommandError:
            return error("ERR Protocol version is not an integer or out of range")
        if proto not in (2, 3):
            return error("NOPROTO unsupported protocol version")
        i = 2
        new_enc = RESP3 if proto == 3 else RESP2
    else:
        new_enc = c.enc
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"auth" and i + 2 < len(argv):
            i += 3  # no authentication configured: accepted, as Redis does without requirepass
        elif opt == b"setname" and i + 1 < len(argv):
            c.name = argv[i + 1]
            i += 2
        else:
            return error(f"ERR Syntax error in HELLO option '{argv[i].decode('utf-8', 'replace')}'")
    c.enc = new_enc
    return c.enc.map(_server_map(c))


def cmd_client(c: RespConnection, argv):
    sub = argv[1].lower()
    if sub == b"setname" and len(argv) == 3:
        if any(ch <= 32 or ch >= 127 for ch in argv[2]):
            return error("ERR Client names cannot contain spaces, newlines or special characters.")
        c.name = argv[2]
        return OK
    if sub == b"getname" and len(argv) == 2:
        return c.enc.optional_bulk(c.name or None)
    if sub == b"id" and len(argv) == 2:
        return integer(c.id)
    if sub == b"setinfo" and len(argv) == 4:
        return OK
    if sub == b"info" and len(argv) == 2:
        return bulk(_client_line(c).encode())
    if sub == b"list" and len(argv) == 2:
        return bulk("".join(_client_line(x) for x in c.server.connections).encode())
    if sub in (b"setname", b"getname", b"id", b"setinfo", b"info", b"list"):
        return error(f"ERR wrong number of arguments for 'client|{sub.decode()}' command")
    return error(f"ERR unknown subcommand '{argv[1].decode('utf-8', 'replace')}'. Try CLIENT HELP.")


def _client_line(c: RespConnection) -> str:
    return (
        f"id={c.id} addr={c.peer} name={c.name.decode('utf-8', 'replace')} resp={c.enc.protocol}\n"
    )


def cmd_command(c: RespConnection, argv):
    enc = c.enc
    if len(argv) == 1:
        return enc.array([_command_info(name) for name in sorted(COMMANDS)])
    sub = argv[1].lower()
    if sub == b"count":
        return integer(len(COMMANDS))
    if sub == b"info":
        names = [a.lower() for a in argv[2:]] or sorted(COMMANDS)
        return enc.array([_command_info(n) if n in COMMANDS else None for n in names])
    if sub == b"docs":
        # redis-cli asks for docs at start-up to show hints; an empty map is a valid answer.
        return enc.map({})
    if sub == b"list":
        return enc.array([n for n in sorted(COMMANDS)])
    return error(
        f"ERR unknown subcommand '{argv[1].decode('utf-8', 'replace')}'. Try COMMAND HELP."
    )


def _command_info(name: bytes) -> list:
    """Redis 7's ten-field COMMAND entry: name, arity, flags, first key, last key, step, ACL
    categories, tips, key specs, subcommands (clients index all ten)."""
    _, arity = COMMANDS[name]
    first, last, step = KEY_SPECS.get(name, (0, 0, 0))
    if name in WRITE_COMMANDS:
        flags = [SimpleString("write")]
    else:
        flags = [SimpleString("readonly")] if first else []
    return [name, arity, flags, first, last, step, [], [], [], []]


def cmd_info(c: RespConnection, argv):
    wanted = {a.lower().decode("utf-8", "replace") for a in argv[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = {"server", "clients", "memory", "stats", "keyspace", "persistence", "ringkv"}
    return c.enc.verbatim(render_info(c.server, wanted))


def render_info(server: RespServer, sections: set[str]) -> str:
    out = []
    now = now_ms()
    st = server.stats
    if "server" in sections:
        out.append(
            "# Server\r\n"
            f"redis_version:7.2.0\r\nringkv_version:{__version__}\r\nredis_mode:standalone\r\n"
            f"process_id:{os.getpid()}\r\n"
            f"uptime_in_seconds:{(now - server.started_ms) // 1000}\r\n"
        )
    if "clients" in sections:
        out.append(
            "# Clients\r\n"
            f"connected_clients:{st.connections_current}\r\n"
            f"maxclients:{server.limits.max_connections}\r\n"
        )
    for name, source in server.info_sources.items():
        if name in sections:
            body = "".join(f"{k}:{v}\r\n" for k, v in source().items())
            out.append(f"# {name.capitalize()}\r\n{body}")
    if "stats" in sections:
        total = sum(st.commands.values())
        out.append(
            "# Stats\r\n"
            f"total_connections_received:{st.connections_received}\r\n"
            f"total_commands_processed:{total}\r\n"
            f"rejected_connections:{st.connections_rejected}\r\n"
            f"protocol_errors:{st.protocol_errors}\r\n"
            f"client_output_buffer_limit_disconnections:{st.output_buffer_closes}\r\n"
            f"expired_keys:{server.coordinator.expired_keys}\r\n"
        )
    if "keyspace" in sections:
        n = server.coordinator._live_keys
        out.append("# Keyspace\r\n" + (f"db0:keys={n},expires=0,avg_ttl=0\r\n" if n else ""))
    return "\r\n".join(out)


# ---------------------------------------------------------------------- key commands


def cmd_get(c: RespConnection, argv):
    # The hottest command: answered without a coroutine when the coordinator can.
    v = c.coord.get_value_now(argv[1])
    if v is PENDING:
        return _get_async(c, argv[1])
    return c.enc.optional_bulk(v)


async def _get_async(c: RespConnection, key: bytes):
    return c.enc.optional_bulk(await c.coord.get_value(key))


def cmd_set(c: RespConnection, argv):
    if len(argv) == 3:
        coord = c.coord
        lsn = coord.put_now(argv[1], argv[2])
        if lsn is PENDING:
            return _set_async(c, argv)
        if coord.sync_always:
            return _durable_ok(coord, lsn)
        return OK
    return _set_with_options(c, argv)


async def _set_async(c: RespConnection, argv):
    await c.coord.put(argv[1], argv[2])
    return OK


async def _durable_ok(coord, lsn: int):
    await coord.durable(lsn)
    return OK


async def _set_with_options(c: RespConnection, argv):
    expire_at = 0
    keep_ttl = False
    condition = None
    get = False
    seen_expiry = False
    i = 3
    n = len(argv)
    while i < n:
        opt = argv[i].lower()
        if (
            opt in (b"ex", b"px", b"exat", b"pxat")
            and i + 1 < n
            and not seen_expiry
            and not keep_ttl
        ):
            unit = 1000 if opt in (b"ex", b"exat") else 1
            expire_at = _expire_ms(argv[i + 1], unit, opt in (b"exat", b"pxat"), "set")
            seen_expiry = True
            i += 2
        elif opt == b"nx" and condition is None:
            condition = "nx"
            i += 1
        elif opt == b"xx" and condition is None:
            condition = "xx"
            i += 1
        elif opt == b"get":
            get = True
            i += 1
        elif opt == b"keepttl" and not seen_expiry:
            keep_ttl = True
            i += 1
        else:
            return SYNTAX
    applied, old = await c.coord.set(
        argv[1],
        argv[2],
        expire_at_ms=expire_at,
        keep_ttl=keep_ttl,
        condition=condition,
        return_old=get,
    )
    if get:
        return c.enc.optional_bulk(old)
    return OK if applied else c.enc.null


async def cmd_setnx(c: RespConnection, argv):
    applied, _ = await c.coord.set(argv[1], argv[2], condition="nx")
    return integer(1 if applied else 0)


async def cmd_setex(c: RespConnection, argv):
    await c.coord.set(argv[1], argv[3], expire_at_ms=_expire_ms(argv[2], 1000, False, "setex"))
    return OK


async def cmd_psetex(c: RespConnection, argv):
    await c.coord.set(argv[1], argv[3], expire_at_ms=_expire_ms(argv[2], 1, False, "psetex"))
    return OK


async def cmd_getset(c: RespConnection, argv):
    _, old = await c.coord.set(argv[1], argv[2], return_old=True)
    return c.enc.optional_bulk(old)


async def cmd_getdel(c: RespConnection, argv):
    return c.enc.optional_bulk(await c.coord.getdel(argv[1]))


async def cmd_getex(c: RespConnection, argv):
    n = len(argv)
    expire_at: int | None = None
    if n == 3 and argv[2].lower() == b"persist":
        expire_at = 0
    elif n == 4:
        opt = argv[2].lower()
        if opt not in (b"ex", b"px", b"exat", b"pxat"):
            return SYNTAX
        unit = 1000 if opt in (b"ex", b"exat") else 1
        expire_at = _expire_ms(argv[3], unit, opt in (b"exat", b"pxat"), "getex")
    elif n != 2:
        return SYNTAX
    return c.enc.optional_bulk(await c.coord.getex(argv[1], expire_at))


async def cmd_incr(c: RespConnection, argv):
    return integer(await c.coord.incr_by(argv[1], 1))


async def cmd_decr(c: RespConnection, argv):
    return integer(await c.coord.incr_by(argv[1], -1))


async def cmd_incrby(c: RespConnection, argv):
    return integer(await c.coord.incr_by(argv[1], _int_arg(argv[2])))


async def cmd_decrby(c: RespConnection, argv):
    delta = _int_arg(argv[2])
    if delta == -(1 << 63):
        return error("ERR decrement would overflow")
    return integer(await c.coord.incr_by(argv[1], -delta))


async def cmd_incrbyfloat(c: RespConnection, argv):
    delta = parse_float(argv[2])
    return bulk(await c.coord.incr_by_float(argv[1], delta))


async def cmd_mget(c: RespConnection, argv):
    values = await c.coord.mget(argv[1:])
    enc = c.enc
    return enc.array_header(len(values)) + b"".join(enc.optional_bulk(v) for v in values)


def _pairs(argv, command: str):
    if len(argv) % 2 == 0:
        raise CommandReply(error(f"ERR wrong number of arguments for '{command}' command"))
    return list(zip(argv[1::2], argv[2::2]))


async def cmd_mset(c: RespConnection, argv):
    await c.coord.mset(_pairs(argv, "mset"))
    return OK


async def cmd_msetnx(c: RespConnection, argv):
    return integer(1 if await c.coord.msetnx(_pairs(argv, "msetnx")) else 0)


async def cmd_del(c: RespConnection, argv):
    return integer(await c.coord.delete(argv[1:]))


async def cmd_exists(c: RespConnection, argv):
    return integer(await c.coord.exists(argv[1:]))


async def cmd_strlen(c: RespConnection, argv):
    v = await c.coord.get_value(argv[1])
    return integer(0 if v is None else len(v))


async def cmd_append(c: RespConnection, argv):
    return integer(await c.coord.append(argv[1], argv[2]))


async def cmd_type(c: RespConnection, argv):
    v = await c.coord.get_value(argv[1])
    return b"+none\r\n" if v is None else b"+string\r\n"


def _expire_condition(argv, start: int):
    cond = None
    for a in argv[start:]:
        opt = a.lower()
        if opt not in (b"nx", b"xx", b"gt", b"lt"):
            raise CommandReply(error(f"ERR Unsupported option {a.decode('utf-8', 'replace')}"))
        pair = {cond, opt.decode()}
        if cond is not None and pair == {"gt", "lt"}:
            raise CommandReply(error("ERR GT and LT options at the same time are not compatible"))
        if cond is not None and pair != {"gt", "xx"} and pair != {"lt", "xx"}:
            raise CommandReply(
                error("ERR NX and XX, GT or LT options at the same time are not compatible")
            )
        cond = opt.decode() if cond in (None, "xx") else cond
    return cond


def _expire_command(unit_ms: int, absolute: bool, name: str):
    async def handler(c: RespConnection, argv):
        n = _int_arg(argv[2])
        cond = _expire_condition(argv, 3)
        ms = n * unit_ms
        if abs(ms) > (1 << 62):
            return error(f"ERR invalid expire time in '{name}' command")
        at = ms if absolute else now_ms() + ms
        at = max(at, 1)  # a time at or before now deletes the key
        return integer(1 if await c.coord.expire_at(argv[1], at, cond) else 0)

    return handler


async def cmd_ttl(c: RespConnection, argv):
    ms = await c.coord.ttl_ms(argv[1])
    return integer(ms if ms < 0 else (ms + 500) // 1000)


async def cmd_pttl(c: RespConnection, argv):
    return integer(await c.coord.ttl_ms(argv[1]))


async def cmd_persist(c: RespConnection, argv):
    return integer(1 if await c.coord.expire_at(argv[1], 0) else 0)


async def cmd_dbsize(c: RespConnection, argv):
    return integer(await c.coord.dbsize())


async def cmd_scan(c: RespConnection, argv):
    try:
        cursor = int(argv[1])
        if cursor < 0:
            raise ValueError
    except ValueError:
        return error("ERR invalid cursor")
    count = 10
    match = None
    i = 2
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"count" and i + 1 < len(argv):
            count = _int_arg(argv[i + 1])
            if count < 1:
                return SYNTAX
            i += 2
        elif opt == b"match" and i + 1 < len(argv):
            match = argv[i + 1]
            i += 2
        elif opt == b"type" and i + 1 < len(argv):
            if argv[i + 1].lower() != b"string":
                return c.enc.array([b"0", []])  # every ringkv value is a string
            i += 2
        else:
            return SYNTAX
    count = min(count, 100_000)  # bound the work of one call
    next_cursor, keys = await c.coord.scan(cursor, count, match)
    return c.enc.array([str(next_cursor).encode(), keys])


async def cmd_keys(c: RespConnection, argv):
    return c.enc.array(await c.coord.keys(argv[1]))


async def cmd_flushall(c: RespConnection, argv):
    """FLUSHALL empties every namespace; FLUSHDB the connection's namespace (all of them in
    the default one, as Redis's db 0 is its only database there)."""
    for a in argv[1:]:
        if a.lower() not in (b"sync", b"async"):
            return SYNTAX
    coord = c.coord
    if argv[0].lower() == b"flushdb" and getattr(coord, "namespace", b""):
        if not coord.flush_enabled:
            return error("ERR FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
        # Versioned deletes of the namespace's keys, page by page, through the coordinator.
        cursor = 0
        while True:
            cursor, keys = await coord.scan(cursor, 1000)
            if keys:
                await coord.delete(keys)
            if cursor == 0:
                return OK
    await coord.flushall()
    return OK


def _namespaces(c: RespConnection):
    return getattr(c.server.coordinator, "namespaces", None)


def cmd_namespace(c: RespConnection, argv):
    """RINGKV.NAMESPACE [name]: the connection's namespace; with a name, switch to it
    ("default" is the default namespace). Like SELECT, it lasts until the connection ends."""
    namespaces = _namespaces(c)
    if len(argv) == 1:
        return bulk((c.base.spec.name if hasattr(c.base, "spec") else "default").encode())
    from ringkv.node.namespaces import bind

    try:
        spec = namespaces.named(argv[1])
    except ValueError as exc:
        return error(f"ERR {exc}")
    c.base = bind(c.server.coordinator, spec)
    c.coord = c.base.at(*c.levels)
    return OK


def cmd_namespaces(c: RespConnection, argv):
    """RINGKV.NAMESPACES: every namespace, each as [name, replicas, conflict_policy]."""
    return c.enc.array([
        [s.name.encode(), s.replicas, s.conflict_policy.value.encode()] for s in _namespaces(c)
    ])


def cmd_time(c: RespConnection, argv):
    t = time.time_ns() // 1000
    return c.enc.array([str(t // 1_000_000).encode(), str(t % 1_000_000).encode()])


# ---------------------------------------------------------------------- sibling-aware commands
#
# ringkv's own commands, for clients that handle concurrent writes themselves (GET answers the
# deterministic winner; these answer every sibling). The causal context is opaque bytes: pass
# back, unchanged, the one a read gave, and the write replaces exactly the siblings that read
# saw; without one, the write is blind and becomes a sibling of whatever is stored.
#
#   RINGKV.GETV key
#       -> [context, [[value, timestamp, ttl_ms], ...]]
#       context: bulk string, or null when the key has no record at all (a key whose values
#       were all deleted still has one: its tombstones' context). One entry per live sibling,
#       in a stable order (the order of the writes' dots, the same on every read): the value
#       (bulk string), its HLC timestamp (integer), milliseconds until it expires (integer, -1
#       when it does not). RESP3 answers the same nested arrays (its null is `_`): one shape
#       for every client to parse.
#   RINGKV.PUTV key value [CONTEXT context] [PX ms | EX seconds]  -> the new context (bulk)
#   RINGKV.DELV key [CONTEXT context]                             -> the new context (bulk)
#       DELV writes a versioned tombstone: with the context of a read, no sibling that read
#       saw stays live.
#
# A context that ringkv did not give out is `-ERR invalid causal context: ...`.


def _level_arg(data: bytes, field: str) -> str:
    """A level as the client sent it, normalised; the coordinator's `at()` parses and checks
    it (ONE, QUORUM, ALL or a count), so the adapter needs no cluster module."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise CommandError(f"{field} must be ONE, QUORUM, ALL or a replica count")
    return text.upper()


def _level_text(level) -> bytes:
    value = getattr(level, "value", level)  # a coordinator's own level, or what a client sent
    return str(value).upper().encode()


def cmd_consistency(c: RespConnection, argv):
    """RINGKV.CONSISTENCY [level | READ level | WRITE level | READ level WRITE level] [STRICT |
    SLOPPY]: the connection's read (R) and write (W) levels, and whether writes refuse
    stand-in nodes (STRICT) or accept them (SLOPPY, the default); with no argument, shows them."""
    r = w = strict = None
    args = list(argv[1:])
    if args and args[-1].lower() in (b"strict", b"sloppy"):
        strict = args.pop().lower() == b"strict"
    if len(args) == 1 and args[0].lower() not in (b"read", b"write"):
        r = w = _level_arg(args[0], "level")
    else:
        i = 0
        while i < len(args):
            which = args[i].lower()
            if which not in (b"read", b"write") or i + 1 >= len(args):
                return error("ERR syntax error: expected RINGKV.CONSISTENCY [level] | [READ level] "
                             "[WRITE level] [STRICT|SLOPPY]")
            level = _level_arg(args[i + 1], which.decode())
            if which == b"read":
                r = level
            else:
                w = level
            i += 2
    if r is not None or w is not None or strict is not None:
        cur_r, cur_w, cur_strict = c.levels
        levels = (cur_r if r is None else r, cur_w if w is None else w,
                  cur_strict if strict is None else strict)
        c.coord = c.base.at(*levels)
        c.levels = levels
        return OK
    r, w, strict = c.levels
    return c.enc.array([b"read", _level_text(r), b"write", _level_text(w),
                        b"mode", b"STRICT" if strict else b"SLOPPY"])


async def cmd_status(c: RespConnection, argv):
    """RINGKV.STATUS: the cluster's members, partitions and keys, as one JSON document."""
    if c.server.status_source is None:
        return error("ERR RINGKV.STATUS is not available on this server")
    import json

    return bulk(json.dumps(await c.server.status_source()).encode())


async def cmd_repair(c: RespConnection, argv):
    """RINGKV.REPAIR: anti-entropy now over every partition this node holds; JSON summary."""
    if c.server.repair_source is None:
        return error("ERR RINGKV.REPAIR is not available on this server")
    import json

    return bulk(json.dumps(await c.server.repair_source()).encode())


async def cmd_admin(c: RespConnection, argv):
    """RINGKV.ADMIN DECOMMISSION | REMOVE node | STATUS: membership changes; JSON replies."""
    if c.server.admin_source is None:
        return error("ERR RINGKV.ADMIN is not available on this server")
    import json

    try:
        return bulk(json.dumps(await c.server.admin_source(argv[1:])).encode())
    except ValueError as exc:
        return error(f"ERR RINGKV.ADMIN: {exc}")


def cmd_fault(c: RespConnection, argv):
    """RINGKV.FAULT PARTITION node... | HEAL | CLOCK_SKEW ms: tests and chaos runs only."""
    if c.server.fault_source is None:
        return error("ERR fault injection is disabled on this node (fault_injection = false)")
    try:
        return bulk(c.server.fault_source(argv[1:]).encode())
    except ValueError as exc:
        return error(f"ERR RINGKV.FAULT: {exc}")


def cmd_at(c: RespConnection, argv):
    """RINGKV.AT level [STRICT|SLOPPY] command [arg ...]: one command at another level."""
    level = _level_arg(argv[1], "level")
    inner = argv[2:]
    strict = None
    if inner[0].lower() in (b"strict", b"sloppy"):
        strict = inner[0].lower() == b"strict"
        inner = inner[1:]
        if not inner:
            return error("ERR wrong number of arguments for 'ringkv.at' command")
    saved = c.coord
    c.coord = c.base.at(level, level, c.levels[2] if strict is None else strict)
    try:
        # The command starts now and binds the coordinator it calls before it first waits,
        # so restoring the connection's own right after is safe for the commands behind it.
        c._execute(inner)
    finally:
        c.coord = saved
    return None


async def cmd_getv(c: RespConnection, argv):
    versions = await c.coord.get_versions(argv[1])
    now = now_ms()
    siblings = [
        [s.value, s.timestamp, max(0, s.expire_at_ms - now) if s.expire_at_ms else -1]
        for s in versions.siblings
    ]
    return c.enc.array([versions.context, siblings])


def _versioned_options(argv, start: int, command: str, expiry: bool) -> tuple[bytes | None, int]:
    """CONTEXT (and, when `expiry`, PX or EX) after argv[start]: (context, expire_at_ms)."""
    context = None
    expire_at = 0
    i = start
    n = len(argv)
    while i < n:
        opt = argv[i].lower()
        if opt == b"context" and i + 1 < n and context is None:
            context = argv[i + 1]
            if not context:
                # The coordinator reads an empty context as "none": a blind write the client
                # did not ask for.
                raise InvalidContextError(
                    "the context is empty: pass the context a read returned, or no CONTEXT for a blind write"
                )
            i += 2
        elif expiry and opt in (b"px", b"ex") and i + 1 < n and not expire_at:
            expire_at = _expire_ms(argv[i + 1], 1 if opt == b"px" else 1000, False, command)
            i += 2
        else:
            raise CommandReply(SYNTAX)
    return context, expire_at


async def cmd_putv(c: RespConnection, argv):
    context, expire_at = _versioned_options(argv, 3, "ringkv.putv", True)
    return bulk(await c.coord.put_versioned(argv[1], argv[2], context, expire_at_ms=expire_at))


async def cmd_delv(c: RespConnection, argv):
    context, _ = _versioned_options(argv, 2, "ringkv.delv", False)
    return bulk(await c.coord.put_versioned(argv[1], None, context))


# name -> (handler, arity as Redis counts it: n exact, -n at least n, command name included)
COMMANDS: dict[bytes, tuple] = {
    b"ping": (cmd_ping, -1),
    b"echo": (cmd_echo, 2),
    b"quit": (cmd_quit, -1),
    b"select": (cmd_select, 2),
    b"hello": (cmd_hello, -1),
    b"client": (cmd_client, -2),
    b"command": (cmd_command, -1),
    b"info": (cmd_info, -1),
    b"time": (cmd_time, 1),
    b"dbsize": (cmd_dbsize, 1),
    b"get": (cmd_get, 2),
    b"set": (cmd_set, -3),
    b"setnx": (cmd_setnx, 3),
    b"setex": (cmd_setex, 4),
    b"psetex": (cmd_psetex, 4),
    b"getset": (cmd_getset, 3),
    b"getdel": (cmd_getdel, 2),
    b"getex": (cmd_getex, -2),
    b"incr": (cmd_incr, 2),
    b"incrby": (cmd_incrby, 3),
    b"incrbyfloat": (cmd_incrbyfloat, 3),
    b"decr": (cmd_decr, 2),
    b"decrby": (cmd_decrby, 3),
    b"mget": (cmd_mget, -2),
    b"mset": (cmd_mset, -3),
    b"msetnx": (cmd_msetnx, -3),
    b"del": (cmd_del, -2),
    b"unlink": (cmd_del, -2),
    b"exists": (cmd_exists, -2),
    b"strlen": (cmd_strlen, 2),
    b"append": (cmd_append, 3),
    b"type": (cmd_type, 2),
    b"expire": (_expire_command(1000, False, "expire"), -3),
    b"pexpire": (_expire_command(1, False, "pexpire"), -3),
    b"expireat": (_expire_command(1000, True, "expireat"), -3),
    b"pexpireat": (_expire_command(1, True, "pexpireat"), -3),
    b"ttl": (cmd_ttl, 2),
    b"pttl": (cmd_pttl, 2),
    b"persist": (cmd_persist, 2),
    b"scan": (cmd_scan, -2),
    b"keys": (cmd_keys, 2),
    b"flushdb": (cmd_flushall, -1),
    b"flushall": (cmd_flushall, -1),
    b"ringkv.getv": (cmd_getv, 2),
    b"ringkv.putv": (cmd_putv, -3),
    b"ringkv.delv": (cmd_delv, -2),
    b"ringkv.consistency": (cmd_consistency, -1),
    b"ringkv.at": (cmd_at, -3),
    b"ringkv.namespace": (cmd_namespace, -1),
    b"ringkv.namespaces": (cmd_namespaces, 1),
    b"ringkv.status": (cmd_status, 1),
    b"ringkv.repair": (cmd_repair, 1),
    b"ringkv.fault": (cmd_fault, -2),
    b"ringkv.admin": (cmd_admin, -2),
}

# (first key, last key, step) for COMMAND INFO, as Redis reports them.
KEY_SPECS = {
    name: spec
    for names, spec in (
        (
            (
                b"get",
                b"set",
                b"setnx",
                b"setex",
                b"psetex",
                b"getset",
                b"getdel",
                b"getex",
                b"incr",
                b"incrby",
                b"incrbyfloat",
                b"decr",
                b"decrby",
                b"strlen",
                b"append",
                b"type",
                b"expire",
                b"pexpire",
                b"expireat",
                b"pexpireat",
                b"ttl",
                b"pttl",
                b"persist",
                b"ringkv.getv",
                b"ringkv.putv",
                b"ringkv.delv",
            ),
            (1, 1, 1),
        ),
        ((b"mget", b"del", b"unlink", b"exists"), (1, -1, 1)),
        ((b"mset", b"msetnx"), (1, -1, 2)),
    )
    for name in names
}

WRITE_COMMANDS = {
    b"set", b"setnx", b"setex", b"psetex", b"getset", b"getdel", b"getex", b"incr", b"incrby",
    b"incrbyfloat", b"decr", b"decrby", b"mset", b"msetnx", b"del", b"unlink", b"append",
    b"expire", b"pexpire", b"expireat", b"pexpireat", b"persist", b"flushdb", b"flushall",
    b"ringkv.putv", b"ringkv.delv",
}

# COMMANDS keyed by the lower- and upper-case names too, each with its canonical name: saves a
# bytes.lower() per command.
_COMMANDS_AS_SENT = {
    variant: (handler, arity, name)
    for name, (handler, arity) in COMMANDS.items()
    for variant in (name, name.upper())
}
