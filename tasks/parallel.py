"""Image codec work on every core, in worker processes.

PNG encoding and decoding of small images hold the GIL for most of their
time (header parsing, Python-side setup; measured in benchmarks/scale.py:
two threads run no faster than one at 64x64), so threads leave a 16-core
machine at one core's pace. `ordered_map` runs a function over jobs in a
pool of processes and yields the results in job order, with a bounded number of jobs in
flight, so memory stays a few chunks whatever the input's size and the
output is the same, byte for byte, for any number of workers.

Workers are forked on Linux, as PyTorch's DataLoader forks its workers: they
start in milliseconds, share the caller's memory copy-on-write, and never
re-run the caller's `__main__` (spawned workers would, so every script
calling casflow would need a main guard). They run only the codec functions
of `casflow.tasks.images` (PIL and numpy, no BLAS, OpenMP or CUDA), which is
what makes forking a process that holds threads safe here. Elsewhere they are
spawned.

Workers: `CASFLOW_WORKERS` when set (1 runs everything in the calling
process), else every core this process may use. The pool of each size is
started on first use and kept for the life of the process.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from casflow.tasks import stopping

R = TypeVar("R")

AHEAD = 2  # jobs in flight per worker: enough to keep each busy, few enough to bound memory

_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


def default_workers() -> int:
    """CASFLOW_WORKERS when set, else the cores this process may run on."""
    configured = os.environ.get("CASFLOW_WORKERS", "").strip()
    if configured:
        try:
            count = int(configured)
        except ValueError:
            raise ValueError(f"CASFLOW_WORKERS={configured!r}: expected a whole number of worker processes") from None
        if count < 1:
            raise ValueError(f"CASFLOW_WORKERS={configured!r}: expected at least 1")
        return count
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool(workers: int) -> ProcessPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_watch_parent,
                                       initargs=(os.getpid(),))
            _pools[workers] = pool
        return pool


def _watch_parent(parent: int) -> None:
    """In each worker: exit once the process that started it is gone (killed, say), rather than wait forever on
    its job queue, holding its pipes and memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="casflow-parent-watch", daemon=True).start()


def shutdown() -> None:
    """Stops every worker pool of this process (they stop at exit anyway); the next call starts new ones."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _discard(workers: int, pool: ProcessPoolExecutor) -> None:
    """A pool whose worker died (killed for memory, say) is broken for good: the next call starts a new one."""
    with _pools_lock:
        if _pools.get(workers) is pool:
            del _pools[workers]
    pool.shutdown(wait=False, cancel_futures=True)


def ordered_map(fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]], *, workers: int | None = None) -> Iterator[R]:
    """fn(*job) for each job, in job order, on `workers` processes (default_workers() when None).

    `fn` must be a module-level function and jobs picklable. At most AHEAD jobs per worker are in
    flight, so a lazy `jobs` iterable is read only as far as the results are consumed. A job that
    raises raises here, in order: the first failing job in input order is the one reported, whatever
    the worker count. One job, or one worker, runs in the calling process."""
    workers = default_workers() if workers is None else workers
    jobs = iter(jobs)
    first = next(jobs, None)
    if first is None:
        return
    second = next(jobs, None)
    if workers <= 1 or second is None:
        stopping.check()
        yield fn(*first)
        if second is not None:
            for job in itertools.chain([second], jobs):
                stopping.check()
                yield fn(*job)
        return
    pool = _pool(workers)
    pending: collections.deque[Future] = collections.deque()
    queued = iter([first, second])
    try:
        for source in (queued, jobs):
            for job in source:
                pending.append(pool.submit(fn, *job))
                if len(pending) >= AHEAD * workers:
                    stopping.check()
                    yield pending.popleft().result()
        while pending:
            stopping.check()
            yield pending.popleft().result()
    except BrokenProcessPool:
        _discard(workers, pool)
        raise
    finally:
        for future in pending:  # the consumer stopped early or a job failed: drop the rest
            future.cancel()
