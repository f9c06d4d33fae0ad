"""`cas plan`: cached against computing steps on a warm store, estimates from the store's history (within 2x
of what the steps then measure), defaults without history, the JSON shape, the comparison after a run."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import pytest

from casflow.flows import plan as planning
from casflow.flows import steps
from casflow.storage import artifacts
from casflow.tasks import throughput
from casflow.tasks.results import RunInfo
from helpers import TINY_CLASSIFIER, run_steps, write_config

MODELS = [
    {"name": "real", "generator": {"kind": "real"}},
    {"name": "gauss", "generator": {"kind": "gaussian", "components": 16}},
]
CHANGED = [MODELS[0], {"name": "gauss", "generator": {"kind": "gaussian", "components": 8}}]
EPOCHS = 2  # the tests' tiny recipe, shorter still: six trainings in this module
SECTIONS = {"scores": {"augmentation": [0.5]},  # one NAS classifier for gauss, scores on
            "classifier": TINY_CLASSIFIER | {"options": TINY_CLASSIFIER["options"] | {"epochs": EPOCHS}}}


def run_chains(config_path, run_id="run-1"):
    """Every step a run calls, in this process on the CPU, as the flow orders them (samples; a classifier
    and an evaluation per seed and per NAS ratio; scores), then the results: the history a plan reads."""
    config, store, dataset, chains = run_steps(config_path, every_classifier=True)
    real = chains[config.baseline.name].classifiers[0]
    scored = {name: steps.score_samples(config, store, chain.samples, real, dataset, "cpu") for name, chain in chains.items()}
    outcomes = [steps.outcome(m, chains[m.name], None, scored[m.name]) for m in config.all_models]
    recipe = config.classifier.resolved
    run = RunInfo(run_id, datetime.now(timezone.utc), None, dataset.name, dataset.fingerprint, dataset.class_names,
                  recipe.name, recipe.fingerprint, config.seed, config.classifier_seeds)
    steps.write_results(store, run, outcomes, config.baseline.name)
    return config, store, chains, scored


def plan_of(config_path):
    config = steps.read_config(str(config_path))
    return planning.make_plan(config, steps.open_store(config.store), str(config_path))


def by_label(plan, model):
    return {s.label: s for s in plan.steps if s.model == model}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A store after one run of MODELS (the first run measures what later plans estimate from)."""
    directory = tmp_path_factory.mktemp("warm")
    path = write_config(directory, MODELS, **SECTIONS)
    return directory, path, run_chains(path)


def test_a_warm_store_plans_nothing(warm):
    _, path, _ = warm
    plan = plan_of(path)
    assert plan.dataset_cached
    assert [s.label for s in plan.steps if s.model == "real"] == ["samples", "train seed 0", "evaluate seed 0", "scores"]
    assert [s.label for s in plan.steps if s.model == "gauss"] == [
        "samples", "train seed 0", "evaluate seed 0", "train NAS 0.5", "evaluate NAS 0.5", "scores"]
    assert all(s.status == "cached" and s.fingerprint for s in plan.steps)
    assert plan.computing() == [] and plan.total_seconds() == 0
    assert planning.one_line_total(plan) == "plan: all 2 models cached, nothing to compute"


def test_a_changed_generator_computes_its_model_only(warm):
    directory, _, _ = warm
    plan = plan_of(write_config(directory, CHANGED, name="changed.yaml", **SECTIONS))
    assert all(s.status == "cached" for s in plan.steps if s.model == "real")
    gauss = by_label(plan, "gauss")
    assert all(s.status == "compute" for s in gauss.values())
    assert gauss["samples"].fingerprint and gauss["samples"].after is None  # known before anything runs
    for label in ("train seed 0", "evaluate seed 0", "train NAS 0.5", "evaluate NAS 0.5", "scores"):
        assert gauss[label].fingerprint is None and gauss[label].after == "samples"
    assert all(s.rate_source.startswith("history") for s in gauss.values())
    assert gauss["train NAS 0.5"].units == pytest.approx(gauss["train seed 0"].units * 1.5)  # real + half as many samples
    line = planning.one_line_total(plan)
    assert line.startswith("plan: 1 of 2 models compute, ~") and " on cpu, " in line and line.endswith(" to write")


def test_changing_the_recipe_retrains_on_stored_samples(warm):
    directory, _, _ = warm
    other = SECTIONS | {"classifier": SECTIONS["classifier"] | {"options": SECTIONS["classifier"]["options"] | {"epochs": 3}}}
    plan = plan_of(write_config(directory, MODELS, name="recipe.yaml", **other))
    gauss = by_label(plan, "gauss")
    assert gauss["samples"].status == "cached"
    train = gauss["train seed 0"]
    assert train.status == "compute" and train.fingerprint and train.after is None  # known: its samples are stored
    assert gauss["evaluate seed 0"].after is None and gauss["evaluate seed 0"].fingerprint
    # same recipe name, shape and device, other hyperparameters: the history's images-seen rate still applies
    assert train.rate_source.startswith("history")


def test_estimates_within_2x_of_measured_on_the_second_run(warm, tmp_path):
    directory, _, _ = warm
    shutil.copytree(directory / "store", tmp_path / "store")
    path = write_config(tmp_path, CHANGED, **SECTIONS)
    plan = plan_of(path)
    _, _, chains, scored = run_chains(path, run_id="run-2")
    measured = planning.measured_seconds(plan, chains, scored)
    estimated = {(s.model, s.step, s.seed, s.ratio): s.seconds for s in plan.computing()}
    assert {key[0] for key in estimated} == {"gauss"}
    print("\n".join(planning.compare_with_plan(plan, chains, scored)))
    for key, seconds in estimated.items():
        if key[1] == "train":  # the steps that dominate; sub-second steps are timer noise on a shared CPU
            assert 0.5 <= measured[key] / seconds <= 2.0, (key, seconds, measured[key])
    total_estimated, total_measured = sum(estimated.values()), sum(measured[key] for key in estimated)
    assert 0.5 <= total_measured / total_estimated <= 2.0, (total_estimated, total_measured)
    lines = planning.compare_with_plan(plan, chains, scored)
    assert len(lines) == len(estimated) and all(" measured " in line for line in lines)


