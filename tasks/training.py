"""Train a recipe's classifier on samples, save and load its weights, predict.

The whole path a model's samples take: uint8 arrays (or a stream of uint8
chunks) -> a loader on the device -> the recipe's training loop -> weights
as bytes. Seeds: the network's initial weights and the loader's order and
augmentation each get a seed derived from the run's seed, the same for
every model.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from tasks import classifiers
from tasks.classifiers.common import ResidentLoader, StreamingLoader, predict_logits
from tasks.fingerprint import derive_seed


def select_device(name: str) -> torch.device:
    """'auto' -> the first GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but CUDA is not available")
    return device


def hyper_dict(hp: Any) -> dict[str, Any]:
    return dataclasses.asdict(hp)


def train(recipe_name: str, hp: Any, images: np.ndarray, labels: np.ndarray, *, num_classes: int,
          device: torch.device, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train with the whole data set resident on the device."""
    loader = ResidentLoader(images, labels, device, batch_size=hp.batch_size, flip=hp.flip, translate=hp.translate,
                            cutout_size=hp.cutout, seed=derive_seed(seed, "loader"))
    image_shape = tuple(int(d) for d in images.shape[1:])
    return _train(recipe_name, hp, loader, num_classes, device, seed, image_shape)


def train_streaming(recipe_name: str, hp: Any, chunks: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]], *,
                    num_samples: int, image_shape: tuple[int, int, int], num_classes: int, device: torch.device,
                    seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train from a stream of uint8 chunks, for data that does not fit on the device."""
    loader = StreamingLoader(chunks, num_samples, device, batch_size=hp.batch_size, flip=hp.flip,
                             translate=hp.translate, cutout_size=hp.cutout, seed=derive_seed(seed, "loader"))
    return _train(recipe_name, hp, loader, num_classes, device, seed, image_shape)


def _train(recipe_name: str, hp: Any, loader: ResidentLoader | StreamingLoader, num_classes: int,
           device: torch.device, seed: int, image_shape: tuple[int, ...]) -> tuple[torch.nn.Module, dict[str, Any]]:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its kernels once
        torch.cuda.reset_peak_memory_stats(device)
    net, log = classifiers.recipe(recipe_name).train(loader, num_classes, hp, device, derive_seed(seed, "init"), image_shape)
    log["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    log["torch"] = torch.__version__
    if device.type == "cuda":
        log["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return net, log


def weights_bytes(net: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_weights(recipe_name: str, hp: Any, data: bytes, *, image_shape: tuple[int, int, int], num_classes: int,
                 device: torch.device) -> torch.nn.Module:
    net = classifiers.recipe(recipe_name).build(hp, image_shape, num_classes)
    net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return net.to(device, memory_format=torch.channels_last)


def predict(hp: Any, net: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    return predict_logits(net, images, device, tta_level=hp.tta_level, flip=hp.flip)
