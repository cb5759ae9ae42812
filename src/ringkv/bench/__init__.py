"""Benchmarks of ringkv, each measured beside an established system in the same run.

Benchmarks are not timed tests: the machines they run on are small and noisy, so every figure is
quoted as a median of repeats and as a ratio to an anchor measured minutes apart on the same
machine. `python -m ringkv.bench.engine` compares the storage engine with RocksDB, LevelDB, LMDB
and sqlite3 and writes docs/benchmarks/engine.md.
"""

import importlib.util

# The module each benchmark dependency installs, by its package name (pyproject.toml's extras).
_MODULES = {"hdrhistogram": "hdrh", "matplotlib": "matplotlib", "aiohttp": "aiohttp"}


class BenchDependencyError(RuntimeError):
    """A benchmark needs a package that this installation does not have."""


def require(*packages: str) -> None:
    """Raise `BenchDependencyError` naming every missing package and the command that installs
    them (the runtime set, which `scripts/run` installs, has none of them)."""
    missing = [p for p in packages if importlib.util.find_spec(_MODULES.get(p, p)) is None]
    if missing:
        raise BenchDependencyError(
            f"the benchmarks need {', '.join(missing)}, which this installation lacks: "
            "run ./scripts/bootstrap bench (or pip install 'ringkv[bench]')"
        )
