"""Benchmarks of ringkv, each measured beside an established system in the same run.

Benchmarks are not timed tests: the machines they run on are small and noisy, so every figure is
quoted as a median of repeats and as a ratio to an anchor measured minutes apart on the same
machine. `python -m ringkv.bench.engine` compares the storage engine with RocksDB, LevelDB, LMDB
and sqlite3 and writes docs/benchmarks/engine.md.
"""
