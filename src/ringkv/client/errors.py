"""The errors a ringkv client raises, one per thing a caller does differently about it.

    ConnectionFailedError  no node answered; the request was never executed (for a write that
                           is not idempotent, it was never sent at all)  -> try later / elsewhere
    RequestTimeoutError    a node took the request and gave no reply in timeout_ms
    ResultUnknownError     a non-idempotent write was sent and its reply was lost, or the node
                           answered that its outcome is unknown (a consensus round that did not
                           finish): it may or may not have been applied -> read the key (at
                           SERIAL) to find out, do not blindly resend
    ServerError            the node answered with an error (bad argument, wrong type, a
                           NOPERM refusal of the user's ACL rules, ...): the same request will
                           fail again
      QuotaExceededError   a namespace's quota (keys, bytes, requests per second) refused it
    AuthenticationFailedError  the node refused the client's credentials (WRONGPASS), or wants
                           some (NOAUTH): never retried -> fix username/password

All of them derive from `ClientError` (a `ringkv.errors.RingkvError`), so one `except` catches
everything the client raises on purpose. `ConnectionFailedError` and `RequestTimeoutError` also
derive from Python's `ConnectionError` and `TimeoutError`, for code that already catches those.
"""

from __future__ import annotations

from ringkv.errors import RingkvError


class ClientError(RingkvError):
    """Base class of the errors raised by `ringkv.client`."""


class ConnectionFailedError(ClientError, ConnectionError):
    """No connection to the node could be made (or kept) within the configured attempts.

    `address` is "host:port", `attempts` how many were made, `cause` the last failure.
    """

    def __init__(self, command: str, address: str, attempts: int, cause: BaseException):
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(f"{command}: could not reach {address} after {tries}: {_describe(cause)}")
        self.command = command
        self.address = address
        self.attempts = attempts
        self.cause = cause


class RequestTimeoutError(ClientError, TimeoutError):
    """The node accepted the request but did not answer within `timeout_ms`.

    Raised only for idempotent requests (a non-idempotent one raises `ResultUnknownError`); a
    timed-out request is not retried, since the node that did not answer is overloaded or
    stopped and asking it again would multiply the wait.
    """

    def __init__(self, command: str, timeout_ms: float, address: str, waiting_for: str = "a reply"):
        super().__init__(f"{command} timed out after {timeout_ms:g} ms waiting for {waiting_for} from {address}")
        self.command = command
        self.timeout_ms = timeout_ms
        self.address = address


class ServerError(ClientError):
    """The node executed the request and answered with an error; `server_message` is its text."""

    def __init__(self, command: str, address: str, server_message: str):
        super().__init__(f"{address} answered {command} with an error: {server_message}")
        self.command = command
        self.address = address
        self.server_message = server_message


class AuthenticationFailedError(ClientError):
    """The node refused to serve this client as it presented itself: a wrong user name or
    password, a disabled or deleted user, or no credentials where the node needs some.
    `server_message` is the node's reply (it never holds the password)."""

    def __init__(self, command: str, address: str, server_message: str):
        super().__init__(f"{address} refused to authenticate this client ({command}): {server_message}; give "
                         "username and password (or RINGKV_USER / RINGKV_PASSWORD)")
        self.command = command
        self.address = address
        self.server_message = server_message


class QuotaExceededError(ServerError):
    """The node refused the request because a namespace is at one of its quotas (nothing was
    applied): `namespace`, `quota` (max_keys, max_bytes or max_requests_per_s) and `limit`. A
    rate refills within a second; keys and bytes only once some are deleted."""

    def __init__(self, command: str, address: str, server_message: str, namespace: str, quota: str, limit: int):
        super().__init__(command, address, server_message)
        self.namespace = namespace
        self.quota = quota
        self.limit = limit


class ResultUnknownError(ClientError):
    """A non-idempotent request (INCR, APPEND, a conditional SET, CAS) was sent and no reply
    came; or the node replied that it does not know the outcome itself (a consensus round, or a
    write forwarded to another replica, that did not finish in time).

    The node may have applied it or not; resending could apply it twice, so the client never
    does. Read the key to learn the outcome (at SERIAL: that also completes an unfinished
    consensus round). `timed_out` tells a missing reply (no answer in `timeout_ms`) from a lost
    connection; `server_message` is the node's reply when it said so itself (None otherwise);
    `cause` is the underlying failure.
    """

    def __init__(self, command: str, address: str, cause: BaseException, timed_out: bool,
                 timeout_ms: float, server_message: str | None = None):
        if server_message is not None:
            super().__init__(f"{command} result unknown: {address} answered: {server_message}")
        else:
            if timed_out:
                what = f"no reply from {address} within {timeout_ms:g} ms"
            else:
                what = f"the connection to {address} failed after the request was sent ({_describe(cause)})"
            super().__init__(
                f"{command} result unknown: {what}; the write may or may not have been applied, "
                "read the key to find out"
            )
        self.command = command
        self.address = address
        self.cause = cause
        self.timed_out = timed_out
        self.server_message = server_message


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


class SessionStateLostError(ClientError):
    """The pooled connection that held a session's newest state (docs/client.md, "Consistency")
    was lost before the client fetched that state: what the session read since its last write
    (or since the token was last fetched) is forgotten, so monotonic reads are not promised
    across this error. Read-your-writes still holds: the token is fetched with every write's
    reply. Raised once, on the session's next request (not sent); the session then goes on
    from its last fetched token (`token`)."""

    def __init__(self, address: str, reason: str, token: bytes | None):
        super().__init__(
            f"session state lost: the connection to {address} that held the session's newest state "
            f"{reason} before its token was fetched; the reads since the session's last write are "
            "forgotten, so a later read may return an older version than one of them (read-your-writes "
            "still holds); the session goes on from its last fetched token")
        self.address = address
        self.reason = reason
        self.token = token
