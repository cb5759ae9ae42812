"""When a failed request is tried again, and what its caller is told when it is not.

The rules, shared by `Client` and `AsyncClient`:

- A request fails either before it was sent (no connection could be made: refused, connect
  timed out) or after (the connection broke, or no reply came within `timeout_ms`).
- Before it was sent, nothing happened on the node. An idempotent request is tried again, up
  to `retries` more times, after a jittered exponential backoff; then `ConnectionFailedError`.
  A non-idempotent one is not retried at all, and raises `ConnectionFailedError` at once, which
  for it means "certainly not applied".
- After it was sent: a timeout raises `RequestTimeoutError` without a retry (the node that did
  not answer is paused or overloaded; asking again multiplies the caller's wait and its load).
  A broken connection is retried like a connect failure if the request is idempotent. A
  non-idempotent request raises `ResultUnknownError` whatever the cause: it may have been
  applied, and only the caller can decide how to find out.
- A refusal of the client's credentials (WRONGPASS when connecting, NOAUTH to a request) is
  `AuthenticationFailedError`, never retried: the same credentials fail again, and each
  failure lengthens the node's brute-force backoff for this address.
- An error answered by the node (`ServerError`) is never retried: the same request fails again.
  One that says the node itself does not know whether the write was applied (a consensus
  round or a forwarded write that did not finish: "... may or may not have been applied") is
  a `ResultUnknownError` instead, for every request, idempotent or not.

`Attempts` holds this logic for one request; the clients' IO loops call it on each failure and
either sleep for the delay it returns or let its typed error propagate.
"""

from __future__ import annotations

import logging
import random

import redis.exceptions

from ringkv.client.commands import Request
from ringkv.client.errors import (
    AuthenticationFailedError,
    ConnectionFailedError,
    QuotaExceededError,
    RequestTimeoutError,
    ResultUnknownError,
    ServerError,
)
from ringkv.client.options import ClientOptions
from ringkv.errors import QuotaExceededError as QuotaRefusal

log = logging.getLogger("ringkv.client")

# What a broken or unreachable node looks like through redis-py (it wraps most socket errors
# in its ConnectionError and TimeoutError, but raw OSErrors leak from some asyncio paths).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.InvalidResponse,
    OSError,
    EOFError,
)
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.TimeoutError, TimeoutError)
# redis-py's BlockingConnectionPool raises ConnectionError with this text when every pooled
# connection stayed busy for the pool's timeout: that is a wait, not an unreachable node.
POOL_EXHAUSTED = "No connection available."
# What a node's error reply says when it does not know whether a write was applied
# (node/consensus.py, node/forwarding.py: HTTP's 504). RESP has no error kind for it; the
# text is the contract.
OUTCOME_UNKNOWN = "may or may not have been applied"


def backoff_ms(retry: int, base_ms: float, max_ms: float, rng: random.Random) -> float:
    """Delay before retry number `retry` (0 for the first retry).

    Exponential from `base_ms`, capped at `max_ms`, then "equal jitter" (as ringkv.net's
    reconnects): somewhere in the upper half of that value, so clients that lost the same node
    at the same moment do not knock again in step, while the total wait keeps a floor (the sum
    of the halves) that a caller sizing `retries` can count on.
    """
    exponent = min(retry, 32)  # no float overflow however many retries are configured
    ceiling = min(max_ms, base_ms * 2**exponent)
    return ceiling / 2 + rng.random() * ceiling / 2


class Attempts:
    """The retry state of one request. Not thread-safe: one per call."""

    __slots__ = ("address", "limit", "made", "options", "request", "rng")

    def __init__(self, request: Request, options: ClientOptions, rng: random.Random):
        self.request = request
        self.options = options
        self.rng = rng
        self.address = options.address
        self.limit = 1 + options.retries if request.idempotent else 1
        self.made = 0

    def begin(self) -> None:
        self.made += 1

    def connect_failed(self, exc: BaseException) -> float:
        """No connection for this attempt: the request was not sent. Returns the delay in
        seconds before the next attempt, or raises the caller's error."""
        self._refused_credentials(exc)
        if isinstance(exc, redis.exceptions.ConnectionError) and str(exc) == POOL_EXHAUSTED:
            raise RequestTimeoutError(
                self.request.command,
                self.options.timeout_ms,
                self.address,
                f"one of max_connections={self.options.max_connections} pooled connections",
            ) from exc
        return self._retry_or_fail(exc)

    def request_failed(self, exc: BaseException) -> float:
        """The request was (perhaps partly) sent and no whole reply came."""
        self._refused_credentials(exc)
        request = self.request
        timed_out = isinstance(exc, TIMEOUT_ERRORS)
        if not request.idempotent:
            raise ResultUnknownError(
                request.command, self.address, exc, timed_out, self.options.timeout_ms
            ) from exc
        if timed_out:
            raise RequestTimeoutError(request.command, self.options.timeout_ms, self.address) from exc
        return self._retry_or_fail(exc)

    def _refused_credentials(self, exc: BaseException) -> None:
        """WRONGPASS on connect, or NOAUTH to a request: redis-py makes both a ConnectionError,
        but the node answered, and asking again with the same credentials only feeds its
        brute-force backoff. (NOAUTH to a request means the request did not run.)"""
        if isinstance(exc, redis.exceptions.AuthenticationError):
            raise AuthenticationFailedError(self.request.command, self.address, str(exc)) from None

    def server_error(self, exc: BaseException) -> ServerError | ResultUnknownError:
        message = str(exc)
        if OUTCOME_UNKNOWN in message:
            return ResultUnknownError(self.request.command, self.address, exc, False, self.options.timeout_ms,
                                      server_message=message)
        quota = QuotaRefusal.from_message(message)  # a namespace's quota (docs/namespaces.md)
        if quota is not None:
            return QuotaExceededError(self.request.command, self.address, message, quota.namespace, quota.quota,
                                      quota.limit)
        return ServerError(self.request.command, self.address, message)

    def _retry_or_fail(self, exc: BaseException) -> float:
        if self.made >= self.limit:
            raise ConnectionFailedError(self.request.command, self.address, self.made, exc) from exc
        opts = self.options
        delay = backoff_ms(self.made - 1, opts.backoff_base_ms, opts.backoff_max_ms, self.rng)
        log.debug(
            "%s to %s failed (%s); retry %d of %d in %.0f ms",
            self.request.command, self.address, exc, self.made, self.limit - 1, delay,
        )
        return delay / 1000
