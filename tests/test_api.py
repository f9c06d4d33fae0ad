"""The Python API (api/, the package `casflow`): evaluate and results as a notebook uses them, and
submit_checkpoint as a training loop does, against a real Prefect server and worker."""

import os
import subprocess
import time

import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

import casflow
from casflow.tasks.config import ConfigError, parse_config
from helpers import REPO, deploy, prefect_client, prefect_command, stop_worker, wait_for, write_config

MODELS = [{"name": "gauss", "generator": {"kind": "gaussian", "components": 8}}]
NO_SCORES = {"gan_test": False, "features": False, "memorization": False, "augmentation": []}
PER_RUN = ["run_id", "run_time", "flow_run_id", "cached", "samples_cached", "classifier_cached", "evaluation_cached",
           "sample_seconds", "train_seconds", "eval_seconds", "previous_run_id", "change", "delta_top1", "change_p_value"]


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory, prefect_api):
    """A tiny config evaluated as a notebook would: from its file (on a temporary Prefect server of its own),
    then the same config as a dict, then with the Gaussian redrawn and a model whose file is missing (both
    on a running server, the test session's)."""
    folder = tmp_path_factory.mktemp("notebook")
    path = write_config(folder, MODELS, scores=NO_SCORES)
    first = casflow.evaluate(path)
    config = yaml.safe_load(path.read_text())
    with temporary_settings({PREFECT_API_URL: prefect_api["PREFECT_API_URL"]}):
        second = casflow.evaluate(config)
        config["models"][0]["seed"] = 1
        config["models"].append({"name": "broken", "generator": {"kind": "npz", "path": str(folder / "absent.npz")}})
        with pytest.warns(UserWarning, match="1 of 3 models failed: model 'broken'.*absent.npz"):
            redrawn = casflow.evaluate(config)
    return folder / "store", first, second, redrawn


@pytest.mark.slow
def test_evaluate_twice_the_second_all_cache_hits_with_equal_tables(evaluations):
    store, first, second, _ = evaluations
    assert first.run_id != second.run_id and first.store == second.store == str(store)
    assert list(first.summary["model"]) == ["real", "gauss"] and set(first.summary["status"]) == {"ok"}
    assert not first.summary["cached"].any() and second.summary["cached"].all()
    assert first.summary["cas_top1"].between(0.5, 1).all()
    pd.testing.assert_frame_equal(first.summary.drop(columns=PER_RUN), second.summary.drop(columns=PER_RUN))
    pd.testing.assert_frame_equal(first.per_class.drop(columns=["run_id", "run_time", "flow_run_id", "cached"]),
                                  second.per_class.drop(columns=["run_id", "run_time", "flow_run_id", "cached"]))
    assert len(first.per_class) == 2 * 10
    # a model is compared with its last run whose samples differ: none here, an empty table with its columns
    assert first.changes.empty and second.changes.empty
    assert list(second.changes.columns)[:3] == ["run_id", "run_time", "previous_run_id"]
    assert second.report.endswith(f"reports/{second.run_id}/index.html") and os.path.exists(second.report)
    assert second.best.empty and {"run_id", "model"} <= set(second.best.columns)
    assert repr(second) == f"Results(run_id={second.run_id!r}, store={str(store)!r}, models=['real', 'gauss'], report={second.report!r})"


@pytest.mark.slow
def test_a_redrawn_model_is_compared_with_its_previous_run_and_a_failed_one_is_a_row(evaluations):
    _, _, second, redrawn = evaluations
    assert list(redrawn.summary["cached"]) == [True, False, False]
    broken = redrawn.summary.set_index("model").loc["broken"]  # a failed model is a row, not an exception
    assert broken["status"] == "failed" and "absent.npz" in broken["error"]
    overall = redrawn.changes[redrawn.changes["class_index"].isna()]
    assert list(overall["model"]) == ["gauss"] and list(overall["previous_run_id"]) == [second.run_id]
    assert overall["direction"].iloc[0] in ("better", "worse", "same") and len(redrawn.changes) == 1 + 10
    assert redrawn.summary.set_index("model").loc["gauss", "change"] == overall["direction"].iloc[0]


@pytest.mark.slow
def test_results_reads_what_evaluate_returned(evaluations):
    store, first, _, redrawn = evaluations
    for returned, read in ((redrawn, casflow.results(store)), (first, casflow.results(str(store), run=first.run_id))):
        assert read.run_id == returned.run_id and read.report == returned.report
        for table in ("summary", "per_class", "changes", "best"):
            pd.testing.assert_frame_equal(getattr(read, table), getattr(returned, table))


@pytest.mark.slow
def test_an_unknown_run_names_the_nearest_runs(evaluations):
    store, first, *_ = evaluations
    typo = first.run_id[:-1] + ("0" if first.run_id[-1] != "0" else "1")
    with pytest.raises(casflow.UnknownRun, match=f"no run {typo} in {store}; nearest: {first.run_id}"):
        casflow.results(store, run=typo)


def test_a_store_without_runs_and_a_bad_config_are_clear_errors(tmp_path):
    with pytest.raises(casflow.NoResults, match=f"no results in {tmp_path / 'absent'}"):
        casflow.results(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"evaluate\(config\): models.0.generator.components"):
        casflow.evaluate({"models": [{"name": "g", "generator": {"kind": "gaussian", "components": "eight"}}]})
    with pytest.raises(ConfigError, match="no-such.yaml"):
        casflow.evaluate(tmp_path / "no-such.yaml")


