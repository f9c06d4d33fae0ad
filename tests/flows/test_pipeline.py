"""The Prefect flow itself, on the test session's Prefect server."""

import re
import textwrap

import duckdb
import pytest

from casflow.flows.pipeline import cas_evaluation
from casflow.tasks.classifiers import training
from helpers import TINY_CLASSIFIER

MODELS = [
    {"name": "gauss", "generator": {"kind": "gaussian", "components": 16}},
    {"name": "shuffled", "generator": {"kind": "real-shuffled"}},
]


pytestmark = pytest.mark.usefixtures("prefect_in_process")


def summary(store_dir, run_id):
    relation = duckdb.sql(f"SELECT * FROM read_parquet('{store_dir}/results/summary/**/*.parquet', hive_partitioning=true) "
                          f"WHERE run_id = '{run_id}'")
    rows = [dict(zip(relation.columns, values)) for values in relation.fetchall()]
    return {row["model"]: row for row in rows}


def artifact(store_dir, key: str, run_id: str | None = None):
    """The artifact `key` of the flow run behind a casflow run (the store's latest when None): by its flow run
    id, for other test processes publish theirs on the same server."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flow_run_ids = dict(duckdb.sql(f"SELECT DISTINCT run_id, flow_run_id FROM read_parquet("
                                   f"'{store_dir}/results/summary/**/*.parquet', hive_partitioning=true)").fetchall())
    flow_run_id = flow_run_ids[run_id or max(flow_run_ids)]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                                                     flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1, f"{len(found)} artifacts {key} of flow run {flow_run_id}"
    return found[0]


def test_flow_end_to_end_then_everything_cached(tiny_config, tmp_path, train_calls):
    path = tiny_config(MODELS)
    state = cas_evaluation(str(path), return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert first["models"] == {"real": "ok", "gauss": "ok", "shuffled": "ok"}
    rows = summary(tmp_path / "store", first["run_id"])
    assert set(rows) == {"real", "gauss", "shuffled"}
    assert rows["real"]["cas_ratio_top1"] == pytest.approx(1.0)
    assert rows["gauss"]["real_top1"] == rows["real"]["cas_top1"]
    assert not any(r["cached"] for r in rows.values())
    assert len(train_calls) == 3
    per_class = duckdb.sql(f"SELECT model, count(*) AS n, sum(n_eval) AS eval FROM read_parquet("
                           f"'{tmp_path}/store/results/per_class/**/*.parquet', hive_partitioning=true) GROUP BY model").fetchall()
    assert sorted(per_class) == [("gauss", 10, 359), ("real", 10, 359), ("shuffled", 10, 359)]

    second = cas_evaluation(str(path))
    rows = summary(tmp_path / "store", second["run_id"])
    assert all(r["cached"] and r["samples_cached"] and r["classifier_cached"] for r in rows.values())
    assert len(train_calls) == 3  # the rerun trained nothing
    assert second["run_id"] != first["run_id"]


def test_failing_model_is_isolated_and_the_run_fails(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "broken_gen.py").write_text(textwrap.dedent("""
        def make(checkpoint, device):
            class S:
                def sample(self, labels, seed):
                    raise RuntimeError("CUDA fell over")
            return S()
    """))
    (tmp_path / "exiting_gen.py").write_text(textwrap.dedent("""
        import sys

        def make(checkpoint, device):
            class S:
                def sample(self, labels, seed):
                    sys.exit("out of ideas")
            return S()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    models = MODELS[:1] + [{"name": "broken", "generator": {"kind": "python", "entry_point": "broken_gen:make"}},
                           {"name": "exits", "generator": {"kind": "python", "entry_point": "exiting_gen:make"}}]
    state = cas_evaluation(str(tiny_config(models)), return_state=True)
    assert state.is_failed()
    assert "2 of 4 models failed" in state.message and "broken" in state.message
    report = state.result(raise_on_failure=False)
    assert report["models"]["gauss"] == "ok"
    assert "model 'broken'" in report["models"]["broken"] and "RuntimeError: CUDA fell over" in report["models"]["broken"]
    assert "model 'exits'" in report["models"]["exits"] and "sys.exit('out of ideas')" in report["models"]["exits"]
    rows = summary(tmp_path / "store", report["run_id"])
    assert rows["broken"]["status"] == "failed" and "CUDA fell over" in rows["broken"]["error"]
    assert rows["exits"]["status"] == "failed" and "SystemExit" in rows["exits"]["error"]
    assert rows["gauss"]["status"] == "ok" and rows["gauss"]["cas_top1"] > 0.5
    assert len(list((tmp_path / "store" / "samples").iterdir())) == 1  # only gauss's samples were committed


