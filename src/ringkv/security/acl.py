"""Users and their ACL rules: Redis's rule syntax parsed, applied, described and checked.

A `User` is a name, an on/off switch, its passwords (as stored hashes, passwords.py) or the
nopass flag, an ordered list of command rules, key patterns with their permissions, and
channel patterns (accepted and kept so rules written for Redis parse; ringkv has no pub/sub).
`apply_rules` applies `ACL SETUSER` rules left to right to a copy and returns it, or raises
`AclRuleError` for the first rule it cannot take, with nothing changed (as Redis does).
`describe` is the user as rules (the text of `ACL LIST`); applying that description to a new
user gives the same user again, and it is also how a user is stored (`to_record`).

Rules (Redis's; the facts of their syntax are in Redis's ACL documentation):

    on | off                      may authenticate, or not
    >password | <password         add or remove a password (clears nopass)
    #hash | !hash                 add or remove a stored hash (passwords.py's scrypt form)
    nopass | resetpass            any password works | no password works until one is added
    +cmd | -cmd                   allow or refuse a command (all its subcommands)
    +cmd|sub | -cmd|sub           one subcommand of ACL, CLIENT, COMMAND or RINGKV.ADMIN
    +@category | -@category       every command of a category (ACL CAT lists them)
    allcommands | nocommands      +@all | -@all
    ~pattern | %RW~pattern        keys the commands may read and write
    %R~pattern | %W~pattern       keys they may only read | only write
    allkeys | resetkeys           ~* | no key at all
    &pattern | allchannels | resetchannels    channel patterns (kept, without effect)
    reset                         resetpass resetkeys resetchannels off -@all
    clearselectors                accepted; selectors `(...)` are refused
    ns:NAME[,NAME] | allnamespaces | resetnamespaces    ringkv's tenants (security/tenants.py)

How a command is judged (`User.can_run`): the command rules are read from the last to the
first, and the first that names the command's unit (categories.py), directly, through its
container, or through a category, decides; `+@all`/`-@all` at the start names everything.
Rules are kept in a normal form: `+@all`/`-@all` starts the list afresh, and a rule drops any
earlier rule with the same target, which never changes a decision. Keys (`User.may_access`):
a command that reads needs an R pattern matching each key, one that writes a W pattern, one
that does both both, and one that only looks at metadata any pattern.

Limits (bounded so a rule set stays small enough to check on every command): user names
`MAX_USERNAME_BYTES`, passwords per user `MAX_PASSWORDS_PER_USER`, key and channel patterns
`MAX_PATTERNS`, pattern length `MAX_PATTERN_BYTES`, command rules `MAX_COMMAND_RULES`. Pure: no
IO, no clock (tokens carry their expiry as data).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from ringkv.security import passwords as pw
from ringkv.security import tenants
from ringkv.security.categories import (
    ALL_UNITS,
    CATEGORIES,
    COMMAND_NAMES,
    CONTAINERS,
    RW,
    UNIT_CATEGORIES,
    R,
    W,
)
from ringkv.security.keypatterns import KeyPattern

MAX_USERNAME_BYTES = 128
MAX_PASSWORDS_PER_USER = 16
MAX_PATTERNS = 256
MAX_PATTERN_BYTES = 1024
MAX_COMMAND_RULES = 1024
MAX_TOKENS_PER_USER = 64  # the most a record can hold; the node's setting bounds it lower
RECORD_FORMAT = 1

DEFAULT_USER = "default"
ALL = "@all"


class AclRuleError(ValueError):
    """A rule ACL SETUSER cannot apply. `modifier` is the rule as it may be shown (a password
    is never shown), `reason` what is wrong with it."""

    def __init__(self, modifier: str, reason: str):
        super().__init__(f"Error in ACL SETUSER modifier '{modifier}': {reason}")
        self.modifier = modifier
        self.reason = reason


def check_username(name: bytes) -> str:
    """A user name as given; ValueError saying what a name must be."""
    if not 1 <= len(name) <= MAX_USERNAME_BYTES or any(b <= 0x20 or b == 0x7F for b in name):
        raise ValueError(f"a user name is 1..{MAX_USERNAME_BYTES} bytes without spaces or control characters")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a user name must be UTF-8") from None


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token issued to the user (security/tokens.py): its id (a digest of its
    secret), when it expires, and the credential it was issued for (revoked with it)."""

    id: str
    expires_at_ms: int
    credential: str


class Hashing:
    """How rules turn passwords into stored hashes; tests give a cheaper one."""

    def hash(self, password: bytes, salt: bytes | None) -> str:
        return pw.hash_password(password, salt)

    def salt_of(self, hashes: list[str]) -> bytes | None:
        return pw.user_salt(hashes)

    def match(self, password: bytes, hashes: list[str]) -> str | None:
        return pw.matching_hash(password, hashes)


