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
