"""ringkv's storage engine: a crash-safe LSM key-value store, usable on its own.

    from ringkv.storage import Engine, Options, WriteBatch
    db = Engine.open("data", Options(sync="always"))

See docs/storage.md for the design and docs/formats/ for the on-disk formats.
"""

from ringkv.errors import CorruptionError, LimitError
from ringkv.storage.engine import Engine, ReadOnlyError, ScanIterator, WriteBatch, WriteStallError
from ringkv.storage.fs import FsyncFailedError
from ringkv.storage.options import Options

__all__ = [
    "CorruptionError",
    "Engine",
    "FsyncFailedError",
    "LimitError",
    "Options",
    "ReadOnlyError",
    "ScanIterator",
    "WriteBatch",
    "WriteStallError",
]
