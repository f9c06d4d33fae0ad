"""The pipeline's steps as plain functions, in the order a run calls them.

  prepare_dataset      the real train and eval splits -> shards
  draw_samples         a model's samples -> shards (the source its kind registers)
  train_classifier     the recipe on those shards -> weights
  evaluate_classifier  per-class counts and per-image predictions on the real eval split
  write_results        per-class, changes (against each model's previous run) and summary Parquet

A model gets one classifier and one evaluation per classifier seed (its `records.ModelChain`).
The records passed between steps are in `flows/records.py`, shard sets as the steps read them
in `flows/shard_data.py`, the HTML report in `flows/reporting.py`.

Each step computes its fingerprint, asks the store whether that output is
already committed (a cache hit), and otherwise computes it with tasks/ and
commits it with storage/. No Prefect here: `flows/pipeline.py` wraps each
step once as a Prefect task, and tests call these directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import time

import numpy as np
import pyarrow.compute as pc

from casflow.flows.records import (
    ClassifierRecord,
    DatasetRecord,
    EvaluationRecord,
    ModelChain,
    ResultsRecord,
    SamplesRecord,
    ScoresRecord,
)
from casflow.flows.shard_data import MixedSamples, StoredSamples, decoded_set, in_batches, load_decoded
from casflow.storage import artifacts, results, verify
from casflow.storage.shards import ShardSet, load_shard_set, sample_key, write_shard_set
from casflow.storage.sources import Files, FileTooLarge, NotRegularFile, read_local_file
from casflow.storage.store import IntegrityError, Store, is_transient, s3_options, store_url_problem
from casflow.tasks import compare, datasets, devices, generators, scores, seeds
from casflow.tasks.classifiers import data_path
from casflow.tasks.config import (
    MAX_CONFIG_BYTES,
    CheckpointConfig,
    Config,
    ConfigError,
    ModelConfig,
    StoreConfig,
    expand_series,
    parse_config,
    series_glob,
)
from casflow.tasks.errors import InputError
from casflow.tasks.exits import FAILED
from casflow.tasks.fingerprint import fingerprint
from casflow.tasks.metrics import ClassCounts, count_correct, top_predictions
from casflow.tasks.results import (
    UNKNOWN,
    ModelOutcome,
    RunInfo,
    best_rows,
    change_rows,
    not_compared_row,
    per_class_rows,
    summary_row,
    unknown_best_rows,
)

Record = SamplesRecord | ClassifierRecord | EvaluationRecord

log = logging.getLogger("casflow.steps")


# ---------------------------------------------------------------- config and store

def read_config(path: str, store_url: str | None = None) -> Config:
    """Load and validate a YAML config file; `store_url` overrides `store.url`.

    ConfigError for anything that stops the run before it starts: a file that is absent or unreadable, not a
    regular file or larger than MAX_CONFIG_BYTES, not UTF-8, not valid, or a store that cannot keep the results."""
    return config_from_text(read_config_text(path), path, store_url)


def read_config_text(path: str) -> str:
    try:
        return read_local_file(path, path, MAX_CONFIG_BYTES, "a config may have")
    except (NotRegularFile, FileTooLarge) as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:  # absent, unreadable: a config that cannot run, like any other
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


def config_from_text(text: str, source: str, store_url: str | None = None) -> Config:
    """A config's YAML text validated (a flow run on another machine gets the text, not the file)."""
    config = parse_config(text, source=source)
    if store_url:
        config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    problem = store_url_problem(config.store.url)
    if problem:
        raise ConfigError(f"{source}: store.url {config.store.url}: {problem}")
    return with_checkpoints(config, source)


def with_checkpoints(config: Config, source: str) -> Config:
    """Each series model as one model per checkpoint, its pattern listed on the file system or store."""
    files, listed = open_files(config), {}
    for model in config.models:
        pattern = series_glob(model)
        if pattern is not None:
            try:
                listed[model.name] = files.matching(pattern)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{source}: model '{model.name}': series: {exc}") from None
    try:
        return expand_series(config, listed)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def open_store(config: StoreConfig) -> Store:
    return Store(config.url, s3=_s3_options(config))


