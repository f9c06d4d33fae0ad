"""Evaluations' per-image predictions on the store: written and read back, and those stored before a
column was kept still read."""

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from casflow.storage import artifacts
from casflow.storage.store import Store


def test_predictions_round_trip_with_the_predicted_class_probability(tmp_path):
    store = Store(str(tmp_path))
    artifacts.write_evaluation(store, "f" * 64, {"counts": {}}, ["000000001", "000000000"], np.array([3, 1]),
                               np.array([[3, 1], [2, 1]]), np.array([0.6, 0.2], np.float32), np.array([0.6, 0.7], np.float32))
    table = artifacts.read_predictions(store, "f" * 64)
    assert table.column("key").to_pylist() == ["000000000", "000000001"]  # sorted by key
    assert table.column("p_top1").to_pylist() == [np.float32(0.7), np.float32(0.6)]


def test_predictions_stored_before_the_predicted_class_probability_read_with_it_null(tmp_path):
    store = Store(str(tmp_path))
    before = pa.schema([field for field in artifacts.PREDICTIONS_SCHEMA if field.name != "p_top1"])
    buffer = io.BytesIO()
    pq.write_table(pa.table({"key": ["000000000"], "label": [1], "top5": [[2, 1]], "p_true": [0.3]}, schema=before), buffer)
    data = buffer.getvalue()
    store.write_bytes(store.location("evaluations", "e" * 64, artifacts.PREDICTIONS), data)
    store.write_bytes(store.location("evaluations", "e" * 64, artifacts.METRICS),
                      json.dumps({"counts": {}, "predictions_sha256": hashlib.sha256(data).hexdigest()}).encode())
    table = artifacts.read_predictions(store, "e" * 64)
    assert table.column("p_true").to_pylist() == [np.float32(0.3)] and table.column("p_top1").to_pylist() == [None]
