"""The RESP commands: one `CommandSpec` per command, and their handlers.

A handler takes the connection and the command's arguments (argv[0] is the name) and returns
the reply bytes, or a coroutine whose result is the reply (the connection drives it eagerly:
api/resp_server.py), or None when it replied itself (RINGKV.AT). It calls the connection's
`KeyValueService` view (`c.kv`: its namespace, its consistency levels) or the node's
`AdminService` (`c.server.admin`). Redis's replies and error texts are kept exactly, so
clients written for Redis parse them. ringkv's own commands (RINGKV.*) are in
api/resp_ringkv.py; docs/redis-compat.md lists what differs from Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ringkv import __version__, hotpath
from ringkv.api import resp_acl
from ringkv.api import resp_backup as bk
from ringkv.api import resp_config as cf
from ringkv.api import resp_ringkv as rk
from ringkv.api.resp import RESP2, RESP3, SimpleString, bulk, error, integer, simple
from ringkv.api.resp_args import OK, PONG, SYNTAX, CommandReply, expire_ms, int_arg, text
from ringkv.errors import CommandError
from ringkv.security.categories import AUDITED, UNIT_CATEGORIES
from ringkv.security.tenants import NAMESPACE_COMMANDS
from ringkv.service import longdouble
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes import lists, zsets
from ringkv.service.datatypes.base import TypeCommand
from ringkv.service.limits import MAX_SCAN_COUNT
from ringkv.service.numbers import parse_int
from ringkv.service.values import PENDING, value_digest

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection, RespServer

__all__ = ["COMMANDS", "COMMANDS_AS_SENT", "CommandReply", "CommandSpec"]

WRITE, READONLY, ADMIN = "write", "readonly", "admin"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: its handler, its arity as Redis counts it (n exact, -n at least n, the name
    included), where its keys are (first, last, step, as COMMAND INFO reports them), and its
    flags (write, readonly, admin)."""

    name: bytes
    handler: Callable[..., Any]
    arity: int
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0
    flags: tuple[str, ...] = ()
    # The keys it names, from its arguments after the name, where positions cannot say
    # (ZUNIONSTORE's numkeys, LMPOP): ACL key patterns check these.
    keys: Callable[[list[bytes]], list[bytes]] | None = None
    # Decided once here, not per command: whether a connection that may run everything runs
    # it straight (every command but the audited ones), and whether it counts towards the
    # namespace's max_requests_per_s (commands on its data: keyed ones, SCAN, DBSIZE...).
    direct: bool = dataclasses.field(init=False, default=True)
    admits: bool = dataclasses.field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "direct", self.name not in AUDITED)
        object.__setattr__(self, "admits", bool(self.first_key) or self.name in NAMESPACE_COMMANDS)


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
    db = int_arg(argv[1])
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
    auth = None
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"auth" and i + 2 < len(argv):
            auth = (argv[i + 1], argv[i + 2])
            i += 3
        elif opt == b"setname" and i + 1 < len(argv):
            c.name = argv[i + 1]
            i += 2
        else:
            return error(f"ERR Syntax error in HELLO option '{argv[i].decode('utf-8', 'replace')}'")

    def switch() -> bytes:
        c.enc = new_enc
        return c.enc.map(_server_map(c))

    if auth is None and c.session.open:
        return switch()
    return resp_acl.hello(c, auth, switch)  # authenticate (or refuse) before switching


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
        return enc.array([_command_info(spec) for _, spec in sorted(COMMANDS.items())])
    sub = argv[1].lower()
    if sub == b"count":
        return integer(len(COMMANDS))
    if sub == b"info":
        names = [a.lower() for a in argv[2:]] or sorted(COMMANDS)
        return enc.array([_command_info(COMMANDS[n]) if n in COMMANDS else None for n in names])
    if sub == b"docs":
        # redis-cli asks for docs at start-up to show hints; an empty map is a valid answer.
        return enc.map({})
    if sub == b"list":
        return enc.array(sorted(COMMANDS))
    return error(f"ERR unknown subcommand '{text(argv[1])}'. Try COMMAND HELP.")


def _command_info(spec: CommandSpec) -> list:
    """Redis 7's ten-field COMMAND entry: name, arity, flags, first key, last key, step, ACL
    categories, tips, key specs, subcommands (clients index all ten)."""
    flags = [SimpleString(f) for f in spec.flags]
    categories = [SimpleString("@" + c) for c in sorted(UNIT_CATEGORIES.get(spec.name.decode(), ()))]
    return [spec.name, spec.arity, flags, spec.first_key, spec.last_key, spec.key_step, categories, [], [], []]


