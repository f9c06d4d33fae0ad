"""Operations against real servers: SeaweedFS for S3, `prefect server start`
for Prefect, `cas` in subprocesses as users and workers run it.

Faults: an S3 restart in the middle of a run, a SIGKILL in the middle of
sharding, two runs at once on one store, a nightly deployment run twice.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
import yaml

from casflow.storage import verify
from casflow.storage.shards import iter_shard_set, load_shard_set
from casflow.storage.store import Store, s3_options
from helpers import (
    REPO,
    SLOW_GENERATOR,
    TINY_CLASSIFIER,
    deploy,
    flow_runs,
    prefect_client,
    prefect_command,
    stop_worker,
    wait_for,
    write_config,
)

GAUSSIANS = [
    {"name": f"gauss-{k}", "generator": {"kind": "gaussian", "components": k}} for k in (4, 8, 16, 32)
]


def cas_env(tmp_path, prefect_api, s3=None, **extra) -> dict:
    env = dict(os.environ, **prefect_api, CASFLOW_CACHE_DIR=str(tmp_path / "cache"), **extra)
    if s3 is not None:
        env.update(s3.env)
    return env


def start_cas(config: Path, env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "casflow.flows.cli", "run", str(config)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def summaries(store: Store) -> list[dict]:
    connection = duckdb.connect()
    connection.register_filesystem(store.fs)
    relation = connection.sql(f"SELECT * FROM read_parquet('{store.uri('results/summary')}/**/*.parquet', "
                              "hive_partitioning=true) ORDER BY run_id, model")
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


def committed_sets(store: Store, kind: str = "samples") -> list:
    return [load_shard_set(store, f"{kind}/{fp}") for fp in store.listdir(kind)]


@pytest.mark.s3
@pytest.mark.deployment
def test_s3_restart_in_the_middle_of_a_run(tmp_path, own_s3, prefect_api):
    s3 = own_s3  # a server of its own: the session's serves other test processes meanwhile
    config = write_config(tmp_path, GAUSSIANS, store_url=s3.store_url)
    store = Store(s3.store_url)
    process = start_cas(config, cas_env(tmp_path, prefect_api, s3), tmp_path)
    wait_for(lambda: any(store.exists(f"samples/{fp}/manifest.json") for fp in store.listdir("samples")),
             what="first committed sample set")
    s3.restart(pause=2.0)  # about 4 s without a store
    out = finish(process)
    assert "gauss-32" in out
    rows = summaries(store)
    assert [r["status"] for r in rows] == ["ok"] * 5
    for shard_set in committed_sets(store):
        assert sum(1 for _ in iter_shard_set(store, shard_set)) == shard_set.num_samples  # sha256 checked too


@pytest.mark.deployment
def test_sigkill_while_sharding_then_rerun(tmp_path, prefect_api):
    (tmp_path / "slow_gen.py").write_text(textwrap.dedent(SLOW_GENERATOR))
    models = [{"name": "slow", "generator": {"kind": "python", "entry_point": "slow_gen:make", "batch_size": 100}}]
    config = write_config(tmp_path, models, store={"url": str(tmp_path / "store"), "shard_size": 100})
    env = cas_env(tmp_path, prefect_api, PYTHONPATH=str(tmp_path))
    store = Store(str(tmp_path / "store"))
    process = start_cas(config, env, tmp_path)
    folder = wait_for(lambda: next((fp for fp in store.listdir("samples") if "shard-000002.tar" in store.listdir(f"samples/{fp}")), None),
                      what="third shard of the slow model")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert "manifest.json" not in store.listdir(f"samples/{folder}")  # shards without a manifest: not committed
    assert load_shard_set(store, f"samples/{folder}") is None
    assert store.listdir("results/summary") == []  # no result of the killed run

    finish(start_cas(config, env, tmp_path))
    shard_set = load_shard_set(store, f"samples/{folder}")
    assert shard_set is not None and len(shard_set.shards) == 15 and shard_set.num_samples == 1438
    assert sum(1 for _ in iter_shard_set(store, shard_set)) == 1438
    assert not [n for n in store.listdir(f"samples/{folder}") if ".tmp-" in n]
    rows = summaries(store)
    assert [(r["model"], r["status"]) for r in rows] == [("real", "ok"), ("slow", "ok")]


@pytest.mark.s3
@pytest.mark.deployment
def test_two_runs_at_once_on_one_s3_store(tmp_path, s3, prefect_api):
    two_runs_at_once(tmp_path, s3.store_url, cas_env(tmp_path, prefect_api, s3))


@pytest.mark.deployment
def test_two_runs_at_once_on_one_local_store(tmp_path, prefect_api):
    """Both write the same shards, classifiers and evaluations into one folder at the same moments:
    neither may take the other's temporary files for debris."""
    two_runs_at_once(tmp_path, str(tmp_path / "store"), cas_env(tmp_path, prefect_api))