def test_a_config_object_goes_to_the_flow_as_itself(tmp_path):
    """A Config written for the flow parses back to the same Config, its store credentials included."""
    from casflow.notebook import _yaml

    config = parse_config(write_config(tmp_path, MODELS, store={"url": "s3://b/p", "access_key_id": "AKIA1",
                                                                "secret_access_key": "s3cr3t"}).read_text())
    again = parse_config(_yaml(config))
    assert again == config and again.store.secret_access_key.get_secret_value() == "s3cr3t"


# ---------------------------------------------------------------- the hand-off from a training loop

def test_submit_checkpoint_without_a_server_a_file_or_the_model_says_so(tmp_path, monkeypatch):
    (tmp_path / "step-1.pt").write_bytes(b"weights")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # and PREFECT_SERVER_API_PORT refuses (conftest)
    with pytest.raises(casflow.HandOffError, match="no Prefect server answers at http://127.0.0.1:.*set PREFECT_API_URL"):
        casflow.submit_checkpoint(tmp_path / "step-1.pt", "mine")
    with pytest.raises(casflow.HandOffError, match="model 'mine' checkpoint .*step-2.pt: no such file"):
        casflow.submit_checkpoint(tmp_path / "step-2.pt", "mine")
    config = write_config(tmp_path, MODELS)
    with pytest.raises(ConfigError, match=r"checkpoint for model 'mine': no such model \(the config has gauss\)"):
        casflow.submit_checkpoint(tmp_path / "step-1.pt", "mine", config=config)  # before any server is asked
    with pytest.raises(ConfigError, match="checkpoint for model 'gauss': its generator is gaussian"):
        casflow.submit_checkpoint(tmp_path / "step-1.pt", "gauss", config=config)


def _class_means(path, shift: int) -> None:
    """examples/class_means.py's checkpoint fitted on digits, each class's mean moved to the class `shift`
    further on: shift 0 is a good model, any other draws every class as another one."""
    import torch

    from examples.class_means import fit_digits

    fitted = fit_digits()
    torch.save({key: value.roll(shift, dims=0) for key, value in fitted.items()}, path)


@pytest.mark.slow
@pytest.mark.deployment
def test_a_training_loop_hands_a_checkpoint_to_the_nightly_deployment_without_waiting(tmp_path, prefect_api):
    """The real nightly deployment (prefect.yaml) on a real server and process worker: submit_checkpoint
    returns before the run has started, and the run then evaluates the checkpoint it was handed, not the
    one in the config."""
    env = dict(os.environ, **prefect_api, CASFLOW_PROJECT_DIR=str(REPO), PREFECT_CLI_PROMPT="false",
               PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1",
               CASFLOW_CACHE_DIR=str(tmp_path / "cache"))
    nightly, pool = deploy(env, tmp_path, "nightly-cas")["nightly-cas"]  # under a name of its own (helpers.deploy)
    assert nightly.rsplit("-", 1)[0] == casflow.NIGHTLY  # submit_checkpoint's default is prefect.yaml's nightly deployment

    _class_means(tmp_path / "configured.pt", shift=1)
    _class_means(tmp_path / "step-900.pt", shift=0)
    trained = {"name": "trained", "generator": {"kind": "python", "entry_point": "examples.class_means:make_sampler",
                                                "checkpoint": str(tmp_path / "configured.pt"),
                                                "output_range": "-1..1", "layout": "NCHW"}}
    config = write_config(tmp_path, [trained], scores=NO_SCORES)
    worker = subprocess.Popen([prefect_command(), "worker", "start", "--pool", pool, "--type", "process"],
                              env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api["PREFECT_API_URL"]}):  # as a profile or the environment sets it
            started = time.monotonic()
            flow_run_id = casflow.submit_checkpoint(tmp_path / "step-900.pt", "trained", config=config, deployment=nightly)
            returned_after = time.monotonic() - started
        with prefect_client(prefect_api["PREFECT_API_URL"]) as client:
            at_return = client.read_flow_run(flow_run_id)
            assert not at_return.state.is_final()  # handed off: nothing of the run had to happen first
            assert at_return.parameters == {"config_path": str(config), "checkpoints": {"trained": str(tmp_path / "step-900.pt")},
                                            "verify": "full", "model_deployment": None}  # the last two: the deployment's own

            def finished():
                flow_run = client.read_flow_run(flow_run_id)
                return flow_run if flow_run.state.is_final() else None

            flow_run = wait_for(finished, timeout=540, what="end of the handed-off run")  # minutes on a busy 2-core machine
        assert flow_run.state.is_completed(), (tmp_path / "worker.log").read_text()[-4000:]
    finally:
        stop_worker(worker)
    assert returned_after < 10, returned_after
    handed = casflow.results(tmp_path / "store")
    row = handed.summary.set_index("model").loc["trained"]
    assert row["status"] == "ok" and row["flow_run_id"] == str(flow_run_id)
    assert row["cas_top1"] > 0.5  # the fitted checkpoint (0.79 here); the configured one draws every class as another
    print(f"submit_checkpoint returned in {returned_after:.2f} s; the run ended "
          f"{(flow_run.end_time - at_return.created).total_seconds():.1f} s"
          " after it was created")  # for the README's figures (pytest -rP shows it)