def open_files(config: Config) -> Files:
    """User files named in the config, read with the store's credentials, within the config's limits."""
    return Files(_s3_options(config.store), max_file_bytes=config.limits.max_file_bytes,
                 max_files=config.limits.max_files)


def _s3_options(config: StoreConfig) -> dict:
    secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
    return s3_options(config.endpoint_url, config.region, secret(config.access_key_id), secret(config.secret_access_key))


# ---------------------------------------------------------------- step 0 (nightly): the store checked

def verify_store(store: Store, level: str) -> list[verify.Finding]:
    """`level` full or quick (`storage.verify`): every committed object checked; what a run can
    rebuild is removed so that this run rebuilds it, the rest is reported."""
    findings = verify.verify(store, full=level == "full")
    for finding in findings:
        log.warning("verify: %s", verify.render(store, [finding]))
    verify.repair(store, findings)
    return findings


# ---------------------------------------------------------------- step 1: the real dataset as shards

def prepare_dataset(config: Config, store: Store) -> DatasetRecord:
    """Shard the real train and eval splits once per dataset fingerprint."""
    spec, files = config.dataset, open_files(config)
    inputs = dataset_inputs(config, files)
    fp = fingerprint("dataset", inputs)
    locations = {split: store.location("real", fp, split) for split in ("train", "eval")}
    committed = {split: load_shard_set(store, loc) for split, loc in locations.items()}
    if all(committed.values()):
        log.info("dataset %s: cached (%s)", spec.name, fp[:12])
        return DatasetRecord(spec.name, fp, committed["train"], committed["eval"], cached=True)
    splits = dict(zip(("train", "eval"), datasets.load(spec, files, config.limits)))
    # every image of both splits read and checked (into local spools) before either is written
    stored = {split: data.stored() for split, data in splits.items() if committed[split] is None}
    for split, samples in stored.items():
        data = splits[split]
        committed[split] = write_shard_set(
            store, locations[split], samples, shard_size=config.store.shard_size, fingerprint=fp,
            fingerprint_inputs=inputs | {"split": split}, class_names=data.class_names, image_shape=data.image_shape,
            what=f"{spec.name} {split}")
    return DatasetRecord(spec.name, fp, committed["train"], committed["eval"], cached=False)


def dataset_inputs(config: Config, files: Files) -> dict:
    return datasets.fingerprint_inputs(config.dataset, files) | {"shard_size": config.store.shard_size}


# ---------------------------------------------------------------- step 2: a model's samples as shards

def draw_samples(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord, device: str) -> SamplesRecord:
    """Draw (or find) a model's samples as a committed shard set."""
    started = time.perf_counter()
    source = generators.SOURCES[model.generator.kind]
    if source.draw is None:  # `real`: its samples are the real train split's shards
        return SamplesRecord(model.name, dataset.train, cached=dataset.cached, seconds=0.0)
    files = open_files(config)
    inputs = samples_inputs(config, files, model, dataset)
    fp = fingerprint("samples", inputs)
    location = store.location("samples", fp)
    committed = load_shard_set(store, location)
    if committed is not None:
        log.info("model %s: samples cached (%s)", model.name, fp[:12])
        return SamplesRecord(model.name, committed, cached=True, seconds=0.0)
    request = generators.DrawRequest(
        model=model.name, seed=config.samples_seed(model), budget=dataset.train.count_per_class, class_names=dataset.class_names,
        image_shape=dataset.train.image_shape, device=device, files=files, real_train=lambda: real_train(store, dataset),
        limits=config.limits)
    try:
        shard_set = write_shard_set(
            store, location, source.draw(model.generator, request), shard_size=config.store.shard_size,
            fingerprint=fp, fingerprint_inputs=inputs, class_names=dataset.class_names,
            image_shape=dataset.train.image_shape, what=f"model {model.name}")
    except InputError:
        if load_shard_set(store, location) is None:
            store.remove(location)  # bad input fails the same way every time: leave no debris
        raise
    return SamplesRecord(model.name, shard_set, cached=False, seconds=round(time.perf_counter() - started, 3))