def two_runs_at_once(tmp_path, store_url: str, env: dict) -> None:
    config = write_config(tmp_path, GAUSSIANS[:2], store_url=store_url, store={"url": store_url, "shard_size": 50})
    first, second = start_cas(config, env, tmp_path), start_cas(config, env, tmp_path)
    finish(first), finish(second)
    store = Store(store_url)
    rows = summaries(store)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], set()).add(round(row["cas_top1"], 10))
    assert all(len(values) == 1 for values in by_model.values())  # both runs agree
    sets = committed_sets(store)
    assert len(sets) == 2 and all(s is not None for s in sets)
    for shard_set in sets:
        assert sum(1 for _ in iter_shard_set(store, shard_set)) == shard_set.num_samples
    assert [f.location for f in verify.verify(store)] == []  # nothing half-written, no debris


@pytest.mark.s3
@pytest.mark.deployment
def test_secrets_stay_out_of_store_logs_and_artifacts(tmp_path, s3, prefect_api):
    secret = s3.secret_key
    config = write_config(tmp_path, GAUSSIANS[:1], store={
        "url": s3.store_url, "endpoint_url": s3.endpoint_url,
        "access_key_id": s3.access_key, "secret_access_key": secret})
    env = cas_env(tmp_path, prefect_api, s3)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key)  # the config alone carries them
    out = finish(start_cas(config, env, tmp_path))
    assert secret not in out
    store = Store(s3.store_url, s3={"key": s3.access_key, "secret": secret, "endpoint_url": s3.endpoint_url})
    for path in store.fs.find(store.root):
        assert secret.encode() not in store.fs.cat_file(path), path
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    (run,) = flow_runs(prefect_api["PREFECT_API_URL"], config=config)
    with prefect_client(prefect_api["PREFECT_API_URL"]) as client:  # this run's: other test processes share the server
        logs, page = [], True
        while page:  # every page of its logs
            page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), offset=len(logs))
            logs += page
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    assert logs and artifacts
    assert not [log.message for log in logs if secret in log.message]
    assert not [a.key for a in artifacts if secret in json.dumps(a.data, default=str)]
    assert secret not in json.dumps(run.parameters, default=str)


