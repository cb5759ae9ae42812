"""Who a client is and whether it may act: sessions, authentication, protected mode, bootstrap.

`AccessControl` is one per node, shared by the RESP server and the HTTP app. It holds the user
directory (directory.py), the brute-force throttles (throttle.py), the audit trail (audit.py)
and a one-thread pool where passwords are hashed. A `Session` is what one RESP connection, or
one HTTP request, is authenticated as.

Authentication (`authenticate`, HTTP's `authenticate_basic` and `authenticate_bearer`):
1. wait out the backoff of the client's address and of the user name (throttle.py);
2. look the user up (the directory's cache, else a QUORUM read);
3. check the password: a credential this node verified before (an HMAC of user and password
   under a per-process secret maps to the stored password it matched: no password is kept) or
   one scrypt in the pool; a mismatch against a cached user reads the user again once (its
   password may have just changed on another node);
4. on failure: count it in both throttles, write an audit line, answer WRONGPASS.
At most `max_pending_auth` authentications wait for the pool at once; more are refused at
once (a flood of AUTH costs the node one core at most, never its memory).

Protected mode: while the `default` user is on and nopass (no user configured yet, or an
operator made it so), a client that is not on the loopback interface is refused with
`PROTECTED_MODE_MESSAGE`, unless `protected_mode = false`.

Bootstrap (`bootstrap`): `requirepass` gives the default user a password, `admin_password_file`
creates the user `admin` with every permission, each only when that user does not exist yet
(a new cluster); afterwards users change through ACL SETUSER.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ringkv.errors import AuthenticationError, CommandError
from ringkv.security import acl, tokens
from ringkv.security import passwords as pw
from ringkv.security.acl import DEFAULT_USER, Token, User
from ringkv.security.audit import Audit
from ringkv.security.directory import UserDirectory
from ringkv.security.throttle import FailureThrottle

if TYPE_CHECKING:
    from ringkv.service.contract import KeyValueService

log = logging.getLogger("ringkv.security")

PROTECTED_MODE_MESSAGE = (
    "ringkv is running in protected mode: no user is configured (the default user needs no password), so only "
    "clients on the loopback interface are served. To serve this client, connect from the node's own host and "
    "create a user (ACL SETUSER name on >password ~* +@all) or give the default user a password (ACL SETUSER "
    "default >password), or start the node with requirepass or admin_password_file; or, on a network you trust, "
    "set protected_mode = false (RINGKV_PROTECTED_MODE=false). See docs/security.md."
)
NOAUTH_MESSAGE = "Authentication required."
WRONGPASS_MESSAGE = "invalid username-password pair or user is disabled."
LEGACY_AUTH_MESSAGE = ("AUTH <password> called without any password configured for the default user. "
                       "Are you sure your configuration is correct?")
VERIFIED_CACHE_MAX_ENTRIES = 10_000
BOOTSTRAP_RETRY_MS = 500
# How long a command (or HTTP request) waits for the node's users to be loaded and bootstrapped
# before it is answered with an error saying so.
READY_WAIT_MS = 10_000


@dataclass(frozen=True)
class AccessSettings:
    """The node's settings of this part (node/config.py documents each)."""

    protected_mode: bool = True
    refresh_interval_ms: int = 1000
    cache_max_users: int = 10_000
    max_users: int = 10_000
    backoff_after_failures: int = 3
    backoff_base_ms: int = 100
    backoff_max_ms: int = 10_000
    backoff_max_tracked: int = 10_000
    max_pending_auth: int = 64
    token_ttl_s: int = 3600
    token_max_ttl_s: int = 86_400
    tokens_max_per_user: int = 16


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class Session:
    """What one RESP connection (or one HTTP request) is authenticated as.

    `user` is None until it is authenticated; `credential` is what it proved (a stored
    password's id, or nopass); `open` is True only while its user may run every command on
    every key and is current, which lets the RESP server skip every check (api/resp_acl.py)."""

    __slots__ = ("__weakref__", "client", "credential", "host", "loopback", "open", "pending_auth", "protocol", "user")

    def __init__(self, host: str, port: int | None, protocol: str):
        self.host = host
        self.client = f"{host}:{port}" if port is not None else host
        self.protocol = protocol
        self.loopback = is_loopback(host)
        self.user: User | None = None
        self.credential = ""
        self.open = False
        # An AUTH in progress (the password is hashed off the loop): the commands pipelined
        # after it wait for it, so each runs as the user it was sent as (api/resp_acl.py).
        self.pending_auth: asyncio.Future | None = None

    @property
    def name(self) -> str | None:
        return None if self.user is None else self.user.name

    def adopt(self, user: User, credential: str) -> None:
        self.user = user
        self.credential = credential
        self.open = user.unrestricted and user.current

    def drop(self) -> None:
        self.user = None
        self.credential = ""
        self.open = False

    def reopen(self) -> None:
        """`open` again from the user, after an authentication that did not change it."""
        self.open = self.user is not None and self.user.unrestricted and self.user.current


