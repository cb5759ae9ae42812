"""`StoreAdapter`: the interface a system under test implements to be measured.

adapters.py holds the five systems the benchmark knows; a test can subclass this for a store
of its own (tests/bench/test_engine_bench.py does, to check that wrong answers fail a run).
The contract is on the class and its methods: `put` and `get` are bound in `open`, `scan`
seeks and reads in key order, `flush_and_settle` leaves the state reads should measure.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar


class StoreAdapter(ABC):
    """One system under test.

    `put` and `get` are instance attributes bound in `open()`, straight to the library's own
    methods where its API allows: a Python wrapper adds about the same cost to every call of
    every system and blurs the differences being measured. Systems whose API needs a statement
    or a transaction per call (sqlite, LMDB writes) get the thinnest wrapper that does it.

    REQUIRES: `open` before any other call; `close` before `open` again.
    """

    name: ClassVar[str]
    # What must import for the system to run; checked in the parent before spawning.
    requires: ClassVar[str]
    # Set in the environment of the worker process that runs the system.
    environment: ClassVar[dict[str, str]] = {}

    put: Callable[[bytes, bytes], object]
    get: Callable[[bytes], bytes | None]

    def __init__(self, memtable_bytes: int | None = None, live_user_bytes: int = 0):
        # None keeps the library's default; the report says which was used.
        self.memtable_override = memtable_bytes
        self.live_user_bytes = live_user_bytes

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            importlib.import_module(cls.requires)
        except ImportError as exc:
            return f"{cls.requires} does not import: {exc}"
        return None

    @abstractmethod
    def library_version(self) -> str: ...

    @abstractmethod
    def settings(self) -> str:
        """The settings in effect, in a sentence or two for the report. REQUIRES: open."""

    @abstractmethod
    def open(self, path: Path) -> None: ...

    @abstractmethod
    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        """Seek to the first key >= start and return up to `count` entries in key order."""

    @abstractmethod
    def flush_and_settle(self) -> None:
        """Make the store's state the one reads should measure (flushed, compacted)."""

    @abstractmethod
    def close(self) -> None: ...

    def memtable_bytes(self) -> int | None:
        """Write-buffer size in effect, or None for systems without one."""
        return None

    def engine_stats(self) -> dict[str, Any]:
        """The system's own view of itself (amplification etc.), JSON-serialisable."""
        return {}
