"""Users on the Redis protocol: the command gate, AUTH, HELLO's AUTH, and the ACL commands.

The gate (`gate`) runs before a command's handler on a connection whose session is not `open`
(api/resp_server.py: an open session is one whose user may run every command on every key,
which skips the gate except for audited commands). In order:

1. users not loaded (and requirepass / admin_password_file not applied) yet on this node: the
   command waits for them (`AccessControl.ensure_ready`), up to a bound, then is refused;
2. the session's user changed (security/directory.py): it moves to the user's newest version,
   or, deleted, disabled or its password removed, is no longer authenticated;
3. not authenticated: protected mode refuses a client that is not on loopback (`-DENIED`, and
   the connection closes); AUTH, HELLO and QUIT run; the default user is taken when it needs
   no password; anything else is `-NOAUTH Authentication required.`;
4. the command's unit (security/categories.py) must be allowed: else `-NOPERM User <name> has
   no permissions to run the '<unit>' command`;
5. every key at the command table's key positions (`CommandSpec.first_key`, `last_key`,
   `key_step`) must match a pattern with the permission the command needs: else `-NOPERM No
   permissions to access a key`. SCAN and KEYS name no key: they need only the command's
   permission and list every key, as in Redis;
6. audited commands (categories.AUDITED) run under an audit line with their result.

Errors and replies are Redis's words (WRONGPASS, NOAUTH, NOPERM); docs/security.md and
docs/redis-compat.md list the commands and what differs from Redis.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringkv.api.resp import bulk, error, integer
from ringkv.api.resp_args import OK, SYNTAX, text
from ringkv.errors import CommandError
from ringkv.security import tenants
from ringkv.security.acl import DEFAULT_USER, AclRuleError, User, check_username, redact_rules
from ringkv.security.categories import (
    ACL_READ_ONLY,
    AUDITED,
    CATEGORIES,
    NO_AUTH,
    key_access,
    unit_of,
    units_in,
)

if TYPE_CHECKING:
    from ringkv.api.resp_commands import CommandSpec
    from ringkv.api.resp_server import RespConnection
    from ringkv.security.access import AccessControl

NOAUTH = error("NOAUTH Authentication required.")
WRONGPASS = error("WRONGPASS invalid username-password pair or user is disabled.")
NOPERM_KEY = error("NOPERM No permissions to access a key")
HELLO_NOAUTH = error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
                     "<proto> AUTH <user> <pass> option can be used to authenticate the client and select the "
                     "RESP protocol version at the same time")
NO_DIRECTORY = error("ERR ACL is not available on this server: it runs without a user directory")
MAX_GENPASS_BITS = 4096


def _error_reply(exc: Exception) -> bytes:
    from ringkv.api.resp_server import error_reply

    return error_reply(exc)


def keys_of(spec: CommandSpec, argv: list[bytes]) -> list[bytes]:
    """The keys a command names: its table entry's `keys` when it has one, else at the
    table's positions."""
    if spec.keys is not None:
        try:
            return spec.keys(argv[1:])
        except (CommandError, IndexError):
            return []  # malformed: the command refuses it with Redis's error, touching nothing
    first = spec.first_key
    if not first or first >= len(argv):
        return []
    last = spec.last_key if spec.last_key >= 0 else len(argv) + spec.last_key
    return argv[first: min(last, len(argv) - 1) + 1: spec.key_step or 1]


def noperm_command(user: User, unit: str) -> bytes:
    return error(f"NOPERM User {user.name} has no permissions to run the '{unit}' command")


# ---------------------------------------------------------------------- the gate


