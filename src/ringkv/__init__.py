"""ringkv: a Dynamo-style distributed key-value store with its own LSM storage engine."""

from ringkv import hotpath as _hotpath

__version__ = "0.1.0"

# Before any submodule is imported: decides whether the compiled hot path or its Python
# source runs (RINGKV_PURE=1, stale builds; ringkv/hotpath.py).
_hotpath.install()
