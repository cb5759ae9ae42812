"""Sessions over HTTP: the `Session-Token` request and response headers.

A request carrying `Session-Token: <token>` runs in that session (service/session.py): its
reads answer versions at least as new as everything the session wrote or read, at any
consistency level, and the response's `Session-Token` header is the token after the request,
which the client sends with its next request (to any node). A request at
`Consistency-Level: SESSION` (or `?consistency=SESSION`) without a token starts a session.
Requests with neither run in no session and get no header.

`HttpSessionMiddleware` decodes the token before the route runs (a bad one is answered 400,
naming what is wrong; a token this node issued or checked a moment ago is a cache hit in the
codec, service/session.py) and puts it in `CURRENT`, which `KeyValueApi._kv` binds the request's
service view to; the response header is added when the response starts, after the handler
has read and written.
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import parse_qsl

from ringkv.api.http_problems import ProblemError
from ringkv.errors import CommandError
from ringkv.service.session import SessionToken

SESSION_TOKEN_HEADER = b"session-token"
SESSION_LEVEL = "session"

CURRENT: contextvars.ContextVar[SessionToken | None] = contextvars.ContextVar("ringkv_http_kv_session",
                                                                              default=None)


def _asks_session_level(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"consistency-level" and value.strip().lower() == SESSION_LEVEL.encode():
            return True
    query = scope.get("query_string") or b""
    if b"consistency" in query:
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == "consistency" and value.strip().lower() == SESSION_LEVEL:
                return True
    return False


class HttpSessionMiddleware:
    """See the module docstring. `codec` is the node's `SessionCodec` (service.sessions)."""

    def __init__(self, app: Any, codec: Any) -> None:
        self.app = app
        self.codec = codec

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope["headers"]:
            if name == SESSION_TOKEN_HEADER:
                sent = value
                break
        try:
            if sent is not None:
                token = self.codec.decode(sent)
            elif _asks_session_level(scope):
                token = self.codec.new()
            else:
                await self.app(scope, receive, send)
                return
        except CommandError as exc:
            await ProblemError(400, "bad-session-token", str(exc)).response()(scope, receive, send)
            return
        codec = self.codec

        async def send_with_token(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                # Encoded only if the request changed it (SessionToken keeps its text), and
                # remembered by the codec, so the next request's header is a cache hit.
                headers.append((SESSION_TOKEN_HEADER, codec.encode_bytes(token)))
                message = {**message, "headers": headers}
            await send(message)

        reset = CURRENT.set(token)
        try:
            await self.app(scope, receive, send_with_token)
        finally:
            CURRENT.reset(reset)
