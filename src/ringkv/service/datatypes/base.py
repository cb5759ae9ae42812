"""What every data type shares: kinds, how a key's value is seen by a command, the command
table's entries, and the errors Redis answers.

A data-type command is pure: `run(ctx, args, entries)` takes the command's arguments (after
its name) and what each key it names holds now, and answers (the writes, the reply). It never
does IO, reads no clock but `ctx.now_ms` and no randomness but `ctx.random`, so the same code
runs on a single node, on the replica a command was forwarded to, and inside a consensus round
(node/commands.TypeWrite), and in property tests against a model.

A key's value, as a command sees it, is an `Entry`: its kind and its decoded value:

| kind        | value                                   |
|-------------|-----------------------------------------|
| KIND_STRING | bytes                                   |
| KIND_HASH   | dict[bytes, bytes] (field -> value)     |
| KIND_LIST   | list[bytes] (head first)                |
| KIND_SET    | set[bytes]                              |
| KIND_ZSET   | dict[bytes, float] (member -> score)    |

Replies: bytes is a bulk string, str a status reply ("OK", TYPE's "hash"), int an integer,
float a double, None a null, list an array; reads may also answer dict (a RESP3 map) or set
(a RESP3 set). A write's reply travels as msgpack from the replica that ran it, which keeps
str apart from bytes but has no set: its `shape` (idempotent) restores one.

A command may change the decoded value in place and answer the entry in `writes`; an entry
whose collection is empty is a delete (Redis removes a key whose collection empties), as is
None. Keys not in `writes` are not written.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringkv.errors import CommandError

KIND_STRING = 0
KIND_HASH = 1
KIND_LIST = 2
KIND_SET = 3
KIND_ZSET = 4

TYPE_NAMES = {KIND_STRING: "string", KIND_HASH: "hash", KIND_LIST: "list", KIND_SET: "set", KIND_ZSET: "zset"}
KINDS_BY_NAME = {name: kind for kind, name in TYPE_NAMES.items()}

WRONGTYPE_MESSAGE = "Operation against a key holding the wrong kind of value"


class WrongTypeError(CommandError):
    """Redis's WRONGTYPE: the key holds another type than the command works on."""

    def __init__(self) -> None:
        super().__init__(WRONGTYPE_MESSAGE, kind="WRONGTYPE", status=409)


@dataclass(slots=True)
class Entry:
    """What one key holds: `kind` (KIND_*), its decoded `value`, and its expiry (ms since the
    epoch, 0: none)."""

    kind: int
    value: Any
    expire_at_ms: int = 0

    def is_empty(self) -> bool:
        """A collection with no element (a string is never empty in this sense)."""
        return self.kind != KIND_STRING and not self.value


def expect(entry: Entry | None, kind: int) -> Any:
    """The value of `entry` when it holds `kind`, None when the key is missing; WrongTypeError
    otherwise."""
    if entry is None:
        return None
    if entry.kind != kind:
        raise WrongTypeError()
    return entry.value


@dataclass(slots=True)
class Ctx:
    """What a command may know beside its keys: the time and a source of randomness (SPOP,
    SRANDMEMBER, HRANDFIELD). `limits` are the node's bounds a command checks (e.g.
    max_collection_bytes is checked by the executor, not here)."""

    now_ms: int
    random: random.Random = field(default_factory=random.Random)


Writes = dict[bytes, Entry | None]
Run = Callable[[Ctx, list[bytes], dict[bytes, Entry | None]], tuple[Writes, Any]]
KeysOf = Callable[[list[bytes]], list[bytes]]


def first_key(args: list[bytes]) -> list[bytes]:
    """The keys of a command whose only key is its first argument."""
    return [args[0]]


def _same(reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class TypeCommand:
    """One data-type command.

    `name`: upper case ("HSET"). `arity`: as Redis counts it (n exact, -n at least n, the name
    included). `write`: whether it may change a key (then it runs on the key's write path; the
    consensus path in a cluster). `keys(args)`: the keys it names, in order (args exclude the
    name; raise CommandError for malformed arguments that hide where the keys are, e.g.
    ZUNIONSTORE's numkeys). `run`: see the module docstring. `first_key`, `last_key`, `key_step`
    are what COMMAND INFO reports. `shape(reply)` turns a reply that travelled as msgpack
    (lists only) back into what the adapter encodes (dict for a RESP3 map, set for a RESP3
    set, float for a double) and is the identity by default.
    """

    name: str
    arity: int
    write: bool
    run: Run
    keys: KeysOf = first_key
    first_key: int = 1
    last_key: int = 1
    key_step: int = 1
    shape: Callable[[Any], Any] = _same


def wrong_arity(name: str) -> CommandError:
    return CommandError(f"wrong number of arguments for '{name.lower()}' command")


SYNTAX_ERROR = "syntax error"
NOT_INTEGER = "value is not an integer or out of range"
NOT_FLOAT = "value is not a valid float"


def double_text(value: float) -> bytes:
    """How Redis writes a double in a reply (ZSCORE, INCRBYFLOAT's siblings in RESP2, RESP3's
    double): inf/-inf/nan, integral values without a fraction, else the shortest text that
    reads back to the same double (Python's repr, like Redis's fpconv)."""
    if value != value:
        return b"nan"
    if value in (math.inf, -math.inf):
        return b"inf" if value > 0 else b"-inf"
    if value.is_integer() and -(2**52) < value < 2**52:
        if value == 0 and math.copysign(1.0, value) < 0:
            return b"-0"
        return b"%d" % int(value)
    text = repr(value)
    # Integral doubles past 2**52 print without Python's ".0", as fpconv writes them.
    return (text[:-2] if text.endswith(".0") else text).encode()
