"""The failure gallery: the real eval images a model's classifier misses most confidently, each beside the
model's samples nearest to it of its true class and of the class it was taken for, in the penultimate
features of the classifier trained on the real train split (the space of the scores beside CAS).

Which models get one (`gallery_models`), which images (`most_confident_misses`) and which samples
(`nearest_of_class`) are chosen here from plain arrays and result rows; flows/reporting.py reads them
from the store, and tasks/report.py draws them.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from casflow.tasks import scores
from casflow.tasks.report import Gallery, Miss
from casflow.tasks.results import regressions

MISSES_SHOWN = 8  # real eval images per model
NEIGHBOURS_SHOWN = 3  # samples beside each, of its true class and of the predicted class
SAMPLES_SEARCHED = scores.SUBSET_LIMIT  # samples per class searched for neighbours: a seeded subset above it


def gallery_models(summary: list[dict[str, Any]], changes: list[dict[str, Any]], best: list[dict[str, Any]]) -> list[str]:
    """The models whose failures a run's report shows, in summary order: every evaluated plain model (not a
    checkpoint of a series; the real baseline included), the leader of each series, and any model that got
    significantly worse tonight (against its previous run, overall or in a class, or as the newest checkpoint
    against the best earlier one). A series of many checkpoints thus adds one or two galleries, not one each."""
    leaders = {row["model"] for row in best if row["is_leader"]}
    worse = {row["model"] for row in regressions(changes)} | {row["model"] for row in best if row["vs_best_so_far"] == "worse"}
    return [row["model"] for row in summary
            if row["status"] == "ok" and (row.get("series") is None or row["model"] in leaders | worse)]


def most_confident_misses(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                          count: int = MISSES_SHOWN) -> np.ndarray:
    """Indices of at most `count` images whose predicted class is not their label, the most confident first
    (`confidence`: the probability the classifier gave its predicted class); equal confidences in index order."""
    labels, predicted, confidence = np.asarray(labels), np.asarray(predicted), np.asarray(confidence, dtype=np.float64)
    if not len(labels) == len(predicted) == len(confidence):
        raise ValueError(f"{len(labels)} labels, {len(predicted)} predictions and {len(confidence)} confidences")
    missed = np.flatnonzero(predicted != labels)
    order = np.lexsort((missed, -confidence[missed]))  # the last key sorts first
    return missed[order[:count]]


def nearest_of_class(query_features: np.ndarray, query_classes: np.ndarray, reference_features: np.ndarray,
                     reference_labels: np.ndarray, k: int = NEIGHBOURS_SHOWN, *, device="cpu") -> list[np.ndarray]:
    """For each query i, the indices (into the references) of its k nearest references of class
    `query_classes[i]`, nearest first (Euclidean, float32 tiles as the scores); fewer when the class has
    fewer references, none when it has none."""
    query_classes, reference_labels = np.asarray(query_classes), np.asarray(reference_labels)
    found: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(query_classes)
    for c in np.unique(query_classes):
        members = np.flatnonzero(reference_labels == c)
        if len(members) == 0:
            continue
        rows = np.flatnonzero(query_classes == c)
        _, nearest = scores.k_nearest(query_features[rows], reference_features[members], min(k, len(members)),
                                      device=device)
        for row, indices in zip(rows, nearest):
            found[row] = members[indices]
    return found


def encode(found: Gallery) -> bytes:
    """A gallery as npz bytes (no pickle), so that a run whose inputs did not change reads it back instead of
    computing features again (which would import torch into a cached run)."""
    arrays: dict[str, np.ndarray] = {"note": np.array(found.note)}
    arrays["classes"] = np.array([(m.true_class, m.predicted_class) for m in found.misses], np.int64).reshape(-1, 2)
    arrays["confidence"] = np.array([m.confidence for m in found.misses], np.float64)
    for i, miss in enumerate(found.misses):
        arrays[f"image_{i}"], arrays[f"true_{i}"], arrays[f"predicted_{i}"] = (
            miss.image, miss.true_neighbours, miss.predicted_neighbours)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode(data: bytes) -> Gallery:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        misses = tuple(Miss(image=stored[f"image_{i}"], true_class=int(true_class), predicted_class=int(predicted_class),
                            confidence=float(confidence), true_neighbours=stored[f"true_{i}"],
                            predicted_neighbours=stored[f"predicted_{i}"])
                       for i, ((true_class, predicted_class), confidence)
                       in enumerate(zip(stored["classes"], stored["confidence"])))
        return Gallery(misses, str(stored["note"]))
