"""`flows.lifecycle.in_thread`: the one way casflow runs a call it may stop waiting for."""

import contextvars
import threading
import time

import pytest

from casflow.flows import lifecycle

where = contextvars.ContextVar("where", default="unset")


def test_in_thread_returns_the_result_in_the_callers_context():
    where.set("caller")
    assert lifecycle.in_thread(lambda: (where.get(), threading.current_thread().name), "probe") == ("caller", "probe")


def test_in_thread_raises_the_calls_own_exception():
    def fail():
        raise KeyError("the call's own")

    with pytest.raises(KeyError, match="the call's own"):
        lifecycle.in_thread(fail, "probe", seconds=5)


def test_in_thread_gives_up_at_the_deadline():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(lifecycle.DeadlinePassed, match="stuck still running after 0.2 s"):
        lifecycle.in_thread(release.wait, "stuck", seconds=0.2)
    assert time.monotonic() - started < 2
    release.set()


def test_a_step_past_its_time_limit_is_a_step_time_limit():
    from casflow.flows.pipeline import StepTimeLimit, _within_time_limit

    release = threading.Event()
    with pytest.raises(StepTimeLimit, match="draw-samples did not finish within limits.step_seconds = 0.2 s"):
        _within_time_limit(0.2, "draw-samples", release.wait, 30)
    release.set()
    assert _within_time_limit(5, "draw-samples", lambda a, b=0: a + b, 1, b=2) == 3


def test_a_step_past_its_time_limit_stops_computing():
    """Busy in numpy, block by block as the score step is: given up at the limit, its thread ends within a
    block's time instead of computing on for nobody."""
    import numpy as np

    from casflow.flows.pipeline import StepTimeLimit, _within_time_limit
    from casflow.tasks import stopping

    blocks, threads = [], []

    def busy() -> None:
        threads.append(threading.current_thread())
        a = np.random.default_rng(0).normal(size=(300, 64))
        while True:
            stopping.check()
            blocks.append(float(((a[:, None, :] - a[None, :, :]) ** 2).sum()))

    with pytest.raises(StepTimeLimit):
        _within_time_limit(0.5, "score-samples", busy)
    threads[0].join(5)
    assert not threads[0].is_alive() and blocks
    count = len(blocks)
    time.sleep(0.3)
    assert len(blocks) == count  # nothing computed after it stopped


def test_the_server_watch_gives_a_busy_server_longer_than_a_gone_one():
    from helpers import Unanswering

    with Unanswering() as endpoints:
        busy = lifecycle.ServerWatch(endpoints.url("silent") + "/api")  # accepts connections, answers nothing
        gone = lifecycle.ServerWatch(endpoints.url("closed") + "/api")  # refuses them
        for watch in (busy, gone):
            watch.last_answer -= lifecycle.ServerWatch.LOST_SECONDS + 1
        assert busy() is None
        assert gone().startswith(f"the Prefect server at {endpoints.url('closed')}/api stopped answering (1")
        busy.last_answer -= lifecycle.ServerWatch.SLOW_SECONDS
        assert "stopped answering" in busy()
