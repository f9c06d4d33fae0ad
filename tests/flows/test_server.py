"""The Prefect server under `cas run`, with real servers, real `cas` processes and real signals: a running
server is found and used, a temporary one never outlives its run (SIGKILL, SIGTERM), comes up on a busy
machine or fails in one line, and nothing alarming is printed; a cached run pays no torch import."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from casflow.storage.shards import load_shard_set
from casflow.storage.store import Store
from helpers import SLOW_GENERATOR, flow_runs, running, wait_for, write_config

pytestmark = pytest.mark.deployment

CAS = [sys.executable, "-m", "casflow.flows.cli"]
HEAVY = ("torch", "matplotlib", "sklearn", "scipy", "webdataset")
TEMPORARY_LINE = "starting a temporary one for this run"


def env_for(tmp_path: Path, **extra) -> dict:
    """A `cas` environment without PREFECT_API_URL: it finds a server (or starts one) itself."""
    env = dict(os.environ, CASFLOW_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    env.pop("PREFECT_API_URL", None)
    return env | extra


def port_of(api_url: str) -> str:
    return api_url.rsplit(":", 1)[1].split("/")[0]


def flow_runs_of(api_url: str, config: Path) -> set[str]:
    return {run.name for run in flow_runs(api_url, config=config)}


@pytest.fixture(scope="module")
def cached(tmp_path_factory, prefect_api):
    """A tiny config whose every step is committed on its store (one run against the session's server)."""
    folder = tmp_path_factory.mktemp("cached")
    config = write_config(folder, [{"name": "g", "generator": {"kind": "gaussian", "components": 4}}])
    done = subprocess.run([*CAS, "run", str(config)], env=env_for(folder, **prefect_api), cwd=folder, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, config


def test_a_running_server_is_found_and_a_cached_run_imports_no_torch(cached, prefect_api):
    folder, config = cached
    env = env_for(folder, PREFECT_SERVER_API_PORT=port_of(prefect_api["PREFECT_API_URL"]))  # where `make server` listens
    before = flow_runs_of(prefect_api["PREFECT_API_URL"], config)
    script = ("import sys; from casflow.flows.cli import main; code = main(['run', sys.argv[1]]); "
              f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules), flush=True); "
              "import os; sys.stderr.flush(); os._exit(code)")  # as the `cas` command ends (lifecycle.end): no interpreter teardown
    done = subprocess.run([sys.executable, "-c", script, str(config)], env=env, cwd=folder, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "heavy: []" in done.stdout  # torch alone took 2-4 s of every cached run
    assert TEMPORARY_LINE not in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert len(flow_runs_of(prefect_api["PREFECT_API_URL"], config) - before) == 1  # the run is on the running server


def test_opting_out_runs_on_a_temporary_server_even_beside_a_running_one(cached, prefect_api):
    folder, config = cached
    env = env_for(folder, PREFECT_SERVER_API_PORT=port_of(prefect_api["PREFECT_API_URL"]), CASFLOW_PREFECT_SERVER="temporary")
    before = flow_runs_of(prefect_api["PREFECT_API_URL"], config)
    done = subprocess.run([*CAS, "run", str(config)], env=env, cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert TEMPORARY_LINE in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert flow_runs_of(prefect_api["PREFECT_API_URL"], config) == before


def test_a_configured_server_that_does_not_answer_is_one_line(tmp_path):
    config = write_config(tmp_path, [{"name": "g", "generator": {"kind": "gaussian"}}])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api"
        done = subprocess.run([*CAS, "run", str(config)], env=env_for(tmp_path, PREFECT_API_URL=url), cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"cas: no Prefect server answers at {url} (PREFECT_API_URL): start it (`make server`), "
        "or unset PREFECT_API_URL and cas starts a temporary one")
    assert "Traceback" not in done.stderr and not (tmp_path / "store").exists()


# In an xdist process that had run other server tests this run twice found a server and completed (exit 0);
# alone it passes every time. Until that is explained it runs in make test's serial part.
@pytest.mark.timing
def test_a_temporary_server_that_does_not_come_up_in_time_is_one_line_with_the_remedy(tmp_path):
    config = write_config(tmp_path, [{"name": "g", "generator": {"kind": "gaussian"}}])
    env = env_for(tmp_path, CASFLOW_SERVER_START_TIMEOUT="0.5")  # no Prefect server starts in half a second
    done = subprocess.run([*CAS, "run", str(config)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cas: the temporary Prefect server did not answer within 0.5 s") and "`make server`" in last, last
    assert "CASFLOW_SERVER_START_TIMEOUT=300" in last and not list((tmp_path / "store").glob("results/*"))


def test_a_temporary_server_that_fails_is_named_with_its_last_words(tmp_path):
    """A database it cannot open: the server exits; the line says so, with what it said last."""
    config = write_config(tmp_path, [{"name": "g", "generator": {"kind": "gaussian"}}])
    env = env_for(tmp_path, PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/no/such/folder/prefect.db")
    done = subprocess.run([*CAS, "run", str(config)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cas: the temporary Prefect server exited with status") and "`make server`" in last, last


# ---------------------------------------------------------------- a temporary server never outlives its run

def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        for path in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with_children = {int(c) for c in path.read_text().split()}
            todo += list(with_children - found)
            found |= with_children
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listening_port(pids: set[int]) -> int:
    """The TCP port one of these processes listens on (from /proc/net/tcp and their socket inodes): the
    temporary server's, among cas's other children (the PNG worker processes listen on none)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker process that ended meanwhile
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            return int(fields[1].split(":")[1], 16)
    raise AssertionError(f"none of the processes {sorted(pids)} listens on a port")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, busy", [(signal.SIGKILL, ""), (signal.SIGTERM, ""), (signal.SIGTERM, "1")],
                         ids=["SIGKILL", "SIGTERM", "SIGTERM-busy-in-numpy"])
def test_killed_mid_flow_no_process_of_the_run_is_left_and_its_port_is_free(tmp_path, signum, busy, prefect_api):
    (tmp_path / "slow_gen.py").write_text(textwrap.dedent(SLOW_GENERATOR))
    models = [{"name": "slow", "generator": {"kind": "python", "entry_point": "slow_gen:make", "batch_size": 100}}]
    config = write_config(tmp_path, models, store={"url": str(tmp_path / "store"), "shard_size": 100})
    store = Store(str(tmp_path / "store"))
    env = env_for(tmp_path, SLOW_SECONDS="1.0", SLOW_BUSY=busy)  # 15 batches: 15 s of sampling left to wait for, were the run to wait
    process = subprocess.Popen([*CAS, "run", str(config)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        folder = wait_for(lambda: next((fp for fp in store.listdir("samples") if "shard-000001.tar" in store.listdir(f"samples/{fp}")),
                                       None), timeout=240, what="second shard of the slow model")
        family = descendants(process.pid)
        assert family, "the temporary server runs as a child of cas"
        port = listening_port({pid for pid in family if running(pid)})
        started = time.monotonic()
        os.kill(process.pid, signum)  # cas alone, not its process group: its server is its own to end
        out, _ = process.communicate(timeout=30)
        try:
            wait_for(lambda: not any(running(pid) for pid in family) and port_is_free(port), timeout=5,
                     what=f"end of every process of the run and a free port {port}")
        except TimeoutError:
            left = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120] for pid in family if running(pid)}
            raise AssertionError(f"left running: {left}; port {port} free: {port_is_free(port)}; {out[-2000:]}") from None
        assert time.monotonic() - started < 8, time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signal.SIGTERM), out[-3000:]
    assert "manifest.json" not in store.listdir(f"samples/{folder}") and load_shard_set(store, f"samples/{folder}") is None
    assert store.listdir("results/summary") == []
    if signum == signal.SIGTERM:
        assert "cas: stopped by SIGTERM" in out and "Traceback" not in out, out[-3000:]
        # what it left is debris the next run cleans: it completes with the same model (on the session's server)
        rerun = subprocess.run([*CAS, "run", str(config)], env=dict(env, SLOW_SECONDS="0", **prefect_api), cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert load_shard_set(store, f"samples/{folder}").num_samples == 1438
        assert not [n for n in store.listdir(f"samples/{folder}") if ".tmp-" in n]


def test_failing_models_print_no_traceback(tmp_path):
    """On a temporary server (it printed four shutdown tracebacks after such a run's summary): a model whose
    factory raises, one whose file is missing and one whose samples are the wrong size, beside a good one."""
    (tmp_path / "bad_gen.py").write_text("def make(checkpoint, device):\n    raise RuntimeError('CUDA fell over')\n")
    import numpy as np

    np.savez(tmp_path / "wrong.npz", arr_0=np.zeros((20, 16, 16, 1), np.uint8), arr_1=np.arange(20) % 10)
    models = [{"name": "raises", "generator": {"kind": "python", "entry_point": "bad_gen:make"}},
              {"name": "missing", "generator": {"kind": "npz", "path": str(tmp_path / "nothing.npz")}},
              {"name": "wrong-size", "generator": {"kind": "npz", "path": str(tmp_path / "wrong.npz")}},
              {"name": "good", "generator": {"kind": "gaussian", "components": 4}}]
    config = write_config(tmp_path, models)
    done = subprocess.run([*CAS, "run", str(config)], env=env_for(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    for word in ("Traceback", "CancelledError", "Error flushing", "Exception in"):
        assert word not in output, output[-4000:]
    summary = output.split("failed:")[1]
    assert "raises: model 'raises'" in summary and "missing: model 'missing'" in summary and "wrong-size: model 'wrong-size'" in summary


# ---------------------------------------------------------------- start-up under load

BUSY_LOOP = "while True: pass"


def test_start_up_under_load_the_run_completes_while_two_busy_loops_hold_both_cores(cached, tmp_path):
    """A temporary server with a fresh database (its migrations: the slowest start there is) while two busy
    loops hold both cores of a 2-core machine (every core, elsewhere): it comes up within the default start
    timeout and the run completes, with nothing alarming printed."""
    folder, config = cached
    env = env_for(folder, PREFECT_HOME=str(tmp_path / "prefect-home"))  # a database that does not exist yet
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(max(2, os.cpu_count() or 2))]
    try:
        started = time.monotonic()
        done = subprocess.run([*CAS, "run", str(config)], env=env, cwd=folder, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - started
        assert all(loop.poll() is None for loop in loops), "the busy loops ran throughout"
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert TEMPORARY_LINE in done.stderr and (tmp_path / "prefect-home" / "prefect.db").exists()
    assert "Traceback" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-4000:]
    print(f"under load: {seconds:.1f} s")


def temporary_server_of(pid: int) -> int:
    """The PID of cas's temporary Prefect server (`python -m casflow.flows.server`)."""
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if b"casflow.flows.server" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    raise AssertionError("no temporary server among cas's children")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("when", ["before-results", "after-results"])
def test_the_prefect_server_dies_mid_run(tmp_path, when, prefect_api):
    """Before the results are committed: one line within 30 s, exit 1, and a rerun completes from the cache.
    After: the table and one line saying the results are on the store, within 30 s, exit 5."""
    (tmp_path / "slow_gen.py").write_text(textwrap.dedent(SLOW_GENERATOR))
    slow = {"name": "slow", "generator": {"kind": "python", "entry_point": "slow_gen:make", "batch_size": 100}}
    models = [slow] if when == "before-results" else [{"name": "gauss", "generator": {"kind": "gaussian", "components": 8}}]
    config = write_config(tmp_path, models, store={"url": str(tmp_path / "store"), "shard_size": 100})
    store = Store(str(tmp_path / "store"))
    env = env_for(tmp_path, SLOW_SECONDS="1.0")
    process = subprocess.Popen([*CAS, "run", str(config)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if when == "before-results":
            wait_for(lambda: any("shard-000001.tar" in store.listdir(f"samples/{fp}") for fp in store.listdir("samples")),
                     timeout=240, what="second shard of the slow model")
        else:
            wait_for(lambda: store.exists("results/summary") and store.listdir("results/summary"), timeout=240,
                     what="the run's summary")
        os.kill(temporary_server_of(process.pid), signal.SIGKILL)
        lost = time.monotonic()
        out, _ = process.communicate(timeout=60)
        assert time.monotonic() - lost < 30, time.monotonic() - lost
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Traceback" not in out, out[-3000:]
    assert "stopped answering" in out, out[-3000:]
    if when == "before-results":
        assert process.returncode == 1 and "before its results were committed" in out, out[-3000:]
        rerun = subprocess.run([*CAS, "run", str(config)], env=dict(env, SLOW_SECONDS="0", **prefect_api), cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)  # on the session's server: the cache is the point
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    else:
        assert process.returncode == 5 and "after the results were committed" in out, out[-3000:]
        assert "gauss " in out  # the table
