"""Bearer tokens for the HTTP API: what they look like, and what is kept of them.

A token is `rkv1.<user name, base64url>.<32 random bytes, base64url>`. The name lets any node
find the user without an index; the random part is the secret. The user's record keeps only
the secret's digest (SHA-256, first 32 hex digits) with the token's expiry and the credential
(password) it was issued for, so a stolen user record lends no token, and removing that
password, disabling the user or deleting it revokes the token (security/acl.py, `accepts`).

Tokens are issued by `POST /api/v1/auth/token` to a client that authenticates with its password
(Basic), for at most `auth_token_max_ttl_s`; `DELETE /api/v1/auth/token` revokes the one
presented. A user holds at most `auth_tokens_max_per_user`: issuing one more drops the oldest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

PREFIX = "rkv1"
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 512
_B64URL = re.compile(r"[A-Za-z0-9_-]+")  # unpadded base64url: the decoder alone would skip other bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()[:32]


def mint(user: str) -> tuple[str, str]:
    """A new token for `user`: (the token, the digest its user's record keeps)."""
    secret = _b64(secrets.token_bytes(SECRET_BYTES))
    return f"{PREFIX}.{_b64(user.encode('utf-8'))}.{secret}", digest(secret)


def parse(token: str) -> tuple[str, str]:
    """(user name, digest) of a token's text; ValueError when it is not a ringkv token."""
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("not a ringkv token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not all(_B64URL.fullmatch(p) for p in parts[1:]):
        raise ValueError("not a ringkv token")
    try:
        name = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode("utf-8")
    except (ValueError, UnicodeError):
        raise ValueError("not a ringkv token") from None
    return name, digest(parts[2])


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
