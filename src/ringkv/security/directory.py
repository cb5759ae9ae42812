"""The cluster's users: stored in the system namespace, cached on every node.

Storage, through a `KeyValueService` view of the reserved system namespace (node/namespaces.py:
N = the cluster's N, reads and writes at QUORUM, a namespace no client can name or scan):

    user:<name>    the user's record (acl.User.to_record: its rules and its tokens)
    acl:version    a fresh random value written after every change of any user

A change (ACL SETUSER, DELUSER, a token revoked) reads the user at QUORUM, applies the rules,
and writes with a compare-and-set against what it read (the consensus path: two nodes changing
one user at once cannot lose either change; the loser reads again, up to `MAX_CAS_ATTEMPTS`),
then writes `acl:version`.

How fast a change reaches every node: the node that made it uses it at once. Every other node
reads `acl:version` every `refresh_interval_ms` (one QUORUM read per interval per node); when it
changed, the node reads again every user its sessions hold (one multi-key read), drops every
other cached user, and tells its listeners, which re-check the sessions (api/resp_acl.py): a
deleted or disabled user, or a removed password, is refused at the session's next command. So a
change is enforced everywhere within `refresh_interval_ms` plus one read, while a quorum of the
system namespace's replicas answers. A node that cannot read the version keeps the users it
knows and retries at every interval (logged): it does not fall open, and it does not lock out
the users it already knows.

Until any user is configured (`acl:version` absent), the `default` user is Redis's: on, nopass,
every command on every key (acl.default_user). The first user created other than `default`
also stores `default` switched off, so from then on clients must authenticate; `ACL SETUSER
default ...` on such a cluster starts from that open user (`>password` gives it a password,
as `requirepass` does).

Cache: at most `cache_max_users` users, least recently used dropped first; a miss costs one
QUORUM read. AUTH, HTTP credentials and tokens look users up here.

Without a quorum (a node restarted inside a partition, the other replicas down), reads fall back
to `fallback`, the system namespace at ONE, when the node was given one: it serves the users
the replicas it reaches hold, which may miss the latest change (a user deleted on the other side
of a partition still logs in here until the partition heals); writes (ACL SETUSER, DELUSER)
still need a quorum.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ringkv.errors import CommandError, RingkvError
from ringkv.security import acl
from ringkv.security.acl import DEFAULT_USER, Token, User

if TYPE_CHECKING:
    from ringkv.service.contract import KeyValueService

log = logging.getLogger("ringkv.security")

USER_PREFIX = b"user:"
VERSION_KEY = b"acl:version"
MAX_CAS_ATTEMPTS = 8
SCAN_PAGE = 1000

Listener = Callable[[], None]


def user_key(name: str) -> bytes:
    return USER_PREFIX + name.encode("utf-8")


class UserDirectory:
    """See the module docstring. One per node; all methods run on the node's event loop.
    `offload(fn, *args)` runs slow work (password hashing) off the loop."""

    def __init__(self, store: KeyValueService, *, offload: Callable[..., Awaitable[Any]],
                 refresh_interval_ms: int = 1000, cache_max_users: int = 10_000, max_users: int = 10_000,
                 in_use: Callable[[], Iterable[str]] = tuple):
        self.store = store
        self.offload = offload
        self.refresh_interval_ms = refresh_interval_ms
        self.cache_max_users = cache_max_users
        self.max_users = max_users
        self.in_use = in_use  # names the node's sessions hold (re-read on every change)
        self.fallback: KeyValueService | None = None  # the system namespace at ONE (module docstring)
        self.loaded = False  # the version was read once: `configured` and the default user are known
        self.configured = False
        self.refresh_failures = 0
        self._version: bytes | None = None
        self._virtual_default = acl.default_user()
        # name -> (user or None when it does not exist, its record as read)
        self._cache: OrderedDict[str, tuple[User | None, bytes | None]] = OrderedDict()
        self._listeners: list[Listener] = []
        self._loading: asyncio.Future | None = None

    # ------------------------------------------------------------------ reading

    def subscribe(self, listener: Listener) -> None:
        """`listener()` runs after users changed (some `User.current` turned False)."""
        self._listeners.append(listener)

    def cached(self, name: str) -> User | bool | None:
        """The user if this node knows it (None: known not to exist); False when it must be
        read first."""
        if not self.configured and self.loaded and name == DEFAULT_USER:
            return self._virtual_default
        entry = self._cache.get(name)
        if entry is None:
            return False
        self._cache.move_to_end(name)
        return entry[0]

    def default_user(self) -> User | None:
        """The default user as this node knows it (None: it does not exist or is not loaded)."""
        user = self.cached(DEFAULT_USER)
        return user if isinstance(user, User) else None

    async def get(self, name: str, fresh: bool = False) -> User | None:
        """The user (None: there is none), from the cache unless `fresh`; a miss reads at QUORUM."""
        await self.ensure_loaded()
        if not fresh:
            user = self.cached(name)
            if user is not False:
                return user  # type: ignore[return-value]
        if not self.configured and name == DEFAULT_USER:
            return self._virtual_default
        try:
            value = await self.store.get_value(user_key(name))
        except RingkvError:
            if self.fallback is None:
                raise
            value = await self.fallback.get_value(user_key(name))  # no quorum: what is reachable
        return self._install(name, value)

    async def ensure_loaded(self) -> None:
        """Read the version once (raises what the read raised: a QuorumError names who failed)."""
        if self.loaded:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self.refresh())
        loading = self._loading
        try:
            await asyncio.shield(loading)
        finally:
            if loading.done():
                self._loading = None
                if not loading.cancelled():
                    loading.exception()  # retrieved: every waiter gets it from its own await

    async def refresh(self, store: KeyValueService | None = None) -> bool:
        """Read the version; when it changed, read the users in use again and tell the listeners.
        True when something changed. `store`: another view of the system namespace to read
        (AccessControl's fallback at ONE, while a quorum cannot be reached); the next refresh
        reads at QUORUM again."""
        store = store or self.store
        version = await store.get_value(VERSION_KEY)
        if self.loaded and version == self._version:
            return False
        names = [DEFAULT_USER, *(n for n in dict.fromkeys(self.in_use()) if n != DEFAULT_USER)]
        names = names[: self.cache_max_users]
        records = await store.mget([user_key(n) for n in names]) if version is not None else [None] * len(names)
        was_configured = self.configured
        self._version = version
        self.configured = version is not None
        if was_configured != self.configured:
            self._virtual_default.current = not self.configured
            if not self.configured:
                self._virtual_default = acl.default_user()
        old = self._cache
        self._cache = OrderedDict()
        for name, data in zip(names, records, strict=True):
            entry = old.pop(name, None)
            if entry is not None and entry[1] == data:
                self._cache[name] = entry
                continue
            if entry is not None and entry[0] is not None:
                entry[0].current = False
            self._install(name, data)
        for user, _ in old.values():
            if user is not None:
                user.current = False
        self.loaded = True
        self._notify()
        return True

    async def run(self) -> None:
        """Refresh every `refresh_interval_ms`, for as long as the node runs."""
        while True:
            try:
                await self.refresh()
                if self.refresh_failures:
                    log.info("users readable again after %d failed refreshes", self.refresh_failures)
                self.refresh_failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.refresh_failures += 1
                if self.refresh_failures in (1, 10) or self.refresh_failures % 100 == 0:
                    log.warning("cannot read the users in the system namespace (%d times in a row): %s; "
                                "the users this node knows stay in force", self.refresh_failures, exc)
            await asyncio.sleep(self.refresh_interval_ms / 1000)

    def _install(self, name: str, data: bytes | None) -> User | None:
        if data is None:
            user = None
        else:
            try:
                user = User.from_record(data)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("the stored record of user %r cannot be read (%s): treated as absent", name, exc)
                user = None
        old = self._cache.get(name)
        if old is not None and old[0] is not None and old[0] is not user:
            old[0].current = False
        self._cache[name] = (user, data)
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_max_users:
            _, (dropped, _) = self._cache.popitem(last=False)
            if dropped is not None:
                dropped.current = False
        return user

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a listener of user changes failed")

    # ------------------------------------------------------------------ changing

    async def _bump(self) -> None:
        version = os.urandom(16).hex().encode()
        await self.store.put(VERSION_KEY, version)
        self._version = version
        if not self.configured:
            self.configured = True
            self._virtual_default.current = False
        self._notify()

    async def _change(self, name: str, change: Callable[[User | None], Awaitable[User | None]]) -> User | None:
        """Read the user at QUORUM, compute its new state (None: delete), compare-and-set it."""
        await self.ensure_loaded()
        key = user_key(name)
        for _ in range(MAX_CAS_ATTEMPTS):
            read = await self.store.get(key)
            current = None
            if read is not None:
                try:
                    current = User.from_record(read.value)
                except (ValueError, KeyError, TypeError):
                    current = None  # an unreadable record is replaced
            new = await change(current)
            if new is None and read is None:
                return None
            applied, _ = await self.store.cas(key, None if read is None else read.context,
                                              None if new is None else new.to_record())
            if applied:
                self._install(name, None if new is None else new.to_record())
                return new
        raise CommandError(f"user {name!r} kept changing under this command ({MAX_CAS_ATTEMPTS} attempts): try again",
                           status=409)

    async def setuser(self, name: str, rules: list[bytes], hashing: acl.Hashing = acl.SCRYPT) -> User:
        """ACL SETUSER: create the user if it does not exist, then apply `rules` (AclRuleError,
        nothing changed, for a rule it cannot take)."""
        await self.ensure_loaded()
        configured = self.configured

        async def change(current: User | None) -> User:
            if current is None:
                if not configured and name == DEFAULT_USER:
                    current = acl.default_user()
                else:
                    await self._check_room()
                    current = User(name)
            return await self.offload(acl.apply_rules, current, rules, hashing)

        user = await self._change(name, change)
        assert user is not None
        if not configured and name != DEFAULT_USER:
            await self._store_default_off()
        await self._bump()
        return user

    async def _store_default_off(self) -> None:
        """The first user of a cluster: `default` is stored, switched off (module docstring)."""
        off = acl.apply_rules(acl.default_user(), [b"off"])
        applied, _ = await self.store.cas(user_key(DEFAULT_USER), None, off.to_record())
        if applied:
            self._install(DEFAULT_USER, off.to_record())

    async def _check_room(self) -> None:
        if len(await self.names(limit=self.max_users)) >= self.max_users:
            raise CommandError(f"the cluster holds max_users={self.max_users} users (acl_max_users): delete one first")

    async def deluser(self, names: list[str]) -> int:
        """ACL DELUSER: how many of `names` existed (and are now deleted)."""
        if DEFAULT_USER in names:
            raise CommandError("The 'default' user cannot be removed")
        deleted = 0
        for name in dict.fromkeys(names):
            existed = False

            async def change(current: User | None) -> None:
                nonlocal existed
                existed = current is not None

            await self._change(name, change)
            deleted += existed
        if deleted:
            await self._bump()
        return deleted

    async def names(self, limit: int | None = None) -> list[str]:
        """Every user's name, sorted (ACL USERS); at most `limit` (default: max_users)."""
        await self.ensure_loaded()
        limit = self.max_users if limit is None else limit
        found: list[str] = []
        cursor = 0
        while True:
            cursor, keys = await self.store.scan(cursor, SCAN_PAGE, USER_PREFIX + b"*")
            found.extend(k[len(USER_PREFIX):].decode("utf-8", "replace") for k in keys)
            if cursor == 0 or len(found) >= limit:
                break
        if not self.configured and DEFAULT_USER not in found:
            found.append(DEFAULT_USER)
        return sorted(set(found))[:limit]

    async def users(self) -> list[User]:
        """Every user (ACL LIST), sorted by name, read at QUORUM."""
        names = await self.names()
        values = await self.store.mget([user_key(n) for n in names])
        out = []
        for name, data in zip(names, values, strict=True):
            if data is None and name == DEFAULT_USER and not self.configured:
                out.append(self._virtual_default)
            elif data is not None:
                user = self._install(name, data)
                if user is not None:
                    out.append(user)
        return out

    # ------------------------------------------------------------------ tokens

    async def add_token(self, name: str, token: Token, now_ms: int, max_tokens: int) -> None:
        """Keep `token` on the user (dropping expired ones, and the oldest beyond `max_tokens`).
        Not announced through the version: a node that does not know a token reads the user
        again before refusing it."""
        if not self.configured:
            raise CommandError("tokens need a configured user: create one with ACL SETUSER first", status=409)

        async def change(current: User | None) -> User:
            if current is None:
                raise CommandError(f"user {name!r} does not exist", status=401)
            kept = [t for t in current.tokens if t.expires_at_ms > now_ms]
            kept.append(token)
            limit = min(max_tokens, acl.MAX_TOKENS_PER_USER)
            return current.with_tokens(tuple(kept[-limit:]))

        await self._change(name, change)

    async def revoke_token(self, name: str, token_id: str) -> bool:
        """Drop the token from its user; True when it was there."""
        found = False

        async def change(current: User | None) -> User | None:
            nonlocal found
            if current is None:
                return None
            kept = tuple(t for t in current.tokens if t.id != token_id)
            found = len(kept) != len(current.tokens)
            return current.with_tokens(kept)

        await self._change(name, change)
        if found:
            await self._bump()
        return found
