"""The compiled hot path: which modules are built into C extensions, and which copy runs.

The modules in `MODULES` are ordinary Python. At install time setup.py compiles each with
Cython into an extension module beside its source (`resp.py` -> `resp.cpython-311-....so`);
Python's import system prefers the extension. The `.py` stays the reference and the fallback:

- `RINGKV_PURE=1` in the environment runs the pure-Python modules even where extensions are
  built (the test suite runs its pure pass this way; a node started so says it in INFO);
  `RINGKV_PURE=storage.engine,storage.wal` runs only those as Python (to measure one module);
- an extension built from other source than the .py now beside it (edited or checked out
  since; setup.py records each source's SHA-256 in hotpath_build.json) is passed over for the
  source, so a stale build never runs code that is no longer in the tree;
- no C compiler, no Cython, or `RINGKV_COMPILE=0` at install time: nothing is built and every
  module runs as Python.

The compile keeps Python's semantics: annotations are not turned into C types
(`annotation_typing=False`), so a compiled module accepts exactly what its source accepts.
Where a module has a `.pxd` beside it, Cython reads it: storage/bloom.pxd gives the probe
loop C integers (whose results are the same in C as in Python); the others declare the hot
classes as extension types whose fields, all Python objects, are C struct members.
What it cannot do is be traced line by line (`sys.settrace` sees no frames inside it).
docs/compiled.md has the measurements and how to build, check and bypass it.

This module imports only the standard library: setup.py loads it to read `MODULES`.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys

# The modules on the path of a GET or SET through RESP, the coordinator, the RPC layer and
# the engine: what `python -m ringkv.bench.instructions` counts per command, and the record
# and clock codecs, framing, memtable and block search the performance issue names. Each was
# measured compiled against Python (docs/compiled.md); storage/wal.py is left out: compiled,
# it made every put about 8% slower (its work is attribute access, which CPython 3.11's
# specializing interpreter does faster than generic C code).
MODULES: tuple[str, ...] = (
    "ringkv.api.resp",
    "ringkv.api.resp_args",
    "ringkv.api.resp_commands",
    "ringkv.api.resp_server",
    "ringkv.cluster.hotkeys",
    "ringkv.cluster.plans",
    "ringkv.net.framing",
    "ringkv.net.rpc",
    "ringkv.node.cluster_service",
    "ringkv.node.local_service",
    "ringkv.node.local_store",
    "ringkv.node.read_path",
    "ringkv.node.replica",
    "ringkv.node.replica_calls",
    "ringkv.node.write_path",
    "ringkv.storage.bloom",
    "ringkv.storage.cache",
    "ringkv.storage.engine",
    "ringkv.storage.memtable",
    "ringkv.storage.sstable",
    "ringkv.storage.version",
    "ringkv.versioning.dvv",
    "ringkv.versioning.hlc",
    "ringkv.versioning.record",
)

PURE_ENV = "RINGKV_PURE"
_MODULE_SET = frozenset(MODULES)


def pure_requested() -> bool:
    """True when the environment asks for the pure-Python modules (`RINGKV_PURE=1`)."""
    return os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pure_modules() -> frozenset[str]:
    """The modules to run as Python: all with `RINGKV_PURE=1`, or those a comma-separated
    `RINGKV_PURE=storage.engine,storage.wal` names (for measuring one module's compile)."""
    value = os.environ.get(PURE_ENV, "").strip()
    if pure_requested():
        return _MODULE_SET
    if not value or value.lower() in ("0", "false", "no", "off"):
        return frozenset()
    wanted = {("ringkv." + n.strip()).replace("ringkv.ringkv.", "ringkv.") for n in value.split(",") if n.strip()}
    unknown = wanted - _MODULE_SET
    if unknown:
        raise ValueError(f"{PURE_ENV} names modules that are not compiled: {', '.join(sorted(unknown))} "
                         f"(the compiled ones are in ringkv/hotpath.py's MODULES)")
    return frozenset(wanted)


def _source_and_extension(fullname: str, search_path) -> tuple[str | None, str | None]:
    """The module's .py and its built extension (either may be None), found on `search_path`."""
    leaf = fullname.rpartition(".")[2]
    for directory in search_path or ():
        source = os.path.join(directory, leaf + ".py")
        if not os.path.isfile(source):
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            extension = os.path.join(directory, leaf + suffix)
            if os.path.isfile(extension):
                return source, extension
        return source, None
    return None, None


BUILD_RECORD = "hotpath_build.json"
_built_from: dict[str, str] | None = None


def source_digest(path: str) -> str:
    """SHA-256 of a module's source and, where there is one, of the .pxd beside it (the C
    types Cython compiles it with)."""
    digest = hashlib.sha256()
    for part in (path, path[: -len(".py")] + ".pxd"):
        try:
            with open(part, "rb") as f:
                digest.update(f.read())
        except FileNotFoundError:
            continue  # no .pxd: the module is compiled without C types
    return digest.hexdigest()


def _record() -> dict[str, str]:
    # Written by setup.py when it compiles: each module's source digest at that moment.
    global _built_from
    if _built_from is None:
        try:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), BUILD_RECORD)) as f:
                _built_from = dict(json.load(f))
        except (OSError, ValueError, TypeError):
            _built_from = {}
    return _built_from


