"""A model's classifier and evaluation on the store, written and read here only.

  classifiers/<fp>/model.pt              the weights (torch.save of a CPU state dict)
  classifiers/<fp>/train_log.json        the training log, with the weights' sha256 and size; written
                                         last, it commits the classifier
  evaluations/<fp>/predictions.parquet   per real eval image: key, true class, top-5 classes, p(true class),
                                         p(predicted class)
  evaluations/<fp>/metrics.json          per-class counts, with the predictions' sha256 and size; written
                                         last, it commits the evaluation
  scores/<fp>/scores.json                GAN-test, feature-space scores and near copies of one model's
                                         samples; one object, its own commit

Every object a marker names is checked against its digest when it is read
(an IntegrityError names it); markers written before digests were kept
have none, and their objects are read unchecked.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from casflow.storage.store import REBUILD, IntegrityError, Store

WEIGHTS = "model.pt"
TRAIN_LOG = "train_log.json"
METRICS = "metrics.json"
SCORES = "scores.json"
PREDICTIONS = "predictions.parquet"
PREDICTIONS_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),  # the image's key in the real eval shards
    pa.field("label", pa.int32(), nullable=False),  # its true class
    pa.field("top5", pa.list_(pa.int32()), nullable=False),  # predicted classes, best first
    pa.field("p_true", pa.float32(), nullable=False),  # softmax probability of the true class
    # softmax probability of the predicted class (the confidence of a miss); null in predictions stored before it was
    # kept, which stay valid under the same evaluation fingerprint
    pa.field("p_top1", pa.float32()),
])


def write_classifier(store: Store, fingerprint: str, weights: bytes, train_log: dict[str, Any]) -> None:
    store.write_bytes(store.location("classifiers", fingerprint, WEIGHTS), weights)
    marker = train_log | {"weights_sha256": hashlib.sha256(weights).hexdigest(), "weights_size": len(weights)}
    store.write_bytes(store.location("classifiers", fingerprint, TRAIN_LOG),  # last: the commit marker
                      json.dumps(marker, indent=1, sort_keys=True).encode())


def read_train_log(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed classifier's training log, or None when it is not committed."""
    log_at, weights_at = (store.location("classifiers", fingerprint, name) for name in (TRAIN_LOG, WEIGHTS))
    if not (store.exists(log_at) and store.exists(weights_at)):
        return None
    return _read_marker(store, log_at)


def read_weights(store: Store, fingerprint: str) -> bytes:
    """The weights, checked against the sha256 their commit marker recorded."""
    marker = _read_marker(store, store.location("classifiers", fingerprint, TRAIN_LOG))
    return _read_checked(store, store.location("classifiers", fingerprint, WEIGHTS), marker.get("weights_sha256"))


GALLERY = "gallery.npz"


def read_gallery(store: Store, fingerprint: str) -> bytes | None:
    """A model's failure gallery as the report stored it (tasks/gallery.py encodes it), or None."""
    location = store.location("galleries", fingerprint, GALLERY)
    return store.read_bytes(location) if store.exists(location) else None


def write_gallery(store: Store, fingerprint: str, data: bytes) -> None:
    store.write_bytes(store.location("galleries", fingerprint, GALLERY), data)


def write_evaluation(store: Store, fingerprint: str, metrics: dict[str, Any], keys: list[str], labels: np.ndarray,
                     top5: np.ndarray, p_true: np.ndarray, p_top1: np.ndarray) -> None:
    table = pa.table({"key": keys, "label": labels.astype(np.int32), "top5": list(top5), "p_true": p_true, "p_top1": p_top1},
                     schema=PREDICTIONS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    predictions = buffer.getvalue()
    store.write_bytes(store.location("evaluations", fingerprint, PREDICTIONS), predictions)
    marker = metrics | {"predictions_sha256": hashlib.sha256(predictions).hexdigest(), "predictions_size": len(predictions)}
    store.write_bytes(store.location("evaluations", fingerprint, METRICS),  # last: the commit marker
                      json.dumps(marker, sort_keys=True).encode())


def read_evaluation(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed evaluation's metrics, or None when it is not committed."""
    metrics_at = store.location("evaluations", fingerprint, METRICS)
    if not store.exists(metrics_at):
        return None
    return _read_marker(store, metrics_at)


def predictions_uri(store: Store, fingerprint: str) -> str:
    """Where an evaluation's per-image predictions are (or were), for messages that name them."""
    return store.uri(store.location("evaluations", fingerprint, PREDICTIONS))


def read_predictions(store: Store, fingerprint: str) -> pa.Table | None:
    """The evaluation's per-image predictions, sorted by key; None for evaluations stored before they were kept.
    Predictions stored before `p_top1` was kept read with it null."""
    location = store.location("evaluations", fingerprint, PREDICTIONS)
    if not store.exists(location):
        return None
    marker = read_evaluation(store, fingerprint) or {}
    data = _read_checked(store, location, marker.get("predictions_sha256"))
    try:  # a marker without a digest (written before digests were kept) lets damage reach the Parquet reader
        return pq.read_table(io.BytesIO(data), schema=PREDICTIONS_SCHEMA).sort_by("key")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(f"{store.uri(location)}: unreadable predictions ({type(exc).__name__}: {exc}); {REBUILD}") from None


def write_scores(store: Store, fingerprint: str, scores: dict[str, Any]) -> None:
    store.write_bytes(store.location("scores", fingerprint, SCORES), json.dumps(scores, sort_keys=True).encode())


def read_scores(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed scores, or None when they are not committed."""
    location = store.location("scores", fingerprint, SCORES)
    if not store.exists(location):
        return None
    return _read_marker(store, location)


# What each commit marker records of its step's work and time, for `cas plan`'s estimates (flows/plan.py);
# markers written before these keys were kept lack them and are left out.
MEASURED_KEYS = {
    "classifiers": (TRAIN_LOG, ("train_seconds", "device", "recipe", "recipe_fingerprint", "image_shape", "images_seen",
                                "weights_size")),
    "evaluations": (METRICS, ("seconds", "device", "recipe", "recipe_fingerprint", "image_shape", "num_images",
                              "predictions_size")),
    "scores": (SCORES, ("seconds", "device", "recipe", "recipe_fingerprint", "image_shape", "num_samples")),
}


def measurements(store: Store, kind: str) -> list[dict[str, Any]]:
    """The measured keys (MEASURED_KEYS) of every committed marker of a kind ("classifiers",
    "evaluations", "scores") that has them all; one listing and one concurrent read. A marker that
    does not parse is left out (`cas verify` reports it)."""
    name, keys = MEASURED_KEYS[kind]
    locations = [path for path in store.find(kind) if path.endswith(f"/{name}") and path.count("/") == 2]
    found = []
    for data in store.read_many(locations):
        try:
            marker = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(marker, dict) and all(marker.get(key) is not None for key in keys):
            found.append({key: marker[key] for key in keys})
    return found


def _read_marker(store: Store, location: str) -> dict[str, Any]:
    try:
        marker = json.loads(store.read_bytes(location))
        if not isinstance(marker, dict):
            raise ValueError(f"a JSON {type(marker).__name__}, not an object")
        return marker
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{store.uri(location)}: unreadable commit marker ({exc}); {REBUILD}") from None


def _read_checked(store: Store, location: str, sha256: str | None) -> bytes:
    data = store.read_bytes(location)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{store.uri(location)}: sha256 {hashlib.sha256(data).hexdigest()[:16]}... ({len(data)} bytes) "
                             f"disagrees with its commit marker's {sha256[:16]}...; {REBUILD}")
    return data