def samples_inputs(config: Config, files: Files, model: ModelConfig, dataset: DatasetRecord) -> dict:
    """Everything that changes a model's samples: never its name or where its files live."""
    content = generators.SOURCES[model.generator.kind].content(model.generator, files, model.name)
    return content | {
        "dataset": dataset.fingerprint,
        "budget": list(dataset.train.count_per_class),
        "seed": config.samples_seed(model),
        "shard_size": config.store.shard_size,
    }


def real_train(store: Store, dataset: DatasetRecord) -> datasets.LabeledImages:
    """The real train split, decoded (the built-in generators fit on it)."""
    images, labels = load_decoded(store, dataset.train, f"{dataset.name} train split")
    return datasets.LabeledImages(images, labels, dataset.class_names)


# ---------------------------------------------------------------- step 3: a classifier per model

def train_classifier(config: Config, store: Store, samples: SamplesRecord, dataset: DatasetRecord, device: str,
                     seed: int, augment: float | None = None) -> ClassifierRecord:
    """Train (or find) the classifier for one model's samples and one classifier seed.

    With `augment` r, the Naive Augmentation Score's classifier (Ravuri & Vinyals 2019, section 4):
    trained on the real train split plus the first round(r x its size) of the samples."""
    data = StoredSamples(store, samples.shard_set, f"model {samples.model}", seed)  # a training.TrainingSamples
    if augment is not None:
        data = MixedSamples(StoredSamples(store, dataset.train, f"{dataset.name} train split", seed), data,
                            round(augment * dataset.train.num_samples))
    inputs = classifier_inputs(config, samples.shard_set, len(dataset.class_names), seed, augment, dataset.train)
    fp = fingerprint("classifier", inputs)
    what = f"model {samples.model}: classifier (seed {seed}" + (")" if augment is None else f", real + {augment:g} samples)")
    train_log = artifacts.read_train_log(store, fp)
    if train_log is not None:
        log.info("%s cached (%s)", what, fp[:12])
        return ClassifierRecord(samples.model, fp, seed, samples, True, train_log["train_seconds"], train_log["device"],
                                augment)

    from casflow.tasks.classifiers import training  # torch: imported only when something is trained or evaluated

    recipe, torch_device = config.classifier.resolved, devices.torch_device(device)
    log.info("%s: training %s on %d images on %s", what, recipe.name, data.num_samples, torch_device)
    net, train_log = training.train(recipe, data, num_classes=len(dataset.class_names), device=torch_device, seed=seed,
                                    resident_limit_gb=config.classifier.resident_limit_gb)
    train_log["fingerprint_inputs"] = inputs
    train_log["worker"] = os.environ.get("CASFLOW_WORKER") or socket.gethostname()  # who trained it (not fingerprinted)
    artifacts.write_classifier(store, fp, training.weights_bytes(net), train_log)
    return ClassifierRecord(samples.model, fp, seed, samples, False, train_log["train_seconds"], train_log["device"], augment)


def classifier_inputs(config: Config, samples: ShardSet, num_classes: int, seed: int, augment: float | None = None,
                      real_train: ShardSet | None = None) -> dict:
    spec = config.classifier
    num_samples = samples.num_samples
    inputs = spec.resolved.fingerprint_inputs() | {"samples": samples.manifest_sha256, "num_classes": num_classes, "seed": seed}
    if augment is not None:
        num_samples = real_train.num_samples + round(augment * real_train.num_samples)
        inputs |= {"samples": real_train.manifest_sha256, "augment_with": samples.manifest_sha256, "augment_ratio": augment}
    return inputs | {"data_path": data_path(num_samples, samples.image_shape, spec.resident_limit_gb)}


# ---------------------------------------------------------------- step 4: per-class evaluation on the real eval split

