"""Waiting in tests for something to happen, instead of sleeping "long enough".

A fixed sleep that stands for "by now X has happened" fails on a loaded machine (CI runs
over a thousand tests on 2 cores, many of them starting node processes) and wastes time on an
idle one. `wait_until` polls the condition itself, returns as soon as it holds, and gives up
only after a generous deadline with an AssertionError that says what did not happen and what
the condition last returned (or raised).

    wait_until(lambda: node_status(r4) == "normal", 60, "n4 finished joining")
    value = wait_until(lambda: r.get("k"), 30, "k reached n3", ignore=(redis.RedisError,))

Contract: `predicate` is called at least once, and once more after the deadline has passed,
so a condition that holds by the deadline is never reported as timed out. Exceptions of the
types in `ignore` count as "not yet"; any other propagates at once. `wait_until_async` is the
same for code on an event loop: `predicate` may be a plain function or return an awaitable.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

What = str | Callable[[], str]

DEFAULT_INTERVAL_S = 0.05


def _timed_out(timeout_s: float, what: What, last: Any) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout_s:g} s waiting for: {text}; last: {last!r}")


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: What, *,
               interval_s: float = DEFAULT_INTERVAL_S,
               ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Call `predicate()` until it returns something truthy, and return that.

    `what` names the condition ("n4 is normal on every node"), or is a function returning
    that text when the wait fails (to report state gathered while polling).
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        past_deadline = time.monotonic() >= deadline
        try:
            last = predicate()
            if last:
                return last
        except ignore as exc:
            last = exc
        if past_deadline:
            raise _timed_out(timeout_s, what, last)
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


async def wait_until_async(predicate: Callable[[], Any], timeout_s: float, what: What, *,
                           interval_s: float = DEFAULT_INTERVAL_S,
                           ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """`wait_until` on an event loop: sleeps with asyncio, awaits what `predicate` returns
    if that is awaitable."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        past_deadline = time.monotonic() >= deadline
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except ignore as exc:
            last = exc
        if past_deadline:
            raise _timed_out(timeout_s, what, last)
        await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
