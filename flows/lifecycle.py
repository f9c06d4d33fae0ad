"""How the `cas` command's work runs and ends: threads with deadlines, signals, and the process's exit.

- `in_thread`: a call in a daemon thread of its own, waited for (with a deadline, or none), its result or
  its exception handed back; the one way casflow runs something it may have to stop waiting for.
- `signals_stop_the_run` and `stop`: SIGTERM and Ctrl-C end a `cas run` within seconds (exit 128 + signal).
- `guarded`: any other command stopped by Ctrl-C exits 130, and one whose reader went away (`| head`) 141,
  without a traceback.
- `end`: the `cas` command's last act, its output flushed and the process ended without interpreter shutdown.
- `memory_mb`: the process's peak and current resident memory, which each step's last log line shows;
  `release_freed_memory`: what a finished step freed, handed back to the system.

Nothing here imports Prefect at module level (only `stop` and `drain_prefect` use it, when a run is there).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import dataclasses
import glob
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from casflow.tasks import stopping

T = TypeVar("T")

STOP_MARK_SECONDS = 2.0  # what a stopping run spends telling the Prefect server that its flow run crashed
SIGPIPE_STATUS = 128 + 13  # as a shell reports a process that SIGPIPE ended; Python ignores SIGPIPE and gets EPIPE


# ---------------------------------------------------------------- a call in a thread, with a deadline


class DeadlinePassed(RuntimeError):
    """`in_thread`'s call was still running at its deadline; it was abandoned, not stopped."""


class WatchFailed(RuntimeError):
    """`in_thread`'s `watch` said the call's world is gone (its Prefect server); the call was abandoned."""


def in_thread(call: Callable[[], T], name: str, seconds: float | None = None,
              watch: Callable[[], str | None] | None = None, every: float = 2.0) -> T:
    """call() in a daemon thread that sees this thread's context (Prefect's settings and run context: a
    step's logs stay with its task run); its result, or its exception raised here as is. With `seconds`,
    DeadlinePassed when it has not returned by then. With `watch`, called every `every` seconds while the
    call runs: a message from it abandons the call with WatchFailed(message).

    Why a thread: code that may never return (a user's sample(), a read from a store that never answers)
    cannot be interrupted from outside, so it runs where it can be abandoned at the deadline; and the
    waiting thread (the main one, in `cas run`) stays free for signals, which Prefect's flow engine would
    otherwise take and answer by waiting for every running step. An abandoned call commits nothing
    half-written if it ever finishes (every write is atomic, markers last), and it ends with the process."""
    outcome: dict[str, Any] = {}
    with stopping.stoppable() as told_to_stop:
        context = contextvars.copy_context()  # the call's loops see its own stop flag (tasks/stopping.py)

    def target() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # noqa: B036 (handed to the waiting thread as is)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        slices = [t for t in (every if watch else None, None if deadline is None else deadline - time.monotonic())
                  if t is not None]
        thread.join(max(0.0, min(slices)) if slices else None)
        if not thread.is_alive():
            break
        if deadline is not None and time.monotonic() >= deadline:
            told_to_stop.set()  # our loops stop at their next block; user code that never checks runs on, abandoned
            raise DeadlinePassed(f"{name} still running after {seconds:g} s")
        gone = watch() if watch else None
        if gone:
            told_to_stop.set()
            raise WatchFailed(gone)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ServerWatch:
    """`in_thread`'s watch of a run's Prefect server: a message once it has refused connections for
    LOST_SECONDS, or accepted them without answering for SLOW_SECONDS. Prefect's client would retry every
    call for minutes, so the run would hang with its results long committed; the run ends instead, saying
    what the store holds (`cli._evaluate`). A server that still accepts connections is given longer: on a
    machine loaded far past its cores it can take tens of seconds to answer and then carry on."""

    LOST_SECONDS = 10.0
    SLOW_SECONDS = 120.0

    def __init__(self, api_url: str):
        self.api_url, self.last_answer = api_url, time.monotonic()

    def __call__(self) -> str | None:
        from casflow.flows.server import accepts_connections, healthy

        if healthy(self.api_url, timeout=2.0) is not None:
            self.last_answer = time.monotonic()
            return None
        silent = time.monotonic() - self.last_answer
        allowed = self.SLOW_SECONDS if accepts_connections(self.api_url, timeout=2.0) else self.LOST_SECONDS
        return f"the Prefect server at {self.api_url} stopped answering ({silent:.0f} s)" if silent >= allowed else None


# ---------------------------------------------------------------- stopping a run: SIGTERM, Ctrl-C


