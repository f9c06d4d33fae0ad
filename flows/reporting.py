"""The run's HTML report: everything it shows read back from the store (results, evaluations,
a few samples per class, the failure gallery), rendered by `tasks.report`, written next to the results."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow.compute as pc

from casflow.flows.shard_data import decoded_set, first_per_class, in_batches
from casflow.storage import artifacts, results
from casflow.storage.decoded_cache import Decoded
from casflow.storage.shards import ShardSet, load_shard_set
from casflow.storage.store import IntegrityError, Store
from casflow.tasks import devices, gallery, report, scores
from casflow.tasks.fingerprint import fingerprint

log = logging.getLogger("casflow.reporting")


def write_report(store: Store, run_id: str) -> tuple[str, str]:
    """The run's HTML report, written to the store; returns (its URI, the HTML)."""
    page = build_report(store, run_id)
    location = store.report_location(run_id)
    store.write_bytes(location, page.encode())
    return store.uri(location), page


def build_report(store: Store, run_id: str) -> str:
    """Everything the report shows, read from the store: results, evaluations, shards."""
    summary = results.read_run(store, "summary", run_id).to_pylist()
    per_class = results.read_run(store, "per_class", run_id).to_pylist()
    try:
        changes = results.read_run(store, "changes", run_id).to_pylist()
    except FileNotFoundError:  # a run from before changes were kept
        changes = []
    try:
        best = results.read_run(store, "best", run_id).to_pylist()
    except FileNotFoundError:  # a run without a series of checkpoints
        best = []
    class_names = tuple(name for _, name in sorted({(r["class_index"], r["class_name"]) for r in per_class}))
    confusion, samples = {}, {}
    for row in (r for r in summary if r["status"] == "ok"):
        metrics = [artifacts.read_evaluation(store, fp) for fp in seed_fingerprints(row, "evaluation")]
        if all(metrics):
            confusion[row["model"]] = np.sum([np.array(m["counts"]["confusion"]) for m in metrics], axis=0)
        if row["generator_kind"] == "real":  # its samples are the real train split, shown once below
            continue
        shard_set = load_shard_set(store, store.location("samples", row["samples_fingerprint"]))
        if shard_set is not None:
            samples[row["model"]] = grid(store, shard_set, len(class_names))
    # per-class rows name the classes; a run whose every model failed has none, and no grid to draw
    real = load_shard_set(store, store.location("real", summary[0]["dataset_fingerprint"], "train")) if class_names else None
    return report.render(report.ReportData(
        run_id=run_id, store_url=store.url, class_names=class_names, summary=summary, per_class=per_class,
        changes=changes, history=results.read_readable(store, "summary")[0].to_pylist(), confusion=confusion, samples=samples,
        real_samples=grid(store, real, len(class_names)) if real else None, generated=datetime.now(timezone.utc), best=best,
        galleries=galleries(store, summary, changes, best, class_names)))


def grid(store: Store, shard_set: ShardSet, num_classes: int) -> report.SampleGrid:
    return report.sample_grid(*first_per_class(store, shard_set, report.GRID_PER_CLASS), num_classes)


# ---------------------------------------------------------------- the failure gallery

def galleries(store: Store, summary: list[dict[str, Any]], changes: list[dict[str, Any]], best: list[dict[str, Any]],
              class_names: tuple[str, ...]) -> dict[str, report.Gallery]:
    """The failure gallery of each model `gallery.gallery_models` picks. Memory stays bounded at any scale: only
    the picked eval images and the samples of their classes (at most gallery.SAMPLES_SEARCHED per class, a seeded
    subset) are read from the local cache's files, a batch at a time, and get features.
    A model whose gallery cannot be made gets a note naming the problem instead (the report is written all
    the same, as for the rest of the run)."""
    chosen = set(gallery.gallery_models(summary, changes, best))
    rows = [row for row in summary if row["model"] in chosen]
    real = next((row for row in summary if row["generator_kind"] == "real" and row["status"] == "ok"), None)
    if not rows or real is None:
        return {row["model"]: report.Gallery((), "no real baseline in this run, whose classifier's features the "
                                                 "samples are searched in") for row in rows}
    keys = {row["model"]: gallery_fingerprint(row, real) for row in rows}
    found = {}
    for row in rows:  # galleries an earlier report made from the same evaluation, samples and baseline
        stored = artifacts.read_gallery(store, keys[row["model"]])
        if stored is not None:
            found[row["model"]] = gallery.decode(stored)
    rows = [row for row in rows if row["model"] not in found]
    if not rows:
        return found
    try:
        eval_split = load_shard_set(store, store.location("real", real["dataset_fingerprint"], "eval"))
        if eval_split is None:
            raise FileNotFoundError(f"{store.uri(store.location('real', real['dataset_fingerprint'], 'eval'))}: "
                                    "the real eval split is not on the store")
        features = real_features(store, real, eval_split.image_shape, len(class_names))
        eval_images = decoded_set(store, eval_split, "real eval split")
    except (OSError, ValueError, RuntimeError, IntegrityError) as exc:
        log.warning("report: no failure gallery: %s", exc)
        return found | {row["model"]: report.Gallery((), f"no failure gallery: {exc}") for row in rows}
    for row in rows:
        try:
            found[row["model"]] = model_gallery(store, row, eval_images, features)
        except (OSError, ValueError, RuntimeError, IntegrityError) as exc:
            log.warning("report: model %s: no failure gallery: %s", row["model"], exc)
            found[row["model"]] = report.Gallery((), f"no failure gallery: {exc}")
            continue
        artifacts.write_gallery(store, keys[row["model"]], gallery.encode(found[row["model"]]))
    return found


