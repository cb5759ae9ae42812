"""The ACL categories of every ringkv command, and how each touches its keys.

A rule names commands (`+get`), subcommands (`+client|id`) or categories (`+@read`); the
permission check works on *units*: a plain command, or one subcommand of a container command
(ACL, CLIENT, COMMAND, RINGKV.ADMIN). A container named with an unknown subcommand is its base
unit (`client`), which the command then refuses on its own.

Redis commands keep the categories Redis gives them (its command table: READONLY is @read,
WRITE is @write, FAST is @fast and every other command @slow, ADMIN is @admin and @dangerous,
plus the data-type and @keyspace/@connection groups). ringkv's own commands:

- RINGKV.GETV reads a key (@read @string @fast), RINGKV.HGETV a hash field (@read @hash
  @fast), RINGKV.ZSCOREV a sorted-set member (@read @sortedset @fast); PUTV and DELV write one (@write @string
  @fast); CAS, CAD and MSETATOMIC write through a consensus round or the batch log (@write
  @string @slow).
- RINGKV.CONSISTENCY, RINGKV.AT and RINGKV.NAMESPACE set the connection's levels or namespace
  (@fast @connection); RINGKV.AT's inner command is checked on its own. RINGKV.NAMESPACES
  lists the namespaces, RINGKV.RING where the connection's namespace keeps its keys (both
  @slow @connection, as Redis's CLUSTER SLOTS is @slow).
- FLUSHALL and FLUSHDB are @admin @slow @dangerous (Redis also has them in @keyspace and
  @write: a user given +@write could empty the cluster).
- RINGKV.STATUS, RINGKV.REPAIR, RINGKV.FAULT and every RINGKV.ADMIN subcommand act on the
  cluster (@admin @slow @dangerous).
- CONFIG, FUNCTION and SCRIPT keep Redis's categories (CONFIG GET and SET @admin @slow
  @dangerous) although FUNCTION and SCRIPT only answer as with no script loaded.

Key access (Redis's key-spec logical flags, which `%R~` and `%W~` patterns are checked
against): "r" the command returns the key's data, "w" it inserts, updates or deletes it, "rw"
both, "any" neither (metadata only: EXISTS, TYPE, TTL), for which a read or a write pattern
will do. The key positions themselves are the command table's (api/resp_commands.py).

Pure data; tests/security/test_acl_rules.py checks that every command of the RESP table has a
unit here and every unit is a command.
"""

from __future__ import annotations

# Every category a rule may name (Redis's list, so rules written for Redis parse); commands of
# data types ringkv does not have are simply in none of them.
CATEGORIES = (
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap", "hyperloglog",
    "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous", "connection",
    "transaction", "scripting",
)

R, W, RW, ANY = "r", "w", "rw", "any"

_CONN_FAST = "fast connection"
_ADMIN = "admin slow dangerous"

