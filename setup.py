"""Build ringkv: pyproject.toml holds the metadata; this file adds the compiled hot path.

The modules named in src/ringkv/hotpath.py are compiled with Cython into extension modules
beside their sources. The build never fails for want of them: without Cython, without a C
compiler, or with RINGKV_COMPILE=0, ringkv installs as pure Python (each extension is
`optional`, so a compiler error is a warning and that module stays Python).
docs/compiled.md explains the choice and the figures.
"""

import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def load_hotpath():
    """src/ringkv/hotpath.py, loaded from its file (it imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("_ringkv_hotpath", ROOT / "src" / "ringkv" / "hotpath.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extensions() -> list:
    if os.environ.get("RINGKV_COMPILE", "1").strip().lower() in ("0", "false", "no", "off"):
        print("ringkv: RINGKV_COMPILE=0: installing the pure-Python hot path", file=sys.stderr)
        return []
    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None:
        print(f"ringkv: no C compiler ({compiler}): installing the pure-Python hot path", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("ringkv: Cython is not installed: installing the pure-Python hot path", file=sys.stderr)
        return []
    hotpath = load_hotpath()
    sources = {name: os.path.join("src", *name.split(".")) + ".py" for name in hotpath.MODULES}
    modules = [Extension(name, [source], optional=True) for name, source in sources.items()]
    # What each extension is built from, so that an import can tell a stale one (hotpath.py).
    record_path = ROOT / "src" / "ringkv" / hotpath.BUILD_RECORD
    try:
        built_from = json.loads(record_path.read_text())
    except (OSError, ValueError):
        built_from = {}
    record = {name: hotpath.source_digest(str(ROOT / source)) for name, source in sources.items()}
    for name, source in sources.items():
        if built_from.get(name) != record[name]:
            # Cython and build_ext go by file times; a changed source must not be skipped
            # because its time says otherwise (copied with its old time, say).
            Path(ROOT / source).with_suffix(".c").unlink(missing_ok=True)
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    # An extension of a module taken off the list would shadow its source: remove it.
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for built in (ROOT / "src" / "ringkv").rglob("*"):
        if built.name.endswith(suffixes):
            stem = built.name[: -len(next(x for x in suffixes if built.name.endswith(x)))]
            name = ".".join((*built.relative_to(ROOT / "src").parent.parts, stem))
            if name not in sources:
                built.unlink()
                built.with_name(stem + ".c").unlink(missing_ok=True)
    return cythonize(
        modules,
        compiler_directives={
            "language_level": 3,
            # Python's semantics, not C's: an annotation stays a hint (a `float` parameter does
            # not become a C double, a `bytes` one does not refuse a subclass).
            "annotation_typing": False,
        },
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )


# `parallel`: one compiler per core (all 24 modules: 3.6 CPU-minutes, about 2 minutes on 2 cores).
setup(ext_modules=extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
