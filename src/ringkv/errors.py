"""Typed errors shared by every layer of ringkv.

Each error carries what a user needs to act on it: the file and offset of a corruption, the
option that was wrong, the limit that was crossed. The protocol adapters map these to RESP
`-ERR ...` replies and HTTP problem documents in one place each.
"""

from __future__ import annotations


class RingkvError(Exception):
    """Base class of every error ringkv raises on purpose."""


class CorruptionError(RingkvError):
    """Stored bytes failed a check (checksum, magic number, length, format version).

    `path` and `offset` name where the bad bytes are, so an operator can look or salvage.
    Wrong data is never returned in place of this error.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f" in {path}" + (f" at offset {offset}" if offset is not None else "")
        super().__init__(message + where)
        self.path = path
        self.offset = offset


class ConfigError(RingkvError, ValueError):
    """An option or configuration value is invalid; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class LimitError(RingkvError, ValueError):
    """An input is larger than a documented limit; the message names the limit."""


class ClosedError(RingkvError):
    """The engine or connection was used after close()."""


class StorageFullError(RingkvError, OSError):
    """The disk refused a write (ENOSPC); nothing partial was acknowledged."""


class ClockSkewError(RingkvError):
    """A remote hybrid-logical-clock timestamp is further ahead of local time than allowed.

    Merging it would drag this node's clock ahead of real time, so it is refused. The message
    names both clocks and the bound, so an operator can find the node whose clock is wrong.
    """

    def __init__(self, remote_ms: int, physical_ms: int, max_offset_ms: int):
        super().__init__(
            f"remote clock is {remote_ms - physical_ms} ms ahead of local physical time "
            f"(remote {remote_ms} ms, local {physical_ms} ms); max_offset_ms={max_offset_ms}: "
            "check NTP on the node that sent it"
        )
        self.remote_ms = remote_ms
        self.physical_ms = physical_ms
        self.max_offset_ms = max_offset_ms


class InvalidContextError(RingkvError, ValueError):
    """A causal context handed in by a client is not one ringkv gave out (garbage, truncated,
    too large or from an unknown format version). The client should read the key again."""


class CommandError(RingkvError):
    """A request that cannot be applied; the message is what the client is told.

    `kind` is the Redis error prefix (ERR, WRONGTYPE, ...), and `status` the HTTP status the
    REST API answers with.
    """

    def __init__(self, message: str, kind: str = "ERR", status: int = 400):
        super().__init__(message)
        self.kind = kind
        self.status = status


class AuthenticationError(CommandError):
    """The client is not authenticated: no credentials where a user is required (NOAUTH), or
    credentials that are wrong or no longer valid (WRONGPASS). RESP answers `-<kind> <message>`
    as Redis words it; HTTP answers 401 with a WWW-Authenticate challenge. `reason` is the audit
    line's and the metric's (security/audit.py)."""

    def __init__(self, message: str = "invalid username-password pair or user is disabled.",
                 kind: str = "WRONGPASS", reason: str = "wrongpass"):
        super().__init__(message, kind=kind, status=401)
        self.reason = reason


class PermissionDeniedError(CommandError):
    """An authenticated user's ACL rules do not allow the command or one of its keys: RESP
    `-NOPERM ...`, HTTP 403. The message names the user and what was missing."""

    def __init__(self, message: str):
        super().__init__(message, kind="NOPERM", status=403)


class QuotaExceededError(CommandError):
    """A request would take a namespace over one of its quotas (node/quotas.py): RESP
    `-ERR quota exceeded: ...`, HTTP 429 `quota-exceeded` with `namespace`, `quota` (the
    setting: max_keys, max_bytes or max_requests_per_s) and `limit`."""

    PREFIX = "quota exceeded: "

    def __init__(self, namespace: str, quota: str, limit: int, detail: str):
        super().__init__(self.PREFIX + detail, kind="ERR", status=429)
        self.namespace = namespace
        self.quota = quota
        self.limit = limit

    @classmethod
    def from_message(cls, message: str) -> QuotaExceededError | None:
        """The error a message of one describes (passed on by another node), or None."""
        import re

        m = re.match(r"(?:ERR )?quota exceeded: namespace (\S+) .*?\b(max_keys|max_bytes|max_requests_per_s)=(\d+)",
                     message)
        if m is None:
            return None
        return cls(m.group(1), m.group(2), int(m.group(3)), message.split(cls.PREFIX, 1)[1])


