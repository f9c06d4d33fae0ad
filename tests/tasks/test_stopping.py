import contextvars
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from casflow.tasks import parallel, stopping


def busy_in_numpy(blocks: int, done: list) -> None:
    """Pairwise distances block by block, as the score step computes them, checking between blocks."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 512))
    for _ in range(blocks):
        stopping.check()
        done.append(float(((a[:, None, :50] - a[None, :, :50]) ** 2).sum()))


def test_a_step_told_to_stop_ends_at_its_next_block_and_others_go_on():
    with stopping.stoppable() as flag:
        context = contextvars.copy_context()  # the step's thread, as the flow's time limit starts it
    done, ended = [], {}

    def step() -> None:
        try:
            context.run(busy_in_numpy, 10_000, done)
        except stopping.StepStopped:
            ended["at"] = time.monotonic()

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    while len(done) < 2:
        time.sleep(0.01)
    told = time.monotonic()
    flag.set()
    thread.join(10)
    assert not thread.is_alive() and ended["at"] - told < 2.0 and len(done) < 10_000
    stopping.check()  # this thread's context has no flag set: it goes on
    with stopping.stoppable():
        busy_in_numpy(2, [])  # a fresh step's flag starts clear


def test_the_shared_loops_check_the_flag():
    from casflow.tasks.classifiers import common

    with stopping.stoppable() as flag:
        flag.set()
        with pytest.raises(stopping.StepStopped):
            list(parallel.ordered_map(int, [("1",), ("2",)], workers=1))
        with pytest.raises(stopping.StepStopped):
            list(common._unit_float_batches(np.zeros((4, 8, 8, 3), np.uint8), common.torch.device("cpu"),
                                            common.torch.float32, 2))


def test_stop_all_stops_every_step_of_the_process():
    code = ("from casflow.tasks import stopping\n"
            "stopping.check()\n"
            "stopping.stop_all()\n"
            "try:\n    stopping.check()\nexcept stopping.StepStopped:\n    print('stopped')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "stopped"
