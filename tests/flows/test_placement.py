"""GPU placement on the CPU: device lists as `classifier.device` names them,
given a simulated number of visible GPUs, and the flow's lanes (one per
device, one model at a time on each)."""

import threading
import time

import pytest
import torch
from helpers import TINY_CLASSIFIER

from flows import pipeline
from flows.placement import assign_lanes, visible_devices
from tasks import training


@pytest.mark.parametrize("cuda_count, expected", [
    (0, ["cpu"]),
    (1, ["cuda:0"]),
    (4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
])
def test_auto_takes_every_visible_gpu_else_the_cpu(cuda_count, expected):
    assert visible_devices("auto", cuda_count) == expected


@pytest.mark.parametrize("spec, cuda_count, expected", [
    ("cpu", 0, ["cpu"]),
    ("cpu", 2, ["cpu"]),  # the CPU when asked for, GPUs or not
    ("cuda", 1, ["cuda:0"]),  # bare cuda is the first GPU
    ("cuda:1", 2, ["cuda:1"]),
    ("cuda:0,cuda:1", 2, ["cuda:0", "cuda:1"]),
    (" cuda:2 , cuda:0 ", 4, ["cuda:2", "cuda:0"]),  # spaces ignored, order kept
    ("cuda:0,cuda:2", 4, ["cuda:0", "cuda:2"]),  # a subset of the visible GPUs
    ("cpu,cuda:0", 1, ["cpu", "cuda:0"]),
])
def test_explicit_lists(spec, cuda_count, expected):
    assert visible_devices(spec, cuda_count) == expected


@pytest.mark.parametrize("spec, cuda_count", [
    ("cuda", 0),
    ("cuda:0", 0),
    ("cuda:1", 1),
    ("cuda:0,cuda:4", 4),
])
def test_a_gpu_that_is_not_visible_is_an_error(spec, cuda_count):
    with pytest.raises(ValueError, match=rf"classifier.device names cuda:\d+, but {cuda_count} GPU\(s\) are visible"):
        visible_devices(spec, cuda_count)


def test_repeats_collapse_to_one_lane_in_first_seen_order():
    assert visible_devices("cuda:1,cuda,cuda:0,cuda:1", 2) == ["cuda:1", "cuda:0"]
    assert visible_devices("cuda:01,cuda:1", 2) == ["cuda:1"]  # one GPU, however it is written
    assert visible_devices("cpu,cpu", 0) == ["cpu"]


def test_auto_inside_a_list_is_an_error():
    with pytest.raises(ValueError, match="'auto' stands alone"):
        visible_devices("auto,cuda:0", 1)


def test_lanes_deal_models_round_robin_in_config_order():
    models = ["real", "a", "b", "c", "d"]
    assert assign_lanes(models, ["cuda:0", "cuda:1"]) == {"real": "cuda:0", "a": "cuda:1", "b": "cuda:0", "c": "cuda:1",
                                                          "d": "cuda:0"}
    assert assign_lanes(models, ["cpu"]) == dict.fromkeys(models, "cpu")
    assert assign_lanes(["real", "a"], ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]) == {"real": "cuda:0", "a": "cuda:1"}


# ---------------------------------------------------------------- the flow's lanes

@pytest.mark.slow
def test_flow_trains_one_model_at_a_time_per_device(tiny_config, monkeypatch):
    """Two simulated GPUs, four models: each lane's trainings never overlap, and both lanes are used.

    `select_device` hands out the CPU for any name and remembers, per thread, which lane asked;
    the wrapped `training.train` runs in that same task thread and records (lane, start, end)."""
    from prefect.testing.utilities import prefect_test_harness

    lane = threading.local()
    spans: list[tuple[str, float, float]] = []
    original_train = training.train

    def select_device(name: str) -> torch.device:
        lane.name = name
        return torch.device("cpu")

    def recording_train(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original_train(*args, **kwargs)
        finally:
            spans.append((lane.name, start, time.perf_counter()))

    monkeypatch.setattr(pipeline, "_cuda_count", lambda: 2)
    monkeypatch.setattr(training, "select_device", select_device)
    monkeypatch.setattr(training, "train", recording_train)
    models = [
        {"name": "real", "generator": {"kind": "real"}},
        {"name": "gauss16", "generator": {"kind": "gaussian", "components": 16}},
        {"name": "shuffled", "generator": {"kind": "real-shuffled"}},
        {"name": "gauss8", "generator": {"kind": "gaussian", "components": 8}},
    ]
    path = tiny_config(models, classifier=TINY_CLASSIFIER | {"device": "auto"})
    with prefect_test_harness(server_startup_timeout=90):
        state = pipeline.cas_evaluation(str(path), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["models"] == dict.fromkeys(["real", "gauss16", "shuffled", "gauss8"], "ok")

    assert len(spans) == 4
    by_lane: dict[str, list[tuple[float, float]]] = {}
    for name, start, end in spans:
        by_lane.setdefault(name, []).append((start, end))
    assert sorted(by_lane) == ["cuda:0", "cuda:1"] and all(len(s) == 2 for s in by_lane.values())
    for name, lane_spans in by_lane.items():
        (_, first_end), (second_start, _) = sorted(lane_spans)
        assert first_end <= second_start, f"two trainings overlapped on {name}: {sorted(lane_spans)}"
