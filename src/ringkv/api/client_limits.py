"""Bounds on what clients can make a node do, shared by the RESP server and the HTTP API
(whose own are in api/http_limits.py).

- `ThrottledLog`: security warnings (a refused connection, a cross-protocol request, a client
  closed for its memory) logged at most once per kind per interval, with how many were left
  out, so a flood cannot flood the log too.
- `looks_like_http`: whether a RESP command is a line of an HTTP request (api/resp_server.py
  closes the connection, as Redis does for `POST` and `Host:`).

docs/security.md, "Bounded clients and cross-protocol", says what each protects against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

THROTTLE_INTERVAL_S = 10.0


class ThrottledLog:
    """One line per kind per `interval_s` at most; the next line says how many were left out.
    Kinds are a few fixed names, so the table stays small."""

    def __init__(self, logger: logging.Logger, interval_s: float = THROTTLE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when logged, lines left out since)

    def warning(self, kind: str, message: str, *args: Any) -> None:
        self._log(logging.WARNING, kind, message, args)

    def info(self, kind: str, message: str, *args: Any) -> None:
        self._log(logging.INFO, kind, message, args)

    def _log(self, level: int, kind: str, message: str, args: tuple) -> None:
        now = self.clock()
        last, left_out = self._last.get(kind, (None, 0))
        if last is not None and now - last < self.interval_s:
            self._last[kind] = (last, left_out + 1)
            return
        self._last[kind] = (now, 0)
        if left_out:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, left_out, now - last)
        self.logger.log(level, message, *args)


# What an HTTP request sent to the RESP port parses into (inline commands split on spaces):
# `POST /path HTTP/1.1` and `Host: example.com` as Redis refuses them, a request line of any
# other method, and `PUT`, which no Redis client sends.
_HTTP_ALWAYS = frozenset((b"post", b"put", b"host:"))
_HTTP_METHODS = frozenset((b"get", b"head", b"delete", b"options", b"patch", b"connect", b"trace"))


def looks_like_http(argv: list[bytes]) -> bool:
    name = argv[0].lower()
    if name in _HTTP_ALWAYS:
        return True
    return name in _HTTP_METHODS and len(argv) == 3 and argv[2][:5].upper() == b"HTTP/"


