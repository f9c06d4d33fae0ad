"""Train a recipe's classifier on a model's samples, save and load its weights, predict.

The whole path a model's samples take: a sample set -> a loader on the
device, resident (the whole set as one uint8 tensor, augmented there) or
streamed (decoded chunks through a shuffle buffer) -> the recipe's training
loop -> weights as bytes. Which loader is decided by `classifiers.data_path`, and
the classifier's fingerprint records it. Seeds: the network's initial
weights and the loader's order and augmentation each get a seed derived from
the run's seed, the same for every model.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch

from casflow.tasks.classifiers import Recipe, data_path
from casflow.tasks.classifiers.common import PREDICT_BATCH, ResidentLoader, StreamingLoader, predict_features, predict_logits
from casflow.tasks.fingerprint import derive_seed

__all__ = ["PREDICT_BATCH", "InMemorySamples", "TrainingSamples", "data_path", "device_name", "features", "load_weights",
           "predict", "train", "weights_bytes", "weights_size"]


class TrainingSamples(Protocol):
    """A model's samples as training sees them: whole, or as a stream of chunks in a seeded order per epoch."""

    num_samples: int
    image_shape: tuple[int, int, int]

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 NHWC images, int64 labels), the whole set."""
        ...

    def chunks(self, epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(images, labels) chunks of any size covering the set once, in an order that depends on the epoch."""
        ...


@dataclasses.dataclass(frozen=True)
class InMemorySamples:
    """Arrays already in memory (tests, benchmarks); streamed as chunks of `chunk_size` in a seeded order."""

    images: np.ndarray
    labels: np.ndarray
    chunk_size: int = 1000
    seed: int = 0

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.labels

    def chunks(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        starts = range(0, self.num_samples, self.chunk_size)
        for i in np.random.default_rng(derive_seed(self.seed, "chunks", epoch)).permutation(len(starts)):
            yield self.images[starts[i] : starts[i] + self.chunk_size], self.labels[starts[i] : starts[i] + self.chunk_size]


def train(recipe: Recipe, samples: TrainingSamples, *, num_classes: int, device: torch.device, seed: int,
          resident_limit_gb: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the recipe on the samples; returns the network and its training log."""
    hp = recipe.hp
    loader_seed = derive_seed(seed, "loader")
    if data_path(samples.num_samples, samples.image_shape, resident_limit_gb) == "resident":
        images, labels = samples.decoded()
        loader = ResidentLoader(images, labels, device, batch_size=hp.batch_size, flip=hp.flip, translate=hp.translate,
                                cutout_size=hp.cutout, seed=loader_seed)
    else:
        loader = StreamingLoader(samples.chunks, samples.num_samples, device, batch_size=hp.batch_size, flip=hp.flip,
                                 translate=hp.translate, cutout_size=hp.cutout, seed=loader_seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its kernels once
        torch.cuda.reset_peak_memory_stats(device)
    net, log = recipe.module.train(loader, num_classes, hp, device, derive_seed(seed, "init"), samples.image_shape)
    log["device"] = device_name(device)
    log["torch"] = torch.__version__
    # what `cas plan` estimates from (tasks/throughput.py): images seen per second, per recipe, image shape and device
    log |= {"recipe": recipe.name, "recipe_fingerprint": recipe.fingerprint, "num_samples": samples.num_samples,
            "image_shape": list(samples.image_shape), "images_seen": round(samples.num_samples * hp.epochs)}
    if device.type == "cuda":
        log["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return net, log


def device_name(device: torch.device) -> str:
    """"cpu", or the GPU's name: what training logs and throughput is matched on."""
    return str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)


def weights_size(recipe: Recipe, image_shape: tuple[int, int, int], num_classes: int) -> int:
    """About how many bytes `weights_bytes` gives for this recipe, from a network built on the meta
    device (no memory, no data): the tensors' bytes plus torch.save's framing per tensor."""
    with torch.device("meta"):
        net = recipe.module.build(recipe.hp, image_shape, num_classes)
    state = net.state_dict()
    return sum(t.numel() * t.element_size() for t in state.values()) + 160 * len(state) + 1500


def weights_bytes(net: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_weights(recipe: Recipe, data: bytes, *, image_shape: tuple[int, int, int], num_classes: int,
                 device: torch.device) -> torch.nn.Module:
    net = recipe.module.build(recipe.hp, image_shape, num_classes)
    net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return net.to(device, memory_format=torch.channels_last)


def predict(recipe: Recipe, net: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """float32 logits (N, classes), with the recipe's test-time augmentation."""
    return predict_logits(net, images, device, tta_level=recipe.hp.tta_level, flip=recipe.hp.flip)


def features(recipe: Recipe, net: torch.nn.Module, images: np.ndarray, device: torch.device, *,
             batch_size: int = 2000) -> np.ndarray:
    """float32 penultimate activations (N, D) of uint8 NHWC images, without test-time augmentation
    whatever the recipe's `tta_level` (one embedding per image, as the feature-space scores define;
    see `common.predict_features`). Every recipe's network has `features(x)`; its logits are
    `head(features(x))`, unchanged by it. `recipe` is taken for symmetry with predict(): no
    recipe setting changes the features."""
    return predict_features(net, images, device, batch_size=batch_size)