def evaluate_classifier(config: Config, store: Store, classifier: ClassifierRecord, dataset: DatasetRecord,
                        device: str) -> EvaluationRecord:
    started = time.perf_counter()
    inputs = evaluation_inputs(classifier.fingerprint, dataset.eval)
    fp = fingerprint("evaluation", inputs)
    stored = artifacts.read_evaluation(store, fp)
    if stored is not None:
        return EvaluationRecord(classifier.model, fp, classifier, ClassCounts.from_dict(stored["counts"]), cached=True,
                                seconds=0.0)

    from casflow.tasks.classifiers import training

    recipe, torch_device = config.classifier.resolved, devices.torch_device(device)
    net = training.load_weights(recipe, artifacts.read_weights(store, classifier.fingerprint),
                                image_shape=dataset.eval.image_shape, num_classes=len(dataset.class_names),
                                device=torch_device)
    decoded = decoded_set(store, dataset.eval, f"{dataset.name} eval split")
    labels = decoded.labels
    logits = np.concatenate([training.predict(recipe, net, decoded.window(start, start + training.PREDICT_BATCH), torch_device)
                             for start in range(0, len(labels), training.PREDICT_BATCH)])  # the batches of one call
    counts = count_correct(logits, labels, len(dataset.class_names))
    top5, p_true, p_top1 = top_predictions(logits, labels)
    measured = {"seconds": round(time.perf_counter() - started, 3), "device": training.device_name(torch_device),
                "num_images": len(labels), "image_shape": list(dataset.eval.image_shape), "recipe": recipe.name,
                "recipe_fingerprint": recipe.fingerprint}  # what `cas plan` estimates from (flows/plan.py)
    artifacts.write_evaluation(store, fp, {"fingerprint_inputs": inputs, "counts": dataclasses.asdict(counts)} | measured,
                               keys=[sample_key(i) for i in range(len(labels))], labels=labels, top5=top5, p_true=p_true,
                               p_top1=p_top1)
    log.info("model %s: top-1 %.4f, top-5 %.4f on %d real eval images", classifier.model, counts.top1, counts.top5,
             sum(counts.n_eval))
    return EvaluationRecord(classifier.model, fp, classifier, counts, cached=False,
                            seconds=round(time.perf_counter() - started, 3))


def evaluation_inputs(classifier_fingerprint: str, eval_split: ShardSet) -> dict:
    return {"classifier": classifier_fingerprint, "eval": eval_split.manifest_sha256}


# ---------------------------------------------------------------- step 4b: scores beside CAS, in the real baseline's classifier