def gallery_fingerprint(row: dict[str, Any], real: dict[str, Any]) -> str:
    """What a model's gallery is made of: its first seed's evaluation, its samples, and the real baseline's
    classifier whose features rank the samples."""
    return fingerprint("gallery", {
        "evaluation": seed_fingerprints(row, "evaluation")[0],
        "samples": row["dataset_fingerprint"] if row["generator_kind"] == "real" else row["samples_fingerprint"],
        "real_classifier": seed_fingerprints(real, "classifier")[0]})


def seed_fingerprints(row: dict[str, Any], kind: str) -> list[str]:
    """A summary row's classifiers or evaluations, one per seed (`kind`: classifier | evaluation); rows from
    before several seeds were kept name one."""
    return row[f"{kind}_fingerprints"] or [row[f"{kind}_fingerprint"]]


def real_features(store: Store, real: dict[str, Any], image_shape: tuple[int, int, int], num_classes: int):
    """A function from a decoded set and rows of it to their penultimate features in the real baseline's
    classifier (its first seed, as the scores beside CAS use), rebuilt from the recipe its training log recorded."""
    from casflow.tasks.classifiers import resolve, training

    classifier = seed_fingerprints(real, "classifier")[0]
    log_of = artifacts.read_train_log(store, classifier)
    if log_of is None:
        raise FileNotFoundError(f"{store.uri(store.location('classifiers', classifier))}: the real baseline's classifier "
                                "is not on the store")
    inputs = log_of.get("fingerprint_inputs") or {}
    if "recipe" not in inputs or "hyperparameters" not in inputs:
        raise ValueError(f"{store.uri(store.location('classifiers', classifier, artifacts.TRAIN_LOG))}: the real baseline's "
                         "training log does not name its recipe and hyperparameters")
    recipe, device = resolve(inputs["recipe"], inputs["hyperparameters"]), devices.torch_device("auto")
    net = training.load_weights(recipe, artifacts.read_weights(store, classifier), image_shape=image_shape,
                                num_classes=num_classes, device=device)
    return lambda decoded, rows: in_batches(decoded, lambda x: training.features(recipe, net, x, device), rows,
                                            size=training.PREDICT_BATCH)


def model_gallery(store: Store, row: dict[str, Any], eval_images: Decoded, features) -> report.Gallery:
    """One model's most confident misses (its first seed's evaluation) and its samples nearest to each."""
    model = row["model"]
    evaluation = seed_fingerprints(row, "evaluation")[0]
    predictions = artifacts.read_predictions(store, evaluation)
    if predictions is None:
        return report.Gallery((), "no per-image predictions stored for its evaluation")
    if predictions.column("p_top1").null_count:
        return report.Gallery((), "its evaluation was stored before casflow kept the predicted class's probability "
                                  "(a new evaluation of this model has it)")
    labels = predictions.column("label").to_numpy()
    if not np.array_equal(labels, eval_images.labels):  # keys are the eval split's positions: both in key order
        raise ValueError(f"model '{model}': evaluation {evaluation[:12]} was scored on other eval images than the "
                         "run's eval split")
    predicted = pc.list_element(predictions.column("top5"), 0).to_numpy()
    confidence = predictions.column("p_top1").to_numpy()
    picks = gallery.most_confident_misses(labels, predicted, confidence)
    if not len(picks):
        return report.Gallery((), "its classifier got every real eval image right")
    samples = sample_set(store, row)
    images = decoded_set(store, samples, f"model {model}")
    sample_labels = images.labels
    searched, searched_features = [], []
    for c in np.unique(np.concatenate([labels[picks], predicted[picks]])):
        members = np.flatnonzero(sample_labels == c)
        members = members[scores.subset(len(members), gallery.SAMPLES_SEARCHED, scores.SUBSET_SEED, "gallery", int(c))]
        if len(members):  # a class the model drew no samples of has no neighbours
            searched.append(members)
            searched_features.append(features(images, members))
    pick_features = features(eval_images, picks)
    searched = np.concatenate(searched) if searched else np.empty(0, np.int64)
    reference = np.concatenate(searched_features) if searched_features else np.empty((0, pick_features.shape[1]), np.float32)
    true_side = gallery.nearest_of_class(pick_features, labels[picks], reference, sample_labels[searched])
    predicted_side = gallery.nearest_of_class(pick_features, predicted[picks], reference, sample_labels[searched])
    return report.Gallery(tuple(
        report.Miss(image=eval_images.window(i, i + 1)[0], true_class=int(labels[i]), predicted_class=int(predicted[i]),
                    confidence=float(confidence[i]), true_neighbours=images.take(searched[t]),
                    predicted_neighbours=images.take(searched[p]))
        for i, t, p in zip(picks, true_side, predicted_side)))


def sample_set(store: Store, row: dict[str, Any]) -> ShardSet:
    """A model's samples as stored: the real baseline's are the real train split."""
    location = (store.location("real", row["dataset_fingerprint"], "train") if row["generator_kind"] == "real"
                else store.location("samples", row["samples_fingerprint"]))
    shard_set = load_shard_set(store, location)
    if shard_set is None:
        raise FileNotFoundError(f"{store.uri(location)}: model '{row['model']}': its samples are not on the store")
    return shard_set