# unit -> (categories, key access or None for a command without keys)
_UNITS: dict[str, tuple[str, str | None]] = {
    # connection
    "ping": (_CONN_FAST, None),
    "echo": (_CONN_FAST, None),
    "quit": (_CONN_FAST, None),
    "select": (_CONN_FAST, None),
    "hello": (_CONN_FAST, None),
    "auth": (_CONN_FAST, None),
    "client": ("slow connection", None),
    "client|setname": ("slow connection", None),
    "client|getname": ("slow connection", None),
    "client|id": ("slow connection", None),
    "client|setinfo": ("slow connection", None),
    "client|info": ("slow connection", None),
    "client|list": ("admin slow dangerous connection", None),
    "command": ("slow connection", None),
    "command|count": ("slow connection", None),
    "command|info": ("slow connection", None),
    "command|docs": ("slow connection", None),
    "command|list": ("slow connection", None),
    # server
    "info": ("slow dangerous", None),
    "time": ("fast", None),
    "dbsize": ("keyspace read fast", None),
    "scan": ("keyspace read slow", None),
    "keys": ("keyspace read slow dangerous", None),
    # Not @write nor @keyspace (Redis has them in both): emptying the keyspace is granted
    # only by @dangerous, @admin or naming the command (issue 13, docs/redis-compat.md).
    "flushdb": ("admin slow dangerous", None),
    "flushall": ("admin slow dangerous", None),
    # strings
    "get": ("read string fast", R),
    "set": ("write string slow", W),  # with GET: rw (key_access)
    "setnx": ("write string fast", W),
    "setex": ("write string slow", W),
    "psetex": ("write string slow", W),
    "getset": ("write string fast", RW),
    "getdel": ("write string fast", RW),
    "getex": ("write string fast", RW),
    "incr": ("write string fast", RW),
    "incrby": ("write string fast", RW),
    "incrbyfloat": ("write string fast", RW),
    "decr": ("write string fast", RW),
    "decrby": ("write string fast", RW),
    "mget": ("read string fast", R),
    "mset": ("write string slow", W),
    "msetnx": ("write string slow", W),
    "delex": ("write string fast", W),
    "digest": ("read string fast", R),
    "strlen": ("read string fast", ANY),
    "append": ("write string fast", W),
    # keyspace
    "del": ("keyspace write slow", W),
    "unlink": ("keyspace write fast", W),
    "exists": ("keyspace read fast", ANY),
    "type": ("keyspace read fast", ANY),
    "expire": ("keyspace write fast", W),
    "pexpire": ("keyspace write fast", W),
    "expireat": ("keyspace write fast", W),
    "pexpireat": ("keyspace write fast", W),
    "ttl": ("keyspace read fast", ANY),
    "pttl": ("keyspace read fast", ANY),
    "persist": ("keyspace write fast", W),
    # data types (service/datatypes; Redis 7's categories)
    "hset": ("write hash fast", RW),
    "hsetnx": ("write hash fast", RW),
    "hget": ("read hash fast", R),
    "hmget": ("read hash fast", R),
    "hmset": ("write hash fast", RW),
    "hdel": ("write hash fast", RW),
    "hexists": ("read hash fast", R),
    "hgetall": ("read hash slow", R),
    "hkeys": ("read hash slow", R),
    "hvals": ("read hash slow", R),
    "hlen": ("read hash fast", R),
    "hstrlen": ("read hash fast", R),
    "hincrby": ("write hash fast", RW),
    "hincrbyfloat": ("write hash fast", RW),
    "hrandfield": ("read hash slow", R),
    "hscan": ("read hash slow", R),
    "sadd": ("write set fast", RW),
    "srem": ("write set fast", RW),
    "sismember": ("read set fast", R),
    "smismember": ("read set fast", R),
    "smembers": ("read set slow", R),
    "scard": ("read set fast", R),
    "spop": ("write set fast", RW),
    "srandmember": ("read set slow", R),
    "smove": ("write set fast", RW),
    "sinter": ("read set slow", R),
    "sintercard": ("read set slow", R),
    "sunion": ("read set slow", R),
    "sdiff": ("read set slow", R),
    "sinterstore": ("write set slow", RW),
    "sunionstore": ("write set slow", RW),
    "sdiffstore": ("write set slow", RW),
    "sscan": ("read set slow", R),
    "zadd": ("write sortedset fast", RW),
    "zrem": ("write sortedset fast", RW),
    "zscore": ("read sortedset fast", R),
    "zmscore": ("read sortedset fast", R),
    "zincrby": ("write sortedset fast", RW),
    "zcard": ("read sortedset fast", R),
    "zcount": ("read sortedset fast", R),
    "zlexcount": ("read sortedset fast", R),
    "zrange": ("read sortedset slow", R),
    "zrangebyscore": ("read sortedset slow", R),
    "zrevrangebyscore": ("read sortedset slow", R),
    "zrevrange": ("read sortedset slow", R),
    "zrangebylex": ("read sortedset slow", R),
    "zrevrangebylex": ("read sortedset slow", R),
    "zrank": ("read sortedset fast", R),
    "zrevrank": ("read sortedset fast", R),
    "zpopmin": ("write sortedset fast", RW),
    "zpopmax": ("write sortedset fast", RW),
    "zremrangebyrank": ("write sortedset slow", RW),
    "zremrangebyscore": ("write sortedset slow", RW),
    "zremrangebylex": ("write sortedset slow", RW),
    "zunionstore": ("write sortedset slow", RW),
    "zinterstore": ("write sortedset slow", RW),
    "zscan": ("read sortedset slow", R),
    "lpush": ("write list fast", RW),
    "rpush": ("write list fast", RW),
    "lpushx": ("write list fast", RW),
    "rpushx": ("write list fast", RW),
    "lpop": ("write list fast", RW),
    "rpop": ("write list fast", RW),
    "llen": ("read list fast", R),
    "lrange": ("read list slow", R),
    "lindex": ("read list slow", R),
    "lset": ("write list slow", RW),
    "lrem": ("write list slow", RW),
    "ltrim": ("write list slow", RW),
    "linsert": ("write list slow", RW),
    "lpos": ("read list slow", R),
    "lmove": ("write list slow", RW),
    "rpoplpush": ("write list slow", RW),
    "lmpop": ("write list slow", RW),
    "rename": ("keyspace write slow", RW),
    "renamenx": ("keyspace write fast", RW),
    "copy": ("keyspace write slow", RW),
    "randomkey": ("keyspace read slow", None),
    "object": ("keyspace read slow", ANY),
    "object|encoding": ("keyspace read slow", ANY),
    "object|refcount": ("keyspace read slow", ANY),
    "object|idletime": ("keyspace read slow", ANY),
    "object|freq": ("keyspace read slow", ANY),
    "object|help": ("keyspace slow", None),
    # users and permissions
    "acl": ("slow", None),
    "acl|cat": ("slow", None),
    "acl|whoami": ("slow", None),
    "acl|genpass": ("slow", None),
    "acl|help": ("slow", None),
    "acl|setuser": (_ADMIN, None),
    "acl|getuser": (_ADMIN, None),
    "acl|deluser": (_ADMIN, None),
    "acl|list": (_ADMIN, None),
    "acl|users": (_ADMIN, None),
    "acl|dryrun": (_ADMIN, None),
    "acl|log": (_ADMIN, None),
    "acl|save": (_ADMIN, None),
    "acl|load": (_ADMIN, None),
    # ringkv's own
    "ringkv.getv": ("read string fast", R),
    "ringkv.hgetv": ("read hash fast", R),
    "ringkv.zscorev": ("read sortedset fast", R),
    "ringkv.putv": ("write string fast", W),
    "ringkv.delv": ("write string fast", W),
    "ringkv.cas": ("write string slow", W),
    "ringkv.cad": ("write string slow", W),
    "ringkv.msetatomic": ("write string slow", W),
    "ringkv.consistency": (_CONN_FAST, None),
    "ringkv.at": (_CONN_FAST, None),
    "ringkv.session": (_CONN_FAST, None),
    "ringkv.namespace": (_CONN_FAST, None),
    "ringkv.namespaces": ("slow connection", None),
    "ringkv.ring": ("slow connection", None),
    "ringkv.status": (_ADMIN, None),
    "ringkv.repair": (_ADMIN, None),
    "ringkv.hotkeys": (_ADMIN, None),
    "ringkv.fault": (_ADMIN, None),
    "ringkv.admin": (_ADMIN, None),
    "ringkv.admin|status": (_ADMIN, None),
    "ringkv.admin|decommission": (_ADMIN, None),
    "ringkv.admin|remove": (_ADMIN, None),
    "ringkv.admin|join": (_ADMIN, None),
    "ringkv.admin|admit": (_ADMIN, None),
    "ringkv.admin|cleanup": (_ADMIN, None),
    "ringkv.admin|compaction": (_ADMIN, None),
    "ringkv.admin|start": (_ADMIN, None),  # long operations (docs/operations.md)
    "ringkv.admin|operations": (_ADMIN, None),
    "ringkv.admin|operation": (_ADMIN, None),
    "ringkv.admin|wait": (_ADMIN, None),
    # persistence and backup (Redis's categories for SAVE, BGSAVE, LASTSAVE, DUMP, RESTORE)
    "save": (_ADMIN, None),
    "bgsave": (_ADMIN, None),
    "lastsave": ("admin fast dangerous", None),
    "dump": ("keyspace read slow", R),
    "restore": ("keyspace write slow dangerous", W),
    "ringkv.snapshot": (_ADMIN, None),
    "ringkv.backup": (_ADMIN, None),
    "ringkv.restore": (_ADMIN, None),
    # settings (Redis's categories: CONFIG GET is @admin too) and scripting, which ringkv does
    # not run: FUNCTION and SCRIPT answer as with nothing loaded (api/resp_config.py)
    "config": ("slow", None),
    "config|get": (_ADMIN, None),
    "config|set": (_ADMIN, None),
    "config|resetstat": (_ADMIN, None),
    "config|rewrite": (_ADMIN, None),
    "config|help": ("slow", None),
    "function": ("slow", None),
    "function|flush": ("write slow scripting", None),
    "function|list": ("slow scripting", None),
    "function|stats": ("slow scripting", None),
    "function|kill": ("slow scripting", None),
    "function|help": ("slow scripting", None),
    "script": ("slow", None),
    "script|flush": ("slow scripting", None),
    "script|exists": ("slow scripting", None),
    "script|kill": ("slow scripting", None),
    "script|help": ("slow scripting", None),
}

