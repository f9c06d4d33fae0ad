"""The Prefect server a `cas run` talks to: one that is running, or a temporary one of its own.

Which one (`find`, in this order):
  1. `CASFLOW_PREFECT_SERVER=temporary` (or `cas run --temporary-server`): a temporary server, whatever
     else is set.
  2. `PREFECT_API_URL` (the environment or the Prefect profile), as Prefect itself would use it. A URL
     that does not answer is an error that names it, not a traceback.
  3. a Prefect server answering at 127.0.0.1:4200 (`PREFECT_SERVER_API_HOST`:`PREFECT_SERVER_API_PORT`),
     where `make server` and `prefect server start` listen: started once, it serves every run that day.
  4. otherwise a temporary server for this run.

The temporary server is Prefect's own server app (`prefect.server.api.server:create_app`, as Prefect's
temporary server runs it) under uvicorn, in a child process that casflow starts and owns:
  - its listening socket is bound here, on a free loopback port, and handed over: no race for the port;
  - its output goes to an unnamed temporary file: nothing of it reaches the terminal (its shutdown prints
    nothing), and the file is read back only to explain a start that failed;
  - it dies with its parent, whatever ends the parent (SIGKILL too): on Linux the kernel sends it SIGKILL
    when the parent dies (PR_SET_PDEATHSIG), and everywhere it watches a pipe from its parent and exits
    when the pipe closes, which the kernel does when the parent dies;
  - it gets CASFLOW_SERVER_START_TIMEOUT seconds (default 120, several times what a start with a fresh
    database took with busy loops on both cores of a 2-core machine) to answer, else the run stops with
    one line naming the remedy (`ServerDidNotStart`).
Its database is Prefect's default, $PREFECT_HOME/prefect.db, as for Prefect's own temporary server, so
the runs show in `make server`'s UI later.

Nothing here imports Prefect at module level: `python -m casflow.flows.server` is the child's entry point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from casflow.flows.terminal import problem
from casflow.tasks.exits import CasError

MODE_VARIABLE = "CASFLOW_PREFECT_SERVER"  # auto (default) | temporary
TIMEOUT_VARIABLE = "CASFLOW_SERVER_START_TIMEOUT"
START_TIMEOUT = 120.0
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 4200  # Prefect's defaults for `prefect server start`, and `make server`'s
STOP_GRACE = 3.0  # seconds a stopping server gets to end on SIGTERM before SIGKILL


class ServerProblem(CasError, RuntimeError):
    """No Prefect server to run on: the message is one line with the remedy (exit 1, nothing was run)."""


class ServerDidNotStart(ServerProblem):
    pass


def prefect_environment() -> None:
    """Before Prefect is imported: show casflow's own progress lines in Prefect's logs, and keep Prefect
    from phoning home (it fails noisily offline)."""
    extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
    if "casflow" not in extra.split(","):
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [extra, "casflow"]))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def healthy(api_url: str, timeout: float) -> bool | None:
    """True when a Prefect API answers `GET /health` with `true`; False when something else answers; None when
    nothing answers within `timeout` (refused, timed out)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.read().strip() == b"true"
    except urllib.error.HTTPError:
        return False  # a server answered, not with a healthy Prefect API (auth, a proxy, another service)
    except (OSError, ValueError):
        return None  # URLError, refused, reset, timeout; ValueError: not a URL


def accepts_connections(api_url: str, timeout: float) -> bool:
    """Whether something listens at the API's host and port (a busy server does; a dead one refuses)."""
    parts = urllib.parse.urlsplit(api_url)
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout):
            return True
    except (OSError, ValueError):
        return False


def local_api_url() -> str:
    """Where `prefect server start` listens by default (and `make server` always)."""
    host = os.environ.get("PREFECT_SERVER_API_HOST") or LOCAL_HOST
    host = LOCAL_HOST if host in ("0.0.0.0", "::", "") else host  # listening everywhere: reach it on loopback
    return f"http://{host}:{os.environ.get('PREFECT_SERVER_API_PORT') or LOCAL_PORT}/api"


def configured_api_url(imported: bool = True) -> str | None:
    """PREFECT_API_URL as Prefect resolves it (the environment, the active profile, temporary settings); with
    `imported` False and Prefect not imported yet, the environment only (importing Prefect takes a second)."""
    if not imported and "prefect" not in sys.modules:
        return os.environ.get("PREFECT_API_URL") or None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def start_timeout() -> float:
    value = os.environ.get(TIMEOUT_VARIABLE)
    try:
        return float(value) if value else START_TIMEOUT
    except ValueError:
        raise ServerProblem(f"{TIMEOUT_VARIABLE}={value!r} is not a number of seconds") from None


def mode(temporary: bool = False) -> str:
    chosen = "temporary" if temporary else (os.environ.get(MODE_VARIABLE) or "auto")
    if chosen not in ("auto", "temporary"):
        raise ServerProblem(f"{MODE_VARIABLE}={chosen!r}: give auto (a running server, else a temporary one) or temporary")
    return chosen