def test_markers_record_what_plans_estimate_from(warm):
    _, _, (config, store, chains, scored) = warm
    log = artifacts.read_train_log(store, chains["gauss"].classifiers[0].fingerprint)
    assert log["recipe"] == "fast" and log["image_shape"] == [8, 8, 1] and log["device"] == "cpu"
    assert log["images_seen"] == round(chains["gauss"].samples.shard_set.num_samples * EPOCHS)
    metrics = artifacts.read_evaluation(store, chains["gauss"].evaluations[0].fingerprint)
    assert metrics["num_images"] == 359 and metrics["seconds"] > 0 and metrics["recipe"] == "fast"
    stored_scores = artifacts.read_scores(store, scored["gauss"].fingerprint)
    assert stored_scores["num_samples"] == 1438 and stored_scores["seconds"] == scored["gauss"].seconds > 0
    history, weights, predictions = planning.read_history(store)
    assert sorted({m.step for m in history}) == ["evaluate", "samples", "scores", "train"]
    assert len([m for m in history if m.step == "train"]) == 3  # real, gauss, gauss NAS
    assert weights and predictions


def test_defaults_without_history(tmp_path):
    path = write_config(tmp_path, MODELS, **SECTIONS)
    config = steps.read_config(str(path))
    store = steps.open_store(config.store)
    before = planning.make_plan(config, store, str(path))  # nothing on the store, not even the dataset
    assert not before.dataset_cached and all(s.status == "compute" for s in before.steps)
    assert all(s.after == "dataset" for s in before.steps if s.step != "samples" or s.model != "real")
    assert before.total_seconds() is None and "unknown" in planning.one_line_total(before)
    steps.prepare_dataset(config, store)
    plan = planning.make_plan(config, store, str(path))
    gauss = by_label(plan, "gauss")
    assert all(s.status == "compute" for s in plan.steps if s.step != "samples" or s.model != "real")
    train = gauss["train seed 0"]
    assert train.units == 1438 * EPOCHS and train.rate_source.startswith("default")
    assert train.seconds == pytest.approx(train.units / throughput.TRAIN[("fast", "cpu")].rate)
    assert gauss["evaluate seed 0"].seconds == pytest.approx(359 / throughput.EVALUATE[("fast", "cpu")].rate)
    assert gauss["samples"].seconds == pytest.approx(1438 / throughput.SAMPLES["gaussian"].rate)
    assert gauss["samples"].bytes > 1438 * 1024 and train.bytes > 10_000  # tar blocks per sample; weights from the net
    assert plan.total_seconds() > 0 and plan.total_bytes() > 0


def test_defaults_scale_with_pixels():
    small = throughput.default_rate("train", "fast", "cpu", (8, 8, 1))
    large = throughput.default_rate("train", "fast", "cpu", (32, 32, 3))
    assert small.per_second == pytest.approx(16 * large.per_second)
    assert throughput.default_rate("train", "fast", "NVIDIA H200", (32, 32, 3)).source.startswith("default (airbench")


def test_history_prefers_the_same_variant():
    shape = (8, 8, 1)
    history = [throughput.Measurement("train", "fast", "a", "cpu", shape, 1000, 1.0),
               throughput.Measurement("train", "fast", "b", "cpu", shape, 1000, 4.0),
               throughput.Measurement("train", "fast", "a", "NVIDIA H200", shape, 1000, 0.01)]
    assert throughput.rate(history, "train", "fast", "a", "cpu", shape).per_second == 1000
    assert throughput.rate(history, "train", "fast", "c", "cpu", shape).per_second == pytest.approx(625)  # median of both
    assert throughput.rate(history, "train", "fast", "a", "cpu", (32, 32, 3)).source.startswith("default")


def test_json_shape(warm, capsys):
    directory, _, _ = warm
    path = write_config(directory, CHANGED, name="changed-json.yaml", **SECTIONS)
    assert planning.plan_command(str(path), None, as_json=True) == 0
    shape = json.loads(capsys.readouterr().out)
    assert set(shape) == {"version", "config", "store", "dataset", "recipe", "models", "total"}
    assert shape["version"] == 1 and shape["dataset"]["status"] == "cached"
    assert set(shape["total"]) == {"models", "models_computing", "steps", "steps_computing", "seconds", "device_hours",
                                   "wall_seconds", "bytes", "devices"}
    assert shape["total"]["models_computing"] == 1 and shape["total"]["devices"] == ["cpu"]
    gauss = next(m for m in shape["models"] if m["name"] == "gauss")
    assert set(gauss) == {"name", "lane", "computes", "steps"} and gauss["computes"]
    assert set(gauss["steps"][0]) == {"step", "seed", "ratio", "status", "fingerprint", "after", "device", "units",
                                      "seconds", "rate_source", "bytes"}
    assert [s["step"] for s in gauss["steps"]] == ["samples", "train", "evaluate", "train", "evaluate", "scores"]
    assert planning.plan_command(str(path), None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "compute after samples" in text and "device-hours" in text and text.rstrip().splitlines()[-1].startswith("plan: ")


def test_bad_config_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [}")
    assert planning.plan_command(str(path), None, as_json=False) == 2
    assert "bad.yaml" in capsys.readouterr().err
