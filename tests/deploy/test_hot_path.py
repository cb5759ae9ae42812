"""The compiled hot path (src/ringkv/hotpath.py, setup.py): the install builds it, a node runs
it and says so, RINGKV_PURE=1 runs the Python source instead, and an extension built from other
source than the .py beside it is never run.

scripts/bootstrap compiles the modules; a machine installed with RINGKV_COMPILE=0 skips the
tests that need the extensions. The whole suite runs compiled; scripts/test then runs the
unit tests of the compiled modules again with RINGKV_PURE=1 (the fallback).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from ringkv import hotpath
from ringkv.testing.launcher import NodeProcess

SRC = Path(hotpath.__file__).resolve().parent.parent
# Installed without the compile on purpose, or on a machine without a C compiler (scripts/
# bootstrap then installs the Python source alone, and says so).
COMPILE_SKIPPED = os.environ.get("RINGKV_COMPILE", "1") == "0" or shutil.which("cc") is None
needs_build = pytest.mark.skipif(COMPILE_SKIPPED, reason="installed with RINGKV_COMPILE=0 or without a C compiler")

# Imports every hot-path module and prints where each came from, then the status.
PROBE = (
    "import importlib, json, ringkv.hotpath as h\n"
    "files = {m: importlib.import_module(m).__file__ for m in h.MODULES}\n"
    "print(json.dumps({'files': files, 'status': h.status()}))\n"
)


def _probe(env_extra: dict[str, str], pythonpath: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != hotpath.PURE_ENV}
    env.update(env_extra)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    return json.loads(out.stdout)


@needs_build
def test_the_install_built_every_hot_path_module_and_they_load_compiled():
    assert hotpath.needs_build() == [], "scripts/bootstrap should have compiled these"
    seen = _probe({})
    not_compiled = {m: f for m, f in seen["files"].items() if f.endswith(".py")}
    assert not_compiled == {}
    assert seen["status"] == {"mode": "compiled", "compiled": f"{len(hotpath.MODULES)}/{len(hotpath.MODULES)}",
                              "reason": ""}


def test_ringkv_pure_runs_the_python_source_of_every_module():
    seen = _probe({hotpath.PURE_ENV: "1"})
    assert all(f.endswith(".py") for f in seen["files"].values()), seen["files"]
    assert seen["status"]["mode"] == "pure"
    assert seen["status"]["compiled"] == f"0/{len(hotpath.MODULES)}"
    if not COMPILE_SKIPPED:
        assert seen["status"]["reason"] == "RINGKV_PURE set"


@needs_build
def test_ringkv_pure_may_name_the_modules_to_run_as_python():
    seen = _probe({hotpath.PURE_ENV: "storage.engine,ringkv.storage.bloom"})
    as_python = sorted(m for m, f in seen["files"].items() if f.endswith(".py"))
    assert as_python == ["ringkv.storage.bloom", "ringkv.storage.engine"]
    assert seen["status"]["mode"] == "mixed"
    assert seen["status"]["reason"] == "RINGKV_PURE names bloom engine"
    wrong = subprocess.run([sys.executable, "-c", "import ringkv"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, hotpath.PURE_ENV: "storage.wal"})
    assert wrong.returncode != 0
    assert "RINGKV_PURE names modules that are not compiled: ringkv.storage.wal" in wrong.stderr


@needs_build
def test_an_extension_built_from_other_source_is_passed_over_for_the_edited_source(tmp_path):
    # A copy of the built package, so the real tree's build stays fresh.
    copy = tmp_path / "src"
    shutil.copytree(SRC / "ringkv", copy / "ringkv", ignore=shutil.ignore_patterns("*.c", "__pycache__"))
    edited = copy / "ringkv" / "storage" / "bloom.py"
    text = edited.read_text()
    edited.write_text(text + "\nEDITED_AFTER_THE_BUILD = True\n")
    # Only the content counts: a source touched but unchanged still runs compiled.
    touched = copy / "ringkv" / "storage" / "engine.py"
    touched.write_bytes(touched.read_bytes())

    seen = _probe({}, pythonpath=copy)
    assert seen["files"]["ringkv.storage.bloom"] == str(edited)
    assert seen["files"]["ringkv.storage.engine"].endswith(".so")
    assert seen["status"]["mode"] == "mixed"
    assert seen["status"]["reason"] == "stale build: bloom"
    check = subprocess.run(
        [sys.executable, "-c", "import ringkv.storage.bloom as b, ringkv.hotpath as h; "
                               "print(b.EDITED_AFTER_THE_BUILD, h.needs_build())"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PYTHONPATH": str(copy)},
    )
    assert check.stdout.strip() == "True ['ringkv.storage.bloom']"


def _info_server(port: int) -> dict:
    return redis.Redis(port=port, socket_timeout=10).info("server")


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_node_serves_and_says_in_info_which_hot_path_it_runs(tmp_path, pure):
    if not pure and COMPILE_SKIPPED:
        pytest.skip("installed with RINGKV_COMPILE=0 or without a C compiler")
    node = NodeProcess(tmp_path / "n1", env={hotpath.PURE_ENV: "1" if pure else "0"}).start()
    try:
        r = redis.Redis(port=node.resp_port, socket_timeout=10)
        assert r.set("k", "v") and r.get("k") == b"v"
        assert r.incr("counter") == 1 and r.incrby("counter", 41) == 42
        info = _info_server(node.resp_port)
        total = len(hotpath.MODULES)
        if pure:
            assert info["hot_path"] == "pure"
            assert info["hot_path_reason"] == "RINGKV_PURE set"
        else:
            assert info["hot_path"] == "compiled"
            assert "hot_path_reason" not in info
            assert info["hot_path_modules_compiled"] == f"{total}/{total}"
    finally:
        node.stop()


def test_an_installed_package_carries_everything_its_build_record_digests(tmp_path):
    # A non-editable install (the Docker image's `pip install .`) copies the package into
    # site-packages; a module whose .pxd stayed behind would digest differently there than
    # when it was compiled, and run as Python for a "stale build".
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    shutil.copytree(SRC / "ringkv", tree / "src" / "ringkv",
                    ignore=shutil.ignore_patterns("*.c", "*.so", "__pycache__", "hotpath_build.json"))
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(SRC.parent / name, tree / name)
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path / "installed")], cwd=tree,
                   check=True, capture_output=True, timeout=120, env={**os.environ, "RINGKV_COMPILE": "0"})
    with_declarations = 0
    for name in hotpath.MODULES:
        relative = Path(*name.split(".")).with_suffix(".py")
        with_declarations += (SRC / relative).with_suffix(".pxd").exists()
        assert hotpath.source_digest(str(tmp_path / "installed" / relative)) == \
            hotpath.source_digest(str(SRC / relative)), name
    assert with_declarations >= 10, "no module has a .pxd: the test proves nothing"


def _declared_classes(pxd: Path) -> dict[str, tuple[set[str], str | None]]:
    """class -> (fields declared in the .pxd, its base class there or None); `__dict__` counts
    as a field (a class that keeps one takes any attribute)."""
    classes: dict[str, tuple[set[str], str | None]] = {}
    current = None
    for line in pxd.read_text().splitlines():
        if match := re.match(r"cdef class (\w+)(?:\((\w+)\))?:", line):
            current = match.group(1)
            classes[current] = (set(), match.group(2))
        elif current and (match := re.match(r"\s+cdef (?:public )?\w+ (.+)", line)):
            # `cdef public object a, b` or `cdef unsigned long long n`: each item's last word.
            classes[current][0].update(item.split()[-1] for item in match.group(1).split(","))
    return classes


def test_every_attribute_a_declared_class_sets_is_declared_in_its_pxd():
    # A class declared in a .pxd has no __dict__ unless it declares one: an attribute its .py
    # sets but the .pxd does not name would work as Python and fail compiled (AttributeError).
    checked = 0
    for name in hotpath.MODULES:
        source = SRC / Path(*name.split(".")).with_suffix(".py")
        pxd = source.with_suffix(".pxd")
        if not pxd.exists():
            continue
        declared = _declared_classes(pxd)
        tree = ast.parse(source.read_text())
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or node.name not in declared:
                continue
            fields, base = declared[node.name]
            while base is not None:
                fields = fields | declared[base][0]
                base = declared[base][1]
            if "__dict__" in fields:
                continue
            assigned = {target.attr for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                        for target in (n.targets if isinstance(n, ast.Assign) else [n.target])
                        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id == "self"}
            assert assigned <= fields, f"{name}.{node.name} sets {sorted(assigned - fields)}, not in {pxd.name}"
            checked += 1
    assert checked >= 15, "fewer declared classes than the hot path has: the test proves nothing"