UNIT_CATEGORIES: dict[str, frozenset[str]] = {u: frozenset(c.split()) for u, (c, _) in _UNITS.items()}
KEY_ACCESS: dict[str, str | None] = {u: a for u, (_, a) in _UNITS.items()}
ALL_UNITS: frozenset[str] = frozenset(_UNITS)


def _containers() -> dict[str, frozenset[str]]:
    subs: dict[str, set[str]] = {}
    for unit in _UNITS:
        if "|" in unit:
            base, sub = unit.split("|", 1)
            subs.setdefault(base, set()).add(sub)
    return {base: frozenset(s) for base, s in subs.items()}


CONTAINERS: dict[str, frozenset[str]] = _containers()  # container command -> its subcommands
COMMAND_NAMES: frozenset[str] = frozenset(u for u in _UNITS if "|" not in u)

# Commands every connection may run, authenticated or not, whatever its user's rules (Redis's
# no-auth flag): authenticating, and leaving.
NO_AUTH = frozenset({b"auth", b"hello", b"quit"})
# Commands whose every use is an audit line (who, from where, what, result): the cluster's
# administration, user changes, and emptying the keyspace.
AUDITED = frozenset({b"ringkv.admin", b"ringkv.repair", b"ringkv.fault", b"acl", b"flushall", b"flushdb",
                     b"ringkv.snapshot", b"ringkv.backup", b"ringkv.restore", b"save", b"bgsave"})
# ACL subcommands that change nothing (their use is not an admin action worth a line).
ACL_READ_ONLY = frozenset({"cat", "whoami", "genpass", "help", "getuser", "list", "users", "dryrun", "log"})


def unit_of(name: str, sub: bytes | None) -> str:
    """The unit a command runs as: `name|sub` for a container's known subcommand, else `name`."""
    subs = CONTAINERS.get(name)
    if subs is not None and sub is not None:
        s = sub.decode("ascii", "replace").lower()
        if s in subs:
            return f"{name}|{s}"
    return name


def units_in(category: str) -> list[str]:
    """The units of a category, sorted (ACL CAT category)."""
    return sorted(u for u, cats in UNIT_CATEGORIES.items() if category in cats)


def key_access(unit: str, argv: list[bytes]) -> str | None:
    """How the command touches its keys; SET with GET also reads (Redis resolves SET's variable
    flags the same way)."""
    access = KEY_ACCESS.get(unit)
    if unit == "set" and len(argv) > 3 and any(a.lower() == b"get" for a in argv[3:]):
        return RW
    return access
