"""The audit trail: every failed authentication and every admin action, as one JSON log line on
the `ringkv.audit` logger, and counted for /metrics.

A line holds who (`user`: the name given or authenticated, never a password), from where
(`client`: address:port, `protocol`: resp or http), what (`event`, and for admin actions the
`command` with its arguments, passwords redacted and each argument cut to
`MAX_ARG_CHARS`) and the `result` (ok, error, denied) with a `detail`. Auth failures are
logged at WARNING, admin actions at INFO (WARNING when denied or failed), so an operator can
route the logger to a file of its own (it propagates to the node's log by default).

Counters (Prometheus, through `collector()`; labels come from fixed sets, never from user
input, so their number stays bounded):
    ringkv_auth_failures_total{protocol, reason}
    ringkv_admin_actions_total{protocol, command, result}
    ringkv_permission_denials_total{protocol}
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("ringkv.audit")

MAX_ARG_CHARS = 64
MAX_ARGS = 16
MAX_USER_CHARS = 128
REASONS = ("wrongpass", "noauth", "disabled", "unknown_token", "expired_token", "malformed", "busy", "unavailable",
           "protected_mode")


def _text(value: bytes | str, limit: int) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if len(value) <= limit else value[:limit] + "..."


class Audit:
    """The audit logger and its counters (one per node, shared by RESP and HTTP)."""

    def __init__(self) -> None:
        self.auth_failures: Counter[tuple[str, str]] = Counter()
        self.admin_actions: Counter[tuple[str, str, str]] = Counter()
        self.permission_denials: Counter[str] = Counter()

    def auth_failure(self, protocol: str, client: str, user: bytes | str | None, reason: str, *,
                     backoff_ms: int = 0, detail: str = "") -> None:
        self.auth_failures[(protocol, reason if reason in REASONS else "wrongpass")] += 1
        line: dict[str, Any] = {"event": "auth_failure", "protocol": protocol, "client": client,
                                "user": None if user is None else _text(user, MAX_USER_CHARS), "reason": reason}
        if backoff_ms:
            line["backoff_ms"] = backoff_ms
        if detail:
            line["detail"] = detail
        log.warning("%s", json.dumps(line, ensure_ascii=False))

    def admin_action(self, protocol: str, client: str, user: str | None, command: str, args: Iterable[bytes | str],
                     result: str, detail: str = "") -> None:
        """`command` is the unit (e.g. "ringkv.admin|remove", "flushall"); `args` its arguments
        as they may be shown (redacted by the caller where they hold passwords)."""
        self.admin_actions[(protocol, command, result)] += 1
        shown = [_text(a, MAX_ARG_CHARS) for _, a in zip(range(MAX_ARGS), args, strict=False)]
        line: dict[str, Any] = {"event": "admin", "protocol": protocol, "client": client, "user": user,
                                "command": command, "args": shown, "result": result}
        if detail:
            line["detail"] = _text(detail, 300)
        log.log(logging.INFO if result == "ok" else logging.WARNING, "%s", json.dumps(line, ensure_ascii=False))

    def permission_denied(self, protocol: str) -> None:
        self.permission_denials[protocol] += 1

    def collector(self) -> AuditCollector:
        return AuditCollector(self)


class AuditCollector:
    """A prometheus_client collector of the audit counters (registered by the HTTP app)."""

    def __init__(self, audit: Audit):
        self.audit = audit

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        failures = CounterMetricFamily("ringkv_auth_failures", "Failed authentications (RESP AUTH, HELLO AUTH, "
                                       "HTTP credentials), by protocol and reason.", labels=["protocol", "reason"])
        for (protocol, reason), n in sorted(self.audit.auth_failures.items()):
            failures.add_metric([protocol, reason], n)
        yield failures
        actions = CounterMetricFamily("ringkv_admin_actions", "Admin actions (ACL changes, RINGKV.ADMIN, REPAIR, "
                                      "FAULT, FLUSHALL/FLUSHDB, /api/v1/admin), by protocol, command and result.",
                                      labels=["protocol", "command", "result"])
        for (protocol, command, result), n in sorted(self.audit.admin_actions.items()):
            actions.add_metric([protocol, command, result], n)
        yield actions
        denials = CounterMetricFamily("ringkv_permission_denials", "Commands and requests refused by a user's "
                                      "ACL rules (NOPERM, HTTP 403).", labels=["protocol"])
        for protocol, n in sorted(self.audit.permission_denials.items()):
            denials.add_metric([protocol], n)
        yield denials
