"""Stopping a step from outside: a flag that its long loops check between blocks.

Python cannot interrupt a thread. A step given up at its time limit, or running when the run is told to
stop, would go on computing until its work was done, holding cores the next model needs. So every loop
over blocks of data (training and prediction batches, score blocks, sample chunks) calls `check()`, and
the step ends with `StepStopped` at its next block, within a block's time of being told:

  - `stoppable()` gives the code that runs in its block a flag of its own; the caller that gives up on
    that step sets it;
  - `stop_all()` stops every step of the process (a run told to stop).

A step's flag lives in a context variable, so it follows the step into the threads that copy its
context (as the flow's time-limit thread does) and never reaches another step's loops.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

_all = threading.Event()
_step: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("casflow_step_stop", default=None)


class StepStopped(BaseException):
    """Raised by `check()` in a step told to stop. A BaseException, as KeyboardInterrupt: a step's own
    `except Exception` must not swallow it and carry on."""


def check() -> None:
    """Raise StepStopped when this step, or everything, was told to stop; cheap enough for every block."""
    flag = _step.get()
    if _all.is_set() or (flag is not None and flag.is_set()):
        raise StepStopped("told to stop")


@contextlib.contextmanager
def stoppable() -> Iterator[threading.Event]:
    """A fresh stop flag for the code in this block (and the threads that copy its context); set it to stop it."""
    flag = threading.Event()
    token = _step.set(flag)
    try:
        yield flag
    finally:
        _step.reset(token)


def stop_all() -> None:
    """Every step of this process stops at its next check (the run is ending)."""
    _all.set()