def test_artifacts_are_published(tiny_config, tmp_path):
    report = cas_evaluation(str(tiny_config(MODELS[:1])))
    table, note = (artifact(tmp_path / "store", key, report["run_id"]) for key in ("cas-summary", "cas-worst-classes"))
    assert "gauss" in str(table.data)
    assert "per_class" in note.data and "## gauss" in note.data


def test_transient_store_error_is_retried_and_bad_input_is_not(tiny_config, tmp_path, monkeypatch):
    from casflow.storage.store import Store

    failures = []
    original = Store.write_bytes

    def flaky(self, relative, data):  # a fault a real store cannot produce on demand: one dropped connection
        if relative.startswith("samples/") and not failures:
            failures.append(relative)
            raise ConnectionResetError("connection reset by peer")
        return original(self, relative, data)

    monkeypatch.setattr(Store, "write_bytes", flaky)
    report = cas_evaluation(str(tiny_config(MODELS[:1])))
    assert failures and report["models"]["gauss"] == "ok"

    npz = tmp_path / "bad.npz"
    npz.write_bytes(b"PK\x03\x04 truncated")
    state = cas_evaluation(str(tiny_config([{"name": "bad", "generator": {"kind": "npz", "path": str(npz)}}])),
                           return_state=True)
    assert state.is_failed()
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    samples_run = next(r for r in runs if r.name == "samples-bad")
    assert samples_run.run_count == 1  # bad input: no retry


def test_two_nights_through_the_cas_command(tiny_config, tmp_path, capsys):
    """The nightly gate as a CI job runs it: exit 0 on the first night, 3 when a model got worse."""
    from casflow.flows.cli import main

    first = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 16}}], name="n1.yaml")
    assert main(["run", str(first), "--fail-on-regression"]) == 0
    worse = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 2}}], name="n2.yaml")
    assert main(["run", str(worse), "--fail-on-regression"]) == 3
    captured = capsys.readouterr()
    assert "vs last" in captured.out and "worse" in captured.out and "significantly worse: candidate" in captured.err
    reports = list((tmp_path / "store" / "reports").glob("*/index.html"))
    assert len(reports) == 2
    for report in reports:  # each night's report has the failure gallery of both models, 8 misses each
        gallery = report.read_text().split("<h2>Failure gallery: the most confident misses</h2>")[1]
        assert "<h3>real</h3>" in gallery and "<h3>candidate</h3>" in gallery
        assert gallery.count("<table class=gallery>") == 2 and gallery.count("</b>, taken for <b>") == 2 * 8
    changes, note = (artifact(tmp_path / "store", key) for key in ("cas-changes", "cas-worst-classes"))  # the second night's
    assert "worse" in str(changes.data)
    assert "report:" in note.data and "index.html" in note.data
    assert main(["run", str(worse)]) == 0  # without the flag a regression is reported, not an error


def test_the_gate_fails_closed_when_the_previous_run_cannot_be_read(tiny_config, tmp_path, capsys):
    """Issue 19 item 3: with the previous run's predictions deleted, a change for the worse went unjudged and
    `--fail-on-regression` exited 0. Now the verdict is `unknown`, shown, and the gate exits 4 unless allowed."""
    from casflow.flows.cli import main

    first = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 16}}], name="n1.yaml")
    assert main(["run", str(first)]) == 0
    for predictions in (tmp_path / "store").glob("evaluations/*/predictions.parquet"):
        predictions.unlink()  # night 1's: the only evaluations so far
    worse = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 2}}], name="n2.yaml")
    capsys.readouterr()
    assert main(["run", str(worse), "--fail-on-regression"]) == 4
    captured = capsys.readouterr()
    (line,) = [line for line in captured.out.splitlines() if line.startswith("candidate ") and " ok " in line]
    assert " unknown " in line  # "vs last" in the summary
    assert "unknown: not compared with run" in captured.out and "no per-image predictions stored" in captured.out
    assert "not judged (verdict unknown" in captured.err and "candidate" in captured.err
    assert main(["run", str(worse), "--fail-on-regression", "--allow-unknown"]) == 0  # the user's choice
    assert main(["run", str(worse)]) == 0  # without the gate, an unknown verdict is reported, not an error


