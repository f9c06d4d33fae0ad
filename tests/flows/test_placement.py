"""GPU placement on the CPU: the flow's lanes (one per device, one model at a
time on each), given a simulated number of visible GPUs."""

import threading
import time

import pytest
import torch

from casflow.flows import pipeline
from casflow.flows.placement import assign_lanes
from casflow.tasks import devices, scores
from casflow.tasks.classifiers import training
from helpers import TINY_CLASSIFIER


def test_lanes_deal_models_round_robin_in_config_order():
    models = ["real", "a", "b", "c", "d"]
    assert assign_lanes(models, ["cuda:0", "cuda:1"]) == {"real": "cuda:0", "a": "cuda:1", "b": "cuda:0", "c": "cuda:1",
                                                          "d": "cuda:0"}
    assert assign_lanes(models, ["cpu"]) == dict.fromkeys(models, "cpu")
    assert assign_lanes(["real", "a"], ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]) == {"real": "cuda:0", "a": "cuda:1"}


# ---------------------------------------------------------------- the flow's lanes

@pytest.mark.slow
def test_flow_trains_one_model_at_a_time_per_device(tiny_config, monkeypatch, prefect_in_process):
    """Two simulated GPUs, four models: each lane's trainings, and its scores, never overlap, and both lanes are used.

    `torch_device` hands out the CPU for any name and remembers, per thread, which lane asked;
    the wrapped `training.train` and `scores.set_scores` run in that same task thread and record (lane, start, end)."""
    lane = threading.local()
    spans: list[tuple[str, float, float]] = []
    original_train = training.train

    def torch_device(name: str) -> torch.device:
        lane.name = name
        return torch.device("cpu")

    def recording(original, spans):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spans.append((lane.name, start, time.perf_counter()))
        return call

    score_spans: list[tuple[str, float, float]] = []
    monkeypatch.setattr(pipeline, "_cuda_count", lambda spec: 2)
    monkeypatch.setattr(devices, "torch_device", torch_device)
    monkeypatch.setattr(training, "train", recording(original_train, spans))
    monkeypatch.setattr(scores, "set_scores", recording(scores.set_scores, score_spans))  # once per model's scores
    models = [
        {"name": "real", "generator": {"kind": "real"}},
        {"name": "gauss16", "generator": {"kind": "gaussian", "components": 16}},
        {"name": "shuffled", "generator": {"kind": "real-shuffled"}},
        {"name": "gauss8", "generator": {"kind": "gaussian", "components": 8}},
    ]
    path = tiny_config(models, classifier=TINY_CLASSIFIER | {"device": "auto"})
    state = pipeline.cas_evaluation(str(path), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["models"] == dict.fromkeys(["real", "gauss16", "shuffled", "gauss8"], "ok")

    for what, recorded in (("trainings", spans), ("scores", score_spans)):  # the scores too: one model's at a time
        assert len(recorded) == 4, what
        by_lane: dict[str, list[tuple[float, float]]] = {}
        for name, start, end in recorded:
            by_lane.setdefault(name, []).append((start, end))
        assert sorted(by_lane) == ["cuda:0", "cuda:1"] and all(len(s) == 2 for s in by_lane.values())
        for name, lane_spans in by_lane.items():
            (_, first_end), (second_start, _) = sorted(lane_spans)
            assert first_end <= second_start, f"two {what} overlapped on {name}: {sorted(lane_spans)}"
