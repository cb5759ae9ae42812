"""The storage-engine benchmark's workload: the same keys, operation orders and values in every
worker process, all derived from one seed and generated before any clock starts.

    workload = Workload(WorkloadSpec(keys=1000, value_bytes=100, reads=1000, scans=10,
                                     scan_count=100, seed=42))

Contract: `Workload(spec)` depends on `spec` alone, so the parent and every worker agree on it
without shipping it; the timed loops (measure.py) consume its lists exactly as `Workload`
says, which is what `expected_values` relies on to know what each sampled key must hold.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from itertools import cycle, islice

KEY_BYTES = 16
# Existing keys are even numbers and missing keys odd ones, both printed as 16 decimal digits: a
# missing key looks like an existing one and sorts between two of them, so no engine can reject
# it by range alone. 2 * KEY_ID_SPACE stays below 10**16, so every key has exactly 16 digits.
KEY_ID_SPACE = 4 * 10**15
# db_bench draws values from a 1 MiB pool; so do we, so values repeat only 1 MiB apart.
VALUE_POOL_BYTES = 1 << 20
# Printable bytes, as db_bench's RandomGenerator uses, so a value compresses about as its does.
_PRINTABLE = range(32, 127)
# Keys whose final value is checked after the read phases (outside the clock).
SAMPLED_KEYS = 256


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    keys: int
    value_bytes: int
    reads: int
    scans: int
    scan_count: int
    seed: int

    @property
    def live_user_bytes(self) -> int:
        return self.keys * (KEY_BYTES + self.value_bytes)


class Workload:
    """Keys, operation orders and values of one run, all derived from `spec.seed`.

    The timed loops consume these exactly as follows, which `expected_values` relies on:
    fillseq writes `sorted_keys[i]` with `values[i % len(values)]`; fillrandom writes
    `fill_order[i]` with `values[i % len(values)]`; overwrite writes `overwrite_keys[j]` with
    `values[(overwrite_value_offset + j) % len(values)]`.
    """

    def __init__(self, spec: WorkloadSpec):
        self.spec = spec
        rng = random.Random(spec.seed)
        ids = sorted(rng.sample(range(KEY_ID_SPACE), spec.keys))
        # Zero-padded decimal: byte order is numeric order and every key is KEY_BYTES long.
        self.sorted_keys = [b"%016d" % (2 * i) for i in ids]
        self.fill_order = self.sorted_keys.copy()
        rng.shuffle(self.fill_order)
        self.overwrite_keys = rng.choices(self.sorted_keys, k=spec.keys)
        self.read_keys = _permutation_stream(rng, self.sorted_keys, spec.reads)
        self.missing_keys = [b"%016d" % (2 * i + 1) for i in rng.choices(ids, k=spec.reads)]
        self.scan_start_indexes = [rng.randrange(spec.keys) for _ in range(spec.scans)]
        self.scan_starts = [self.sorted_keys[i] for i in self.scan_start_indexes]
        self.scan_expected_entries = sum(
            min(spec.scan_count, spec.keys - i) for i in self.scan_start_indexes
        )
        self.values = _value_pool(rng, spec.value_bytes)
        self.overwrite_value_offset = len(self.values) // 2
        self.sampled_keys = rng.sample(self.sorted_keys, min(SAMPLED_KEYS, spec.keys))

    def fill_values(self) -> Iterator[bytes]:
        return cycle(self.values)

    def overwrite_values(self) -> Iterator[bytes]:
        return islice(cycle(self.values), self.overwrite_value_offset, None)

    def expected_values(self) -> dict[bytes, bytes]:
        """The value each sampled key must hold after fillrandom and overwrite."""
        sample = set(self.sampled_keys)
        pool = self.values
        expected: dict[bytes, bytes] = {}
        for i, key in enumerate(self.fill_order):
            if key in sample:
                expected[key] = pool[i % len(pool)]
        for j, key in enumerate(self.overwrite_keys):
            if key in sample:
                expected[key] = pool[(self.overwrite_value_offset + j) % len(pool)]
        return expected

    def fillseq_expected_values(self) -> dict[bytes, bytes]:
        pool = self.values
        index = {key: i for i, key in enumerate(self.sorted_keys)}
        return {key: pool[index[key] % len(pool)] for key in self.sampled_keys}


def _permutation_stream(rng: random.Random, keys: list[bytes], count: int) -> list[bytes]:
    """`count` keys in random order, each read once before any is read twice."""
    out: list[bytes] = []
    while len(out) < count:
        batch = keys.copy()
        rng.shuffle(batch)
        out.extend(batch[: count - len(out)])
    return out


def _value_pool(rng: random.Random, value_bytes: int) -> list[bytes]:
    """Distinct values about half compressible: a random printable run, repeated (as db_bench)."""
    count = max(1, VALUE_POOL_BYTES // value_bytes)
    run_bytes = max(1, value_bytes // 2)
    repeats = value_bytes // run_bytes + 1
    pool = []
    for _ in range(count):
        run = bytes(rng.choices(_PRINTABLE, k=run_bytes))
        pool.append((run * repeats)[:value_bytes])
    return pool