class Stopped(BaseException):
    """SIGTERM or SIGINT reached `cas run` (a BaseException, like KeyboardInterrupt: nothing may catch it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_stop_the_run():
    """SIGTERM and SIGINT raise Stopped in the main thread (where `run` waits) for the length of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum, frame):
        raise Stopped(signum)

    previous = {s: signal.signal(s, raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclasses.dataclass
class Live:
    """What a stopping run has to end: its temporary server, and its flow run (api URL, id) to mark Crashed."""

    server: Any = None
    flow_run: tuple[str, Any] | None = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def stop(signum: int, live: Live) -> None:
    """End the run now: the flow run marked Crashed on its server (if that takes under STOP_MARK_SECONDS),
    the temporary server stopped, this process's other children ended, exit 128 + the signal's number.

    Worker threads are not waited for: a step in the middle of a write leaves a temporary file (or, on S3,
    no object) and no commit marker, which the next run cleans and redoes; everything committed is whole."""
    for s in (signal.SIGTERM, signal.SIGINT):  # a second signal while stopping: stop at once
        signal.signal(s, lambda n, f: os._exit(128 + n))
    stopping.stop_all()  # steps stop computing at their next block while the run is marked and its server ends
    name = signal.Signals(signum).name
    print(f"\ncas: stopped by {name}; nothing half-written was committed, and the next run cleans what this one left",
          file=sys.stderr, flush=True)
    if live.flow_run is not None:
        marker = threading.Thread(target=_mark_crashed, args=(*live.flow_run, name), daemon=True)
        marker.start()
        marker.join(STOP_MARK_SECONDS)
    live.close()
    end_children()
    _flush()
    os._exit(128 + signum)


def _mark_crashed(api_url: str, flow_run_id, name: str) -> None:
    with contextlib.suppress(Exception):
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from prefect.states import Crashed

        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=f"cas run stopped by {name}"), force=True)


def end_children() -> None:
    """SIGKILL to this process's remaining children (a user's sampler may start some); Linux only (/proc)."""
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with contextlib.suppress(OSError):
            for pid in open(path).read().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)


def memory_mb() -> tuple[float, float] | None:
    """(peak, current) resident memory of this process in MB (VmHWM, VmRSS); None where /proc has no
    status for it (not Linux). The peak is the whole process's since it started, whichever thread grew it."""
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))  # type: ignore[return-value]
    except (KeyError, ValueError, IndexError):
        return None


def release_freed_memory() -> None:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere). Steps run in
    threads of their own, and what one step freed in its thread's malloc arena otherwise stays resident."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def map_large_blocks(threshold: int = 4 << 20) -> None:
    """Blocks of `threshold` bytes and more come from mmap and go back to the system when freed (glibc's
    M_MMAP_THRESHOLD; nothing elsewhere). Left to itself, glibc raises that threshold after freeing such a
    block and serves later ones from the heap, where the scores step's distance tiles (16-25 MB, one per
    tile: 750 at 50k samples) left a peak that grew with N: +151 MB from 5k to 20k train images for the
    near-copy search alone, +21 MB with the threshold fixed at 4 MiB (benchmarks/results/whole_run-2026-12-05.md)."""
    try:
        ctypes.CDLL(None).mallopt(-3, threshold)  # -3: M_MMAP_THRESHOLD in malloc.h
    except (OSError, AttributeError):  # not glibc
        pass


def drain_prefect() -> None:
    """The run's last logs and events sent to its server (each queue waited for at most 5 s)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


# ---------------------------------------------------------------- every command: Ctrl-C, a closed pipe, the end


def guarded(command: Callable[[], int]) -> int:
    """command()'s exit status; 130 when Ctrl-C stops it (one line, no traceback), SIGPIPE_STATUS when its
    output's reader went away (`cas results | head -1`): nothing more is written to that pipe."""
    try:
        return command()
    except KeyboardInterrupt:
        print("\ncas: stopped by SIGINT", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        _silence_stdout()
        return SIGPIPE_STATUS


def end(code: int, argv: list[str] | None) -> int:
    """Called as the `cas` command (`argv` None): the process ends here, its output flushed, by os._exit.
    Called as a function (tests), it returns `code`.

    Rule: the command never ends through interpreter shutdown. Reason: Prefect's and the steps' daemon
    threads (a task runner's pool, Prefect's event loop, s3fs's loop, a call `in_thread` abandoned) may be
    inside native code then, and finalizing the interpreter under them can abort a process whose work is
    done (SIGABRT from C++ code). A run has sent its logs and events (`drain_prefect`) and stopped its
    temporary server before this."""
    if argv is not None:
        return code
    os._exit(SIGPIPE_STATUS if not _flush() and code == 0 else code)


def _flush() -> bool:
    """Flush stdout and stderr; False when stdout's reader has gone (what was left unwritten is dropped)."""
    ok = True
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        ok = False
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    return ok


def _silence_stdout() -> None:
    """stdout onto /dev/null, so that no later flush (ours, or the interpreter's) fails on the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