def score_samples(config: Config, store: Store, samples: SamplesRecord, real: ClassifierRecord, dataset: DatasetRecord,
                  device: str) -> ScoresRecord:
    """GAN-test, feature-space scores and near copies of one model's samples (tasks/scores.py), with the
    classifier trained on the real train split (its first seed), whatever `config.scores` asks for.

    References: Frechet distance, precision/recall and density/coverage against the real eval split
    (images the classifier never saw, so the `real` model's row is an honest floor); near copies against
    the real train split, in pixels and in features. Distance work runs on `device` (scores.py's tiles);
    GAN-test and the feature scores use seeded subsets of at most scores.SUBSET_LIMIT points per set and
    per class, whose sizes are stored beside them (`scores_n_samples`, `scores_n_real`)."""
    spec, started = config.scores, time.perf_counter()
    inputs = scores_inputs(config, samples.shard_set, real.fingerprint, dataset)
    fp = fingerprint("scores", inputs)
    stored = artifacts.read_scores(store, fp)
    if stored is not None:
        return ScoresRecord(samples.model, fp, real.fingerprint, stored["overall"], stored["per_class"], cached=True)

    from casflow.tasks.classifiers import training

    recipe, torch_device, num_classes = config.classifier.resolved, devices.torch_device(device), len(dataset.class_names)
    net = training.load_weights(recipe, artifacts.read_weights(store, real.fingerprint), image_shape=dataset.train.image_shape,
                                num_classes=num_classes, device=torch_device)
    # every image set is read from the local cache's file a batch or a tile at a time (never mapped whole, never
    # copied whole): the step's memory is set by batch and tile sizes, not by the number of samples
    images = decoded_set(store, samples.shard_set, f"model {samples.model}")
    labels = images.labels
    features = lambda decoded: in_batches(decoded, lambda x: training.features(recipe, net, x, torch_device),  # noqa: E731
                                          size=training.PREDICT_BATCH)
    overall: dict[str, float | int | None] = {}
    per_class: dict[str, list[float | int | None]] = {}
    if spec.gan_test:  # on the samples' subsets (scores.set_subsets), as the feature scores
        subsets = scores.set_subsets(labels, num_classes, "samples")
        needed = subsets.union
        logits = in_batches(images, lambda x: training.predict(recipe, net, x, torch_device), needed, size=training.PREDICT_BATCH)
        of = lambda rows: logits[np.searchsorted(needed, rows)]  # noqa: E731
        by_class = np.concatenate(subsets.per_class)
        overall["gan_test_top1"] = scores.gan_test(of(subsets.overall), labels[subsets.overall], num_classes).top1
        per_class["gan_test_top1"] = scores.gan_test(of(by_class), labels[by_class], num_classes).per_class_top1()
        overall["scores_n_samples"] = len(subsets.overall)
        per_class["scores_n_samples"] = [len(rows) for rows in subsets.per_class]
    sample_features = features(images) if spec.features or spec.memorization else None
    if spec.features:
        eval_images = decoded_set(store, dataset.eval, f"{dataset.name} eval split")
        set_overall, set_per_class = scores.set_scores(features(eval_images), eval_images.labels, sample_features, labels,
                                                       num_classes, device=torch_device)
        overall |= set_overall
        per_class |= set_per_class
    if spec.memorization:  # every sample against the whole train split, read a tile at a time as uint8
        train_images = decoded_set(store, dataset.train, f"{dataset.name} train split")
        pixels = scores.near_copies(train_images, images, device=torch_device)
        in_features = scores.near_copies(features(train_images), sample_features, device=torch_device)
        overall["memorized_fraction"], overall["memorized_fraction_features"] = pixels.fraction, in_features.fraction
        per_class["memorized_fraction"] = list(scores.fraction_per_class(pixels.flags, labels, num_classes))
    overall = {k: scores.finite_or_none(v) for k, v in overall.items()}
    per_class = {k: [scores.finite_or_none(v) for v in values] for k, values in per_class.items()}
    measured = {"seconds": round(time.perf_counter() - started, 3), "device": training.device_name(torch_device),
                "num_samples": len(labels), "image_shape": list(dataset.train.image_shape), "recipe": recipe.name,
                "recipe_fingerprint": recipe.fingerprint}  # what `cas plan` estimates from (flows/plan.py)
    artifacts.write_scores(store, fp, {"fingerprint_inputs": inputs, "overall": overall, "per_class": per_class} | measured)
    log.info("model %s: scores %s", samples.model, ", ".join(f"{k} {v:.4g}" for k, v in overall.items() if v is not None))
    return ScoresRecord(samples.model, fp, real.fingerprint, overall, per_class, cached=False, seconds=measured["seconds"])


def scores_inputs(config: Config, samples: ShardSet, real_classifier: str, dataset: DatasetRecord) -> dict:
    """Everything that changes a model's scores beside CAS."""
    return {"samples": samples.manifest_sha256, "classifier": real_classifier,
            "eval": dataset.eval.manifest_sha256, "train": dataset.train.manifest_sha256,
            "asked": config.scores.model_dump(exclude={"augmentation"}), "precision_recall_k": scores.PRECISION_RECALL_K,
            "density_coverage_k": scores.DENSITY_COVERAGE_K, "near_copy_quantile": scores.NEAR_COPY_QUANTILE,
            "subset_limit": scores.SUBSET_LIMIT, "subset_seed": scores.SUBSET_SEED}


# ---------------------------------------------------------------- step 5: results, judged against the previous run

