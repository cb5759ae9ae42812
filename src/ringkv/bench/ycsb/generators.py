"""YCSB's number generators and key names, as YCSB's core package defines them.

    keys = ScrambledZipfianGenerator(0, record_count - 1, rng)
    key_name(keys.next())        # b"user6284781860667377211"

Written after YCSB's `site.ycsb.generator` classes (ZipfianGenerator after Gray et al.,
"Quickly Generating Billion-Record Synthetic Databases", SIGMOD 1994) and
`site.ycsb.Utils.fnvhash64`, so the key popularity of a workload here is the one YCSB's users
know. Pure: every generator draws from the `random.Random` it is given (one per client
process, seeded), and none keeps a clock or does IO.

One deliberate difference: YCSB's ZipfianGenerator, when its item count grows, recomputes
`eta` with the item count it was built with; here `eta` follows the current count, which is
what the formula means. It changes only the latest distribution of workload D while records
are inserted, and only slightly.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

ZIPFIAN_CONSTANT = 0.99
# ScrambledZipfianGenerator draws from a zipfian over this many items and hashes the draw into
# the key range, so that popular keys are spread over the range instead of clustered at its
# start. YCSB precomputes zeta(ITEM_COUNT, 0.99) once instead of summing 10^10 terms.
SCRAMBLED_ITEM_COUNT = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302

_FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
_FNV_PRIME_64 = 1099511628211
_MASK_64 = (1 << 64) - 1
_SIGN_64 = 1 << 63


def fnvhash64(value: int) -> int:
    """YCSB's `Utils.fnvhash64`: FNV-1a over the 8 low bytes of a Java long, then Math.abs.

    Java arithmetic is emulated: the product wraps at 64 bits, the result is read as a signed
    long, and Math.abs(Long.MIN_VALUE) stays negative, as in Java.
    """
    h = _FNV_OFFSET_BASIS_64
    for _ in range(8):
        h = ((h ^ (value & 0xFF)) * _FNV_PRIME_64) & _MASK_64
        value >>= 8
    if h >= _SIGN_64:
        h -= 1 << 64
        if h != -_SIGN_64:
            h = -h
    return h


@functools.lru_cache(maxsize=1 << 20)
def key_name(keynum: int) -> bytes:
    """YCSB's key of record number `keynum` with `insertorder=hashed` (its default):
    "user" followed by the decimal FNV hash, so keys are not inserted in key order.
    Memoized: the hot records are drawn again and again, and the hash is a Python loop."""
    return b"user%d" % fnvhash64(keynum)


def zeta(n: int, theta: float, start: int = 0, initial_sum: float = 0.0) -> float:
    """sum(1 / i**theta for i in 1..n), continuing from `initial_sum` over 1..start."""
    total = initial_sum
    for i in range(start, n):
        total += 1.0 / (i + 1) ** theta
    return total


class ZipfianGenerator:
    """Integers in [min_value, max_value]; min_value is the most popular, then min_value + 1, ...

    P(min_value + i) is proportional to 1 / (i + 1)**theta (YCSB: theta = 0.99).
    `next(item_count)` draws over the first `item_count` items instead, for a range that grows
    (YCSB's latest distribution); zeta is then extended incrementally, never recomputed.
    """

    __slots__ = ("_alpha", "_count_for_zeta", "_eta", "_half_pow_theta", "_rng", "_zeta2theta",
                 "_zetan", "base", "items", "theta")

    def __init__(self, min_value: int, max_value: int, rng: random.Random,
                 theta: float = ZIPFIAN_CONSTANT, zetan: float | None = None):
        if max_value < min_value:
            raise ValueError(f"empty range [{min_value}, {max_value}]")
        if not 0 < theta < 1:
            raise ValueError(f"theta must be in (0, 1), got {theta}")
        self.items = max_value - min_value + 1
        self.base = min_value
        self.theta = theta
        self._rng = rng
        self._zeta2theta = zeta(2, theta)
        self._alpha = 1.0 / (1.0 - theta)
        self._half_pow_theta = 0.5**theta
        self._zetan = zeta(self.items, theta) if zetan is None else zetan
        self._count_for_zeta = self.items
        self._eta = self._eta_for(self.items)

    def _eta_for(self, n: int) -> float:
        if n <= 2:
            return 0.0  # unused: with two items or fewer, next() answers from the first two cases
        return (1 - (2.0 / n) ** (1 - self.theta)) / (1 - self._zeta2theta / self._zetan)

    def next(self, item_count: int | None = None) -> int:
        n = self.items if item_count is None else item_count
        if n != self._count_for_zeta:
            if n > self._count_for_zeta:
                self._zetan = zeta(n, self.theta, self._count_for_zeta, self._zetan)
            else:  # YCSB refuses to shrink; a smaller range is recomputed from scratch
                self._zetan = zeta(n, self.theta)
            self._count_for_zeta = n
            self._eta = self._eta_for(n)
        u = self._rng.random()
        uz = u * self._zetan
        if uz < 1.0 or n < 2:
            return self.base
        if uz < 1.0 + self._half_pow_theta:
            return self.base + 1
        offset = int(n * (self._eta * u - self._eta + 1) ** self._alpha)
        return self.base + min(offset, n - 1)


class ScrambledZipfianGenerator:
    """Zipfian popularity over [min_value, max_value] with the popular items scattered.

    As YCSB: a zipfian draw over 10^10 items, FNV-hashed, modulo the range. The most popular
    item gets about 1/26.5 = 3.8 % of the draws, whatever the range's size.
    """

    __slots__ = ("_gen", "item_count", "min_value")

    def __init__(self, min_value: int, max_value: int, rng: random.Random):
        if max_value < min_value:
            raise ValueError(f"empty range [{min_value}, {max_value}]")
        self.min_value = min_value
        self.item_count = max_value - min_value + 1
        self._gen = ZipfianGenerator(0, SCRAMBLED_ITEM_COUNT, rng, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN)

    def next(self) -> int:
        return self.min_value + fnvhash64(self._gen.next()) % self.item_count


class SkewedLatestGenerator:
    """Record numbers near the most recently inserted one: YCSB's `latest` distribution.

    `last()` gives the highest record number known to exist (acknowledged); the draw is
    last - zipfian(last), so the newest records are the most popular and popularity follows
    inserts as they happen.
    """

    __slots__ = ("_last", "_zipfian")

    def __init__(self, last: Callable[[], int], rng: random.Random):
        self._last = last
        self._zipfian = ZipfianGenerator(0, max(last(), 1) - 1, rng)

    def next(self) -> int:
        last = self._last()
        if last < 1:
            return max(last, 0)
        return last - self._zipfian.next(last)


class UniformGenerator:
    """Integers in [min_value, max_value], each equally likely (YCSB's UniformLongGenerator)."""

    __slots__ = ("_rng", "max_value", "min_value")

    def __init__(self, min_value: int, max_value: int, rng: random.Random):
        if max_value < min_value:
            raise ValueError(f"empty range [{min_value}, {max_value}]")
        self.min_value = min_value
        self.max_value = max_value
        self._rng = rng

    def next(self) -> int:
        return self._rng.randint(self.min_value, self.max_value)


def zipfian_probability(rank: int, item_count: int, theta: float = ZIPFIAN_CONSTANT) -> float:
    """The exact probability of the item of popularity `rank` (0 = most popular) under a
    zipfian over `item_count` items: what the generators approximate (tests compare)."""
    return 1.0 / ((rank + 1) ** theta * zeta(item_count, theta))


def expected_max_share_scrambled() -> float:
    """The share of draws the most popular item of a ScrambledZipfianGenerator gets."""
    return 1.0 / SCRAMBLED_ZETAN


__all__ = [
    "SCRAMBLED_ITEM_COUNT",
    "ZIPFIAN_CONSTANT",
    "ScrambledZipfianGenerator",
    "SkewedLatestGenerator",
    "UniformGenerator",
    "ZipfianGenerator",
    "expected_max_share_scrambled",
    "fnvhash64",
    "key_name",
    "zeta",
    "zipfian_probability",
]
