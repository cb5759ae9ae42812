"""Compaction strategies and column families: the settings types, and how a key finds its family.

An engine keeps one LSM tree per *column family* under one write-ahead log (docs/compaction.md,
"Column families"). Each family has its own compaction strategy:

- `Leveled()`: LevelDB's scheme, the default (the leveled settings are `Options`' own
  `level*` fields); version.py picks its compactions.
- `Tiered(...)`: size-tiered ("universal") compaction: sorted runs of similar size are merged
  together; a cap on runs bounds read amplification (tiered.py).
- `TimeWindow(...)`: tables grouped by when their records were written; a window whose every
  record has expired is deleted as a file, unread (time_window.py).

A family's strategy may change on a running engine (`Engine.set_strategy`); it governs the
compactions picked from then on, and the tables they write.

Which family a key belongs to is the router's answer (`Options.family_router`): a picklable
callable `key -> family name` (it runs in flush workers too) with a `description`, a msgpack-able
value that changes whenever the routing does. The manifest records the description the
tables were placed under; an engine opened with another one re-routes its tables once, at open
(`Engine._reroute`), so a family only ever holds keys its router sends there.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from ringkv.errors import ConfigError

DEFAULT_FAMILY = "default"
MAX_FAMILIES = 128
STRATEGY_NAMES = ("leveled", "tiered", "time_window")


def _integer(field: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Leveled:
    """LevelDB's leveled compaction, configured by Options' `level*` fields."""

    name: ClassVar[str] = "leveled"

    def validate(self, where: str) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {}


@dataclasses.dataclass(frozen=True)
class Tiered:
    """Size-tiered ("universal") compaction (tiered.py has the rules).

    A sorted run is a flushed table, or the output of a merge. Runs are kept in write order;
    a merge takes consecutive runs while the next run is no more than `size_ratio_percent` %
    larger than the average of those taken, and runs when that gathers at least
    `min_merge_runs` of them (at most `max_merge_runs`). A lookup probes at most `max_runs`
    runs: past half of that the newest runs are merged whatever their sizes, and writers stall
    at the cap. When the runs above the oldest hold more than
    `max_space_amplification_percent` % of its bytes, everything is merged into one run.
    """

    name: ClassVar[str] = "tiered"
    size_ratio_percent: int = 100
    min_merge_runs: int = 4
    max_merge_runs: int = 16
    max_runs: int = 16
    max_space_amplification_percent: int = 200

    def validate(self, where: str) -> None:
        _integer(f"{where}.size_ratio_percent", self.size_ratio_percent, 0)
        _integer(f"{where}.min_merge_runs", self.min_merge_runs, 2)
        _integer(f"{where}.max_merge_runs", self.max_merge_runs, self.min_merge_runs)
        _integer(f"{where}.max_runs", self.max_runs, max(4, self.min_merge_runs + 1))
        _integer(f"{where}.max_space_amplification_percent", self.max_space_amplification_percent, 1)

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TtlRule = Literal["safe", "aggressive"]


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """Time-window compaction (time_window.py has the rules).

    Tables are grouped by the window (`window_ms` wide) in which their records reached the
    engine. The newest window merges its flushed tables once it holds `min_merge_tables`; an
    ended window is merged into one run. A table whose every record has expired is deleted
    as a file without being read, by the TTL rule:

    - "safe": only when no older table that is kept may hold the same keys (so an expired
      record never uncovers an older version of its key);
    - "aggressive": as soon as every record in it has expired. Right only when a key is never
      written in two windows (time series keyed by time); otherwise an older version of an
      overwritten key comes back. Cassandra calls this unsafe_aggressive_sstable_expiration.

    Needs `Options.expiry_of` (what the engine cannot see in an opaque value).
    """

    name: ClassVar[str] = "time_window"
    window_ms: int = 3_600_000
    min_merge_tables: int = 4
    ttl_rule: TtlRule = "safe"

    def validate(self, where: str) -> None:
        _integer(f"{where}.window_ms", self.window_ms, 1000)
        _integer(f"{where}.min_merge_tables", self.min_merge_tables, 2)
        if self.ttl_rule not in ("safe", "aggressive"):
            raise ConfigError(f"{where}.ttl_rule", f"must be 'safe' or 'aggressive', got {self.ttl_rule!r}")

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Strategy = Leveled | Tiered | TimeWindow


def describe(strategy: Strategy) -> dict[str, Any]:
    """The strategy as stats() and admin calls show it: {"compaction": name, **settings}."""
    return {"compaction": strategy.name, **strategy.settings()}


def strategy_from(name: str, settings: dict[str, Any] | None = None, where: str = "compaction") -> Strategy:
    """A strategy from its name and settings (as a configuration gives them); ConfigError
    naming the bad field."""
    settings = dict(settings or {})
    kinds: dict[str, type] = {"leveled": Leveled, "tiered": Tiered, "time_window": TimeWindow}
    kind = kinds.get(name)
    if kind is None:
        raise ConfigError(where, f"must be one of {', '.join(STRATEGY_NAMES)}, got {name!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(settings) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigError(where, f"{name} has no setting {unknown[0]!r} (settings: {allowed})")
    strategy = kind(**settings)
    strategy.validate(where)
    return strategy


class PrefixRouter:
    """Routes a key to the family of the longest of `prefixes` it starts with, else "default".

    A router for embedded uses and tests; the node routes by the namespace inside its storage
    keys (node/namespaces.py, `NamespaceRouter`).
    """

    def __init__(self, prefixes: dict[bytes, str]):
        # Longest first: the first match is the longest.
        self._pairs = sorted(prefixes.items(), key=lambda p: -len(p[0]))
        self.description = ["prefix", sorted([p, f] for p, f in prefixes.items())]

    def __call__(self, key: bytes) -> str:
        for prefix, family in self._pairs:
            if key.startswith(prefix):
                return family
        return DEFAULT_FAMILY

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefixRouter) and other.description == self.description

    def __hash__(self) -> int:
        return hash(repr(self.description))