def write_results(store: Store, run: RunInfo, outcomes: list[ModelOutcome], baseline: str,
                  races: dict[str, int] | None = None, seed_range: tuple[int, int] | None = None) -> ResultsRecord:
    """Append this run's per-class, changes and summary tables (one Parquet file each), and the best table of
    its series (`races`: series that raced -> their max seeds). With `seed_range` (adaptive seeds: min, max),
    a model that took them gets its overall verdict from tasks/seeds.decide on the seeds it took.

    Each model is compared with its previous run (`compare.previous_run`): the changes
    table gets the overall change and one per class, the summary row the verdict. A
    comparison that cannot be made is the verdict `unknown` with its reason (`judge`);
    tonight's results are written for every model all the same."""
    base = next((o for o in outcomes if o.model == baseline), None)
    per_class = list(itertools.chain.from_iterable(per_class_rows(run, o) for o in outcomes))
    summary = [summary_row(run, o, base) for o in outcomes]
    history, unreadable = results.read_readable(store, "summary")
    changes = list(itertools.chain.from_iterable(judge(store, history.to_pylist(), unreadable, row, run.class_names,
                                                       seed_range)
                                                 for row in summary if row["status"] == "ok"))
    best = list(itertools.chain.from_iterable(judge_series(store, rows, (races or {}).get(series))
                                              for series, rows in series_of(summary).items()))
    per_class_uri = results.write_table(store, "per_class", per_class, run.run_id, run.run_time)
    changes_uri = results.write_table(store, "changes", changes, run.run_id, run.run_time)
    best_uri = results.write_table(store, "best", best, run.run_id, run.run_time) if best else None
    summary_uri = results.write_table(store, "summary", summary, run.run_id, run.run_time)  # last: a run with a summary is whole
    return ResultsRecord(run.run_id, per_class_uri, changes_uri, summary_uri, summary, changes, tuple(best), best_uri)


def series_of(summary: list[dict]) -> dict[str, list[dict]]:
    """The summary rows of each series' checkpoints that were evaluated, in step order."""
    found: dict[str, list[dict]] = {}
    for row in sorted(summary, key=lambda r: r["step"] if r["step"] is not None else -1):
        if row["series"] is not None and row["status"] == "ok":
            found.setdefault(row["series"], []).append(row)
    return found


def judge_series(store: Store, checkpoints: list[dict], race_max_seeds: int | None = None) -> list[dict]:
    """A series' best set (the `best` table's rows), from its checkpoints' stored per-image predictions (one
    run's checkpoints were all scored on its eval split, in key order); a racing series' from its race. A race
    that a checkpoint left by failing cannot be replayed: its table is the best set of what was evaluated.

    A checkpoint whose predictions cannot be read could be the leader, or the best earlier step: the series'
    best set and its newest-vs-best verdict are then `unknown`, with the reason (`unknown_best_rows`)."""
    correct, unreadable = {}, []
    for row in checkpoints:
        try:
            correct[row["step"]] = correctness(store, row)[0]
        except PredictionsUnavailable as exc:
            unreadable.append(str(exc))
    if unreadable:
        reason = "; ".join(unreadable)
        log.warning("series %s: best set %s: %s", checkpoints[0]["series"], UNKNOWN, reason)
        return unknown_best_rows(checkpoints, reason, race_max_seeds)
    try:
        return best_rows(checkpoints, correct, race_max_seeds)
    except ValueError as exc:
        log.warning("series %s: its race cannot be replayed (%s); its best table is the best set of the "
                    "checkpoints that finished, each with the seeds it got", checkpoints[0]["series"], exc)
        return best_rows(checkpoints, correct)


def judge(store: Store, history: list[dict], unreadable: dict[str, str], row: dict,
          class_names: tuple[str, ...], seed_range: tuple[int, int] | None = None) -> list[dict]:
    """One model's changes rows against its previous run, and its verdict set on its summary `row`. A row
    that took adaptive seeds (`seeds_stopped`) is compared with its previous run whatever seeds that took,
    and its overall verdict is the sequential decision's (`decide_seeds`), which knows the seed noise
    from the earlier runs while tonight has one seed; its per-class rows are compare's.

    A comparison that cannot be made is `unknown`, never skipped: a gate that saw nothing would pass a
    model nobody judged. That is so when the previous run's predictions are gone or damaged, and when a
    summary file that may hold the previous run (any unreadable one newer than the latest readable
    previous run) cannot be read. No previous run at all is no verdict (null)."""
    adaptive = row.get("seeds_stopped") is not None
    previous = compare.previous_run(history, row, any_seeds=adaptive)
    hidden = sorted(run_id for run_id in unreadable
                    if run_id < row["run_id"] and (previous is None or run_id > previous["run_id"]))
    if hidden:
        reason = (f"its previous run may be run {hidden[-1]}, whose summary cannot be read: {unreadable[hidden[-1]]}"
                  + (f" (and {len(hidden) - 1} more such runs)" if len(hidden) > 1 else ""))
        return _not_compared(None, row, reason)
    if previous is None:
        return []
    try:
        model_changes = compare_runs(store, previous, row, class_names)
    except compare.ComparisonError as exc:  # predictions deleted or damaged (PredictionsUnavailable): no verdict, and why
        return _not_compared(previous, row, f"not compared with run {previous['run_id']}: {exc}")
    if adaptive and seed_range is not None:
        decision = seeds.decide(correctness(store, previous)[0], correctness(store, row)[0], *seed_range,
                                history=seeds.earlier_spreads(history, row, previous))
        model_changes[0] = dataclasses.replace(model_changes[0], direction=decision.verdict or "same",
                                               significant=decision.verdict in ("better", "worse"),
                                               seed_noise=decision.threshold)
    overall = model_changes[0]
    row |= {"previous_run_id": previous["run_id"], "change": overall.direction, "delta_top1": overall.delta,
            "change_p_value": overall.p_value}
    return change_rows(class_names, previous, row, model_changes)


