"""ringkv's Python client: `Client` (blocking) and `AsyncClient` (asyncio).

    from ringkv.client import Client

    with Client.from_url("ringkv://127.0.0.1:7379") as kv:   # or ringkv://user:password@host:port
        kv.set("greeting", "hello", ttl_s=30)
        kv.get("greeting")          # b"hello"

Both talk RESP to one node through redis-py's connection pools, retry only what is safe to
resend, and raise the typed errors of `ringkv.client.errors`. docs/client.md is the guide.
"""

from ringkv.client.aio import AsyncClient
from ringkv.client.commands import CasResult
from ringkv.client.errors import (
    AuthenticationFailedError,
    ClientError,
    ConnectionFailedError,
    QuotaExceededError,
    RequestTimeoutError,
    ResultUnknownError,
    ServerError,
    SessionStateLostError,
)
from ringkv.client.options import Consistency
from ringkv.client.siblings import Sibling, Versions
from ringkv.client.sync import Client

__all__ = [
    "AsyncClient",
    "AuthenticationFailedError",
    "CasResult",
    "Client",
    "ClientError",
    "ConnectionFailedError",
    "Consistency",
    "QuotaExceededError",
    "RequestTimeoutError",
    "ResultUnknownError",
    "ServerError",
    "SessionStateLostError",
    "Sibling",
    "Versions",
]
