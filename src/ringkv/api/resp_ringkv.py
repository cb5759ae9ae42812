"""ringkv's own RESP commands (RINGKV.*): consistency levels, namespaces, sibling-aware reads
and writes, and the operator's commands (status, repair, membership, fault injection)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from ringkv.api.resp import bulk, error, integer
from ringkv.api.resp_args import OK, SYNTAX, CommandReply, expire_ms
from ringkv.errors import AdminRequestError, CommandError, InvalidContextError
from ringkv.security import tenants
from ringkv.service.levels import Levels
from ringkv.service.limits import HOTKEYS_DEFAULT_COUNT, HOTKEYS_MAX_COUNT

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection


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
#   RINGKV.HGETV key field
#       -> the same shape for one field of a hash: every value concurrent HSETs of the field
#       left (HGET answers the newest), the field record's context (null: no record), ttl_ms
#       -1 (a field has no expiry of its own: the hash's is PTTL's). WRONGTYPE for a key that
#       holds no hash.
#   RINGKV.ZSCOREV key member
#       -> the same for one member of a sorted set: every score concurrent ZADDs of the member
#       left (ZSCORE answers the newest), as ZSCORE's text. WRONGTYPE for a key that holds no
#       sorted set.
#   RINGKV.PUTV key value [CONTEXT context] [PX ms | EX seconds]  -> the new context (bulk)
#   RINGKV.DELV key [CONTEXT context]                             -> the new context (bulk)
#       DELV writes a versioned tombstone: with the context of a read, no sibling that read
#       saw stays live.
#
# A context that ringkv did not give out is `-ERR invalid causal context: ...`.


def _level_arg(data: bytes, field: str) -> str:
    """A level as the client sent it, normalised; the service's `at()` parses and checks it
    (ONE, QUORUM, ALL, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM or a count against the key's N)."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise CommandError(f"{field} must be ONE, QUORUM, ALL, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM or a replica count")
    return text.upper()


def _level_text(level) -> bytes:
    value = getattr(level, "value", level)  # a ConsistencyLevel, or what a client sent
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
        cur = c.levels
        levels = Levels(cur.r if r is None else r, cur.w if w is None else w,
                        cur.strict if strict is None else strict)
        if SESSION_LEVEL in (r, w):
            _ensure_session(c)
        c.kv = c.base.at(*levels)
        c.levels = levels
        return OK
    r, w, strict = c.levels
    return c.enc.array([b"read", _level_text(r), b"write", _level_text(w),
                        b"mode", b"STRICT" if strict else b"SLOPPY"])


def _admin(c: RespConnection, command: str):
    admin = c.server.admin
    if admin is None:
        raise CommandReply(error(f"ERR {command} is not available on this server"))
    return admin


def _json(doc) -> bytes:
    return bulk(json.dumps(doc).encode())


async def cmd_status(c: RespConnection, argv):
    """RINGKV.STATUS: the cluster's members, partitions and keys, as one JSON document."""
    return _json(await _admin(c, "RINGKV.STATUS").status())


def cmd_hotkeys(c: RespConnection, argv):
    """RINGKV.HOTKEYS [COUNT n]: the keys this node coordinated most lately, most requested
    first (docs/hot-keys.md), as one JSON document; each key as UTF-8 text (undecodable bytes
    escaped) and as base64. Admin only: it shows key names of every namespace."""
    admin = _admin(c, "RINGKV.HOTKEYS")
    count = HOTKEYS_DEFAULT_COUNT
    if len(argv) == 3 and argv[1].lower() == b"count":
        try:
            count = int(argv[2])
        except ValueError:
            count = -1
        if not 1 <= count <= HOTKEYS_MAX_COUNT:
            return error(f"ERR RINGKV.HOTKEYS: COUNT must be an integer in 1..{HOTKEYS_MAX_COUNT}")
    elif len(argv) != 1:
        return error("ERR RINGKV.HOTKEYS: expected no argument, or COUNT n")
    return _json(admin.hot_keys(count))


async def cmd_repair(c: RespConnection, argv):
    """RINGKV.REPAIR [ASYNC]: anti-entropy now over every partition this node holds; JSON
    summary, or with ASYNC the operation's document at once (docs/operations.md)."""
    admin = _admin(c, "RINGKV.REPAIR")
    if len(argv) == 2 and argv[1].lower() == b"async":
        return _json(await admin.start_operation("repair", {}))
    if len(argv) != 1:
        return error("ERR RINGKV.REPAIR: expected no argument, or ASYNC")
    return _json(await admin.repair())


OPERATION_WAIT_DEFAULT_MS = 10_000  # RINGKV.ADMIN WAIT id without a timeout


def _operations(admin, what: bytes, args: list[bytes]) -> bytes | None:
    """The long operations' subcommands of RINGKV.ADMIN (docs/operations.md); None when
    `what` is none of them or its arguments do not fit."""
    text = [a.decode("utf-8", "replace") for a in args]
    if what == b"operations" and (not text or (len(text) == 1 and text[0].lower() == "running")):
        return _json({"operations": admin.operations(running_only=bool(text))})
    if what == b"operation" and len(text) == 1:
        return _json(admin.operation(text[0]))
    return None


async def _start(admin, args: list[bytes]) -> bytes:
    """RINGKV.ADMIN START kind [name value ...]: the operation's document at once."""
    text = [a.decode("utf-8", "replace") for a in args]
    kind, pairs = text[0].lower(), text[1:]
    params: dict = {}
    for i in range(0, len(pairs), 2):
        name, value = pairs[i].lower(), pairs[i + 1]
        params[name] = {"true": True, "false": False}.get(value.lower(), value)
    return _json(await admin.start_operation(kind, params))


async def _wait(admin, args: list[bytes]) -> bytes:
    """RINGKV.ADMIN WAIT id [timeout_ms]: the document once finished, or as it stands then."""
    timeout_ms = OPERATION_WAIT_DEFAULT_MS
    if len(args) == 2:
        try:
            timeout_ms = int(args[1])
        except ValueError:
            return error(f"ERR RINGKV.ADMIN WAIT: timeout_ms must be an integer, got {args[1][:40]!r}")
    return _json(await admin.wait_operation(args[0].decode("utf-8", "replace"), timeout_ms / 1000))


async def cmd_admin(c: RespConnection, argv):
    """RINGKV.ADMIN DECOMMISSION [ASYNC] | REMOVE node [FORCE] [ASYNC] | JOIN seed... | ADMIT
    host:port | CLEANUP [ASYNC] | STATUS: membership changes (node/membership.py,
    node/admission.py); START kind [name value ...] | OPERATIONS [RUNNING] | OPERATION id | WAIT
    id [timeout_ms]: long operations (node/operations.py, docs/operations.md); COMPACTION
    namespace [strategy [setting value ...]]: a namespace's compaction strategy; JSON replies."""
    admin = _admin(c, "RINGKV.ADMIN")
    what = argv[1].lower()
    args = argv[2:]
    # ASYNC (last): start the change as an operation and answer its document at once.
    run_async = bool(args) and args[-1].lower() == b"async" and what in (b"decommission", b"remove", b"cleanup")
    if run_async:
        args = args[:-1]
    if what == b"decommission" and not args:
        return _json(await (admin.start_operation("decommission", {}) if run_async else admin.decommission()))
    if what == b"remove" and (len(args) == 1 or (len(args) == 2 and args[1].lower() == b"force")):
        node = args[0].decode("utf-8", "replace")
        force = len(args) == 2
        if run_async:
            return _json(await admin.start_operation("remove", {"node_id": node, "force": force}))
        return _json(await (admin.remove(node, True) if force else admin.remove(node)))
    if what == b"status" and not args:
        return _json(admin.membership())
    if what == b"cleanup" and not args:
        return _json(await (admin.start_operation("cleanup", {}) if run_async else admin.cleanup()))
    if what == b"start" and args and len(args) % 2 == 1:
        return await _start(admin, args)
    if what == b"wait" and len(args) in (1, 2):
        return await _wait(admin, args)
    answered = _operations(admin, what, args)
    if answered is not None:
        return answered
    if what == b"join" and args:
        return _json(await admin.join([a.decode("utf-8", "replace") for a in args]))
    if what == b"admit" and len(args) == 1:
        return _json(await admin.admit(args[0].decode("utf-8", "replace")))
    if what == b"compaction" and args:
        return _compaction(admin, [a.decode("utf-8", "replace") for a in args])
    return error("ERR RINGKV.ADMIN: expected DECOMMISSION [ASYNC], REMOVE node [FORCE] [ASYNC], JOIN seed..., "
                 "ADMIT host:port, CLEANUP [ASYNC], STATUS, START kind [name value ...], OPERATIONS [RUNNING], "
                 "OPERATION id, WAIT id [timeout_ms] or COMPACTION namespace [strategy [setting value ...]]")


def _compaction(admin, args: list[str]) -> bytes:
    """RINGKV.ADMIN COMPACTION namespace: how its keys are compacted on this node;
    RINGKV.ADMIN COMPACTION namespace strategy [setting value ...]: compact them by `strategy`
    (leveled, tiered, time_window) from now on, on this node (docs/compaction.md)."""
    namespace, rest = args[0], args[1:]
    if not rest:
        return _json(admin.compaction(namespace))
    strategy, pairs = rest[0].lower(), rest[1:]
    if len(pairs) % 2:
        return error(f"ERR RINGKV.ADMIN COMPACTION: setting {pairs[-1]!r} has no value "
                     "(expected setting value pairs, e.g. compaction_window_s 600)")
    settings = {pairs[i].lower(): pairs[i + 1] for i in range(0, len(pairs), 2)}
    return _json(admin.set_compaction(namespace, strategy, settings))


def cmd_fault(c: RespConnection, argv):
    """RINGKV.FAULT PARTITION node... | HEAL | CLOCK_SKEW ms | BATCH_HOLD: tests and chaos runs only."""
    admin = _admin(c, "RINGKV.FAULT")
    try:
        return bulk(admin.fault(argv[1:]).encode())
    except AdminRequestError as exc:
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
    saved = c.kv
    if level == SESSION_LEVEL:
        _ensure_session(c)
    c.kv = c.base.at(level, level, c.levels.strict if strict is None else strict)
    try:
        # The command starts now and binds the service view it calls before it first waits,
        # so restoring the connection's own right after is safe for the commands behind it.
        c._execute(inner)
    finally:
        c.kv = saved
    return None


async def cmd_getv(c: RespConnection, argv):
    return _versions_reply(c, await c.kv.get_versions(argv[1]))


async def cmd_hgetv(c: RespConnection, argv):
    return _versions_reply(c, await c.kv.hash_field_versions(argv[1], argv[2]))


async def cmd_zscorev(c: RespConnection, argv):
    return _versions_reply(c, await c.kv.zset_score_versions(argv[1], argv[2]))


def _versions_reply(c: RespConnection, versions):
    now = c.kv.now_ms()
    siblings = [
        [s.value, s.timestamp, max(0, s.expire_at_ms - now) if s.expire_at_ms else -1]
        for s in versions.siblings
    ]
    return c.enc.array([versions.context, siblings])


def _versioned_options(c: RespConnection, argv, start: int, command: str, expiry: bool) -> tuple[bytes | None, int]:
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
                # The service reads an empty context as "none": a blind write the client
                # did not ask for.
                raise InvalidContextError(
                    "the context is empty: pass the context a read returned, or no CONTEXT for a blind write"
                )
            i += 2
        elif expiry and opt in (b"px", b"ex") and i + 1 < n and not expire_at:
            expire_at = expire_ms(c, argv[i + 1], 1 if opt == b"px" else 1000, False, command)
            i += 2
        else:
            raise CommandReply(SYNTAX)
    return context, expire_at


async def cmd_putv(c: RespConnection, argv):
    context, expire_at = _versioned_options(c, argv, 3, "ringkv.putv", True)
    return bulk(await c.kv.put_versioned(argv[1], argv[2], context, expire_at_ms=expire_at))


async def cmd_delv(c: RespConnection, argv):
    context, _ = _versioned_options(c, argv, 2, "ringkv.delv", False)
    return bulk(await c.kv.put_versioned(argv[1], None, context))


# ---------------------------------------------------------------------- sessions
#
#   RINGKV.SESSION            start a new session on this connection -> its token (bulk)
#   RINGKV.SESSION token      resume the session `token` names (from any connection or node)
#                             -> the token
#   RINGKV.SESSION TOKEN      the session's token now (null: no session)
#   RINGKV.SESSION TOKEN CHANGED
#                             the token, or 0 when it is still the one this connection last
#                             answered or resumed (null: no session): a client that keeps the
#                             token receives it only when a command changed it
#   RINGKV.SESSION END        leave the session -> OK
#
# In a session every read answers a version at least as new as everything the session wrote
# or read of the key (read-your-writes, monotonic reads), at any level; the token is updated
# server-side after each command, so RINGKV.SESSION TOKEN is needed only to carry the session
# to another connection (docs/consistency.md, "Sessions").

SESSION_LEVEL = "SESSION"


def _enter_session(c: RespConnection, token) -> None:
    c.kv_session = token
    c.base = c.base.with_session(token)
    c.kv = c.base.at(*c.levels)


def _ensure_session(c: RespConnection) -> None:
    """A request at level SESSION runs in the connection's session, started if it has none."""
    if c.kv_session is None:
        _enter_session(c, c.base.sessions.new())


# How often RINGKV.SESSION TOKEN, pipelined behind commands still running, looks again
# whether they have finished (_token_after).
SESSION_TOKEN_POLL_S = 0.001


def _token_reply(c: RespConnection, changed_only: bool = False) -> bytes:
    if c.kv_session is None:
        return c.enc.null
    if changed_only and c.kv_session.unchanged:
        return integer(0)
    return bulk(c.base.sessions.encode_bytes(c.kv_session))


async def _token_after(c: RespConnection, earlier: list[list], changed_only: bool) -> bytes:
    """The token once the commands started before this one (their reply slots `earlier`)
    have finished: the token must hold what they wrote or read."""
    while not all(slot[0] for slot in earlier):
        await asyncio.sleep(SESSION_TOKEN_POLL_S)
    return _token_reply(c, changed_only)


def cmd_session(c: RespConnection, argv):
    """RINGKV.SESSION [token | TOKEN | END] (see above)."""
    changed_only = len(argv) == 3 and argv[1].lower() == b"token" and argv[2].lower() == b"changed"
    if len(argv) > 2 and not changed_only:
        return error("ERR syntax error: expected RINGKV.SESSION [token | TOKEN [CHANGED] | END]")
    codec = c.base.sessions
    if len(argv) == 1:
        _enter_session(c, codec.new())
        return bulk(codec.encode_bytes(c.kv_session))
    arg = argv[1]
    if arg.lower() == b"token":
        # Pipelined commands start before earlier ones finish (api/resp_server.py); a token
        # pipelined behind a command that waits (a SERIAL read, a session read's search, a
        # forwarded write) must wait for it, or it misses what that command observes. The
        # Python client pipelines every session write so (docs/client.md, "Consistency").
        pending = [slot for slot in c._pending if not slot[0]]
        return _token_after(c, pending, changed_only) if pending else _token_reply(c, changed_only)
    if arg.lower() == b"end":
        c.kv_session = None
        c.base = c.base.with_session(None)
        c.kv = c.base.at(*c.levels)
        return OK
    if c.kv_session is not None and c.kv_session.encoded_as(arg):
        return bulk(arg)  # the connection holds the session at this token already
    _enter_session(c, codec.decode(arg))  # SessionError names what is wrong with it (or a cached copy)
    return bulk(codec.encode_bytes(c.kv_session))


def cmd_namespace(c: RespConnection, argv):
    """RINGKV.NAMESPACE [name]: the connection's namespace; with a name, switch to it
    ("default" is the default namespace). Like SELECT, it lasts until the connection ends."""
    if len(argv) == 1:
        return bulk(c.base.namespace.name.encode())
    c.base = c.base.in_namespace(argv[1])  # UnknownNamespaceError names the configured ones
    c.kv = c.base.at(*c.levels)
    return OK


def cmd_ring(c: RespConnection, argv):
    """RINGKV.RING: where the connection's namespace keeps its keys, as one JSON document, for
    token-aware clients (docs/client.md): the partition count, the token rule, every node with
    its RESP address and datacenter, and each partition's replicas in preference order."""
    return _json(c.kv.ring_map())


def cmd_namespaces(c: RespConnection, argv):
    """RINGKV.NAMESPACES: every namespace the user may use (security/tenants.py), each as
    [name, replicas, conflict_policy]."""
    return c.enc.array([
        [s.name.encode(), s.replicas, s.conflict_policy.value.encode()]
        for s in tenants.visible(c.session.user, c.kv.namespaces())
    ])


# ---------------------------------------------------------------------- compare-and-set
#
#   RINGKV.CAS key expected-version new-value [EX seconds | PX ms]
#       -> [1, new version] when the key's version was still `expected-version` (an empty one,
#          or 0: the key has no live value), else [0, current version or null]. The version is
#          the causal context RINGKV.GETV (or HTTP's `context`) answers, or its number (decimal
#          digits: HTTP's `version`, the count of the key's writes; a context never reads as
#          digits). Answers are contexts. On the consensus path (docs/consistency.md):
#          linearizable with every other CAS, INCR, SET NX ... on the key.
#   RINGKV.CAD key expected-version  -> 1 when deleted, 0 when the version had changed

MAX_VERSION_DIGITS = 19  # a version number fits a signed 64-bit integer


def _expected(arg: bytes) -> bytes | int | None:
    """RINGKV.CAS's expected version: None (empty: no live value), a number, or a context."""
    if not arg:
        return None
    if arg.isdigit() and len(arg) <= MAX_VERSION_DIGITS:
        return int(arg)
    return arg


async def cmd_cas(c: RespConnection, argv):
    expire_at = 0
    if len(argv) == 6 and argv[4].lower() in (b"ex", b"px"):
        expire_at = expire_ms(c, argv[5], 1000 if argv[4].lower() == b"ex" else 1, False, "ringkv.cas")
    elif len(argv) != 4:
        return SYNTAX
    expected = _expected(argv[2])
    if isinstance(expected, int):
        written = await c.kv.write(argv[1], argv[3], expire_at_ms=expire_at, expected=expected)
        current = None if not written.applied and written.created else written.version
        return c.enc.array([1 if written.applied else 0, current])
    applied, version = await c.kv.cas(argv[1], expected, argv[3], expire_at_ms=expire_at)
    return c.enc.array([1 if applied else 0, version])


async def cmd_cad(c: RespConnection, argv):
    expected = _expected(argv[2])
    if expected is None or expected == 0:
        return error("ERR RINGKV.CAD needs the version a read returned")
    if isinstance(expected, int):
        written = await c.kv.write(argv[1], None, expected=expected)
        return integer(1 if written.applied else 0)
    applied, _ = await c.kv.cas(argv[1], expected, None)
    return integer(1 if applied else 0)


# ---------------------------------------------------------------------- atomic batches
#
#   RINGKV.MSETATOMIC key value [key value ...]
#       -> ["success", []] when every key is written at W, or ["pending", [key, ...]] when the
#          batch is committed in the batch log and those keys wait for its replay. All or
#          nothing: docs/atomic-batches.md (the HTTP API's batch/put with "atomic": true).


async def cmd_mset_atomic(c: RespConnection, argv):
    if len(argv) % 2 == 0:
        return error("ERR wrong number of arguments for 'ringkv.msetatomic' command")
    outcome = await c.kv.write_atomic([(k, v, 0) for k, v in zip(argv[1::2], argv[2::2], strict=True)])
    return c.enc.array([b"pending" if outcome.pending else b"success", list(outcome.pending)])