def gate(c: RespConnection, spec: CommandSpec, argv: list[bytes]) -> Any:
    """The command's result if it may run (its handler's), else the refusal (module docstring)."""
    access = c.server.access
    if access is None:
        # No users: every command runs, and admin actions still leave their audit line (the
        # client's address, no user).
        if spec.name in AUDITED:
            unit = unit_of(spec.name.decode(), argv[1] if len(argv) > 1 else None)
            if not (spec.name == b"acl" and unit[4:] in ACL_READ_ONLY):
                return _audited(c, spec, argv, unit)
        return spec.handler(c, argv)
    pending = c.session.pending_auth
    if pending is not None and not _authenticates(spec.name, argv):
        return _after(c, spec, argv, pending)  # run as the user the AUTH before it makes
    if not access.ready:
        return _after(c, spec, argv, access.ensure_ready())
    session = c.session
    user = session.user
    if user is not None and not user.current:
        state = access.revalidate(session)
        if state is None:
            return _after(c, spec, argv, access.directory.get(user.name))
        user = session.user
    name = spec.name
    if user is None:
        if access.protected_refusal(session):
            return refuse_protected(c)
        if name in NO_AUTH:
            return spec.handler(c, argv)
        if not access.resolve_default(session):
            return NOAUTH
        user = session.user
        assert user is not None
    if name in NO_AUTH:
        return spec.handler(c, argv)
    unit = unit_of(name.decode(), argv[1] if len(argv) > 1 else None)
    audited = name in AUDITED and not (name == b"acl" and unit[4:] in ACL_READ_ONLY)
    if not user.can_run(unit):
        access.audit.permission_denied("resp")
        if audited:
            access.audit.admin_action("resp", session.client, user.name, unit, _shown_args(argv), "denied",
                                      "no permission to run the command")
        return noperm_command(user, unit)
    if (spec.first_key or spec.keys is not None) and not user.unrestricted:
        kind = key_access(unit, argv)
        if kind is not None:
            for key in keys_of(spec, argv):
                if not user.may_access(key, kind):
                    access.audit.permission_denied("resp")
                    return NOPERM_KEY
    if user.namespaces is not None:  # a tenant: only its namespaces (security/tenants.py)
        refused = tenants.resp_refusal(user, name, argv, spec.first_key or int(spec.keys is not None),
                                       c.kv.namespace.name)
        if refused is not None:
            access.audit.permission_denied("resp")
            return error("NOPERM " + refused)
    if spec.first_key or spec.keys is not None or name in tenants.NAMESPACE_COMMANDS:
        c.kv.admit()  # the namespace's max_requests_per_s (node/quotas.py)
    if audited:
        return _audited(c, spec, argv, unit)
    return spec.handler(c, argv)


def _authenticates(name: bytes, argv: list[bytes]) -> bool:
    """AUTH, and HELLO with AUTH: they queue behind an AUTH in progress themselves."""
    return name == b"auth" or (name == b"hello" and any(a.lower() == b"auth" for a in argv[2:]))


async def _after(c: RespConnection, spec: CommandSpec, argv: list[bytes], loading) -> bytes:
    """The gate again once the users it needed are read (the command keeps its reply slot)."""
    try:
        await loading
    except Exception as exc:
        return error(f"ERR cannot check this command's permissions now: the users in the system namespace are not "
                     f"readable ({exc})")
    result = gate(c, spec, argv)
    if result is None or type(result) is bytes:
        return result or b""
    return await result


def refuse_protected(c: RespConnection) -> bytes:
    access = c.server.access
    assert access is not None
    access.audit.auth_failure("resp", c.session.client, None, "protected_mode")
    from ringkv.security.access import PROTECTED_MODE_MESSAGE

    c._reply(error("DENIED " + PROTECTED_MODE_MESSAGE))
    c.flush_now()
    c.close_after_reply()
    return b""


def _shown_args(argv: list[bytes]) -> list[str]:
    """A command's arguments as an audit line may show them: ACL SETUSER's passwords redacted."""
    if len(argv) > 2 and argv[0].lower() == b"acl" and argv[1].lower() == b"setuser":
        return [text(argv[1]), text(argv[2]), *redact_rules(argv[3:])]
    return [text(a) for a in argv[1:]]


