"""Redis's rules for numbers in arguments and values: what INCR accepts, what INCRBYFLOAT
answers. The adapters parse arguments with them and the node parses stored values with them,
so a client sees the same error whichever side found the bad number."""

from __future__ import annotations

import math

from ringkv.errors import CommandError

NOT_AN_INTEGER = "value is not an integer or out of range"
NOT_A_FLOAT = "value is not a valid float"
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def parse_int(data: bytes) -> int:
    """A signed 64-bit decimal with no spaces, sign only for negatives, no leading zeros."""
    # Python's int() also takes "1_000" and surrounding spaces; Redis's string2ll takes neither.
    if not data or len(data) > 20 or data != data.strip() or data.startswith(b"+") or data.find(b"_") >= 0:
        raise CommandError(NOT_AN_INTEGER)
    try:
        n = int(data)
    except ValueError:
        raise CommandError(NOT_AN_INTEGER) from None
    if not INT64_MIN <= n <= INT64_MAX or (len(data) > 1 and data[0:1] == b"0") or data.startswith(b"-0"):
        raise CommandError(NOT_AN_INTEGER)
    return n


def parse_float(data: bytes) -> float:
    """A double as Redis's strtold-based parsing takes it: no spaces, no "1_0" (Python's float()
    takes it), no NaN, and no overflow to infinity ("1e400"); "inf" itself is fine."""
    try:
        if data != data.strip() or data.find(b"_") >= 0:  # find: see node/replica.storage_key
            raise ValueError
        f = float(data)
    except ValueError:
        raise CommandError(NOT_A_FLOAT) from None
    if math.isnan(f) or (math.isinf(f) and b"inf" not in data.lower()):
        raise CommandError(NOT_A_FLOAT)
    return f


def format_float(f: float) -> bytes:
    """INCRBYFLOAT's reply: the shortest decimal that reads back the same, no exponent."""
    if f == int(f) and abs(f) < 1e17:
        return b"%d" % int(f)
    text = repr(f)
    if "e" in text or "E" in text:
        text = f"{f:.17f}".rstrip("0").rstrip(".")
    return text.encode()