def test_the_nightly_verify_rebuilds_a_corrupt_shard_before_the_evaluation(tiny_config, tmp_path):
    path = tiny_config(MODELS[:1])
    cas_evaluation(str(path))
    (shard,) = (tmp_path / "store").glob("samples/*/shard-000000.tar")
    good = shard.read_bytes()
    damaged = bytearray(good)
    damaged[-100] ^= 0xFF
    shard.write_bytes(bytes(damaged))  # corruption at rest: a fully cached run would never read it
    report = cas_evaluation(str(path), verify="full")
    rows = summary(tmp_path / "store", report["run_id"])
    assert rows["gauss"]["status"] == "ok" and not rows["gauss"]["samples_cached"]  # removed, then rebuilt
    assert shard.read_bytes() == good


def test_disk_full_fails_that_model_at_once_naming_the_file(tiny_config, small_disk):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # 9 MB: the digits shards (3.7 MB), then `gauss` (3.5 MB of samples and classifier) fit; `gauss8`'s
    # 2.9 MB shard does not, and the results (a few KB) do again
    disk = small_disk(9 * 2**20)
    models = MODELS[:1] + [{"name": "gauss8", "generator": {"kind": "gaussian", "components": 8}}]
    state = cas_evaluation(str(tiny_config(models, store={"url": str(disk / "store")})), return_state=True)
    assert state.is_failed()
    report = state.result(raise_on_failure=False)
    assert report["models"]["gauss"] == "ok" and report["models"]["real"] == "ok"
    error = report["models"]["gauss8"]
    assert error.startswith("model 'gauss8': ") and "No space left on device" in error, error
    assert f"{disk}/store/samples/" in error and "shard-000000.tar" in error, error  # names the file
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert next(r for r in runs if r.name == "samples-gauss8").run_count == 1  # a full disk is not retried
    rows = summary(disk / "store", report["run_id"])
    assert rows["gauss8"]["status"] == "failed" and rows["gauss"]["status"] == "ok"
    assert not [p for p in (disk / "store").rglob("*") if ".tmp-" in p.name]