class UnknownNamespaceError(RingkvError, ValueError):
    """A request named a namespace the node's configuration does not have; the message lists
    the ones there are."""


class AdminRequestError(RingkvError, ValueError):
    """An admin operation was asked with arguments it cannot take (no seeds, an unknown
    member, a node removing itself). Asking again the same way fails the same way."""


class AdminConflictError(RingkvError):
    """An admin operation cannot run in the cluster's present state: another membership change
    is in progress, a member is down, this node is not joining. It may succeed later."""


class ConfigSetError(AdminRequestError):
    """A run-time setting change (CONFIG SET) refused, nothing changed: `argument` is the
    setting as the request named it; `unknown` when no setting has that name, else `reason`
    says why (read at start only, a bad value and the rule it breaks, given twice)."""

    def __init__(self, argument: str, reason: str, unknown: bool = False):
        super().__init__(f"{argument}: {reason}")
        self.argument = argument
        self.reason = reason
        self.unknown = unknown


# --- inter-node RPC (ringkv.net) ---


class RpcError(RingkvError):
    """A call to another node failed. `peer` names that node (or its address) when known."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class RpcTimeoutError(RpcError):
    """No reply within the caller's `timeout_ms`; the request may still have run on the peer."""

    def __init__(self, peer: str, timeout_ms: float, waiting_for: str | None = None):
        message = f"{peer} timed out after {timeout_ms:g} ms"
        if waiting_for:
            message += f" ({waiting_for})"
        super().__init__(message, peer)
        self.timeout_ms = timeout_ms


class PeerUnavailableError(RpcError):
    """The peer could not be reached (refused, unknown address, connection lost or closed)."""

    def __init__(self, peer: str, reason: str):
        super().__init__(f"{peer} unavailable: {reason}", peer)
        self.reason = reason


class ConnectionLostError(PeerUnavailableError):
    """The connection was lost after the request was sent: the peer may have run it. Callers
    that would send the request elsewhere must not (its outcome is unknown), unlike a
    PeerUnavailableError raised before sending, which means it never ran."""


class HandshakeError(RpcError):
    """The peer belongs to another cluster or speaks another protocol version (or is not the
    node the address book named); the connection was refused by one side."""

    def __init__(self, peer: str, reason: str):
        super().__init__(f"handshake with {peer} refused: {reason}", peer)
        self.reason = reason


class RpcProtocolError(RpcError):
    """The peer sent bytes that break the RPC protocol; the connection was closed."""


class FrameTooLargeError(RpcProtocolError, LimitError):
    """A frame is longer than `max_frame_bytes` (sent or received)."""

    def __init__(self, size_bytes: int, max_frame_bytes: int, peer: str | None = None,
                 direction: str = ""):
        where = f" {direction} {peer}" if peer and direction else ""
        super().__init__(
            f"frame of {size_bytes} bytes{where} is over max_frame_bytes={max_frame_bytes}", peer
        )
        self.size_bytes = size_bytes
        self.max_frame_bytes = max_frame_bytes


class RemoteError(RpcError):
    """The peer ran the request and answered with an error (`code` from the RPC format)."""

    def __init__(self, peer: str, code: int, remote_message: str):
        super().__init__(f"{peer} answered with error {code}: {remote_message}", peer)
        self.code = code
        self.remote_message = remote_message


class QuorumError(RingkvError):
    """Too few replicas answered a read or write for its consistency level.

    The message names every replica that failed and why, sorted by node id, e.g.
    "needed 2 replicas, 1 answered: n3 timed out after 500 ms". `failures` maps node id to
    reason; replicas still pending when the outcome was decided are not failures, and the
    message lists them apart ("(n2 had not answered yet)").
    """

    def __init__(self, needed: int, answered: int, failures: dict[str, str],
                 pending: tuple[str, ...] = (), dc: str = ""):
        self.dc = dc  # the datacenter whose need was missed (a datacenter level), else ""
        self.needed = needed
        self.answered = answered
        self.failures = dict(sorted(failures.items()))
        self.pending = tuple(sorted(pending))
        detail = "; ".join(f"{node} {reason}" for node, reason in self.failures.items())
        if self.pending:
            # Decided before they answered: too many had already failed for W (or R) to be met.
            detail += f" ({', '.join(self.pending)} had not answered yet)"
        where = f"datacenter {dc}: " if dc else ""
        super().__init__(f"{where}needed {needed} replicas, {answered} answered: {detail}")
