"""A model's classifier and evaluation on the store, written and read here only.

  classifiers/<fp>/model.pt         the weights (torch.save of a CPU state dict)
  classifiers/<fp>/train_log.json   the training log; written last, it commits the classifier
  evaluations/<fp>/metrics.json     per-class counts on the real eval split; one object, its own commit
"""

from __future__ import annotations

import json
from typing import Any

from casflow.storage.store import Store

WEIGHTS = "model.pt"
TRAIN_LOG = "train_log.json"
METRICS = "metrics.json"


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


def write_evaluation(store: Store, fingerprint: str, metrics: dict[str, Any]) -> None:
    store.write_bytes(store.location("evaluations", fingerprint, METRICS), json.dumps(metrics, sort_keys=True).encode())


def read_evaluation(store: Store, fingerprint: str) -> dict[str, Any] | None:
    """The committed evaluation's metrics, or None when it is not committed."""
    metrics_at = store.location("evaluations", fingerprint, METRICS)
    if not store.exists(metrics_at):
        return None
    return json.loads(store.read_bytes(metrics_at))