def test_flow_on_a_store_that_never_answers_fails_fast_naming_it(tiny_config, monkeypatch):
    import time

    from helpers import Unanswering

    with Unanswering() as endpoints:
        for key, value in {"AWS_ENDPOINT_URL": endpoints.url("silent"), "AWS_ACCESS_KEY_ID": "key",
                           "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        state = cas_evaluation(str(tiny_config(MODELS[:1], store={"url": "s3://casflow/nightly"})), return_state=True)
        seconds = time.monotonic() - started
    assert state.is_failed()
    assert f"store s3://casflow/nightly at {endpoints.url('silent')} did not answer" in state.message, state.message
    assert seconds < 35, seconds


def test_scores_beside_cas_in_the_flow_their_opt_outs_and_a_failed_baseline(tiny_config, tmp_path, monkeypatch, caplog):
    report = cas_evaluation(str(tiny_config(MODELS[:1], scores={"augmentation": [0.5]})))
    rows = summary(tmp_path / "store", report["run_id"])
    gauss = rows["gauss"]
    assert gauss["gan_test_top1"] > 0.5 and gauss["fd"] > 0 and 0 < gauss["precision"] <= 1 and gauss["memorized_fraction"] < 0.05
    assert gauss["scores_classifier_fingerprint"] == rows["real"]["classifier_fingerprint"]
    assert list(gauss["nas_ratios"]) == [0.5] and len(gauss["nas_delta_top1"]) == 1 and rows["real"]["nas_ratios"] is None
    per_class = duckdb.sql(f"SELECT count(precision) FROM read_parquet('{tmp_path}/store/results/per_class/**/*.parquet', "
                           f"union_by_name=true) WHERE run_id = '{report['run_id']}' AND model = 'gauss'").fetchall()
    assert per_class == [(10,)]
    scores = artifact(tmp_path / "store", "cas-scores", report["run_id"])
    assert "gauss" in str(scores.data) and "GAN-test" in str(scores.data)

    off = {"gan_test": False, "features": False, "memorization": False, "augmentation": []}
    report = cas_evaluation(str(tiny_config(MODELS[:1], name="off.yaml", scores=off)))
    gauss = summary(tmp_path / "store", report["run_id"])["gauss"]
    assert gauss["gan_test_top1"] is None and gauss["fd"] is None and gauss["nas_ratios"] is None and gauss["cas_top1"] > 0.5


    original = training.train
    monkeypatch.setattr(training, "train", lambda recipe, data, **kw: (_ for _ in ()).throw(RuntimeError("GPU on fire"))
                        if getattr(data, "what", "") == "model real" else original(recipe, data, **kw))
    state = cas_evaluation(str(tiny_config(MODELS[:1], name="no-real.yaml", classifier=TINY_CLASSIFIER | {"seeds": [7]})),
                           return_state=True)
    report = state.result(raise_on_failure=False)
    rows = summary(tmp_path / "store", report["run_id"])
    assert rows["real"]["status"] == "failed" and rows["gauss"]["status"] == "ok" and rows["gauss"]["gan_test_top1"] is None
    assert len([r for r in caplog.records if "no scores beside CAS in this run" in r.getMessage()]) == 1


@pytest.mark.slow
def test_a_step_past_its_time_limit_fails_its_model_and_the_lane_goes_on(tiny_config, tmp_path, monkeypatch):
    """A sample() that never returns: its model fails naming the step and the limit, and the next model
    on the same device (one lane: the CPU) still runs and is written."""
    import time

    (tmp_path / "stuck_gen.py").write_text(textwrap.dedent("""
        import time

        def make(checkpoint, device):
            class S:
                def sample(self, labels, seed):
                    time.sleep(3600)
            return S()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    models = [{"name": "stuck", "generator": {"kind": "python", "entry_point": "stuck_gen:make"}}, MODELS[0]]
    started = time.monotonic()
    limit = 20  # the stuck step waits it out asleep; a healthy step here (about a second alone) stays under it
    # with other test processes or jobs on the two cores
    state = cas_evaluation(str(tiny_config(models, limits={"step_seconds": limit})), return_state=True)
    assert time.monotonic() - started < 300
    report = state.result(raise_on_failure=False)
    assert state.is_failed() and report["models"]["gauss"] == "ok" and report["models"]["real"] == "ok"
    error = report["models"]["stuck"]
    assert error.startswith("model 'stuck': ") and f"draw-samples did not finish within limits.step_seconds = {limit} s" in error
    rows = summary(tmp_path / "store", report["run_id"])
    assert rows["stuck"]["status"] == "failed" and rows["gauss"]["status"] == "ok"
    assert not list((tmp_path / "store" / "samples").glob("*/manifest.json"))[1:]  # only gauss's set is committed


def test_a_dataset_class_missing_from_eval_fails_cas_run_in_one_line(tiny_config, tmp_path, capfd, caplog):
    """An imagefolder class with train images and no eval folder: `cas run` says so in one line naming the
    class, with no traceback (Prefect's or ours), and exits 1 before any model runs."""
    from casflow.flows.cli import main
    from helpers import class_folders

    dataset = class_folders(tmp_path / "data", {"train": {"ant": 3, "bee": 3}, "eval": {"ant": 2}})
    assert main(["run", str(tiny_config(MODELS[:1], dataset=dataset))]) == 1
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output[-4000:]
    assert not [r.getMessage() for r in caplog.records if r.exc_info]  # Prefect's logs: no exception with its traceback
    named = [line for line in output.splitlines() if "'bee'" in line]
    assert named and all("class 'bee' has no images in the eval split" in line for line in named), output[-3000:]
    assert any(line.startswith("cas: ") for line in named), named
    assert not (tmp_path / "store" / "samples").exists()


@pytest.mark.slow
def test_a_racing_series_gives_more_seeds_only_to_its_contenders(tmp_path, train_calls, capsys):
    from casflow.flows.cli import main
    from helpers import NO_SCORES, checkpoint, write_config

    ckpts = tmp_path / "ckpts"
    checkpoint(ckpts, 100, broken_classes=6)  # six classes drawn as eights: far worse, out after one seed
    checkpoint(ckpts, 200, broken_classes=0)
    checkpoint(ckpts, 300, broken_classes=0, touched=1)  # as good as 200
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"},
              "series": {"selection": "race"}}
    path = write_config(tmp_path, [series], scores=NO_SCORES, classifier=TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 3}})
    report = cas_evaluation(str(path))
    rows = summary(tmp_path / "store", report["run_id"])
    seeds = {model: list(row["classifier_seeds"]) for model, row in rows.items()}
    assert seeds["real"] == [0] and seeds["ddpm@100"] == [0]
    assert seeds["ddpm@200"] == seeds["ddpm@300"] and seeds["ddpm@200"] in ([0, 1], [0, 1, 2])
    assert len(train_calls) == 1 + 1 + 2 * len(seeds["ddpm@200"])  # real, step 100 once, the contenders
    assert rows["ddpm@200"]["cas_top1_seed_std"] is not None  # the mean over its seeds

    best = duckdb.sql(f"SELECT step, seeds, selection, race_round, in_best_set FROM read_parquet("
                      f"'{tmp_path}/store/results/best/**/*.parquet', hive_partitioning=true) ORDER BY step").fetchall()
    assert best == [(100, 1, "race", 1, False), (200, len(seeds["ddpm@200"]), "race", None, True),
                    (300, len(seeds["ddpm@300"]), "race", None, True)]
    capsys.readouterr()
    assert main(["best", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    trainings = 1 + 2 * len(seeds["ddpm@200"])
    assert f"series ddpm: best set steps 200, 300 (race: {trainings} classifier trainings, against 9" in out
    assert "no (round 1)" in out

    again = cas_evaluation(str(path))  # every training of the race is found by content
    assert len(train_calls) == 1 + trainings
    assert {m: list(r["classifier_seeds"]) for m, r in summary(tmp_path / "store", again["run_id"]).items()} == seeds


def test_adaptive_seeds_train_only_where_the_comparison_is_not_settled(tiny_config, tmp_path, train_calls, capsys):
    from casflow.flows.cli import main

    adaptive = TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 3}}
    night = lambda n, generator, seed=0: tiny_config(  # noqa: E731
        [{"name": "candidate", "generator": generator, "seed": seed}], name=f"n{n}.yaml", classifier=adaptive)
    first = cas_evaluation(str(night(1, {"kind": "gaussian", "components": 16})))
    rows = summary(tmp_path / "store", first["run_id"])
    assert {m: (r["classifier_seeds_used"], r["seeds_stopped"]) for m, r in rows.items()} == {
        "real": (1, "no previous run"), "candidate": (1, "no previous run")}
    assert len(train_calls) == 2

    # a redraw against a night of one seed, with no spread measured yet: seeds until it is, up to max
    second = cas_evaluation(str(night(2, {"kind": "gaussian", "components": 16}, seed=1)))
    rows = summary(tmp_path / "store", second["run_id"])
    assert list(rows["candidate"]["classifier_seeds"]) == [0, 1, 2] and rows["candidate"]["seeds_stopped"] == "max seeds"
    assert rows["candidate"]["previous_run_id"] == first["run_id"] and rows["candidate"]["change"] in ("same", "better", "worse")
    assert rows["real"]["classifier_seeds_used"] == 1  # its samples never change: no previous run to judge against
    assert len(train_calls) == 2 + 3

    # a large change against that night's three seeds settles at the first seed; a rerun trains nothing
    regressed = night(3, {"kind": "gaussian", "components": 2})
    assert main(["run", str(regressed)]) == 0
    out = capsys.readouterr().out
    assert len(train_calls) == 2 + 3 + 1
    assert re.search(r"candidate .* worse +1 \(change settled\)", out), out
    assert main(["run", str(regressed)]) == 0
    assert len(train_calls) == 2 + 3 + 1
    latest = max((tmp_path / "store" / "reports").glob("*/index.html"), key=lambda p: p.stat().st_mtime)
    assert "1 (change settled)" in latest.read_text()


def test_later_rounds_go_to_the_model_deployment_like_the_first(tiny_config, tmp_path, monkeypatch):
    from casflow.flows import pipeline

    dispatched = []
    monkeypatch.setattr(pipeline, "_fan_out", lambda *a: ({}, {}))  # the first round computes here (no worker)
    monkeypatch.setattr(pipeline, "_fan_out_round", lambda *a: dispatched.append(a[-1]) or {
        "candidate": "model 'candidate': its flow run ended Crashed"})
    adaptive = TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 3}}
    path = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 16}}], classifier=adaptive)
    cas_evaluation(str(path))
    redraw = tiny_config([{"name": "candidate", "generator": {"kind": "gaussian", "components": 16}, "seed": 1}],
                         name="n2.yaml", classifier=adaptive)
    state = cas_evaluation(str(redraw), model_deployment="cas-model/gpu", return_state=True)
    assert dispatched == [[("candidate", 1)]]  # its second seed, sent to the deployment, not trained here
    assert state.is_failed() and "model 'candidate': its flow run ended Crashed" in state.message


