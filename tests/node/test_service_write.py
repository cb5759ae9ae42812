"""`KeyValueService.write` and version numbers: the versioned write the HTTP API's PUT, DELETE
and numeric compare-and-set stand on, run on a node of one (the cluster service runs the same
command; tests/api/test_http_spec_conformance.py drives it through three nodes)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.errors import CommandError, InvalidContextError
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica
from ringkv.service.values import version_number
from ringkv.storage import Engine, Options
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import encode_context


def _run(tmp_path, body, policy="siblings"):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            await body(LocalService(LocalStore(Replica(engine, b"a1"), Clock(), namespaces=Namespaces(1, policy))))
        finally:
            engine.close()

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["siblings", "lww"])
def test_each_write_counts_one_more_and_a_delete_is_a_write(tmp_path, policy):
    async def body(kv):
        first = await kv.write(b"k", b"v1")
        assert first.applied and first.created and version_number(first.version) == 1
        assert first.timestamp == (await kv.get(b"k")).timestamp
        second = await kv.write(b"k", b"v2")
        assert second.applied and not second.created and version_number(second.version) == 2
        assert version_number((await kv.get(b"k")).context) == 2
        gone = await kv.write(b"k", None)
        assert gone.applied and not gone.created and version_number(gone.version) == 3
        assert await kv.get(b"k") is None
        # Deleting what is not there writes nothing and tells the version as it stands.
        again = await kv.write(b"k", None)
        assert not again.applied and version_number(again.version) == 3
        missing = await kv.write(b"never", None)
        assert (missing.applied, missing.version, missing.timestamp) == (False, None, 0)

    _run(tmp_path, body, policy)


def test_a_write_expecting_a_number_or_a_context_applies_only_at_that_version(tmp_path):
    async def body(kv):
        await kv.write(b"k", b"v1")
        refused = await kv.write(b"k", b"x", expected=5)
        assert not refused.applied and version_number(refused.version) == 1
        assert await kv.get_value(b"k") == b"v1"
        done = await kv.write(b"k", b"v2", expected=1)
        assert done.applied and version_number(done.version) == 2
        # The context the write answered is the exact version: a stale one is refused.
        assert (await kv.write(b"k", b"v3", expected=refused.version)).applied is False
        assert (await kv.write(b"k", b"v3", expected=done.version)).applied is True
        # None and 0 both mean "no live value".
        assert (await kv.write(b"k", b"x", expected=None)).applied is False
        assert (await kv.write(b"new", b"x", expected=0)).applied is True
        assert (await kv.write(b"new2", b"x", expected=None)).applied is True
        # A deleted key has no live value, whatever its tombstone's number.
        tomb = await kv.write(b"k", None, expected=3)
        assert tomb.applied and await kv.get(b"k") is None
        assert (await kv.write(b"k", b"x", expected=version_number(tomb.version))).applied is False
        assert (await kv.write(b"k", b"back", expected=None)).applied is True

    _run(tmp_path, body)


def test_bad_expectations_are_refused_before_anything_is_written(tmp_path):
    async def body(kv):
        with pytest.raises(CommandError, match="version numbers are >= 0"):
            await kv.write(b"k", b"v", expected=-1)
        with pytest.raises(CommandError, match="expected version is empty"):
            await kv.write(b"k", b"v", expected=b"")
        with pytest.raises(InvalidContextError, match="not valid"):
            await kv.write(b"k", b"v", expected=b"\x01garbage")
        with pytest.raises(CommandError, match="max_value_bytes"):
            await kv.write(b"k", b"x" * (kv.limits.max_value_bytes + 1))
        assert await kv.get(b"k") is None

    _run(tmp_path, body)


def test_a_versioned_increment_answers_the_version_it_made(tmp_path):
    async def body(kv):
        assert await kv.incr_by(b"n", 1000) == 1000
        value, version = await kv.incr_by_versioned(b"n", 1)
        assert value == 1001 and version_number(version) == 2
        assert (await kv.get(b"n")).context == version

    _run(tmp_path, body)


# --------------------------------------------------------------------------- the number itself

_ACTORS = st.sampled_from([b"a", b"b", b"c"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_ACTORS, st.booleans(), st.integers(0, 2)), min_size=1, max_size=30))
def test_a_version_number_grows_with_every_write_that_saw_it_and_with_every_merge(steps):
    # Three replicas take writes (with the context of what they hold, or blind) and sync with
    # each other in any order: a write's number is above the version it replaced, and a merge
    # is at least each side.
    replicas: dict[int, rec.Record | None] = {0: None, 1: None, 2: None}
    for ts, (actor, sync, other) in enumerate(steps, start=1):
        holder = {b"a": 0, b"b": 1, b"c": 2}[actor]
        stored = replicas[holder]
        before = 0 if stored is None else version_number(encode_context(stored.clock))
        new = rec.apply_write(stored, actor=actor, context=None if stored is None else stored.clock,
                              value=b"v%d" % ts, timestamp=ts)
        assert version_number(encode_context(new.clock)) == before + 1
        replicas[holder] = new
        if sync and replicas[other] is not None:
            a, b = replicas[holder], replicas[other]
            merged = rec.merge(a, b)
            n = version_number(encode_context(merged.clock))
            assert n >= max(version_number(encode_context(a.clock)), version_number(encode_context(b.clock)))
            replicas[holder] = replicas[other] = merged