def _stale(name: str, source: str) -> bool:
    # The source is not what the extension was built from (edited or checked out since): the
    # digest, not the files' times, decides, since an install writes files in no set order.
    return _record().get(name) != source_digest(source)


class _SourceFirstFinder:
    """Loads a hot-path module from its .py when pure mode is asked for or its build is stale;
    otherwise leaves the module to the normal finders (which take the extension)."""

    def __init__(self, force_pure: frozenset[str]):
        self.force_pure = force_pure

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("ringkv."):
            return None
        source, extension = _source_and_extension(fullname, path)
        if source is None or extension is None:
            return None  # nothing built: the normal finders load the source anyway
        if fullname not in _MODULE_SET or fullname in self.force_pure or _stale(fullname, source):
            # (An extension of a module no longer in MODULES is a leftover of an older build.)
            return importlib.util.spec_from_file_location(fullname, source)
        return None


def install() -> None:
    """Put the finder first on `sys.meta_path` (once). ringkv/__init__.py calls it, so it runs
    before any hot-path module is imported."""
    if not any(isinstance(f, _SourceFirstFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirstFinder(pure_modules()))


def needs_build() -> list[str]:
    """The hot-path modules whose extension is missing or built from other source, found beside
    this file (scripts/bootstrap rebuilds when the list is not empty)."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    out = []
    for name in MODULES:
        parts = name.split(".")[1:]
        source, extension = _source_and_extension(name, [os.path.join(package_dir, *parts[:-1])])
        if source is not None and (extension is None or _stale(name, source)):
            out.append(name)
    return out


def module_state(name: str) -> str:
    """How `name` runs in this process: "compiled", "pure", or "not imported"."""
    module = sys.modules.get(name)
    if module is None:
        return "not imported"
    file = getattr(module, "__file__", "") or ""
    return "pure" if file.endswith(".py") else "compiled"


def status() -> dict[str, str]:
    """For INFO and the tests: how the hot path runs, and why where it is not compiled.

    `mode` is "compiled" (every module built and loaded as an extension), "pure" (none), or
    "mixed"; `compiled` counts the modules loaded as extensions out of those imported;
    `reason` says why modules run as Python ("RINGKV_PURE set", "stale build: bloom engine",
    "not built: ..."; no '=' or ',' so INFO clients read it as one string).
    """
    imported = [m for m in MODULES if m in sys.modules]
    compiled = [m for m in imported if module_state(m) == "compiled"]
    pure = [m for m in imported if module_state(m) == "pure"]
    reasons: list[str] = []
    if pure:
        if pure_requested():
            reasons.append(f"{PURE_ENV} set")
        else:
            chosen = [name for name in pure if name in pure_modules()]
            if chosen:
                reasons.append(f"{PURE_ENV} names " + " ".join(n.rpartition(".")[2] for n in chosen))
            stale, unbuilt = [], []
            for name in (name for name in pure if name not in chosen):
                _, extension = _source_and_extension(name, sys.modules[name.rpartition(".")[0]].__path__)
                (unbuilt if extension is None else stale).append(name.rpartition(".")[2])
            if stale:
                reasons.append("stale build: " + " ".join(stale))
            if unbuilt:
                reasons.append("not built: " + " ".join(unbuilt))
    mode = "compiled" if compiled and not pure else "pure" if not compiled else "mixed"
    return {
        "mode": mode,
        "compiled": f"{len(compiled)}/{len(imported)}",
        "reason": "; ".join(reasons),
    }