class OpenSession(Session):
    """The session of a server built without access control (in-process tests, tools): every
    command is allowed."""

    def __init__(self) -> None:
        super().__init__("", None, "resp")
        self.open = True


class AccessControl:
    """See the module docstring."""

    def __init__(self, system: KeyValueService, settings: AccessSettings | None = None, *,
                 now_ms: Callable[[], int] | None = None, audit: Audit | None = None,
                 fallback: KeyValueService | None = None):
        self.settings = s = settings or AccessSettings()
        # The system namespace at ONE: where the users are read at start when a quorum cannot
        # be (a node restarted inside a partition still serves the users it can read).
        self.fallback = fallback
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.audit = audit or Audit()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringkv-auth")
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self.directory = UserDirectory(system, offload=self.offload, refresh_interval_ms=s.refresh_interval_ms,
                                       cache_max_users=s.cache_max_users, max_users=s.max_users,
                                       in_use=self._names_in_use)
        self.directory.subscribe(self._users_changed)
        self.directory.fallback = fallback
        throttle = dict(free_failures=s.backoff_after_failures, base_ms=s.backoff_base_ms, max_ms=s.backoff_max_ms,
                        max_keys=s.backoff_max_tracked, forget_after_ms=max(60_000, 6 * s.backoff_max_ms))
        self.throttle_ip = FailureThrottle(**throttle)
        self.throttle_user = FailureThrottle(**throttle)
        self._secret = os.urandom(32)  # keys the verified-credentials cache; never leaves the process
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._pending = 0
        # Set by run() once the users are loaded and requirepass / admin_password_file applied:
        # until then nothing is served, so a node never answers as the open default user of a
        # cluster that is configured with a password.
        self.ready = False
        self._ready_event = asyncio.Event()
        self._last_load_error = ""

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ensure_ready(self) -> None:
        """Return once the users are loaded and bootstrapped (REQUIRES: `run()` is running);
        CommandError (503) after READY_WAIT_MS, naming why they are not."""
        if self.ready:
            return
        try:
            await asyncio.wait_for(self._ready_event.wait(), READY_WAIT_MS / 1000)
        except TimeoutError:
            why = f": {self._last_load_error}" if self._last_load_error else ""
            raise CommandError(f"the users of the cluster are not loaded on this node yet (waited {READY_WAIT_MS} "
                               f"ms{why}); retry shortly", status=503) from None

    # ------------------------------------------------------------------ sessions

    def new_session(self, host: str, port: int | None, protocol: str = "resp", track: bool = True) -> Session:
        """A client's session, authenticated as the default user when that needs no password
        (and protected mode allows it). Before the users are ready it is not authenticated:
        its first command waits for them (api/resp_acl.py)."""
        session = Session(host, port, protocol)
        if track:
            self._sessions.add(session)
        if self.ready:
            self.resolve_default(session)
        return session

    def protected_refusal(self, session: Session) -> bool:
        """Whether protected mode refuses this client now (unknown until users are loaded)."""
        if not self.settings.protected_mode or session.loopback or not self.ready:
            return False
        default = self.directory.default_user()
        return default is not None and default.enabled and default.nopass

    def resolve_default(self, session: Session) -> bool:
        """Authenticate an unauthenticated session as the default user when it needs no
        password; False when the client must authenticate (or is refused by protected mode)."""
        default = self.directory.default_user()
        if default is None or not default.enabled or not default.nopass or self.protected_refusal(session):
            return False
        session.adopt(default, pw.NOPASS_CREDENTIAL)
        return True

    def revalidate(self, session: Session) -> bool | None:
        """After a change of users: keep the session on its user's newest version, or drop it
        (deleted, disabled, its password removed). None when the user must be read first."""
        assert session.user is not None
        if session.user.current:
            session.open = session.user.unrestricted
            return True
        latest = self.directory.cached(session.user.name)
        if latest is False:
            return None
        if isinstance(latest, User) and latest.accepts(session.credential):
            session.adopt(latest, session.credential)
            return True
        session.drop()
        return False

    def _names_in_use(self) -> list[str]:
        return [s.user.name for s in list(self._sessions) if s.user is not None]

    def _users_changed(self) -> None:
        for session in list(self._sessions):
            user = session.user
            if user is not None and not user.current:
                session.open = False

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, session: Session, username: bytes | None, password: bytes) -> User:
        """AUTH [username] password (HELLO ... AUTH): authenticate `session` or raise
        AuthenticationError (WRONGPASS) after the backoff; CommandError when the users cannot
        be read now or too many authentications wait."""
        if username is not None and len(username) > acl.MAX_USERNAME_BYTES:
            self._failed(session, username[: acl.MAX_USERNAME_BYTES], "wrongpass", count_user=False)
            raise AuthenticationError(WRONGPASS_MESSAGE)
        name = DEFAULT_USER if username is None else username.decode("utf-8", "replace")
        await self._wait_backoff(session, name)
        user = await self._lookup(name)
        if username is None and user is not None and user.enabled and user.nopass and user.name == DEFAULT_USER:
            raise CommandError(LEGACY_AUTH_MESSAGE)
        credential = await self._credential(user, name, password)
        if credential is None:
            self._failed(session, name, "wrongpass" if user is None or user.enabled else "disabled")
            raise AuthenticationError(WRONGPASS_MESSAGE)
        assert user is not None
        latest = self.directory.cached(name)
        user = latest if isinstance(latest, User) and latest.accepts(credential) else user
        self.throttle_user.succeeded(name)
        session.adopt(user, credential)
        return user

    async def authenticate_basic(self, host: str, port: int | None, username: bytes, password: bytes) -> Session:
        """HTTP Basic credentials: a session for this one request."""
        session = Session(host, port, "http")
        await self.authenticate(session, username, password)
        return session

    async def authenticate_bearer(self, host: str, port: int | None, token: str) -> Session:
        """An HTTP bearer token (tokens.py): a session for this one request."""
        session = Session(host, port, "http")
        try:
            name, digest = tokens.parse(token)
        except ValueError:
            self._failed(session, None, "malformed", count_user=False)
            raise AuthenticationError("the bearer token is not a ringkv token", reason="malformed") from None
        await self._wait_backoff(session, None)
        user = await self._lookup(name)
        found = _token(user, digest)
        if found is None and user is not None:
            user = await self._lookup(name, fresh=True)  # issued on another node since
            found = _token(user, digest)
        if found is None or user is None:
            self._failed(session, name, "unknown_token", count_user=False)
            raise AuthenticationError("the bearer token is unknown or was revoked", reason="unknown_token")
        if found.expires_at_ms <= self.now_ms():
            self._failed(session, name, "expired_token", count_user=False)
            raise AuthenticationError("the bearer token has expired: ask for a new one", reason="expired_token")
        if not user.enabled or not user.accepts(found.credential):
            self._failed(session, name, "disabled", count_user=False)
            raise AuthenticationError("the bearer token was revoked: its user is disabled or the password it was "
                                      "issued for was removed", reason="unknown_token")
        session.adopt(user, found.credential)
        return session

    def anonymous(self, host: str, port: int | None, protocol: str = "http") -> Session:
        """An HTTP request without credentials: the default user when it needs no password."""
        return self.new_session(host, port, protocol, track=False)

    async def _wait_backoff(self, session: Session, name: str | None) -> None:
        now = self.now_ms()
        wait = self.throttle_ip.wait_ms(session.host, now)
        if name is not None:
            wait = max(wait, self.throttle_user.wait_ms(name, now))
        if wait:
            await asyncio.sleep(wait / 1000)

    async def _lookup(self, name: str, fresh: bool = False) -> User | None:
        try:
            return await self.directory.get(name, fresh=fresh)
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(f"cannot authenticate now: the users in the system namespace are not readable ({exc})",
                               status=503) from None

    async def _credential(self, user: User | None, name: str, password: bytes) -> str | None:
        """The credential `password` proves for `user` (None: it proves nothing)."""
        if user is None or not user.enabled:
            return None
        if user.nopass:
            return pw.NOPASS_CREDENTIAL
        key = hmac.new(self._secret, name.encode("utf-8") + b"\0" + password, hashlib.sha256).digest()
        credential = self._verified.get(key)
        if credential is not None:
            if credential in user.credentials:
                self._verified.move_to_end(key)
                return credential
            del self._verified[key]
        matched = await self._verify(password, user)
        if matched is None and self.directory.cached(name) is user:
            fresh = await self._lookup(name, fresh=True)  # the password may have changed elsewhere
            if fresh is not None and fresh.enabled and fresh.passwords != user.passwords:
                matched = await self._verify(password, fresh)
                user = fresh
        if matched is None:
            return None
        credential = pw.credential_id(matched)
        self._verified[key] = credential
        while len(self._verified) > VERIFIED_CACHE_MAX_ENTRIES:
            self._verified.popitem(last=False)
        return credential

    async def _verify(self, password: bytes, user: User) -> str | None:
        if self._pending >= self.settings.max_pending_auth:
            raise CommandError(f"too many authentications in progress on this node (max_pending_auth="
                               f"{self.settings.max_pending_auth}): retry shortly", status=503)
        self._pending += 1
        try:
            return await self.offload(pw.matching_hash, password, list(user.passwords))
        finally:
            self._pending -= 1

    def _failed(self, session: Session, name: str | bytes | None, reason: str, count_user: bool = True) -> None:
        now = self.now_ms()
        delay = self.throttle_ip.failed(session.host, now)
        if count_user and name is not None:
            key = name if isinstance(name, str) else name.decode("utf-8", "replace")
            delay = max(delay, self.throttle_user.failed(key, now))
        self.audit.auth_failure(session.protocol, session.client, name, reason, backoff_ms=delay)

    def refuse_noauth(self, session: Session) -> None:
        """Count and log a command refused for want of authentication (HTTP: no credentials)."""
        self.audit.auth_failure(session.protocol, session.client, None, "noauth")

    # ------------------------------------------------------------------ tokens

    async def issue_token(self, session: Session, ttl_s: int | None) -> tuple[str, int, int]:
        """A bearer token for the session's user and credential: (token, expires at ms, ttl s)."""
        assert session.user is not None
        s = self.settings
        ttl = s.token_ttl_s if ttl_s is None else ttl_s
        if not 1 <= ttl <= s.token_max_ttl_s:
            raise CommandError(f"ttl_s must be 1..{s.token_max_ttl_s} (auth_token_max_ttl_s), got {ttl}")
        token, digest = tokens.mint(session.user.name)
        expires = self.now_ms() + ttl * 1000
        await self.directory.add_token(session.user.name, Token(digest, expires, session.credential), self.now_ms(),
                                       s.tokens_max_per_user)
        return token, expires, ttl

    async def revoke_token(self, token: str) -> bool:
        try:
            name, digest = tokens.parse(token)
        except ValueError:
            return False
        return await self.directory.revoke_token(name, digest)

    # ------------------------------------------------------------------ running

    async def run(self, requirepass: str = "", admin_password: str = "") -> None:
        """Load the users (retrying while the system namespace has no quorum), create the
        bootstrap users, then keep the cache fresh (directory.run) until cancelled."""
        while True:
            try:
                await self.directory.ensure_loaded()
                await self.bootstrap(requirepass, admin_password)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_load_error = str(exc)
                log.info("users not loaded yet (%s); retrying in %d ms", exc, BOOTSTRAP_RETRY_MS)
                if not self.ready and await self._load_fallback(bool(requirepass or admin_password)):
                    self._set_ready()
                await asyncio.sleep(BOOTSTRAP_RETRY_MS / 1000)
        self._set_ready()
        for session in list(self._sessions):  # connections made meanwhile look again
            if session.user is not None and not session.user.current:
                session.open = False
        await self.directory.run()

    def _set_ready(self) -> None:
        if self.ready:
            return
        self.ready = True
        self._ready_event.set()

    async def _load_fallback(self, bootstrapping: bool) -> bool:
        """Load the users from the fallback view (ONE) when a quorum cannot be read: True when
        the node may serve with them. Never while a bootstrap setting waits to be applied to a
        cluster without users (requirepass or admin_password_file): serving the open default
        user then would be the start-up window docs/security.md closes."""
        if self.fallback is None:
            return False
        try:
            await self.directory.refresh(self.fallback)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("users not readable at ONE either (%s)", exc)
            return False
        if bootstrapping and not self.directory.configured:
            return False
        log.warning("users loaded from the replicas this node reaches (no quorum of the system namespace: %s); "
                    "reading them at QUORUM goes on in the background", self._last_load_error)
        return True

    async def bootstrap(self, requirepass: str = "", admin_password: str = "") -> None:
        d = self.directory
        if requirepass:
            if not d.configured:
                await d.setuser(DEFAULT_USER, [b">" + requirepass.encode()])
                log.info("requirepass: the default user now needs the password")
            elif await d.get(DEFAULT_USER, fresh=True) is None:
                await d.setuser(DEFAULT_USER, [b"on", b">" + requirepass.encode(), b"~*", b"&*", b"+@all"])
                log.info("requirepass: created the default user with the password")
            else:
                log.info("requirepass ignored: the default user exists already (change it with ACL SETUSER)")
        if admin_password:
            if await d.get("admin", fresh=True) is None:
                await d.setuser("admin", [b"on", b">" + admin_password.encode(), b"~*", b"&*", b"+@all"])
                log.info("admin_password_file: created the user admin with every permission")
            else:
                log.info("admin_password_file ignored: the user admin exists already (change it with ACL SETUSER)")


def _token(user: User | None, digest: str) -> Token | None:
    if user is None:
        return None
    for token in user.tokens:
        if tokens.same(token.id, digest):
            return token
    return None
