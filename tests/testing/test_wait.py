"""wait_until: returns what the condition returned as soon as it holds, treats the listed
exceptions as "not yet", and a wait that gives up says what did not happen."""

from __future__ import annotations

import asyncio
import time

import pytest

from ringkv.testing.wait import wait_until, wait_until_async


def test_returns_the_first_truthy_result():
    calls = iter([0, None, "", "ready", "later"])
    assert wait_until(lambda: next(calls), 10, "a truthy result", interval_s=0.001) == "ready"


def test_a_condition_that_never_holds_names_what_and_the_last_result():
    started = time.monotonic()
    with pytest.raises(AssertionError,
                       match=r"timed out after 0\.2 s waiting for: n4 is normal; last: ''"):
        wait_until(lambda: "", 0.2, "n4 is normal")
    assert time.monotonic() - started >= 0.2


def test_the_description_may_be_computed_when_the_wait_fails():
    seen = []

    def condition() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(AssertionError, match=r"waiting for: polled \d+ times; last: False"):
        wait_until(condition, 0.1, lambda: f"polled {len(seen)} times", interval_s=0.01)


def test_ignored_exceptions_are_not_yet_and_others_propagate():
    attempts = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def connect() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_until(connect, 10, "a connection", interval_s=0.001, ignore=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError, match=r"last: ConnectionError\('refused'\)"):
        wait_until(_refused, 0.05, "a connection", ignore=(ConnectionError,))
    with pytest.raises(KeyError):
        wait_until(lambda: {}["missing"], 10, "a key", ignore=(ConnectionError,))


def _refused() -> str:
    raise ConnectionError("refused")


def test_the_condition_is_checked_once_more_after_the_deadline():
    # A condition slower than the whole timeout still gets its answer counted.
    def slow_then_true() -> bool:
        time.sleep(0.05)
        return True

    assert wait_until(slow_then_true, 0.01, "a slow condition") is True


def test_the_async_wait_takes_plain_and_awaitable_conditions():
    async def scenario() -> None:
        flag = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, flag.set)
        assert await wait_until_async(flag.is_set, 10, "the flag") is True

        async def count() -> int:
            await asyncio.sleep(0)
            return 3

        assert await wait_until_async(count, 10, "a count") == 3
        with pytest.raises(AssertionError, match="waiting for: never; last: False"):
            await wait_until_async(lambda: False, 0.05, "never")

    asyncio.run(scenario())