async def _audited(c: RespConnection, spec: CommandSpec, argv: list[bytes], unit: str) -> bytes:
    session = c.session
    try:
        result = spec.handler(c, argv)
        if result is not None and type(result) is not bytes:
            result = await result
    except Exception as exc:
        result = _error_reply(exc)
    result = result or b""
    failed = result.startswith(b"-")
    detail = result[1:].split(b"\r\n", 1)[0].decode("utf-8", "replace") if failed else ""
    if c.server.access is None:  # no users: the connection's address, no user name
        c.server.audit.admin_action("resp", c.peer, None, unit, _shown_args(argv), "error" if failed else "ok",
                                    detail)
    else:
        c.server.audit.admin_action("resp", session.client, session.name, unit, _shown_args(argv),
                                    "error" if failed else "ok", detail)
    return result


# ---------------------------------------------------------------------- AUTH and HELLO


def cmd_auth(c: RespConnection, argv):
    """AUTH [username] password."""
    if len(argv) > 3:
        return SYNTAX
    username = argv[1] if len(argv) == 3 else None
    return _authenticate(c, username, argv[-1], OK)


async def _authenticate(c: RespConnection, username: bytes | None, password: bytes, reply: bytes | Callable[[], bytes]):
    access = c.server.access
    if access is None:  # no users: the default user, nopass, as Redis without requirepass
        if username is None:
            raise CommandError("AUTH <password> called without any password configured for the default user. "
                               "Are you sure your configuration is correct?")
        if username != DEFAULT_USER.encode():
            return WRONGPASS
    else:
        # Commands pipelined behind this AUTH wait for it (gate), and an AUTH behind another
        # waits for that one: replies and users follow the order the client sent.
        session = c.session
        before = session.pending_auth
        done = asyncio.get_running_loop().create_future()
        session.pending_auth = done
        session.open = False
        try:
            if before is not None:
                await before
            await access.authenticate(session, username, password)
        finally:
            if session.pending_auth is done:
                session.pending_auth = None
                session.reopen()
            done.set_result(None)
    return reply if type(reply) is bytes else reply()


def hello(c: RespConnection, auth: tuple[bytes, bytes] | None, switch: Callable[[], bytes]):
    """HELLO's authentication: `auth` is (username, password) when given; `switch()` changes the
    protocol and answers HELLO's map, once the client is authenticated."""
    if auth is not None:
        return _authenticate(c, auth[0], auth[1], switch)
    access = c.server.access
    session = c.session
    if access is None or session.user is not None or access.resolve_default(session):
        return switch()
    return HELLO_NOAUTH


# ---------------------------------------------------------------------- ACL


ACL_HELP = [
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]", "    List all categories, or the commands of one.",
    "DELUSER <username> [<username> ...]", "    Delete users (not 'default').",
    "DRYRUN <username> <command> [<arg> ...]", "    Whether the user may run the command.",
    "GETUSER <username>", "    The user's rules.",
    "GENPASS [<bit-count>]", "    A random password of 256 bits (or as many as asked).",
    "LIST", "    Every user, as rules.",
    "SETUSER <username> <rule> [<rule> ...]", "    Create or change a user (docs/security.md lists the rules).",
    "USERS", "    Every user name.",
    "WHOAMI", "    The current connection's user.",
    "Users live in the cluster's system namespace: there is no ACL file (SAVE, LOAD) and no ACL LOG (failures",
    "and admin actions are lines on the ringkv.audit logger of each node).",
]


def _directory(c: RespConnection):
    access: AccessControl | None = c.server.access
    return None if access is None else access.directory


