"""Tenants: users bound to namespaces (docs/security.md, Tenants).

A user may be bound to some namespaces; it then sees and touches only those: a command on a
key, SCAN, KEYS, DBSIZE or FLUSHDB in another namespace is refused (`-NOPERM`, HTTP 403)
naming the namespace, RINGKV.NAMESPACE and `?namespace=` cannot select one, the listings
(RINGKV.NAMESPACES, GET /api/v1/namespaces) show only the user's, and FLUSHALL (every
namespace) is refused. A user not bound (every user until a rule below is given, so users
made before tenants keep working) may use every namespace.

Rules, beside Redis's ACL rules (Redis has no word of these forms: its key and channel rules
start with `~`, `%` and `&`, so these cannot be read as one of them):

    ns:NAME[,NAME...]     bind the user to these namespaces too ("default" is the default one)
    allnamespaces         every namespace (not bound): the state of a new user, and `reset`'s
    resetnamespaces       bound to none (add some with ns:)

A user's namespaces are kept in the user's record as those rules (acl.User.describe). Names
are checked for form here, not against the cluster's configuration: a user may be bound to a
namespace that a rolling restart has not added yet. Pure: no IO.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ringkv.errors import PermissionDeniedError

NS_PREFIX = b"ns:"
ALL_NAMESPACES = b"allnamespaces"
RESET_NAMESPACES = b"resetnamespaces"
MAX_NAMESPACES_PER_USER = 128  # a cluster has at most 64 (node/namespaces.py); room for renames
_NAME = re.compile(rb"[A-Za-z0-9_.-]{1,64}")
# Commands that act on the connection's namespace without naming a key (those naming keys are
# found by the command table's key positions).
NAMESPACE_COMMANDS = frozenset({b"scan", b"keys", b"dbsize", b"flushdb", b"randomkey"})
NOT_A_RULE = object()


class NamespaceRuleError(ValueError):
    """A namespace rule that cannot be applied; the message says why."""


def apply_rule(rule: bytes, current: frozenset[str] | None) -> Any:
    """The user's namespaces (None: every one) after `rule` (its words in any case; names as
    given: they are case-sensitive), or NOT_A_RULE when it is no namespace rule;
    NamespaceRuleError for a bad one."""
    word = rule.lower()
    if word == ALL_NAMESPACES:
        return None
    if word == RESET_NAMESPACES:
        return frozenset()
    if not word.startswith(NS_PREFIX):
        return NOT_A_RULE
    names = rule[len(NS_PREFIX):].split(b",")
    if not names or any(_NAME.fullmatch(n) is None for n in names):
        raise NamespaceRuleError("ns: takes namespace names separated by commas (each 1..64 letters, digits, "
                                 "'-', '_' or '.'), e.g. ns:sessions,cache")
    out = set(current or ()) | {n.decode() for n in names}
    if len(out) > MAX_NAMESPACES_PER_USER:
        raise NamespaceRuleError(f"a user is bound to at most {MAX_NAMESPACES_PER_USER} namespaces")
    return frozenset(out)


def describe(namespaces: frozenset[str] | None) -> list[bytes]:
    """The rules that give a user these namespaces (none for every namespace)."""
    if namespaces is None:
        return []
    if not namespaces:
        return [RESET_NAMESPACES]
    return [RESET_NAMESPACES, NS_PREFIX + ",".join(sorted(namespaces)).encode()]


def may_use(user: Any, name: str) -> bool:
    """Whether `user` (an acl.User, or None for a server without users) may use namespace `name`."""
    namespaces = getattr(user, "namespaces", None)
    return namespaces is None or name in namespaces


def refusal(user: Any, name: str) -> str:
    """Why `user` may not use namespace `name` (the NOPERM message, without its prefix)."""
    namespaces = sorted(user.namespaces or ())
    has = ", ".join(namespaces) if namespaces else "none"
    return (f"User {user.name} has no permissions to access namespace '{name}' (its namespaces: {has}; "
            f"ACL SETUSER {user.name} ns:{name} grants it)")


def check(user: Any, name: str) -> None:
    """PermissionDeniedError naming the namespace unless `user` may use it."""
    if not may_use(user, name):
        raise PermissionDeniedError(refusal(user, name))


def visible(user: Any, specs: Iterable[Any]) -> list[Any]:
    """The namespaces (specs with a `name`) `user` may see."""
    return [s for s in specs if may_use(user, s.name)]


def command_namespace(name: bytes, argv: list[bytes], first_key: int, current: str) -> str | None:
    """The namespace a RESP command acts in, for the tenant check: the one RINGKV.NAMESPACE
    switches to, the connection's for a command on keys or on the namespace's keyspace, "*"
    for FLUSHALL (every namespace), None for a command outside any namespace."""
    if name == b"ringkv.namespace":
        return argv[1].decode("utf-8", "replace") if len(argv) > 1 else None
    if name == b"flushall":
        return "*"
    if first_key or name in NAMESPACE_COMMANDS:
        return current
    return None


def resp_refusal(user: Any, name: bytes, argv: list[bytes], first_key: int, current: str) -> str | None:
    """The NOPERM message refusing a RESP command to a user bound to namespaces, or None."""
    if user is None or user.namespaces is None:
        return None
    target = command_namespace(name, argv, first_key, current)
    if target is None:
        return None
    if target == "*":
        return (f"User {user.name} is bound to namespaces ({', '.join(sorted(user.namespaces)) or 'none'}) and "
                "may not run FLUSHALL, which empties every namespace (FLUSHDB empties the current one)")
    if target in ("", "default"):
        target = "default"
    return None if target in user.namespaces else refusal(user, target)