def summary_history(store: Store) -> list[dict]:
    """Every readable summary row on the store, oldest run first (what decide_seeds judges against)."""
    return results.read_readable(store, "summary")[0].to_pylist()


def decide_seeds(store: Store, history: list[dict], current: dict, after: np.ndarray,
                 seed_range: tuple[int, int]) -> seeds.Decision:
    """Whether a model's seeds so far settle its comparison with its previous run (tasks/seeds.decide).
    `current`: the keys compare.previous_run reads (model, dataset_fingerprint, recipe_fingerprint,
    samples_fingerprint, run_time, run_id). A previous run whose predictions cannot be read counts as none
    here: write_results gives that model the verdict `unknown`, with the reason."""
    previous = compare.previous_run(history, current, any_seeds=True)
    before = None
    if previous is not None:
        try:
            before = correctness(store, previous)[0]
        except (compare.ComparisonError, IntegrityError):
            previous = None
    if before is not None and before.shape[1] != after.shape[1]:
        before, previous = None, None  # scored on other eval images: compare_runs says so in the results
    return seeds.decide(before, after, *seed_range, history=seeds.earlier_spreads(history, current, previous))


def _not_compared(previous: dict | None, row: dict, reason: str) -> list[dict]:
    log.warning("model %s: verdict %s: %s", row["model"], UNKNOWN, reason)
    row |= {"previous_run_id": previous["run_id"] if previous else None, "change": UNKNOWN}
    return [not_compared_row(previous, row, reason)]


def compare_runs(store: Store, before: dict, after: dict, class_names: tuple[str, ...]) -> list[compare.Change]:
    """One model's change between two of its summary rows, paired on the same eval images:
    overall first, then one per class."""
    adaptive = after.get("seeds_stopped") is not None  # adaptive seeds: each run took the seeds it needed
    for key, what in (("dataset_fingerprint", "datasets"), ("recipe_fingerprint", "classifier recipes"),
                      *((("classifier_seeds", "classifier seeds"),) if not adaptive else ())):
        if before.get(key) != after.get(key):
            raise compare.ComparisonError(
                f"model '{after['model']}': runs {before['run_id']} and {after['run_id']} used different {what} "
                f"({before.get(key)} vs {after.get(key)}); only runs on the same dataset, recipe and seeds compare")
    (b, labels_before), (a, labels_after) = (correctness(store, row) for row in (before, after))
    if not np.array_equal(labels_before, labels_after):
        raise compare.ComparisonError(f"model '{after['model']}': the two runs were scored on different eval images")
    return compare.compare(b, a, labels_after, len(class_names))


