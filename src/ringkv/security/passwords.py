"""Passwords as salted slow hashes (scrypt, from the standard library's hashlib).

A stored password is the text `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` (salt and hash in
unpadded base64url): the parameters travel with the hash, so stronger ones can be chosen later
without breaking stored users. ACL GETUSER and ACL LIST show these strings (`#scrypt$...`),
and `ACL SETUSER name #scrypt$...` takes one back, so a user can be copied between clusters
without its password. Redis's unsalted SHA-256 form (`#<64 hex digits>`) is refused.

Cost: N = 2^14, r = 8, p = 1 (the scrypt paper's parameters for interactive logins; 16 MiB and
about 50-200 ms of one core per hash). That is paid once per new password and once per
successful authentication of a client (api/ and security/access.py keep what was verified, so
a connection pool or an HTTP client sending Basic credentials on every request pays it once).
The hash runs in a thread (hashlib releases the GIL), never on the event loop.

All the passwords of one user share the user's salt, so checking a password against a user with
several costs one hash, not one per password. Passwords are never logged, and never part of an
error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

LOG2_N = 14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
PREFIX = "scrypt"
# What a stored hash may ask of the node: scrypt's memory is 128 * r * N bytes.
MAX_SCRYPT_MEMORY_BYTES = 64 * 1024 * 1024
MAX_LOG2_N = 20
MAX_R = 32
MAX_P = 4
MAX_PASSWORD_BYTES = 4096
MAX_HASH_TEXT_BYTES = 256


@dataclass(frozen=True, slots=True)
class PasswordHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def text(self) -> str:
        return f"{PREFIX}${self.log2_n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"

    @property
    def params(self) -> tuple[int, int, int, bytes]:
        return self.log2_n, self.r, self.p, self.salt


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_hash(text: str) -> PasswordHash:
    """A stored hash's text; ValueError saying what is wrong with it (never echoing it)."""
    if len(text) > MAX_HASH_TEXT_BYTES:
        raise ValueError(f"a password hash is at most {MAX_HASH_TEXT_BYTES} characters")
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != PREFIX:
        raise ValueError("a password hash must read scrypt$<log2 N>$<r>$<p>$<salt>$<hash> (ringkv keeps "
                         "passwords as salted scrypt hashes; give a password in clear with >password)")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, TypeError):
        raise ValueError("a password hash's parameters must be integers and its salt and hash base64url") from None
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise ValueError(f"scrypt parameters out of range: log2 N 1..{MAX_LOG2_N}, r 1..{MAX_R}, p 1..{MAX_P}")
    if 128 * r * (1 << log2_n) > MAX_SCRYPT_MEMORY_BYTES:
        raise ValueError(f"scrypt parameters need more than {MAX_SCRYPT_MEMORY_BYTES} bytes of memory")
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise ValueError("a password hash's salt must be 8..64 bytes and its hash 16..64 bytes")
    return PasswordHash(log2_n, r, p, salt, digest)


def _scrypt(password: bytes, log2_n: int, r: int, p: int, salt: bytes, dklen: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=2 * 128 * r * n + 1024 * 1024)


def check_password(password: bytes) -> None:
    if len(password) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password is at most {MAX_PASSWORD_BYTES} bytes")


def hash_password(password: bytes, salt: bytes | None = None) -> str:
    """The stored text of `password` under the current parameters (a new random salt unless one
    is given: the user's, see the module docstring). Slow: call it off the event loop."""
    check_password(password)
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    return PasswordHash(LOG2_N, R, P, salt, _scrypt(password, LOG2_N, R, P, salt, HASH_BYTES)).text


def user_salt(hashes: list[str]) -> bytes | None:
    """The salt a user's new password takes: that of its first hash made with the current
    parameters (None: a fresh one)."""
    for text in hashes:
        h = parse_hash(text)
        if (h.log2_n, h.r, h.p) == (LOG2_N, R, P):
            return h.salt
    return None


def matching_hash(password: bytes, hashes: list[str]) -> str | None:
    """The stored hash `password` matches, or None. One scrypt per distinct (parameters, salt)
    among `hashes`; constant-time comparisons. Slow: call it off the event loop."""
    if len(password) > MAX_PASSWORD_BYTES:
        return None
    computed: dict[tuple[int, int, int, bytes, int], bytes] = {}
    found = None
    for text in hashes:
        h = parse_hash(text)
        key = (*h.params, len(h.digest))
        digest = computed.get(key)
        if digest is None:
            digest = computed[key] = _scrypt(password, h.log2_n, h.r, h.p, h.salt, len(h.digest))
        if hmac.compare_digest(digest, h.digest) and found is None:
            found = text
    return found


def credential_id(hash_text: str) -> str:
    """A short, stable name for one stored password: what a session or a token remembers it
    was authenticated with, so that removing that password revokes it (and nothing else)."""
    return hashlib.sha256(hash_text.encode("ascii")).hexdigest()[:24]


NOPASS_CREDENTIAL = "nopass"  # the credential of a session of a user flagged nopass