@pytest.mark.deployment
def test_fan_out_sends_no_credentials_and_cancels_the_children_it_gives_up_on(tmp_path, prefect_api):
    """No worker serves the pool: each model's flow run stays Scheduled until the parent gives up on it
    (its steps' time limit), and then it is Cancelled rather than left to start late. Its parameters
    never held the config's inline credentials."""
    secret = "fan-out-secret-0451"
    env = cas_env(tmp_path, prefect_api, CASFLOW_PROJECT_DIR=str(REPO), PREFECT_CLI_PROMPT="false")
    model_deployment, _ = deploy(env, tmp_path, "casflow-model")["casflow-model"]
    config = write_config(tmp_path, GAUSSIANS[:1], store={"url": str(tmp_path / "store"), "access_key_id": "AKIA0451",
                                                          "secret_access_key": secret}, limits={"step_seconds": 2})
    from casflow.flows import steps

    parsed = steps.read_config(str(config))
    steps.prepare_dataset(parsed, steps.open_store(parsed.store))  # the parent's own dataset step: a cache hit in time
    before = {r.id for r in flow_runs(prefect_api["PREFECT_API_URL"], model_deployment)}
    cas = subprocess.run([sys.executable, "-m", "casflow.flows.cli", "run", str(config), "--model-deployment",
                          model_deployment], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert cas.returncode == 1, cas.stdout[-3000:] + cas.stderr[-3000:]
    assert "credentials are not sent" in cas.stdout + cas.stderr and secret not in cas.stdout + cas.stderr
    children = [r for r in flow_runs(prefect_api["PREFECT_API_URL"], model_deployment) if r.id not in before]
    assert sorted(r.parameters["model_name"] for r in children) == ["gauss-4", "real"]
    assert {r.state.name for r in children} == {"Cancelled"}
    assert not [r.name for r in children if secret in json.dumps(r.parameters) or "AKIA0451" in json.dumps(r.parameters)]


@pytest.mark.s3
@pytest.mark.deployment
def test_nightly_deployment_end_to_end(tmp_path, s3, prefect_api):
    """prefect.yaml's deployments as `make deploy` makes them, and a worker running the nightly one twice: its
    default config (relative, found through the deployment's pull step) is configs/nightly.yaml of a project
    folder of the test's, the shipped one with the tests' tiny classifier options (three seeds and NAS kept)."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    nightly_config = yaml.safe_load((REPO / "configs" / "nightly.yaml").read_text())
    nightly_config["classifier"] |= {key: TINY_CLASSIFIER[key] for key in ("options", "device")}
    (project / "configs" / "nightly.yaml").write_text(yaml.safe_dump(nightly_config))
    env = cas_env(tmp_path, prefect_api, s3, CASFLOW_PROJECT_DIR=str(project), PREFECT_CLI_PROMPT="false",
                  PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1")
    prefect = prefect_command()

    def cli(*args, timeout=180):
        result = subprocess.run([prefect, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    nightly, pool = deploy(env, tmp_path, "nightly-cas", "casflow-model")["nightly-cas"]  # as `make deploy`: every deployment
    with prefect_client(prefect_api["PREFECT_API_URL"]) as client:  # prefect.yaml's nightly schedule, paused by deploy
        schedules = client.read_deployment_by_name(nightly).schedules
    assert [(s.schedule.cron, s.active) for s in schedules] == [("0 2 * * *", False)]
    worker = subprocess.Popen([prefect, "worker", "start", "--pool", pool, "--type", "process", "--limit", "2"],
                              env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        run = ["deployment", "run", nightly, "--param", f"store_url={s3.store_url}",
               "--watch", "--watch-interval", "1", "--watch-timeout", "540"]  # minutes on a busy 2-core machine
        cli(*run, timeout=600)
        store = Store(s3.store_url)
        first = summaries(store)
        assert {r["model"] for r in first} == {"real", "gaussian-pca32", "gaussian-pca32-t0.3"}
        assert {r["status"] for r in first} == {"ok"} and not any(r["cached"] for r in first)
        cli(*run, timeout=600)
        rows = summaries(store)
        second = [r for r in rows if r["run_id"] != first[0]["run_id"]]
        assert len(second) == 3 and all(r["cached"] for r in second)  # nothing recomputed
        assert [r["cas_top1"] for r in second] == [r["cas_top1"] for r in first]
    finally:
        stop_worker(worker)
    assert "casflow.steps" in (tmp_path / "worker.log").read_text()  # our progress lines reach the run logs


class ModelWorkers:
    """The casflow-model deployment under a name and on a work pool of the test's own (helpers.deploy), and
    `prefect worker` processes serving it one model at a time, as on GPU machines: start(name), then
    fan_out(config) runs `cas run --model-deployment` against them. Every worker is stopped at the end."""

    def __init__(self, tmp_path: Path, env: dict):
        self.tmp_path, self.env, self.workers = tmp_path, env, {}
        self.deployment, self.pool = deploy(env, tmp_path, "casflow-model")["casflow-model"]

    def start(self, name: str) -> None:
        self.workers[name] = subprocess.Popen(
            [prefect_command(), "worker", "start", "--pool", self.pool, "--type", "process", "--limit", "1"],
            env=self.env | {"CASFLOW_WORKER": name}, cwd=self.tmp_path, stdout=open(self.tmp_path / f"worker-{name}.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)

    def fan_out(self, config: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "casflow.flows.cli", "run", str(config), "--model-deployment",
                                 self.deployment], env=self.env, cwd=self.tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def lose_all(self) -> None:
        """Every worker's machine dies: SIGKILL to the workers and whatever flow runs they started."""
        for name in list(self.workers):
            for pid in _processes_with_env("CASFLOW_WORKER", name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            del self.workers[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for worker in self.workers.values():
            stop_worker(worker)


def fan_out_env(tmp_path: Path, prefect_api: dict, s3) -> dict:
    (tmp_path / "slow_gen.py").write_text(textwrap.dedent(SLOW_GENERATOR))
    return cas_env(tmp_path, prefect_api, s3, CASFLOW_PROJECT_DIR=str(REPO), PREFECT_CLI_PROMPT="false",
                   PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1", PYTHONPATH=str(tmp_path))


@pytest.fixture(scope="module")
def fanned_out(tmp_path_factory, s3_server, prefect_api):
    """Workers A and B serving the casflow-model deployment (separate processes, one model at a time each), and
    a config of two Gaussians fanned out to them against SeaweedFS: three chains with the baseline's. Yields the
    workers (still serving), the config and its store's rows and trainers as they were after that run."""
    import uuid

    folder = tmp_path_factory.mktemp("fan-out")
    store_url = f"s3://casflow/fan-out-{uuid.uuid4().hex[:8]}"
    env = fan_out_env(folder, prefect_api, s3_server)
    config = write_config(folder, GAUSSIANS[:2], store={"url": store_url, "shard_size": 100})
    credentials = s3_options(s3_server.endpoint_url, key=s3_server.access_key, secret=s3_server.secret_key)
    store = Store(store_url, s3=credentials)  # in this process, without the AWS_* environment that `s3` would set
    with ModelWorkers(folder, env) as workers:
        workers.start("A"), workers.start("B")
        finish(workers.fan_out(config))
        trained_by = {json.loads(store.read_bytes(f"classifiers/{fp}/train_log.json"))["worker"]
                      for fp in store.listdir("classifiers")}
        yield SimpleNamespace(workers=workers, config=config, store=store, rows=summaries(store), trained_by=trained_by,
                              env=env, folder=folder, credentials=credentials)


@pytest.mark.s3
@pytest.mark.deployment
def test_models_fan_out_to_two_workers_with_the_single_process_results(fanned_out):
    """Each model's chain as a flow run on the two workers: both work, and the results equal the single-process run's."""
    assert [r["status"] for r in fanned_out.rows] == ["ok"] * 3
    assert fanned_out.trained_by == {"A", "B"}  # both workers did work (and the parent trained nothing)

    single_url = f"{fanned_out.store.url}-single"
    single = write_config(fanned_out.folder, GAUSSIANS[:2], store={"url": single_url, "shard_size": 100}, name="single.yaml")
    finish(start_cas(single, fanned_out.env, fanned_out.folder))
    assert ({r["model"]: r["cas_top1"] for r in summaries(Store(single_url, s3=fanned_out.credentials))}
            == {r["model"]: r["cas_top1"] for r in fanned_out.rows})


@pytest.mark.s3
@pytest.mark.deployment
def test_a_lost_worker_loses_nothing_and_a_rerun_recomputes_only_its_model(fanned_out):
    """A fanned-out model and a slow one on the same store: the workers are killed in the middle of the slow one (their
    machines died), with the run waiting for them. A rerun on a new worker completes, recomputing only that model."""
    workers, store, folder = fanned_out.workers, fanned_out.store, fanned_out.folder
    slow = [{"name": "slow", "generator": {"kind": "python", "entry_point": "slow_gen:make", "batch_size": 100}}]
    grown = write_config(folder, GAUSSIANS[:1] + slow, store={"url": store.url, "shard_size": 100}, name="grown.yaml")

    def slow_in_progress() -> str | None:  # the one uncommitted sample set, three shards in
        for fp in store.listdir("samples"):
            names = store.listdir(f"samples/{fp}")
            if "shard-000002.tar" in names and "manifest.json" not in names:
                return f"samples/{fp}"
        return None

    parent = workers.fan_out(grown)
    slow_folder = wait_for(slow_in_progress, timeout=240, what="the slow model's third shard")  # after the cached chains
    workers.lose_all()
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    assert store.exists(f"{slow_folder}/shard-000000.tar") and not store.exists(f"{slow_folder}/manifest.json")

    workers.start("C")
    out = finish(workers.fan_out(grown))
    assert "slow" in out
    everything = summaries(store)
    rerun = [r for r in everything if r["run_id"] == max(x["run_id"] for x in everything) and r["model"] != "real"]
    # only the lost model recomputed
    assert {r["model"]: (r["status"], r["cached"]) for r in rerun} == {"gauss-4": ("ok", True), "slow": ("ok", False)}
    assert load_shard_set(store, slow_folder).num_samples == 1438


def _processes_with_env(key: str, value: str) -> list[int]:
    """PIDs of this user's processes whose environment has key=value: a worker and every flow run it started."""
    wanted, found = f"{key}={value}".encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found
