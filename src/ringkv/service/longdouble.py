"""Redis's `long double` arithmetic, exactly, for HINCRBYFLOAT (and INCRBYFLOAT).

Redis adds floats as C `long double`s: on x86-64 Linux (the build ringkv is compared with) the
x87 80-bit extended format, a 64-bit significand and exponents down to 2**-16382 (subnormals
to 2**-16445). It parses with `strtold` (string2ld: no leading space, nothing after the
number, no NaN, no overflow and no underflow to zero), and answers with `%.17Lf` less its
trailing zeros (ld2string's LD_STR_HUMAN). A Python float has a 53-bit significand, so
0.1 + 0.2 is 0.30000000000000004 there and 0.3 in Redis; this module does the arithmetic on
exact rationals and rounds them as the extended format does (to nearest, ties to even), so
its answers are Redis's, digit for digit.

Values are `Fraction`s, or the float infinities (`strtold` reads "inf" and "infinity"; the
callers refuse them with their own messages). Pure: no IO.
"""

from __future__ import annotations

import re
from fractions import Fraction

SIGNIFICAND_BITS = 64
MIN_QUANTUM_EXP = -16445  # the smallest subnormal is 2**-16445
OVERFLOW_LIMIT = Fraction(2) ** 16384  # a rounded magnitude at or above this is infinite
MAX_LONG_DOUBLE_CHARS = 5 * 1024  # string2ld refuses a text of this many bytes or more
FORMAT_DECIMALS = 17  # %.17Lf

LongDouble = Fraction | float  # a float only for +-inf

_DECIMAL = re.compile(rb"([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?")
_HEX = re.compile(rb"([+-]?)0[xX](?:([0-9a-fA-F]+)(?:\.([0-9a-fA-F]*))?|\.([0-9a-fA-F]+))(?:[pP]([+-]?\d+))?")
_INFINITY = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)
# Python refuses to convert decimal texts longer than this in one go (sys.int_max_str_digits).
_DIGITS_PER_CHUNK = 1000
# A decimal exponent beyond these bounds makes any nonzero significand overflow or underflow;
# they only spare building powers of ten with millions of digits.
_MAX_DECIMAL_EXP = 4933 + MAX_LONG_DOUBLE_CHARS
_MIN_DECIMAL_EXP = -4952 - MAX_LONG_DOUBLE_CHARS


def _int_of_digits(digits: bytes) -> int:
    digits = digits.lstrip(b"0")
    n = 0
    for i in range(0, len(digits), _DIGITS_PER_CHUNK):
        chunk = digits[i : i + _DIGITS_PER_CHUNK]
        n = n * 10 ** len(chunk) + int(chunk)
    return n


def _exponent(text: bytes | None) -> int:
    """An exponent's digits, clamped far enough out that the caller's bound checks decide."""
    if not text:
        return 0
    sign = -1 if text[:1] == b"-" else 1
    digits = text.lstrip(b"+-").lstrip(b"0")
    if len(digits) > 9:
        return sign * 10**9
    return sign * int(digits or b"0")


def round_extended(exact: Fraction) -> LongDouble:
    """`exact` rounded to the nearest extended-precision value (ties to even); +-inf when
    that is beyond the largest finite one."""
    if exact == 0:
        return Fraction(0)
    negative = exact < 0
    n, d = abs(exact.numerator), exact.denominator
    e = n.bit_length() - d.bit_length()  # floor(log2 |exact|) is e or e - 1
    if (n << -e if e < 0 else n) < (d << e if e > 0 else d):
        e -= 1
    q = max(e - (SIGNIFICAND_BITS - 1), MIN_QUANTUM_EXP)
    steps = round(Fraction(n << -q, d) if q < 0 else Fraction(n, d << q))  # ties to even
    value = Fraction(steps, 1 << -q) if q < 0 else Fraction(steps << q)
    if value >= OVERFLOW_LIMIT:
        return float("-inf") if negative else float("inf")
    return -value if negative else value


def parse(data: bytes) -> LongDouble | None:
    """What Redis's string2ld reads from `data`, or None where it refuses it (empty, too long,
    spaces, trailing bytes, NaN, overflow, underflow to zero)."""
    if not data or len(data) >= MAX_LONG_DOUBLE_CHARS:
        return None
    m = _DECIMAL.fullmatch(data)
    if m is not None:
        sign, whole, fraction, only_fraction, exp_text = m.groups()
        digits = (whole or b"") + (fraction or b"") + (only_fraction or b"")
        scale = len(fraction or b"") + len(only_fraction or b"")
        mantissa = _int_of_digits(digits)
        if mantissa == 0:
            return Fraction(0)
        exp10 = _exponent(exp_text) - scale
        magnitude = len(digits.lstrip(b"0"))  # digits before the exponent applies
        if exp10 + magnitude > _MAX_DECIMAL_EXP:
            return None  # ERANGE, HUGE_VAL
        if exp10 + magnitude < _MIN_DECIMAL_EXP:
            return None  # ERANGE, zero
        exact = Fraction(mantissa * 10**exp10) if exp10 >= 0 else Fraction(mantissa, 10**-exp10)
        return _checked(-exact if sign == b"-" else exact)
    m = _HEX.fullmatch(data)
    if m is not None:
        sign, whole, fraction, only_fraction, exp_text = m.groups()
        digits = (whole or b"") + (fraction or b"") + (only_fraction or b"")
        scale = 4 * (len(fraction or b"") + len(only_fraction or b""))
        mantissa = int(digits, 16)
        if mantissa == 0:
            return Fraction(0)
        exp2 = _exponent(exp_text) - scale
        bits = mantissa.bit_length() + exp2
        if bits > 16384 + 1:
            return None
        if bits < MIN_QUANTUM_EXP - 2:
            return None
        exact = Fraction(mantissa << exp2) if exp2 >= 0 else Fraction(mantissa, 1 << -exp2)
        return _checked(-exact if sign == b"-" else exact)
    m = _INFINITY.fullmatch(data)
    if m is not None:
        return float("-inf") if m.group(1) == b"-" else float("inf")
    return None  # garbage, or NaN (which string2ld refuses)


def _checked(exact: Fraction) -> LongDouble | None:
    value = round_extended(exact)
    if isinstance(value, float) or value == 0:
        return None  # strtold's ERANGE: overflow to HUGE_VAL or underflow to zero
    return value


def add(a: Fraction, b: Fraction) -> LongDouble:
    """a + b in extended precision (both finite)."""
    return round_extended(a + b)


def _decimal_text(n: int) -> str:
    """str(n) for a nonnegative int of any length (past Python's int_max_str_digits)."""
    if n < 10**_DIGITS_PER_CHUNK:
        return str(n)
    base = 10**_DIGITS_PER_CHUNK
    chunks = []
    while n:
        n, low = divmod(n, base)
        chunks.append(low)
    top = str(chunks.pop())
    return top + "".join(str(c).rjust(_DIGITS_PER_CHUNK, "0") for c in reversed(chunks))


def format_human(value: Fraction) -> bytes:
    """ld2string(LD_STR_HUMAN): `%.17Lf` of a finite value, trailing zeros (and a bare point)
    dropped, "-0" written "0"."""
    scaled = round(abs(value) * 10**FORMAT_DECIMALS)  # printf rounds the exact value, ties to even
    text = _decimal_text(scaled).rjust(FORMAT_DECIMALS + 1, "0")
    whole, fraction = text[:-FORMAT_DECIMALS], text[-FORMAT_DECIMALS:].rstrip("0")
    out = whole + "." + fraction if fraction else whole
    if value < 0 and out != "0":
        out = "-" + out
    return out.encode()