@pytest.mark.slow
def test_cas_run_prints_the_path_of_every_results_table_it_wrote(tmp_path, capsys):
    """The results lines named summary, per_class and changes, and not the best table of a run with a series."""
    from casflow.flows.cli import main
    from helpers import NO_SCORES, checkpoint, write_config

    ckpts = tmp_path / "ckpts"
    checkpoint(ckpts, 100, broken_classes=6)
    checkpoint(ckpts, 200, broken_classes=0)
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"}, "series": {}}
    plain = {"name": "gauss", "generator": {"kind": "gaussian", "components": 16}}
    for name, models, tables in (("plain.yaml", [plain], ("summary", "per_class", "changes")),
                                 ("series.yaml", [series], ("summary", "per_class", "changes", "best"))):
        assert main(["run", str(write_config(tmp_path, models, name=name, scores=NO_SCORES))]) == 0
        out = capsys.readouterr().out
        block = out[out.index("\nresults: "):].splitlines()[1:]
        paths = [line.removeprefix("results: ").strip() for line in block if not line.startswith("report:")]
        assert [path.split("/results/")[1].split("/")[0] for path in paths] == list(tables), block
        run_id = re.search(r"^run (\S+)  dataset ", out, re.M).group(1)
        for path in paths:  # each a Parquet file of this run's rows (none in changes on the first night)
            assert f"/run={run_id}/" in path
            assert duckdb.sql(f"SELECT DISTINCT run_id FROM read_parquet('{path}')").fetchall() in ([(run_id,)], [])
        models = duckdb.sql(f"SELECT model FROM read_parquet('{paths[0]}') ORDER BY model").fetchall()
        assert models == ([("gauss",), ("real",)] if name == "plain.yaml" else [("ddpm@100",), ("ddpm@200",), ("real",)])
        if "best" in tables:
            steps = duckdb.sql(f"SELECT step, in_best_set FROM read_parquet('{paths[-1]}') ORDER BY step").fetchall()
            assert steps == [(100, False), (200, True)]