def cmd_info(c: RespConnection, argv):
    wanted = {a.lower().decode("utf-8", "replace") for a in argv[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = {"server", "clients", "memory", "stats", "keyspace", "persistence", "ringkv", "quotas", "hotkeys",
                  "datacenters"}
    return c.enc.verbatim(render_info(c.server, wanted))


def render_info(server: RespServer, sections: set[str]) -> str:
    out = []
    st = server.stats
    admin = server.admin
    if "server" in sections:
        # Whether the Cython-built hot path runs, and if not why (ringkv/hotpath.py).
        hot = hotpath.status()
        out.append(
            "# Server\r\n"
            f"redis_version:7.2.0\r\nringkv_version:{__version__}\r\nredis_mode:standalone\r\n"
            f"process_id:{os.getpid()}\r\n"
            f"uptime_in_seconds:{(server.service.now_ms() - server.started_ms) // 1000}\r\n"
            f"hot_path:{hot['mode']}\r\nhot_path_modules_compiled:{hot['compiled']}\r\n"
            + (f"hot_path_reason:{hot['reason']}\r\n" if hot["reason"] else "")
        )
    if "clients" in sections:
        out.append(
            "# Clients\r\n"
            f"connected_clients:{st.connections_current}\r\n"
            f"maxclients:{server.limits.max_connections}\r\n"
            f"client_memory_bytes:{server.client_memory_bytes}\r\n"
            f"maxmemory_clients:{server.limits.max_client_memory_bytes}\r\n"
        )
    if admin is not None:
        for name, fields in admin.info().items():
            if name in sections:
                body = "".join(f"{k}:{v}\r\n" for k, v in fields.items())
                out.append(f"# {name.capitalize()}\r\n{body}")
    counts = admin.key_counts() if admin is not None else {"keys": 0, "expired_keys": 0}
    if "stats" in sections:
        total = sum(st.commands.values())
        out.append(
            "# Stats\r\n"
            f"total_connections_received:{st.connections_received}\r\n"
            f"total_commands_processed:{total}\r\n"
            f"rejected_connections:{st.connections_rejected}\r\n"
            f"protocol_errors:{st.protocol_errors}\r\n"
            f"client_output_buffer_limit_disconnections:{st.output_buffer_closes}\r\n"
            f"rejected_connections_per_ip:{st.connections_rejected_per_ip}\r\n"
            f"client_idle_disconnections:{st.idle_closes}\r\n"
            f"evicted_clients:{st.client_memory_closes}\r\n"
            f"cross_protocol_disconnections:{st.cross_protocol_closes}\r\n"
            f"client_inflight_pauses:{st.inflight_pauses}\r\n"
            f"expired_keys:{counts['expired_keys']}\r\n"
        )
    if "keyspace" in sections:
        n = counts["keys"]
        out.append("# Keyspace\r\n" + (f"db0:keys={n},expires=0,avg_ttl=0\r\n" if n else ""))
    return "\r\n".join(out)


# ---------------------------------------------------------------------- key commands


def cmd_get(c: RespConnection, argv):
    # The hottest command: answered without a coroutine when the service can.
    v = c.kv.get_value_now(argv[1])
    if v is PENDING:
        return _get_async(c, argv[1])
    return c.enc.optional_bulk(v)


async def _get_async(c: RespConnection, key: bytes):
    return c.enc.optional_bulk(await c.kv.get_value(key))


def cmd_set(c: RespConnection, argv):
    if len(argv) == 3:
        kv = c.kv
        lsn = kv.put_now(argv[1], argv[2])
        if lsn is PENDING:
            return _set_async(c, argv)
        if lsn:  # an fsync to wait for (sync = always)
            return _durable_ok(kv, lsn)
        return OK
    return _set_with_options(c, argv)


async def _set_async(c: RespConnection, argv):
    await c.kv.put(argv[1], argv[2])
    return OK


async def _durable_ok(kv, lsn: int):
    await kv.durable(lsn)
    return OK


async def _set_with_options(c: RespConnection, argv):
    expire_at = 0
    keep_ttl = False
    condition = None
    match = None
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
            expire_at = expire_ms(c, argv[i + 1], unit, opt in (b"exat", b"pxat"), "set")
            seen_expiry = True
            i += 2
        elif opt in (b"nx", b"xx") and condition is None:
            condition = opt.decode()
            i += 1
        elif opt in (b"ifeq", b"ifne", b"ifdeq", b"ifdne") and condition is None and i + 1 < n:
            condition = opt.decode()
            match = argv[i + 1]
            i += 2
        elif opt == b"get":
            get = True
            i += 1
        elif opt == b"keepttl" and not seen_expiry:
            keep_ttl = True
            i += 1
        else:
            return SYNTAX
    applied, old = await c.kv.set(
        argv[1],
        argv[2],
        expire_at_ms=expire_at,
        keep_ttl=keep_ttl,
        condition=condition,
        return_old=get,
        match=match,
    )
    if get:
        return c.enc.optional_bulk(old)
    return OK if applied else c.enc.null


async def cmd_setnx(c: RespConnection, argv):
    applied, _ = await c.kv.set(argv[1], argv[2], condition="nx")
    return integer(1 if applied else 0)


async def cmd_setex(c: RespConnection, argv):
    await c.kv.set(argv[1], argv[3], expire_at_ms=expire_ms(c, argv[2], 1000, False, "setex"))
    return OK


async def cmd_psetex(c: RespConnection, argv):
    await c.kv.set(argv[1], argv[3], expire_at_ms=expire_ms(c, argv[2], 1, False, "psetex"))
    return OK


async def cmd_getset(c: RespConnection, argv):
    _, old = await c.kv.set(argv[1], argv[2], return_old=True)
    return c.enc.optional_bulk(old)


async def cmd_getdel(c: RespConnection, argv):
    return c.enc.optional_bulk(await c.kv.getdel(argv[1]))


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
        expire_at = expire_ms(c, argv[3], unit, opt in (b"exat", b"pxat"), "getex")
    elif n != 2:
        return SYNTAX
    return c.enc.optional_bulk(await c.kv.getex(argv[1], expire_at))


async def cmd_incr(c: RespConnection, argv):
    return integer(await c.kv.incr_by(argv[1], 1))


async def cmd_decr(c: RespConnection, argv):
    return integer(await c.kv.incr_by(argv[1], -1))


async def cmd_incrby(c: RespConnection, argv):
    return integer(await c.kv.incr_by(argv[1], int_arg(argv[2])))


async def cmd_decrby(c: RespConnection, argv):
    delta = int_arg(argv[2])
    if delta == -(1 << 63):
        return error("ERR decrement would overflow")
    return integer(await c.kv.incr_by(argv[1], -delta))


async def cmd_incrbyfloat(c: RespConnection, argv):
    if longdouble.parse(argv[2]) is None:  # refused before any round trip
        return error("ERR value is not a valid float")
    return bulk(await c.kv.incr_by_float(argv[1], argv[2]))


async def cmd_mget(c: RespConnection, argv):
    values = await c.kv.mget(argv[1:])
    enc = c.enc
    return enc.array_header(len(values)) + b"".join(enc.optional_bulk(v) for v in values)


def _pairs(argv, command: str):
    if len(argv) % 2 == 0:
        raise CommandReply(error(f"ERR wrong number of arguments for '{command}' command"))
    return list(zip(argv[1::2], argv[2::2]))


async def cmd_mset(c: RespConnection, argv):
    await c.kv.mset(_pairs(argv, "mset"))
    return OK


async def cmd_msetnx(c: RespConnection, argv):
    return integer(1 if await c.kv.msetnx(_pairs(argv, "msetnx")) else 0)


async def cmd_del(c: RespConnection, argv):
    return integer(await c.kv.delete(argv[1:]))


async def cmd_delex(c: RespConnection, argv):
    """DELEX key [IFEQ value | IFNE value | IFDEQ digest | IFDNE digest] (Redis 8.4)."""
    if len(argv) == 2:
        return integer(await c.kv.delete_if(argv[1]))
    opt = argv[2].lower()
    if len(argv) != 4 or opt not in (b"ifeq", b"ifne", b"ifdeq", b"ifdne"):
        return SYNTAX
    return integer(await c.kv.delete_if(argv[1], opt.decode(), argv[3]))


async def cmd_digest(c: RespConnection, argv):
    """DIGEST key: the value's XXH3-64 as 16 hex digits, or nil (Redis 8.4)."""
    value = await c.kv.get_value(argv[1])
    return c.enc.optional_bulk(None if value is None else value_digest(value))


async def cmd_exists(c: RespConnection, argv):
    return integer(await c.kv.exists(argv[1:]))


async def cmd_strlen(c: RespConnection, argv):
    v = await c.kv.get_value(argv[1])
    return integer(0 if v is None else len(v))


async def cmd_append(c: RespConnection, argv):
    return integer(await c.kv.append(argv[1], argv[2]))


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
        n = int_arg(argv[2])
        cond = _expire_condition(argv, 3)
        ms = n * unit_ms
        if abs(ms) > (1 << 62):
            return error(f"ERR invalid expire time in '{name}' command")
        at = ms if absolute else c.kv.now_ms() + ms
        at = max(at, 1)  # a time at or before now deletes the key
        return integer(1 if await c.kv.expire_at(argv[1], at, cond) else 0)

    return handler


async def cmd_ttl(c: RespConnection, argv):
    ms = await c.kv.ttl_ms(argv[1])
    return integer(ms if ms < 0 else (ms + 500) // 1000)


async def cmd_pttl(c: RespConnection, argv):
    return integer(await c.kv.ttl_ms(argv[1]))


async def cmd_persist(c: RespConnection, argv):
    return integer(1 if await c.kv.expire_at(argv[1], 0) else 0)


async def cmd_dbsize(c: RespConnection, argv):
    return integer(await c.kv.dbsize())


async def cmd_scan(c: RespConnection, argv):
    try:
        cursor = int(argv[1])
        if cursor < 0:
            raise ValueError
    except ValueError:
        return error("ERR invalid cursor")
    count = 10
    want: str | None = None
    match = None
    i = 2
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"count" and i + 1 < len(argv):
            count = int_arg(argv[i + 1])
            if count < 1:
                return SYNTAX
            i += 2
        elif opt == b"match" and i + 1 < len(argv):
            match = argv[i + 1]
            i += 2
        elif opt == b"type" and i + 1 < len(argv):
            want = argv[i + 1].decode("utf-8", "replace").lower()
            i += 2
        else:
            return SYNTAX
    count = min(count, MAX_SCAN_COUNT)  # bound the work of one call
    next_cursor, keys = await c.kv.scan(cursor, count, match)
    if want is not None:
        # As Redis, the type filter applies after the page is taken: a page may come back short.
        # An unknown type name matches nothing (Redis 7.0 answers the same).
        types = await asyncio.gather(*(c.kv.type_command("TYPE", [k]) for k in keys))
        keys = [k for k, t in zip(keys, types, strict=True) if t == want]
    return c.enc.array([str(next_cursor).encode(), keys])


async def cmd_randomkey(c: RespConnection, argv):
    """A key chosen at random: a scan page from a random token (wrapping once to the start),
    so a key is chosen with probability about proportional to the gap before its token."""
    start = random.getrandbits(64) or 1
    for cursor in (start, 0):
        while True:
            next_cursor, keys = await c.kv.scan(cursor, 16, None)
            for key in keys:
                # A page is read from one replica per range: confirm the key at the
                # connection's level, so a key just deleted elsewhere is not named.
                if await c.kv.exists([key]):
                    return bulk(key)
            if next_cursor == 0 or (cursor == 0 and next_cursor >= start):
                break
            cursor = next_cursor
    return c.enc.null


_OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation Redis 7.0 would use for the value stored at <key>",
    "    (ringkv stores every value as one record: docs/data-types.md).",
    "FREQ <key>",
    "    Not tracked by ringkv: answers an error, as Redis does without an LFU policy.",
    "IDLETIME <key>",
    "    Always 0: ringkv does not track access times.",
    "REFCOUNT <key>",
    "    Always 1.",
    "HELP",
    "    Print this help.",
]

def _resp3_pairs(name: str, argv: list[bytes]) -> bool:
    """Whether Redis 7 answers this command's flat [a, b, a, b, ...] reply to a RESP3 client
    as [[a, b], ...]: ZRANGE-family WITHSCORES, ZPOPMIN/ZPOPMAX with a count, HRANDFIELD
    WITHVALUES."""
    if name == "HRANDFIELD":
        return len(argv) == 4 and argv[3].lower() == b"withvalues"
    return zsets.resp3_pairs(name, argv[1:])


def _type_handler(command: TypeCommand) -> Callable[..., Any]:
    """The RESP handler of a data-type command: the service runs it (one implementation for
    a node and a cluster), this turns its reply into RESP."""
    name = command.name
    pairs_in_resp3 = (zsets.resp3_pairs(name, [b"", b"", b"", b"withscores"])
                      or name in ("ZPOPMIN", "ZPOPMAX", "HRANDFIELD"))

    async def handler(c: RespConnection, argv):
        if name == "OBJECT" and argv[1].lower() == b"help":
            return c.enc.array([SimpleString(line) for line in _OBJECT_HELP])
        reply = await c.kv.type_command(name, argv[1:])
        if type(reply) is str:
            return simple(reply)
        if reply is None and lists.null_is_array(name, argv[1:]):  # LMPOP, LPOP key count: `*-1`
            return c.enc.null_array
        if pairs_in_resp3 and c.enc.protocol == 3 and reply and _resp3_pairs(name, argv):
            reply = zsets.pair_up(reply)  # [[member, score], ...], as Redis 7 answers RESP3 clients
        return c.enc.encode(reply)

    return handler


def _type_spec(command: TypeCommand) -> CommandSpec:
    positions = (command.first_key, command.last_key, command.key_step)
    spec = _spec(command.name.lower(), _type_handler(command), command.arity, positions,
                 WRITE if command.write else READONLY)
    return dataclasses.replace(spec, keys=command.keys)


async def cmd_keys(c: RespConnection, argv):
    return c.enc.array(await c.kv.keys(argv[1]))


async def cmd_flushall(c: RespConnection, argv):
    """FLUSHALL empties every namespace; FLUSHDB the connection's namespace (all of them in
    the default one, as Redis's db 0 is its only database there)."""
    for a in argv[1:]:
        if a.lower() not in (b"sync", b"async"):
            return SYNTAX
    if argv[0].lower() == b"flushdb":
        await c.kv.flushdb()
    else:
        await c.kv.flushall()
    return OK


def cmd_time(c: RespConnection, argv):
    t = c.kv.now_ms() * 1000  # the node's clock, in microseconds
    return c.enc.array([str(t // 1_000_000).encode(), str(t % 1_000_000).encode()])


def _spec(name: str, handler: Callable[..., Any], arity: int, keys: tuple[int, int, int] = (0, 0, 0),
          *flags: str) -> CommandSpec:
    if not flags and keys[0]:
        flags = (READONLY,)
    return CommandSpec(name.encode(), handler, arity, *keys, flags=flags)


ONE_KEY = (1, 1, 1)
KEYS = (1, -1, 1)
PAIRS = (1, -1, 2)

# Every command, once.
_TABLE = (
    _spec("ping", cmd_ping, -1),
    _spec("echo", cmd_echo, 2),
    _spec("quit", cmd_quit, -1),
    _spec("select", cmd_select, 2),
    _spec("hello", cmd_hello, -1),
    _spec("auth", resp_acl.cmd_auth, -2),
    _spec("acl", resp_acl.cmd_acl, -2),
    _spec("client", cmd_client, -2),
    _spec("command", cmd_command, -1),
    _spec("info", cmd_info, -1),
    _spec("time", cmd_time, 1),
    _spec("dbsize", cmd_dbsize, 1),
    _spec("get", cmd_get, 2, ONE_KEY),
    _spec("set", cmd_set, -3, ONE_KEY, WRITE),
    _spec("setnx", cmd_setnx, 3, ONE_KEY, WRITE),
    _spec("setex", cmd_setex, 4, ONE_KEY, WRITE),
    _spec("psetex", cmd_psetex, 4, ONE_KEY, WRITE),
    _spec("getset", cmd_getset, 3, ONE_KEY, WRITE),
    _spec("getdel", cmd_getdel, 2, ONE_KEY, WRITE),
    _spec("getex", cmd_getex, -2, ONE_KEY, WRITE),
    _spec("incr", cmd_incr, 2, ONE_KEY, WRITE),
    _spec("incrby", cmd_incrby, 3, ONE_KEY, WRITE),
    _spec("incrbyfloat", cmd_incrbyfloat, 3, ONE_KEY, WRITE),
    _spec("decr", cmd_decr, 2, ONE_KEY, WRITE),
    _spec("decrby", cmd_decrby, 3, ONE_KEY, WRITE),
    _spec("mget", cmd_mget, -2, KEYS),
    _spec("mset", cmd_mset, -3, PAIRS, WRITE),
    _spec("msetnx", cmd_msetnx, -3, PAIRS, WRITE),
    _spec("del", cmd_del, -2, KEYS, WRITE),
    _spec("unlink", cmd_del, -2, KEYS, WRITE),
    _spec("exists", cmd_exists, -2, KEYS),
    _spec("delex", cmd_delex, -2, ONE_KEY, WRITE),
    _spec("digest", cmd_digest, 2, ONE_KEY),
    _spec("strlen", cmd_strlen, 2, ONE_KEY),
    _spec("append", cmd_append, 3, ONE_KEY, WRITE),
    _spec("expire", _expire_command(1000, False, "expire"), -3, ONE_KEY, WRITE),
    _spec("pexpire", _expire_command(1, False, "pexpire"), -3, ONE_KEY, WRITE),
    _spec("expireat", _expire_command(1000, True, "expireat"), -3, ONE_KEY, WRITE),
    _spec("pexpireat", _expire_command(1, True, "pexpireat"), -3, ONE_KEY, WRITE),
    _spec("ttl", cmd_ttl, 2, ONE_KEY),
    _spec("pttl", cmd_pttl, 2, ONE_KEY),
    _spec("persist", cmd_persist, 2, ONE_KEY, WRITE),
    _spec("scan", cmd_scan, -2),
    _spec("randomkey", cmd_randomkey, 1),
    _spec("keys", cmd_keys, 2),
    _spec("flushdb", cmd_flushall, -1, (0, 0, 0), WRITE),
    _spec("flushall", cmd_flushall, -1, (0, 0, 0), WRITE),
    _spec("ringkv.getv", rk.cmd_getv, 2, ONE_KEY),
    _spec("ringkv.hgetv", rk.cmd_hgetv, 3, ONE_KEY),
    _spec("ringkv.zscorev", rk.cmd_zscorev, 3, ONE_KEY),
    _spec("ringkv.putv", rk.cmd_putv, -3, ONE_KEY, WRITE),
    _spec("ringkv.delv", rk.cmd_delv, -2, ONE_KEY, WRITE),
    _spec("ringkv.cas", rk.cmd_cas, -4, ONE_KEY, WRITE),
    _spec("ringkv.cad", rk.cmd_cad, 3, ONE_KEY, WRITE),
    _spec("ringkv.msetatomic", rk.cmd_mset_atomic, -3, PAIRS, WRITE),
    _spec("ringkv.consistency", rk.cmd_consistency, -1),
    _spec("ringkv.at", rk.cmd_at, -3),
    _spec("ringkv.session", rk.cmd_session, -1),
    _spec("ringkv.namespace", rk.cmd_namespace, -1),
    _spec("ringkv.namespaces", rk.cmd_namespaces, 1),
    _spec("ringkv.ring", rk.cmd_ring, 1),
    _spec("ringkv.status", rk.cmd_status, 1, (0, 0, 0), ADMIN),
    _spec("ringkv.repair", rk.cmd_repair, -1, (0, 0, 0), ADMIN),
    _spec("ringkv.hotkeys", rk.cmd_hotkeys, -1, (0, 0, 0), ADMIN),
    _spec("ringkv.fault", rk.cmd_fault, -2, (0, 0, 0), ADMIN),
    _spec("ringkv.admin", rk.cmd_admin, -2, (0, 0, 0), ADMIN),
    # Persistence and backup (api/resp_backup.py, docs/backup.md)
    _spec("save", bk.cmd_save, 1, (0, 0, 0), ADMIN),
    _spec("bgsave", bk.cmd_bgsave, -1, (0, 0, 0), ADMIN),
    _spec("lastsave", bk.cmd_lastsave, 1, (0, 0, 0), ADMIN),
    _spec("ringkv.snapshot", bk.cmd_snapshot, -1, (0, 0, 0), ADMIN),
    _spec("ringkv.backup", bk.cmd_backup, -2, (0, 0, 0), ADMIN),
    _spec("ringkv.restore", bk.cmd_restore_backup, -2, (0, 0, 0), ADMIN),
    # Settings, functions and scripts (api/resp_config.py)
    _spec("config", cf.cmd_config, -2, (0, 0, 0), ADMIN),
    _spec("function", cf.cmd_function, -2),
    _spec("script", cf.cmd_script, -2),
)

# The data types and whole-key commands (service/datatypes): TYPE, RENAME, COPY, HSET, SADD, ...
_TABLE += tuple(_type_spec(command) for command in TYPE_COMMANDS.values())

COMMANDS: dict[bytes, CommandSpec] = {spec.name: spec for spec in _TABLE}
# Keyed by the lower- and upper-case names too: saves a bytes.lower() per command.
COMMANDS_AS_SENT: dict[bytes, CommandSpec] = {
    variant: spec for spec in _TABLE for variant in (spec.name, spec.name.upper())
}