class RunServer:
    """The server of one run. Made first thing in `cas run`: when no server is configured or running it starts
    a temporary one at once, so that its start (3-5 s here) overlaps the run's own; `api_url()` waits for
    the server (and, Prefect imported by then, drops that temporary server for a server a Prefect profile
    names); `close()` stops a temporary server."""

    def __init__(self, temporary: bool = False, timeout: float | None = None):
        self.forced = mode(temporary) == "temporary"
        self.temporary: TemporaryServer | None = None
        self.url: str | None = None
        self.how = f"{MODE_VARIABLE}=temporary"
        if not self.forced:
            self.url = configured_api_url(imported=False)
            self.how = "PREFECT_API_URL"
            if self.url is None and healthy(local_api_url(), timeout=2):
                self.url, self.how = local_api_url(), "a running server"
        if self.url is None:
            self.temporary = TemporaryServer(timeout).start()
            self.how = self.how if self.forced else f"no Prefect server at {local_api_url().removesuffix('/api')}"

    def api_url(self) -> str:
        if self.temporary is not None and not self.forced:
            configured = configured_api_url()
            if configured:  # a Prefect profile names a server: that one, as Prefect would
                self.close()
                self.url, self.how = configured, "PREFECT_API_URL"
        if self.temporary is None:
            if self.how == "PREFECT_API_URL" and healthy(self.url, timeout=10) is None:
                raise ServerProblem(f"no Prefect server answers at {self.url} (PREFECT_API_URL): start it (`make server`), "
                                    "or unset PREFECT_API_URL and cas starts a temporary one")
            return self.url
        problem(f"{self.how}; starting a temporary one for this run (`make server` keeps one for every run)")
        return self.temporary.wait()

    def close(self) -> None:
        if self.temporary is not None:
            self.temporary.stop()
            self.temporary = None


class TemporaryServer:
    """A Prefect server for one run, in a child process that never outlives this one (see the module's
    docstring). `start()` returns at once; `wait()` blocks until it answers; `stop()` ends it."""

    def __init__(self, timeout: float | None = None):
        self.timeout = start_timeout() if timeout is None else timeout
        self.process: subprocess.Popen | None = None
        self.api_url = ""
        self._output = None
        self._lifeline: int | None = None  # our end of the pipe the child watches
        self._started = 0.0

    def start(self) -> TemporaryServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # as uvicorn sets it: its connections left in TIME_WAIT when the server ends do not hold the port
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        self.api_url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        watched, self._lifeline = os.pipe()  # both ends non-inheritable: later children never hold the lifeline
        self._output = tempfile.TemporaryFile()  # unnamed: nothing is left behind, however this process ends
        env = dict(os.environ, PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1", PREFECT_SERVER_UI_ENABLED="false",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
        env.pop("PREFECT_API_URL", None)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "casflow.flows.server", str(listener.fileno()), str(watched), str(os.getpid())],
                pass_fds=(listener.fileno(), watched), stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)  # its own session: a Ctrl-C at the terminal reaches cas, which stops it in order
        finally:
            listener.close()
            os.close(watched)
        self._started = time.monotonic()
        return self

    def wait(self) -> str:
        """Block until the server answers; its API URL. ServerDidNotStart, with the remedy, when it does not."""
        deadline = self._started + self.timeout
        while True:
            if self.process.poll() is not None:
                raise ServerDidNotStart(f"the temporary Prefect server exited with status {self.process.returncode} before it "
                                        f"answered ({self._last_words()}); {self._remedy()}")
            if healthy(self.api_url, timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                return self.api_url
            if time.monotonic() >= deadline:
                words = self._last_words()
                self.stop()
                raise ServerDidNotStart(f"the temporary Prefect server did not answer within {self.timeout:g} s"
                                        f"{f' ({words})' if words else ''}; {self._remedy(slow=True)}")
            time.sleep(0.1)

    def _remedy(self, slow: bool = False) -> str:
        more = f"give it longer with {TIMEOUT_VARIABLE}={max(300, int(self.timeout * 2.5))}, or " if slow else ""
        return f"{more}start one with `make server` (or `prefect server start`) and cas uses it"

    def _last_words(self) -> str:
        """The last line the server wrote, to explain a failed start."""
        if self._output is None:
            return ""
        self._output.seek(0)
        lines = [line.strip() for line in self._output.read()[-4000:].decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; its output is discarded."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait()
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._output is not None:
            self._output.close()
            self._output = None


# ---------------------------------------------------------------- the child: python -m casflow.flows.server LISTEN_FD PIPE_FD PARENT_PID

PR_SET_PDEATHSIG = 1


def _die_with_parent(watched: int, parent: int) -> None:
    """SIGKILL from the kernel when the parent dies (Linux), and everywhere exit when the parent's end of the
    pipe closes (at its death, whatever killed it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            try:
                if not os.read(watched, 1):
                    os._exit(1)  # EOF: the parent is gone
            except InterruptedError:
                continue

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve(listen_fd: int, watched: int, parent: int) -> None:
    _die_with_parent(watched, parent)
    import uvicorn

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, lifespan="on", log_level="error",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=listen_fd)])


if __name__ == "__main__":
    _serve(*(int(a) for a in sys.argv[1:4]))