def cmd_acl(c: RespConnection, argv):
    sub = argv[1].lower()
    n = len(argv)
    directory = _directory(c)
    if sub == b"help" and n == 2:
        return c.enc.array(ACL_HELP)
    if sub == b"cat" and n <= 3:
        if n == 2:
            return c.enc.array(list(CATEGORIES))
        category = argv[2].decode("utf-8", "replace").lower()
        if category not in CATEGORIES:
            return error(f"ERR Unknown category '{text(argv[2])}'")
        return c.enc.array(units_in(category))
    if sub == b"genpass" and n <= 3:
        bits = 256
        if n == 3:
            try:
                bits = int(argv[2])
            except ValueError:
                bits = 0
            if not 1 <= bits <= MAX_GENPASS_BITS:
                return error(f"ERR ACL GENPASS argument must be the number of bits for the output password, a "
                             f"positive number up to {MAX_GENPASS_BITS}")
        return bulk(secrets.token_hex((bits + 7) // 8)[: (bits + 3) // 4].encode())
    if sub == b"whoami" and n == 2:
        name = c.session.name
        return bulk((name or DEFAULT_USER).encode())
    if sub in (b"save", b"load") and n == 2:
        return error("ERR ringkv keeps users in the cluster's system namespace: there is no ACL file to save or load")
    if sub == b"log" and n <= 3:
        return c.enc.array([])  # failures are audit lines (ringkv.audit), not kept in memory
    if directory is None and sub in (b"setuser", b"getuser", b"deluser", b"list", b"users", b"dryrun"):
        return NO_DIRECTORY
    if sub == b"setuser" and n >= 3:
        return _setuser(c, argv[2], argv[3:])
    if sub == b"getuser" and n == 3:
        return _getuser(c, argv[2])
    if sub == b"deluser" and n >= 3:
        return _deluser(c, argv[2:])
    if sub == b"list" and n == 2:
        return _list(c)
    if sub == b"users" and n == 2:
        return _users(c)
    if sub == b"dryrun" and n >= 4:
        return _dryrun(c, argv[2], argv[3:])
    if sub in (b"help", b"cat", b"genpass", b"whoami", b"save", b"load", b"log", b"setuser", b"getuser",
               b"deluser", b"list", b"users", b"dryrun"):
        return error(f"ERR wrong number of arguments for 'acl|{sub.decode()}' command")
    return error(f"ERR unknown subcommand '{text(argv[1])}'. Try ACL HELP.")


def _name(raw: bytes) -> str:
    try:
        return check_username(raw)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


async def _setuser(c: RespConnection, raw_name: bytes, rules: list[bytes]):
    try:
        await _directory(c).setuser(_name(raw_name), list(rules))
    except AclRuleError as exc:
        return error(f"ERR {exc}")
    return OK


async def _getuser(c: RespConnection, raw_name: bytes):
    user = await _directory(c).get(_name(raw_name), fresh=True)
    if user is None:
        return c.enc.null
    rules = user.describe()
    keys = b" ".join(r for r in rules if r[:1] in (b"~", b"%"))
    channels = b" ".join(r for r in rules if r[:1] == b"&")
    commands = b" ".join(r for r in rules if r[:1] in (b"+", b"-"))
    flags = [b"on" if user.enabled else b"off"] + ([b"nopass"] if user.nopass else [])
    return c.enc.map({
        "flags": flags,
        "passwords": [h.encode() for h in user.passwords],
        "commands": commands,
        "keys": keys,
        "channels": channels,
        "selectors": [],
    })


async def _deluser(c: RespConnection, raw_names: list[bytes]):
    return integer(await _directory(c).deluser([_name(n) for n in raw_names]))


async def _list(c: RespConnection):
    users = await _directory(c).users()
    return c.enc.array([b"user " + u.name.encode() + b" " + b" ".join(u.describe()) for u in users])


async def _users(c: RespConnection):
    return c.enc.array([n.encode() for n in await _directory(c).names()])


async def _dryrun(c: RespConnection, raw_name: bytes, command: list[bytes]):
    from ringkv.api.resp_commands import COMMANDS

    name = _name(raw_name)
    user = await _directory(c).get(name, fresh=True)
    if user is None:
        return error(f"ERR User '{name}' not found")
    spec = COMMANDS.get(command[0].lower())
    if spec is None:
        return error(f"ERR Command '{text(command[0])}' not found")
    if spec.name in NO_AUTH:
        return OK
    unit = unit_of(spec.name.decode(), command[1] if len(command) > 1 else None)
    if not user.can_run(unit):
        return bulk(f"User {user.name} has no permissions to run the '{unit}' command".encode())
    kind = key_access(unit, command)
    if kind is not None:
        for key in keys_of(spec, command):
            if not user.may_access(key, kind):
                return bulk(f"User {user.name} has no permissions to access the '{text(key)}' key".encode())
    return OK
