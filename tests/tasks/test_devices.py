"""`classifier.device`: one parser for the config, placement and training."""

import pytest
import torch

from casflow.tasks.config import ConfigError, parse_config
from casflow.tasks.devices import parse, torch_device, visible_devices


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


@pytest.mark.parametrize("spec", ["gpu0", "cuda:x", "cuda1", "", "auto,cpu"])
def test_bad_names_are_config_errors(spec):
    with pytest.raises(ConfigError, match="classifier.device"):
        parse_config(f"classifier: {{device: '{spec}'}}\nmodels: [{{name: g, generator: {{kind: gaussian}}}}]\n")


def test_parse_gives_canonical_names():
    assert parse("cuda") == ["cuda:0"] and parse("cuda:01, cpu") == ["cuda:1", "cpu"] and parse("auto") == ["auto"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_torch_device_without_cuda():
    assert torch_device("cpu") == torch.device("cpu") and torch_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        torch_device("cuda:0")


def test_a_machine_without_gpu_device_files_is_never_asked_through_torch(monkeypatch):
    from casflow.tasks import devices

    monkeypatch.setattr(devices.os.path, "exists", lambda path: False)
    assert not devices.may_have_gpus("linux") and not devices.may_have_gpus("darwin")
    monkeypatch.setattr(devices.os.path, "exists", lambda path: path == "/dev/nvidiactl")
    assert devices.may_have_gpus("linux") and devices.may_have_gpus("win32")  # elsewhere only torch can tell
    if torch.cuda.is_available():  # where torch sees a GPU, the shortcut must not hide it
        assert devices.may_have_gpus()
