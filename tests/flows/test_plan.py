"""`cas plan`: cached against computing steps on a warm store, estimates from the store's history (within 2x
of what the steps then measure), defaults without history, the JSON shape, the comparison after a run; planning
ahead with assumed dataset sizes and GPUs (--assume-dataset, --gpus), configs/imagenet64.yaml among them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from casflow.flows import plan as planning
from casflow.flows import steps
from casflow.storage import artifacts
from casflow.tasks import throughput
from casflow.tasks.results import RunInfo
from helpers import REPO, TINY_CLASSIFIER, run_steps, write_config

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


@pytest.mark.timing
def test_estimates_within_2x_of_measured_on_the_second_run(tmp_path):
    # both runs back to back here, not the module's warm store: on a shared CPU the load, and with it every
    # step's time, drifts between a fixture's run and a later test's (CI saw 2.4x that way)
    run_chains(write_config(tmp_path, MODELS, name="first.yaml", **SECTIONS))
    path = write_config(tmp_path, CHANGED, **SECTIONS)
    plan = plan_of(path)
    _, _, chains, scored = run_chains(path, run_id="run-2")
    measured = planning.measured_seconds(plan, chains, scored)
    estimated = {(s.model, s.step, s.seed, s.ratio): s.seconds for s in plan.computing()}
    assert {key[0] for key in estimated} == {"gauss"}
    print("\n".join(planning.compare_with_plan(plan, chains, scored)))
    for key, seconds in estimated.items():
        if key[1] == "train":  # the steps that dominate; the others take milliseconds here
            # a step of under a second is mostly fixed start-up cost, which the first run paid and this one
            # partly skips: 3x there, the promised 2x for the night's total
            bound = 2.0 if seconds >= 1.0 else 3.0
            assert 1 / bound <= measured[key] / seconds <= bound, (key, seconds, measured[key])
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


def test_the_default_prediction_bytes_are_those_of_stored_predictions(warm):
    """The default stayed at 13 bytes per eval image after p_top1 joined the predictions: tied here to the objects
    the evaluations wrote (every column, as stored), so a new column or codec shows."""
    from pathlib import Path

    _, _, (config, store, chains, _) = warm
    evaluations = [e for chain in chains.values() for e in chain.evaluations + chain.augmented_evaluations]
    per_image = [Path(artifacts.predictions_uri(store, e.fingerprint)).stat().st_size / 359 for e in evaluations]
    assert len(per_image) == 3  # real, gauss, gauss NAS
    assert artifacts.read_predictions(store, evaluations[0].fingerprint).column_names == artifacts.PREDICTIONS_SCHEMA.names
    for measured in per_image:
        assert measured == pytest.approx(throughput.PREDICTION_BYTES_PER_IMAGE, rel=0.1), per_image


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
    assert throughput.default_rate("train", "fast", "NVIDIA H200", (32, 32, 3)).source.startswith("default (benchmarks/cifar10_gpu.py")


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
    assert set(shape) == {"version", "config", "store", "dataset", "recipe", "models", "total", "assumed", "races",
                          "further_seeds"}
    assert shape["assumed"] == {"dataset": None, "sample_bytes": None, "gpus": None, "notes": []}  # all from the store
    assert shape["version"] == 1 and shape["dataset"]["status"] == "cached"
    assert set(shape["total"]) == {"models", "models_computing", "steps", "steps_computing", "seconds", "device_hours",
                                   "wall_seconds", "bytes", "devices", "seconds_expected"}
    assert shape["races"] == {} and shape["total"]["seconds_expected"] == shape["total"]["seconds"]
    assert shape["total"]["models_computing"] == 1 and shape["total"]["devices"] == ["cpu"]
    gauss = next(m for m in shape["models"] if m["name"] == "gauss")
    assert set(gauss) == {"name", "lane", "computes", "steps"} and gauss["computes"]
    assert set(gauss["steps"][0]) == {"step", "seed", "ratio", "status", "fingerprint", "after", "device", "units",
                                      "seconds", "rate_source", "bytes", "assumed", "further"}
    assert [s["step"] for s in gauss["steps"]] == ["samples", "train", "evaluate", "train", "evaluate", "scores"]
    assert planning.plan_command(str(path), None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "compute after samples" in text and "device-hours" in text and text.rstrip().splitlines()[-1].startswith("plan: ")


def test_bad_config_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [}")
    assert planning.plan_command(str(path), None, as_json=False) == 2
    assert "bad.yaml" in capsys.readouterr().err


# ---------------------------------------------------------------- planning ahead: assumed sizes, assumed GPUs

AHEAD_MODELS = [MODELS[0]] + [{"name": f"ckpt-{i}", "generator": {"kind": "npz", "path": f"absent/ckpt-{i}.npz"}}
                              for i in range(3)]
ABSENT_DATASET = {"kind": "imagefolder", "name": "imagenet-like", "train": "absent/train", "eval": "absent/val"}
ASSUMED = "train=1000,eval=200,classes=10,size=32x32x3"


def plan_ahead(tmp_path, assume=ASSUMED, gpus=1):
    path = write_config(tmp_path, AHEAD_MODELS, dataset=ABSENT_DATASET, **SECTIONS)
    config = steps.read_config(str(path))
    assumption = None if assume is None else planning.DatasetAssumption.parse(assume)
    return planning.make_plan(config, steps.open_store(config.store), str(path), assume_dataset=assumption, gpus=gpus)


def test_assumed_sizes_give_estimates_from_the_documented_rates(tmp_path):
    plan = plan_ahead(tmp_path)  # neither the dataset's files nor its shards exist
    assert not plan.dataset_cached and plan.dataset_fingerprint is None
    ckpt = by_label(plan, "ckpt-0")
    assert all(s.status == "compute" and s.after == "dataset" and s.assumed for s in ckpt.values())
    gpu_rate = lambda table: table[("fast", "gpu")].rate  # noqa: E731 - measured at 32x32, the assumed size
    assert ckpt["train seed 0"].units == 1000 * EPOCHS
    assert ckpt["train seed 0"].seconds == pytest.approx(1000 * EPOCHS / gpu_rate(throughput.TRAIN))
    assert ckpt["train NAS 0.5"].seconds == pytest.approx(1.5 * 1000 * EPOCHS / gpu_rate(throughput.TRAIN))
    assert ckpt["evaluate seed 0"].seconds == pytest.approx(200 / gpu_rate(throughput.EVALUATE))
    assert ckpt["scores"].seconds == pytest.approx(1000 / gpu_rate(throughput.SCORES))
    assert ckpt["samples"].seconds == pytest.approx(1000 / throughput.SAMPLES["*"].rate)
    assert ckpt["samples"].bytes == 1000 * throughput.shard_bytes_per_sample((32, 32, 3)) + 1000
    assert throughput.shard_bytes_per_sample((64, 64, 3)) == 10_516  # docs/imagenet.md: 8,700 PNG + 1.8 kB of tar
    dataset_step = by_label(plan, "real")["samples"]  # the real baseline's samples: both splits sharded
    assert dataset_step.units == 1200 and dataset_step.seconds == pytest.approx(1200 / throughput.SAMPLES["*"].rate)
    assert ckpt["train seed 0"].device == planning.ASSUMED_GPU and ckpt["train seed 0"].rate_source.startswith("default")

    doubled = by_label(plan_ahead(tmp_path, "train=2000,eval=400,classes=10,size=32x32x3"), "ckpt-0")
    larger = by_label(plan_ahead(tmp_path, "train=1000,eval=200,classes=10,size=64x64x3"), "ckpt-0")
    for label in ("train seed 0", "train NAS 0.5", "evaluate seed 0", "scores"):
        assert doubled[label].seconds == pytest.approx(2 * ckpt[label].seconds)
        assert larger[label].seconds == pytest.approx(4 * ckpt[label].seconds)  # default rates scale by pixels
    assert doubled["samples"].bytes - 1000 == 2 * (ckpt["samples"].bytes - 1000)


def test_lanes_scale_with_gpus(tmp_path):
    one, two, four = (plan_ahead(tmp_path, gpus=n) for n in (1, 2, 4))
    assert set(one.lanes.values()) == {"cuda:0"} and one.wall_seconds() == pytest.approx(one.total_seconds())
    assert sorted(set(four.lanes.values())) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert one.total_seconds() == pytest.approx(two.total_seconds()) == pytest.approx(four.total_seconds())
    per_model = {m: sum(s.seconds for s in four.steps if s.model == m) for m in four.models}
    assert four.wall_seconds() == pytest.approx(max(per_model.values()))  # one model per GPU
    assert two.wall_seconds() == pytest.approx(max(per_model["real"] + per_model["ckpt-1"],
                                                   per_model["ckpt-0"] + per_model["ckpt-2"]))  # round-robin
    assert four.wall_seconds() < two.wall_seconds() < one.wall_seconds()


def test_json_marks_assumptions(tmp_path, capsys):
    path = write_config(tmp_path, AHEAD_MODELS, dataset=ABSENT_DATASET, **SECTIONS)
    assert planning.plan_command(str(path), None, as_json=True, assume_dataset=ASSUMED, gpus=2) == 0
    shape = json.loads(capsys.readouterr().out)
    assert shape["version"] == 1 and shape["dataset"]["fingerprint"] is None
    assert shape["assumed"]["dataset"] == {"train": 1000, "eval": 200, "classes": 10, "size": [32, 32, 3]}
    assert shape["assumed"]["gpus"] == 2 and shape["assumed"]["sample_bytes"] == throughput.shard_bytes_per_sample((32, 32, 3))
    assert len(shape["assumed"]["notes"]) == 3 and shape["total"]["devices"] == ["cuda:0", "cuda:1"]
    computing = [s for m in shape["models"] for s in m["steps"] if s["status"] == "compute"]
    assert computing and all(s["assumed"] and s["seconds"] is not None and s["bytes"] is not None for s in computing)
    assert shape["total"]["seconds"] > 0 and shape["total"]["bytes"] > 0
    assert planning.plan_command(str(path), None, as_json=False, assume_dataset=ASSUMED, gpus=2) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].startswith("assumed: dataset sizes (--assume-dataset): train 1,000, eval 200, 10 classes, 32x32x3")
    assert "time unknown" not in text[-1] and " on cuda:0, cuda:1, " in text[-1]


def test_a_sharded_dataset_beats_the_assumption(warm):
    _, path, _ = warm
    config = steps.read_config(str(path))
    plan = planning.make_plan(config, steps.open_store(config.store), str(path),
                              assume_dataset=planning.DatasetAssumption.parse(ASSUMED))
    assert plan.dataset_cached and plan.dataset_assumed is None and plan.assumptions() == []
    assert all(s.status == "cached" and not s.assumed for s in plan.steps)


@pytest.mark.parametrize(("value", "problem"), [
    ("train=1000,eval=200,classes=10", "missing size"),
    ("train=1k,eval=200,classes=10,size=32x32x3", "train must be a positive whole number, got '1k'"),
    ("train=1000,eval=200,classes=10,size=32x32", "size must be height x width x channels, got '32x32'"),
    ("train=1000,eval=200,classes=10,size=32x32x4", "size's channels must be 1 or 3, got 4"),
    ("train=1000,eval=5,classes=10,size=32x32x3", "10 classes need at least as many"),
    ("train=1000,test=200,classes=10,size=32x32x3", "'test=200' is not one of"),
])
def test_a_bad_assumption_exits_2_naming_it(tmp_path, capsys, value, problem):
    from casflow.flows import cli

    path = write_config(tmp_path, AHEAD_MODELS, dataset=ABSENT_DATASET, **SECTIONS)
    assert cli.main(["plan", str(path), "--assume-dataset", value]) == 2
    err = capsys.readouterr().err
    assert f"--assume-dataset '{value}': {problem}" in err and "expected train=N,eval=N,classes=N,size=HxWxC" in err


def test_an_absent_dataset_without_assumption_exits_2_naming_it(tmp_path, capsys):
    from casflow.flows import cli

    path = write_config(tmp_path, AHEAD_MODELS, dataset=ABSENT_DATASET, **SECTIONS)
    assert cli.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "dataset imagenet-like" in err and "absent/train" in err and "--assume-dataset" in err
    assert cli.main(["plan", str(path), "--assume-dataset", ASSUMED, "--gpus", "0"]) == 2
    assert "--gpus 0" in capsys.readouterr().err


def test_the_imagenet_config_plans_a_night_without_imagenet(tmp_path, capsys):
    """configs/imagenet64.yaml, as docs/imagenet.md plans it: ten models and the baseline, scores, NAS and
    seeds at their defaults, on eight assumed GPUs."""
    config = REPO / "configs" / "imagenet64.yaml"
    assume = "train=1281167,eval=50000,classes=1000,size=64x64x3"
    assert planning.plan_command(str(config), str(tmp_path / "store"), True, assume, gpus=8) == 0
    shape = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in shape["models"]][:2] == ["real", "adm64-0050k"] and len(shape["models"]) == 11
    assert [(s["step"], s["seed"], s["ratio"]) for s in shape["models"][1]["steps"]] == [
        ("samples", None, None), ("train", 0, None), ("evaluate", 0, None), ("train", 0, 0.5), ("evaluate", 0, 0.5),
        ("scores", None, None)]
    assert shape["total"]["devices"] == [f"cuda:{i}" for i in range(8)]
    assert shape["total"]["wall_seconds"] < shape["total"]["seconds"] / 4  # 11 models over 8 lanes
    # the doc's totals table quotes this plan: when the default rates change, docs/imagenet_budget.py reprints it
    doc = (REPO / "docs" / "imagenet.md").read_text()
    defaults_row = next(line for line in doc.splitlines() if line.startswith("| defaults (`configs/imagenet64.yaml`)"))
    eight_gpus = defaults_row.split("|")[5].strip().strip("*")
    assert eight_gpus == f"{shape['total']['wall_seconds'] / 3600:.2f}", (
        f"docs/imagenet.md quotes {eight_gpus} h on 8 GPUs; run docs/imagenet_budget.py and paste its table")


def test_a_race_is_planned_at_its_worst_case_with_the_measured_share_beside_it(tmp_path, capsys):
    """A racing series was planned at one seed per checkpoint: a third of what a race may train with up to 3 seeds."""
    from types import SimpleNamespace

    from casflow.flows.records import ModelChain
    from helpers import checkpoint

    for step, broken in ((100, 6), (200, 0), (300, 0)):
        checkpoint(tmp_path / "ckpts", step, broken_classes=broken)
    pattern = f"{tmp_path}/ckpts/samples-{{step}}.npz"
    no_scores = {"augmentation": [], "gan_test": False, "features": False, "memorization": False}
    paths = {selection: write_config(tmp_path, [{"name": "ddpm", "generator": {"kind": "npz", "path": pattern},
                                                 "series": series}], name=f"{selection}.yaml", scores=no_scores,
                                     classifier=classifier)
             for selection, series, classifier in (("all", {}, TINY_CLASSIFIER),
                                                   ("race", {"selection": "race"}, TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 3}}))}
    steps.prepare_dataset(steps.read_config(str(paths["all"])), steps.open_store(steps.read_config(str(paths["all"])).store))
    every, raced = plan_of(paths["all"]), plan_of(paths["race"])

    trains = lambda plan: [(s.model, s.seed, s.further == "race") for s in plan.computing() if s.step == "train"]  # noqa: E731
    assert trains(every) == [("real", 0, False), ("ddpm@100", 0, False), ("ddpm@200", 0, False), ("ddpm@300", 0, False)]
    assert trains(raced) == [("real", 0, False)] + [(f"ddpm@{step}", seed, seed > 0) for step in (100, 200, 300)
                                                    for seed in range(3)]
    further = [s for s in raced.computing() if s.further]
    assert len(further) == 2 * 2 * 3  # a training and an evaluation, seeds 1 and 2, three checkpoints
    assert raced.total_seconds() == pytest.approx(every.total_seconds() + sum(s.seconds for s in further))
    share = throughput.RACE_FURTHER_SEEDS_SHARE
    assert share == pytest.approx(10.2 / 32)  # benchmarks/results/race-2026-12-04.md: 18.2 of 40, 8 checkpoints
    assert raced.expected_seconds() == pytest.approx(raced.total_seconds() - (1 - share) * sum(s.seconds for s in further))
    assert every.expected_seconds() == every.total_seconds() and not every.further_computing()

    assert planning.plan_command(str(paths["race"]), None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "assumed: series ddpm races (up to 3 seeds, classifier.seeds' max; 3 checkpoints): counted at its worst " \
           "case, every checkpoint " \
           "with 3 seeds; 6 of its trainings to compute are further seeds that only contenders get. Expected: 32%" in text
    assert "train seed 2" in text and "compute after samples if a contender" in text
    assert "further seeds: those totals are their worst case; with 32% of a race's (as in " \
           "benchmarks/results/race-2026-12-04.md) further seeds" in text
    assert "(further seeds at their worst case; expected ~" in planning.one_line_total(raced)
    assert planning.plan_command(str(paths["race"]), None, as_json=True) == 0
    shape = json.loads(capsys.readouterr().out)
    assert shape["races"] == {"ddpm": {"max_seeds": 3, "checkpoints": 3, "further_seeds_share": share,
                                       "source": throughput.RACE_SOURCE}}
    assert shape["total"]["seconds_expected"] < shape["total"]["seconds"]
    assert [st["further"] for m in shape["models"] if m["name"] == "ddpm@100" for st in m["steps"]] == [
        None, None, None, "race", "race", "race", "race"]  # samples, then seeds 0, 1, 2 (train, evaluate)

    # after the run: a checkpoint dropped after its first seed has no second or third
    record = SimpleNamespace(cached=False, train_seconds=1.0, seconds=1.0)
    chains = {"ddpm@100": ModelChain(record, ((record, record),))}
    lines = [line for line in planning.compare_with_plan(raced, chains, {}) if line.startswith("model ddpm@100")]
    assert len(lines) == 7 and all("measured 1.0 s" in line for line in lines[:3]) and "train seed 0" in lines[1]
    assert all(line.endswith("not run (its checkpoint left the race first, or failed)") for line in lines[3:])


def test_adaptive_seeds_are_planned_at_max_with_the_measured_share_beside_it(tiny_config, capsys):
    """classifier.seeds {min 1, max 3}: every model but the real baseline (never judged, so it stops at min) is
    planned with three seeds, seeds 1 and 2 only if its comparison is not settled; the expected figure counts
    those at the share benchmarks/results/adaptive_seeds-2026-12-05.md measured."""
    from types import SimpleNamespace

    from casflow.flows.records import ModelChain

    models = [{"name": "g", "generator": {"kind": "gaussian", "components": 4}}]
    fixed = tiny_config(models, name="fixed.yaml")
    adaptive = tiny_config(models, name="adaptive.yaml", classifier=TINY_CLASSIFIER | {"seeds": {"min": 1, "max": 3}})
    steps.prepare_dataset(steps.read_config(str(fixed)), steps.open_store(steps.read_config(str(fixed)).store))
    one, ranged = plan_of(fixed), plan_of(adaptive)
    trains = [(s.model, s.seed, s.further) for s in ranged.computing() if s.step == "train"]
    assert trains == [("real", 0, None), ("g", 0, None), ("g", 1, "seeds"), ("g", 2, "seeds")]
    further = [s for s in ranged.computing() if s.further]
    assert ranged.total_seconds() == pytest.approx(one.total_seconds() + sum(s.seconds for s in further))
    share = throughput.SEEDS_FURTHER_SHARE
    assert share == pytest.approx(0.75 / 4)  # 1.75 seeds per night of at most 5
    assert ranged.expected_seconds() == pytest.approx(ranged.total_seconds() - (1 - share) * sum(s.seconds for s in further))

    assert planning.plan_command(str(adaptive), None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "train seed 2" in text and "compute after samples if not settled" in text
    assert "classifier.seeds is a range: counted at its worst case" in text
    assert "with 19% of adaptive seeds' (as in benchmarks/results/adaptive_seeds-2026-12-05.md) further seeds" in text
    record = SimpleNamespace(cached=False, train_seconds=1.0, seconds=1.0)
    lines = [line for line in planning.compare_with_plan(ranged, {"g": ModelChain(record, ((record, record),))}, {})
             if line.startswith(("model g: train seed", "model g: evaluate seed"))]
    assert len(lines) == 6 and all("measured 1.0 s" in line for line in lines[:2])
    assert all(line.endswith("not run (its comparison was settled first, or failed)") for line in lines[2:])