class PredictionsUnavailable(compare.ComparisonError):
    """A model's stored per-image predictions that are missing or cannot be read: the message names the model,
    its run, the object and the problem. A verdict that needs them is `unknown`, never an error of the run.
    `cas compare` exits 2 for missing ones (a run to redo) and 1 for damaged ones (a file that cannot be read)."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.exit_code = FAILED if damaged else compare.ComparisonError.exit_code


def correctness(store: Store, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """(seeds x images top-1 correctness, labels) of one model's run, from its stored predictions, by key order.
    PredictionsUnavailable when one of them is missing, damaged or unreadable; a store error worth a retry
    (`is_transient`) is raised as it is, for the step's retries."""
    fingerprints = row.get("evaluation_fingerprints") or []
    whose = f"model '{row['model']}' in run {row['run_id']}"
    if not fingerprints:
        raise PredictionsUnavailable(f"{whose}: no per-image predictions stored (its summary names no evaluations: "
                                     "the run is older than casflow's predictions); rerun it to compare")
    tables = []
    for fp in fingerprints:
        try:
            table = artifacts.read_predictions(store, fp)
        except IntegrityError as exc:  # names the object and what is wrong with it
            raise PredictionsUnavailable(f"{whose}: {exc}", damaged=True) from None
        except OSError as exc:
            if is_transient(exc):
                raise
            raise PredictionsUnavailable(f"{whose}: {artifacts.predictions_uri(store, fp)}: unreadable "
                                         f"({type(exc).__name__}: {exc})", damaged=True) from None
        if table is None:
            raise PredictionsUnavailable(f"{whose}: no per-image predictions stored at {artifacts.predictions_uri(store, fp)} "
                                         "(the run is older than casflow's predictions, or its evaluations were "
                                         "deleted); rerun it to compare")
        tables.append(table)
    labels = tables[0].column("label").to_numpy()
    top1 = [pc.list_element(t.column("top5"), 0).to_numpy() for t in tables]
    return np.stack([t == labels for t in top1]).astype(np.float64), labels


def outcome(model: ModelConfig, chain: ModelChain[Record | None] | None, error: str | None,
            sample_scores: ScoresRecord | None = None, seeds_stopped: str | None = None) -> ModelOutcome:
    """What one model's steps produced, for the result rows: its chain (None for a step that did not
    finish, or no chain at all), the scores beside CAS, and why it took no more seeds (adaptive seeds)."""
    samples = chain.samples if chain else None
    classifiers = [c for c in chain.classifiers if c is not None] if chain else []
    evaluations = [e for e in chain.evaluations if e is not None] if chain else []
    augmented = [e for e in chain.augmented_evaluations if e is not None] if chain else []
    complete = error is None and samples is not None and len(evaluations) == len(classifiers) > 0
    return ModelOutcome(
        model=model.name,
        generator_kind=model.generator.kind,
        error=error,
        samples_fingerprint=samples.shard_set.fingerprint if samples else None,
        classifier_fingerprints=tuple(c.fingerprint for c in classifiers),
        evaluation_fingerprints=tuple(e.fingerprint for e in evaluations),
        n_train_per_class=samples.shard_set.count_per_class if samples else None,
        counts=tuple(e.counts for e in evaluations) if complete else (),
        sample_seconds=samples.seconds if samples else None,
        train_seconds=round(sum(c.train_seconds for c in classifiers), 3) if classifiers else None,
        eval_seconds=round(sum(e.seconds for e in evaluations), 3) if evaluations else None,
        device=classifiers[0].device if classifiers else None,
        samples_cached=samples.cached if samples else None,
        classifier_cached=all(c.cached for c in classifiers) if classifiers else None,
        evaluation_cached=all(e.cached for e in evaluations) if evaluations else None,
        scores=None if sample_scores is None else {"classifier": sample_scores.classifier, "overall": sample_scores.overall,
                                                   "per_class": sample_scores.per_class},
        augmented=tuple((e.classifier.augment, e.counts) for e in augmented) if complete else (),
        series=model.series_name if isinstance(model, CheckpointConfig) else None,
        step=model.step if isinstance(model, CheckpointConfig) else None,
        classifier_seeds=tuple(c.seed for c in classifiers) if complete else None,
        seeds_stopped=seeds_stopped,
    )


def describe_failure(model: str, exc: BaseException) -> str:
    """One line naming the model and the problem."""
    if isinstance(exc, InputError):
        return str(exc.for_model(model))
    text = str(exc) if isinstance(exc, (ValueError, FileNotFoundError)) else f"{type(exc).__name__}: {exc}"
    return text if f"'{model}'" in text else f"model '{model}': {text}"


