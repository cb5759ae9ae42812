"""External programs the tests drive (promtool, hadolint, systemd-analyze, chromium).

Run by hand, a test whose program is missing is skipped. Run by `scripts/test`, which installs
them all first (scripts/system-deps) and sets RINGKV_TEST_TOOLS_REQUIRED=1, a missing program
fails the test instead: a CI run cannot pass by quietly checking less."""

from __future__ import annotations

import os

import pytest


def require(path: str | None, what: str, *, module: bool = False) -> str:
    """`path` if the program was found; else skip, or fail when scripts/test runs the suite."""
    if path:
        return path
    if os.environ.get("RINGKV_TEST_TOOLS_REQUIRED") or os.environ.get("CI"):
        pytest.fail(f"{what} is missing, though scripts/system-deps installs it", pytrace=False)
    pytest.skip(f"{what} is not installed (scripts/system-deps installs it)", allow_module_level=module)
    raise AssertionError("unreachable")