@pytest.mark.slow
def test_a_racing_checkpoint_with_unreadable_predictions_leaves_the_race_and_its_series_is_unknown(tmp_path, capsys):
    """The race read each round's predictions in the flow itself: a damaged stored one of a cached checkpoint
    failed the whole run, and no model's results were written."""
    from casflow.flows.cli import main
    from helpers import NO_SCORES, checkpoint, write_config

    ckpts = tmp_path / "ckpts"
    checkpoint(ckpts, 100, broken_classes=6)
    checkpoint(ckpts, 200, broken_classes=0)
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"},
              "series": {"selection": "race"}}
    path = write_config(tmp_path, [series], scores=NO_SCORES, classifier=TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 2}})
    first = cas_evaluation(str(path))
    (fp,) = summary(tmp_path / "store", first["run_id"])["ddpm@200"]["evaluation_fingerprints"]
    damaged = tmp_path / "store" / "evaluations" / fp / "predictions.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])

    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"^run (\S+)  dataset ", out, re.M).group(1)
    rows = summary(tmp_path / "store", run_id)
    assert {m: r["status"] for m, r in rows.items()} == {"real": "ok", "ddpm@100": "ok", "ddpm@200": "ok"}
    best = duckdb.sql(f"SELECT step, in_best_set, vs_best_so_far, reason FROM read_parquet('{tmp_path}/store/results/best/"
                      f"**/*.parquet', hive_partitioning=true, union_by_name=true) WHERE run_id = '{run_id}' ORDER BY step").fetchall()
    assert [(step, in_set, verdict) for step, in_set, verdict, _ in best] == [(100, None, None), (200, None, "unknown")]
    assert all("model 'ddpm@200' in run " in reason and str(damaged) in reason and "sha256" in reason
               for *_, reason in best)
    assert "series ddpm: best set unknown: model 'ddpm@200'" in out