SCRYPT = Hashing()


def _target_matches(target: str, unit: str) -> bool:
    if target[0] == "@":
        return target == ALL or target[1:] in UNIT_CATEGORIES[unit]
    if "|" in target:
        return unit == target
    return unit == target or (unit.startswith(target) and unit[len(target):len(target) + 1] == "|")


def decide(commands: Iterable[tuple[bool, str]], unit: str) -> bool:
    """Whether the command rules allow `unit`: the last rule naming it decides (none: no)."""
    allowed = False
    for allow, target in commands:
        if _target_matches(target, unit):
            allowed = allow
    return allowed


class User:
    """A user and what it may do (see the module docstring). Treat as immutable: rules make a
    new User. `current` is cleared by the user directory when a newer version of the user (or
    its deletion) is known, which sends sessions holding this object to look again."""

    __slots__ = ("_allowed", "_patterns", "channels", "commands", "credentials", "current", "enabled", "keys",
                 "name", "namespaces", "nopass", "passwords", "tokens", "unrestricted")

    def __init__(self, name: str, *, enabled: bool = False, nopass: bool = False, passwords: tuple[str, ...] = (),
                 commands: tuple[tuple[bool, str], ...] = ((False, ALL),), keys: tuple[tuple[str, bytes], ...] = (),
                 channels: tuple[bytes, ...] = (), tokens: tuple[Token, ...] = (),
                 namespaces: frozenset[str] | None = None):
        self.name = name
        self.namespaces = namespaces  # the namespaces it may use, None for every one (security/tenants.py)
        self.enabled = enabled
        self.nopass = nopass
        self.passwords = tuple(passwords)
        self.commands = tuple(commands)
        self.keys = tuple(keys)
        self.channels = tuple(channels)
        self.tokens = tuple(tokens)
        self.current = True
        self._allowed = frozenset(u for u in ALL_UNITS if decide(self.commands, u))
        self._patterns = [(perm, KeyPattern(p)) for perm, p in self.keys]
        reads_all = any("R" in perm and k.matches_everything for perm, k in self._patterns)
        writes_all = any("W" in perm and k.matches_everything for perm, k in self._patterns)
        self.unrestricted = self._allowed == ALL_UNITS and reads_all and writes_all and namespaces is None
        self.credentials = frozenset(pw.credential_id(h) for h in self.passwords)

    # ------------------------------------------------------------------ checks

    def can_run(self, unit: str) -> bool:
        return unit in self._allowed

    def may_access(self, key: bytes, access: str) -> bool:
        """Whether a command touching `key` as `access` (categories.R, W, RW, ANY) may."""
        read = write = False
        for perm, pattern in self._patterns:
            if (read or "R" not in perm) and (write or "W" not in perm):
                continue
            if pattern.matches(key):
                read = read or "R" in perm
                write = write or "W" in perm
        if access == R:
            return read
        if access == W:
            return write
        if access == RW:
            return read and write
        return read or write  # ANY

    def accepts(self, credential: str) -> bool:
        """Whether a session authenticated with `credential` (passwords.credential_id, or
        NOPASS_CREDENTIAL) may still act as this user: the password it proved is still one of
        the user's. A user switched off keeps its sessions, as in Redis (only new
        authentications need `enabled`)."""
        if credential == pw.NOPASS_CREDENTIAL:
            return self.nopass
        return self.nopass or credential in self.credentials

    # ------------------------------------------------------------------ description

    def describe(self) -> list[bytes]:
        """The user as rules: applied to a new user of the same name, they give this user."""
        out = [b"on" if self.enabled else b"off"]
        if self.nopass:
            out.append(b"nopass")
        out.extend(b"#" + h.encode("ascii") for h in self.passwords)
        for perm, pattern in self.keys:
            out.append((b"~" if perm == "RW" else b"%" + perm.encode() + b"~") + pattern)
        if self.channels:
            out.extend(b"&" + c for c in self.channels)
        else:
            out.append(b"resetchannels")
        out.extend(describe_commands(self.commands).encode().split())
        out.extend(tenants.describe(self.namespaces))
        return out

    def same_rules(self, other: User) -> bool:
        return (self.name, self.enabled, self.nopass, self.passwords, self.commands, self.keys, self.channels,
                self.namespaces) == (other.name, other.enabled, other.nopass, other.passwords, other.commands,
                                     other.keys, other.channels, other.namespaces)

    def with_tokens(self, tokens: tuple[Token, ...]) -> User:
        return User(self.name, enabled=self.enabled, nopass=self.nopass, passwords=self.passwords,
                    commands=self.commands, keys=self.keys, channels=self.channels, tokens=tokens,
                    namespaces=self.namespaces)

    def __repr__(self) -> str:
        return f"<User {self.name} {' '.join(r.decode('latin-1') for r in self.describe() if not r.startswith(b'#'))}>"

    # ------------------------------------------------------------------ storage

    def to_record(self) -> bytes:
        """The stored form: the rules (latin-1, so any pattern byte survives JSON) and tokens."""
        return json.dumps({
            "format": RECORD_FORMAT, "name": self.name,
            "rules": [r.decode("latin-1") for r in self.describe()],
            "tokens": [[t.id, t.expires_at_ms, t.credential] for t in self.tokens],
        }, separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, data: bytes) -> User:
        """A stored user; ValueError when the record is not one this version reads."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError(f"user record of unknown format {doc.get('format') if isinstance(doc, dict) else None!r}")
        user = apply_rules(User(doc["name"]), [r.encode("latin-1") for r in doc["rules"]], SCRYPT)
        return user.with_tokens(tuple(Token(str(i), int(e), str(c)) for i, e, c in doc.get("tokens", ())))


def describe_commands(commands: Iterable[tuple[bool, str]]) -> str:
    return " ".join(("+" if allow else "-") + target for allow, target in commands)


def default_user() -> User:
    """The `default` user of a cluster where no user was ever configured: nopass, everything."""
    return User(DEFAULT_USER, enabled=True, nopass=True, commands=((True, ALL),), keys=(("RW", b"*"),),
                channels=(b"*",))


# ---------------------------------------------------------------------- applying rules


def _command_target(rule: str) -> str:
    """The target of a +/- rule, checked: "@cat", "cmd" or "cmd|sub" (lower case)."""
    body = rule[1:].lower()
    if body.startswith("@"):
        if body[1:] != "all" and body[1:] not in CATEGORIES:
            raise AclRuleError(rule, "unknown category (ACL CAT lists them)")
        return body
    name, sep, sub = body.partition("|")
    if name not in COMMAND_NAMES:
        raise AclRuleError(rule, "unknown command")
    if sep:
        subs = CONTAINERS.get(name)
        if subs is None:
            raise AclRuleError(rule, f"'{name}' has no subcommands (first-argument rules such as +select|0 are "
                                     "not supported: allow or refuse the whole command)")
        if sub not in subs:
            raise AclRuleError(rule, f"unknown subcommand of '{name}' ({', '.join(sorted(subs))})")
    return body


def _pattern(rule: bytes, start: int) -> bytes:
    pattern = rule[start:]
    if not pattern:
        raise AclRuleError(_shown(rule), "empty pattern")
    if len(pattern) > MAX_PATTERN_BYTES:
        raise AclRuleError(_shown(rule), f"a pattern is at most {MAX_PATTERN_BYTES} bytes")
    if any(b <= 0x20 or b == 0x7F for b in pattern):
        raise AclRuleError(_shown(rule), "a pattern may not hold spaces or control characters (? matches any one byte)")
    return pattern


def _shown(rule: bytes) -> str:
    """A rule as an error may show it: passwords are never echoed."""
    if rule[:1] in (b">", b"<"):
        return rule[:1].decode() + "***"
    return rule.decode("utf-8", "replace")[:200]


def apply_rules(user: User, rules: list[bytes], hashing: Hashing = SCRYPT) -> User:
    """`user` with `rules` applied left to right (see the module docstring); AclRuleError for
    the first rule that cannot be applied, and then nothing is applied. Slow when rules hold
    passwords (`hashing`): call it off the event loop."""
    enabled, nopass = user.enabled, user.nopass
    passwords = list(user.passwords)
    commands = list(user.commands)
    keys = list(user.keys)
    channels = list(user.channels)
    namespaces = user.namespaces
    for raw in rules:
        if not raw:
            raise AclRuleError("", "empty rule")
        first = raw[:1]
        word = raw.lower()
        if word == b"on":
            enabled = True
        elif word == b"off":
            enabled = False
        elif word == b"nopass":
            nopass, passwords = True, []
        elif word == b"resetpass":
            nopass, passwords = False, []
        elif word == b"reset":
            enabled, nopass, passwords, keys, channels = False, False, [], [], []
            namespaces = None  # a new user's: every namespace (security/tenants.py)
            commands = [(False, ALL)]
        elif word in (b"allcommands", b"nocommands"):
            commands = [(word == b"allcommands", ALL)]
        elif word == b"allkeys":
            if ("RW", b"*") not in keys:
                keys.append(("RW", b"*"))
        elif word == b"resetkeys":
            keys = []
        elif word == b"allchannels":
            if b"*" not in channels:
                channels.append(b"*")
        elif word == b"resetchannels":
            channels = []
        elif (bound := _namespace_rule(raw, word, namespaces)) is not tenants.NOT_A_RULE:
            namespaces = bound
        elif word == b"clearselectors":
            pass  # no selectors to clear: ringkv refuses them
        elif first == b"(":
            raise AclRuleError(_shown(raw), "selectors are not supported by ringkv; give the user one set of rules")
        elif first == b">":
            password = raw[1:]
            try:
                pw.check_password(password)
            except ValueError as exc:
                raise AclRuleError(_shown(raw), str(exc)) from None
            if hashing.match(password, passwords) is None:
                if len(passwords) >= MAX_PASSWORDS_PER_USER:
                    raise AclRuleError(_shown(raw), f"a user has at most {MAX_PASSWORDS_PER_USER} passwords")
                passwords.append(hashing.hash(password, hashing.salt_of(passwords)))
            nopass = False
        elif first == b"<":
            found = hashing.match(raw[1:], passwords)
            if found is None:
                raise AclRuleError(_shown(raw), "the user has no such password")
            passwords.remove(found)
        elif first in (b"#", b"!"):
            try:
                text = pw.parse_hash(raw[1:].decode("ascii")).text
            except UnicodeDecodeError:
                raise AclRuleError(_shown(raw), "a password hash is ASCII text") from None
            except ValueError as exc:
                raise AclRuleError(_shown(raw), str(exc)) from None
            if first == b"#":
                if text not in passwords:
                    if len(passwords) >= MAX_PASSWORDS_PER_USER:
                        raise AclRuleError(_shown(raw), f"a user has at most {MAX_PASSWORDS_PER_USER} passwords")
                    passwords.append(text)
                nopass = False
            elif text in passwords:
                passwords.remove(text)
            else:
                raise AclRuleError(_shown(raw), "the user has no such password hash")
        elif first == b"~" or first == b"%":
            if first == b"~":
                perm, start = "RW", 1
            else:
                tilde = raw.find(b"~")
                letters = raw[1:tilde].upper() if tilde > 1 else b""
                if not letters or any(c not in b"RW" for c in letters):
                    raise AclRuleError(_shown(raw), "key permissions read %R~, %W~ or %RW~ followed by a pattern")
                perm = "RW" if b"R" in letters and b"W" in letters else letters[:1].decode()
                start = tilde + 1
            entry = (perm, _pattern(raw, start))
            if entry not in keys:
                if len(keys) >= MAX_PATTERNS:
                    raise AclRuleError(_shown(raw), f"a user has at most {MAX_PATTERNS} key patterns")
                keys.append(entry)
        elif first == b"&":
            pattern = _pattern(raw, 1)
            if pattern not in channels:
                if len(channels) >= MAX_PATTERNS:
                    raise AclRuleError(_shown(raw), f"a user has at most {MAX_PATTERNS} channel patterns")
                channels.append(pattern)
        elif first in (b"+", b"-"):
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                raise AclRuleError(_shown(raw), "unknown command") from None
            target = _command_target(text)
            allow = first == b"+"
            if target == ALL:
                commands = [(allow, ALL)]
            else:
                commands = [c for c in commands if c[1] != target]
                if len(commands) >= MAX_COMMAND_RULES:
                    raise AclRuleError(text, f"a user has at most {MAX_COMMAND_RULES} command rules")
                commands.append((allow, target))
        else:
            raise AclRuleError(_shown(raw), "syntax error")
    return User(user.name, enabled=enabled, nopass=nopass, passwords=tuple(passwords), commands=tuple(commands),
                keys=tuple(keys), channels=tuple(channels), tokens=user.tokens, namespaces=namespaces)


def _namespace_rule(raw: bytes, word: bytes, namespaces: frozenset[str] | None) -> object:
    """A tenant rule (ns:..., allnamespaces, resetnamespaces: security/tenants.py) applied, or
    tenants.NOT_A_RULE."""
    try:
        return tenants.apply_rule(raw, namespaces)
    except tenants.NamespaceRuleError as exc:
        raise AclRuleError(_shown(raw), str(exc)) from None


def user_from_rules(name: str, rules: list[bytes], hashing: Hashing = SCRYPT) -> User:
    """A new user (off, no password, no command, no key) with `rules` applied."""
    return apply_rules(User(name), rules, hashing)


# The ACL SETUSER arguments an audit line may show: passwords replaced.
def redact_rules(rules: Iterable[bytes]) -> list[str]:
    return [_shown(r) for r in rules]

