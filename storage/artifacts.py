"""A model's classifier and evaluation on the store, written and read here only.

  classifiers/<fp>/model.pt         the weights (torch.save of a CPU state dict)
  classifiers/<fp>/train_log.json   the training log; written last, it commits the classifier
  evaluations/<fp>/predictions.parquet  per real eval image: key, true class, top-5 classes, p(true class)
  evaluations/<fp>/metrics.json     per-class counts on the real eval split; written last, it commits
                                    the evaluation (runs before predictions were stored have none)
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from casflow.storage.store import Store

WEIGHTS = "model.pt"
TRAIN_LOG = "train_log.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
PREDICTIONS_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),  # the image's key in the real eval shards
    pa.field("label", pa.int32(), nullable=False),  # its true class
    pa.field("top5", pa.list_(pa.int32()), nullable=False),  # predicted classes, best first
    pa.field("p_true", pa.float32(), nullable=False),  # softmax probability of the true class
])


def write_classifier(store: Store, fingerprint: str, weights: bytes, train_log: dict[str, Any]) -> None:
    store.write_bytes(store.location("classifiers", fingerprint, WEIGHTS), weights)
    store.write_bytes(store.location("classifiers", fingerprint, TRAIN_LOG),  # last: the commit marker
                      json.dumps(train_log, indent=1, sort_keys=True).encode())


def read_train_log(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed classifier's training log, or None when it is not committed."""
    log_at, weights_at = (store.location("classifiers", fingerprint, name) for name in (TRAIN_LOG, WEIGHTS))
    if not (store.exists(log_at) and store.exists(weights_at)):
        return None
    return json.loads(store.read_bytes(log_at))


def read_weights(store: Store, fingerprint: str) -> bytes:
    return store.read_bytes(store.location("classifiers", fingerprint, WEIGHTS))


def write_evaluation(store: Store, fingerprint: str, metrics: dict[str, Any], keys: list[str], labels: np.ndarray,
                     top5: np.ndarray, p_true: np.ndarray) -> None:
    table = pa.table({"key": keys, "label": labels.astype(np.int32), "top5": list(top5), "p_true": p_true},
                     schema=PREDICTIONS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    store.write_bytes(store.location("evaluations", fingerprint, PREDICTIONS), buffer.getvalue())
    store.write_bytes(store.location("evaluations", fingerprint, METRICS),  # last: the commit marker
                      json.dumps(metrics, sort_keys=True).encode())


def read_evaluation(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed evaluation's metrics, or None when it is not committed."""
    metrics_at = store.location("evaluations", fingerprint, METRICS)
    if not store.exists(metrics_at):
        return None
    return json.loads(store.read_bytes(metrics_at))


def read_predictions(store: Store, fingerprint: str) -> pa.Table | None:
    """The evaluation's per-image predictions, sorted by key; None for evaluations stored before they were kept."""
    location = store.location("evaluations", fingerprint, PREDICTIONS)
    if not store.exists(location):
        return None
    return pq.read_table(io.BytesIO(store.read_bytes(location)), schema=PREDICTIONS_SCHEMA).sort_by("key")
