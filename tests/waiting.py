"""How a test waits: on a condition, with a generous bound, never for a fixed time.

A test that sleeps and then counts fails on a busy machine (the thing it waits for is late)
or passes falsely (the thing it must not see is late too). So a test waits until what it
needs holds, and a bound only turns a hang into a failure that says what never happened:
bounds here are minutes' worth of room, not measurements. How fast something happens is a
benchmark figure (``edgepipe bench``), never a test's assertion.

To show that something does *not* happen, make it positive: send a sentinel after the thing
that must not happen, wait for the sentinel, then check that the forbidden thing did not
arrive before it (ordered delivery makes that a proof, where a sleep is a guess).

Importable from every test folder as ``waiting``: pytest puts ``tests/`` on ``sys.path``
for ``tests/conftest.py`` (rootdir-relative ``prepend`` imports).
"""

from __future__ import annotations

import time
from collections.abc import Callable

GENEROUS_S = 60.0  # what a busy two-core machine may need for what takes a second when quiet
STEP_S = 0.05


def wait_until(condition: Callable[[], bool], timeout: float = GENEROUS_S, step: float = STEP_S) -> bool:
    """True once ``condition()`` holds, False if it still does not after ``timeout`` seconds.

    The condition is checked once more at the deadline, so a slow last step is not lost.
    Bounded in time; each check sleeps ``step``, so bounded in count as well.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(step)
    return True


def wait_for(condition: Callable[[], bool], what: str, timeout: float = GENEROUS_S, step: float = STEP_S) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` did not happen within ``timeout``.

    >>> wait_for(lambda: True, "nothing")
    >>> wait_for(lambda: False, "the impossible", timeout=0.01)
    Traceback (most recent call last):
    ...
    AssertionError: the impossible: not within 0.01 s
    """
    if not wait_until(condition, timeout, step):
        raise AssertionError(f"{what}: not within {timeout:g} s")
