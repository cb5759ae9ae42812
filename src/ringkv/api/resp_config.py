"""CONFIG, FUNCTION and SCRIPT on the Redis protocol (docs/redis-compat.md, "CONFIG,
FUNCTION and SCRIPT").

- CONFIG GET pattern [pattern ...] answers the node's settings (`AdminService.config_get`:
  configuration-file names, and the Redis names ringkv has an equivalent or a fixed answer
  for; never a secret) as a map (RESP3) or a flat name, value array (RESP2); at most
  runtime_config.MAX_GET_PATTERNS (256) patterns in one call.
- CONFIG SET name value [name value ...] changes the settings a running node takes, all or
  none (`AdminService.config_set`), with Redis 7's errors: "Unknown option or number of
  arguments for CONFIG SET - 'x'", and "CONFIG SET failed (possibly related to argument 'x') -
  why" (read at start only: "can't set immutable config (...)"; a bad value: the field and
  its rule; "duplicate parameter"). Every CONFIG SET is an audit line.
- CONFIG RESETSTAT is refused: INFO's counters are also /metrics counters, which only grow
  (Prometheus reads a drop as a restart), and the node's own (expired_keys) have no reset.
  CONFIG REWRITE is refused: the configuration file belongs to the operator.
- FUNCTION and SCRIPT: ringkv runs no scripts, so there is nothing to flush, list or kill.
  FUNCTION FLUSH and SCRIPT FLUSH [ASYNC|SYNC] answer OK (test harnesses call them at set-up),
  FUNCTION LIST an empty array, FUNCTION STATS no running script and no engine, SCRIPT EXISTS
  0 for every sha, FUNCTION KILL and SCRIPT KILL Redis's NOTBUSY; arguments are checked as
  Redis 7 checks them. Loading or running code (FUNCTION LOAD, SCRIPT LOAD, EVAL, FCALL) is not
  offered: those are unknown subcommands and commands.

Permissions are Redis's (security/categories.py): every CONFIG subcommand but HELP is @admin
@slow @dangerous, FUNCTION FLUSH @write @slow @scripting, the rest @slow @scripting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringkv.api.resp import error, integer
from ringkv.api.resp_args import OK, SYNTAX, CommandReply, text
from ringkv.errors import ConfigSetError

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection

NOTBUSY = error("NOTBUSY No scripts in execution right now.")

CONFIG_HELP = [
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern> [<pattern> ...]",
    "    Return parameters matching the glob-like <pattern>s and their values: the node's settings by their",
    "    configuration-file names, and the Redis names ringkv has an equivalent for.",
    "SET <directive> <value> [<directive> <value> ...]",
    "    Set the configuration <directive>s to <value>s, all or none; only the settings a running node takes",
    "    (docs/configuration.md). Not stored: a restart takes the configuration file's values.",
    "RESETSTAT",
    "    Not offered: INFO's counters are also /metrics counters, which only grow.",
    "REWRITE",
    "    Not offered: the configuration file belongs to the operator.",
    "HELP",
    "    Prints this help.",
]
FUNCTION_HELP = [
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return the libraries: ringkv runs no scripts, so none.",
    "STATS",
    "    Return the running function (none) and the engines (none).",
    "KILL",
    "    Kill the running function: none runs.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries: there are none, so this does nothing.",
    "HELP",
    "    Prints this help.",
]
SCRIPT_HELP = [
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Whether the scripts are in the script cache: ringkv runs no scripts, so never.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the script cache: it is always empty, so this does nothing.",
    "KILL",
    "    Kill the running script: none runs.",
    "HELP",
    "    Prints this help.",
]


def _arity(command: str, sub: bytes) -> bytes:
    return error(f"ERR wrong number of arguments for '{command}|{sub.decode('utf-8', 'replace').lower()}' command")


def _unknown_subcommand(command: str, sub: bytes) -> bytes:
    return error(f"ERR unknown subcommand '{text(sub)}'. Try {command.upper()} HELP.")


def _admin(c: RespConnection):
    admin = c.server.admin
    if admin is None:
        raise CommandReply(error("ERR CONFIG is not available on this server: it has no node settings"))
    return admin


# ---------------------------------------------------------------------- CONFIG


def cmd_config(c: RespConnection, argv):
    sub = argv[1].lower()
    n = len(argv)
    if sub == b"get":
        if n < 3:
            return _arity("config", sub)
        values = _admin(c).config_get([a.decode("utf-8", "surrogateescape") for a in argv[2:]])
        return c.enc.map({name.encode(): value.encode() for name, value in values.items()})
    if sub == b"set":
        if n < 4:
            return _arity("config", sub)
        if n % 2:
            return SYNTAX  # Redis 7.0's answer to a name without a value after the first pair
        return _config_set(c, argv)
    if sub in (b"resetstat", b"rewrite", b"help") and n != 2:
        return _arity("config", sub)
    if sub == b"resetstat":
        return error("ERR CONFIG RESETSTAT is not supported: INFO's counters are also the node's /metrics "
                     "counters, which only grow")
    if sub == b"rewrite":
        return error("ERR CONFIG REWRITE is not supported: the node's configuration file belongs to the operator; "
                     "copy the settings changed with CONFIG SET into it (CONFIG GET shows them)")
    if sub == b"help":
        return c.enc.array(CONFIG_HELP)
    return _unknown_subcommand("config", argv[1])


def _config_set(c: RespConnection, argv) -> bytes:
    admin = _admin(c)
    pairs = [(argv[i].decode("utf-8", "surrogateescape"), argv[i + 1].decode("utf-8", "surrogateescape"))
             for i in range(2, len(argv), 2)]
    try:
        admin.config_set(pairs)
    except ConfigSetError as exc:
        argument = exc.argument.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:128]
        if exc.unknown:
            reply = error(f"ERR Unknown option or number of arguments for CONFIG SET - '{argument}'")
        else:
            reply = error(f"ERR CONFIG SET failed (possibly related to argument '{argument}') - {exc.reason}")
        _audit(c, argv, "error", exc.reason if not exc.unknown else "unknown option")
        return reply
    _audit(c, argv, "ok")
    return OK


def _audit(c: RespConnection, argv, result: str, detail: str = "") -> None:
    """A setting changed (or refused) is an admin action: one audit line, as for RINGKV.ADMIN."""
    args = [text(a) for a in argv[2:]]
    if c.server.access is None:
        c.server.audit.admin_action("resp", c.peer, None, "config|set", args, result, detail)
    else:
        c.server.audit.admin_action("resp", c.session.client, c.session.name, "config|set", args, result, detail)


# ---------------------------------------------------------------------- FUNCTION and SCRIPT


def _flush_mode_ok(argv) -> bool:
    return len(argv) == 2 or argv[2].lower() in (b"sync", b"async")


def cmd_function(c: RespConnection, argv):
    sub = argv[1].lower()
    n = len(argv)
    if sub == b"flush":
        if n > 3:
            return error(f"ERR unknown subcommand or wrong number of arguments for '{text(argv[1])}'. "
                         "Try FUNCTION HELP.")
        if not _flush_mode_ok(argv):
            return error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        return OK  # no libraries to delete
    if sub == b"list":
        return _function_list(c, argv)
    if sub in (b"stats", b"kill", b"help") and n != 2:
        return _arity("function", sub)
    if sub == b"stats":
        return c.enc.map({b"running_script": None, b"engines": {}})
    if sub == b"kill":
        return NOTBUSY
    if sub == b"help":
        return c.enc.array(FUNCTION_HELP)
    return _unknown_subcommand("function", argv[1])


def _function_list(c: RespConnection, argv) -> bytes:
    """FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]: the arguments checked as Redis does, then
    the libraries: none."""
    with_code = library = False
    i = 2
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"withcode" and not with_code:
            with_code = True
            i += 1
        elif opt == b"libraryname" and not library:
            if i + 1 >= len(argv):
                return error("ERR library name argument was not given")
            library = True
            i += 2
        else:
            return error(f"ERR Unknown argument {text(argv[i])}")
    return c.enc.array([])


def cmd_script(c: RespConnection, argv):
    sub = argv[1].lower()
    n = len(argv)
    if sub == b"flush":
        if n > 3 or not _flush_mode_ok(argv):
            return error("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        return OK  # the script cache is always empty
    if sub == b"exists":
        if n < 3:
            return _arity("script", sub)
        zero = integer(0)
        return c.enc.array_header(n - 2) + zero * (n - 2)
    if sub in (b"kill", b"help") and n != 2:
        return _arity("script", sub)
    if sub == b"kill":
        return NOTBUSY
    if sub == b"help":
        return c.enc.array(SCRIPT_HELP)
    return _unknown_subcommand("script", argv[1])
