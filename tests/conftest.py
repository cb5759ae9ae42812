"""Shared test settings: the short mode CI runs, and hypothesis profiles."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import redis
from hypothesis import HealthCheck, settings

from ringkv.testing.launcher import free_port
from ringkv.testing.wait import wait_until

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

# CI machines have 2 cores: keep property tests bounded unless the full run was asked for.
settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "full", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("full" if FULL else "ci")


# Test modules that start a cluster of node processes or time real faults. When the suite runs
# on several pytest-xdist workers (scripts/test does), these share one worker and run one at a
# time, in order, so no two clusters compete for the CPU; every other module (single nodes,
# pure code) goes whole to either worker, its module fixtures set up once, beside them.
# (xdist's own --dist loadgroup cannot do this under pytest 9: it renames items through
# `_nodeid`, which pytest 9 no longer reads, so its groups silently fall apart. The scheduler
# below groups by module path instead.)
_SERIAL_DIRS = ("processes", "chaos")
_SERIAL_WORDS = ("LocalCluster", "\"cluster\", \"up\"")  # a cluster by hand or by `cluster up`
_SERIAL_MODULES = ("test_floods.py", "test_ycsb.py", "test_consistency_bench.py")  # clocks, clusters
SERIAL_SCOPE = "serial"


def _is_serial(path) -> bool:
    if path.parent.name in _SERIAL_DIRS or path.name in _SERIAL_MODULES:
        return True
    try:
        text = path.read_text()
    except OSError:
        return False
    return any(word in text for word in _SERIAL_WORDS)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath
    serial: dict[str, bool] = {}

    class ModuleOrSerialScheduling(LoadScopeScheduling):
        """One unit of work per test module, and one for every serial module together."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module not in serial:
                serial[module] = _is_serial(root / module)
            return SERIAL_SCOPE if serial[module] else module

    return ModuleOrSerialScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    skip = pytest.mark.skip(reason="slow test: run with RINGKV_TEST_FULL=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def redis_server():
    """The port of a real redis-server (no persistence), for differential tests."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited with {proc.returncode}")
        return redis.Redis(port=port).ping()

    try:
        wait_until(answers, 30, "redis-server to answer PING", ignore=(redis.ConnectionError,))
    except AssertionError:
        proc.kill()
        raise
    yield port
    proc.terminate()
    proc.wait(10)
