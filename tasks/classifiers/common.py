"""Pieces every recipe shares: training data on the device, augmentation on
the device, the input normalisation that travels inside each network, the
lookahead average, and prediction with test-time augmentation (TTA).

Small images (CIFAR scale) live on the device as one uint8 tensor and are
augmented per epoch there (airbench's CifarLoader idea); data too large for
the device streams through `StreamingLoader` with the same augmentations.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from casflow.tasks import stopping

log = logging.getLogger("casflow.train")

WHITENING_SAMPLE = 5000  # images used to fit input statistics and the whitening layer
PREDICT_BATCH = 2000  # images per forward pass in prediction; callers that predict a set window by window use it too
UPLOAD_CHUNK = 65536  # images copied to the device at a time (the set may be a memory map of the decoded cache)


# ---------------------------------------------------------------- precision

def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 on the CPU, where bf16 convolutions are slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def data_dtype(device: torch.device) -> torch.dtype:
    """Resident float copies of the images: bf16 on CUDA halves their memory."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def to_unit_float(images_u8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1], channels_last."""
    x = images_u8.permute(0, 3, 1, 2).to(dtype).div_(255)
    return x.contiguous(memory_format=torch.channels_last)


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics are buffers, saved with the weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.full((channels,), 0.5))
        self.register_buffer("std", torch.full((channels,), 0.25))

    def fit(self, images: torch.Tensor) -> None:
        """images: float NCHW in [0, 1]."""
        flat = images.float().transpose(0, 1).reshape(images.shape[1], -1)
        self.mean.copy_(flat.mean(1))
        self.std.copy_(flat.std(1).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


# ---------------------------------------------------------------- augmentation

def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(padded: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Crops of the unpadded size at a random offset in [-pad, pad] per image and axis.

    Two passes of 2*pad+1 masked copies (rows, then columns) instead of a
    gather: cheap on the GPU and exact."""
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    shifts = torch.randint(0, 2 * pad + 1, (2, n), device=padded.device, generator=generator)
    rows = torch.empty((n, c, h, wp), dtype=padded.dtype, device=padded.device)
    for s in range(2 * pad + 1):
        mask = shifts[0] == s
        rows[mask] = padded[mask, :, s : s + h, :]
    out = torch.empty((n, c, h, w), dtype=padded.dtype, device=padded.device)
    for s in range(2 * pad + 1):
        mask = shifts[1] == s
        out[mask] = rows[mask, :, :, s : s + w]
    return out.contiguous(memory_format=torch.channels_last)


def cutout(x: torch.Tensor, size: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blank one size x size square per image (clipped at the borders) with the per-channel fill."""
    n, _, h, w = x.shape
    top = torch.randint(0, max(1, h - size + 1), (n,), device=x.device, generator=generator)
    left = torch.randint(0, max(1, w - size + 1), (n,), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= top.view(-1, 1, 1)) & (ys < top.view(-1, 1, 1) + size)
              & (xs >= left.view(-1, 1, 1)) & (xs < left.view(-1, 1, 1) + size))
    return torch.where(inside.unsqueeze(1), fill.to(x.dtype).view(1, -1, 1, 1), x)


# ---------------------------------------------------------------- loaders

class ResidentLoader:
    """The whole training set on the device, augmented there once per epoch.

    Flips alternate (airbench): a random half is flipped once, then every
    image flips on odd epochs, so each image is seen both ways in two epochs.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, *, batch_size: int,
                 flip: bool, translate: int, cutout_size: int = 0, seed: int = 0):
        self.device = device
        self.batch_size = batch_size
        self.flip, self.translate, self.cutout_size = flip, translate, cutout_size
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.num_samples = len(images)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        images_u8 = torch.empty(images.shape, dtype=torch.uint8, device=device)
        for start in range(0, len(images), UPLOAD_CHUNK):
            images_u8[start : start + UPLOAD_CHUNK].copy_(torch.from_numpy(np.array(images[start : start + UPLOAD_CHUNK])))
        self.images = to_unit_float(images_u8, data_dtype(device))
        if flip:
            self.images = random_flip(self.images, self.generator)
        self.padded = F.pad(self.images, (translate,) * 4, mode="reflect") if translate else None
        self.sample_indices = torch.randperm(self.num_samples, device=device, generator=self.generator)[:WHITENING_SAMPLE]
        # cutout blanks to the mean colour, which is zero after normalisation (as airbench)
        self.fill = self.images[self.sample_indices].float().mean(dim=(0, 2, 3))

    def __len__(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def whitening_sample(self) -> torch.Tensor:
        """A seeded random subset: stored order may be grouped by class."""
        return self.images[self.sample_indices]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = random_crop(self.padded, self.translate, self.generator) if self.translate else self.images
        if self.flip and epoch % 2 == 1:
            images = images.flip(-1)
        if self.cutout_size:
            images = cutout(images, self.cutout_size, self.fill, self.generator)
        order = torch.randperm(self.num_samples, device=self.device, generator=self.generator)
        size = min(self.batch_size, self.num_samples)
        for i in range(len(self)):
            stopping.check()
            idx = order[i * size : (i + 1) * size]
            yield images[idx], self.labels[idx]


class StreamingLoader:
    """Batches from a stream of uint8 chunks, for data sets that do not fit on the device.

    `chunks(epoch)` yields (images uint8 NHWC, labels) in any sizes, e.g. one
    decoded shard at a time in an epoch-dependent shard order; a shuffle
    buffer of `buffer_batches` batches mixes them. Flips are random per image.
    """

    def __init__(self, chunks: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]], num_samples: int,
                 device: torch.device, *, batch_size: int, flip: bool, translate: int, cutout_size: int = 0,
                 seed: int = 0, buffer_batches: int = 8):
        self.chunks = chunks
        self.num_samples = num_samples
        self.device = device
        self.batch_size = batch_size
        self.flip, self.translate, self.cutout_size = flip, translate, cutout_size
        self.buffer_size = buffer_batches * batch_size
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.fill = torch.full((1,), 0.5, device=device)  # replaced by the data's mean colour in whitening_sample()

    def __len__(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def whitening_sample(self) -> torch.Tensor:
        """A seeded random draw from the first chunks of epoch 0 (reading everything would cost an epoch)."""
        taken, count = [], 0
        for images, _ in self.chunks(0):
            taken.append(images)
            count += len(images)
            if count >= 4 * WHITENING_SAMPLE:
                break
        pool = np.concatenate(taken)
        chosen = np.sort(self.rng.permutation(len(pool))[:WHITENING_SAMPLE])
        sample = to_unit_float(torch.from_numpy(pool[chosen]).to(self.device), data_dtype(self.device))
        self.fill = sample.float().mean(dim=(0, 2, 3))
        return sample

    def _augment(self, images_u8: np.ndarray) -> torch.Tensor:
        x = to_unit_float(torch.from_numpy(images_u8).to(self.device), data_dtype(self.device))
        if self.translate:
            x = random_crop(F.pad(x, (self.translate,) * 4, mode="reflect"), self.translate, self.generator)
        if self.flip:
            x = random_flip(x, self.generator)
        if self.cutout_size:
            x = cutout(x, self.cutout_size, self.fill, self.generator)
        return x

    def _shuffled(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.concatenate(xs), np.concatenate(ys)
        perm = self.rng.permutation(len(x))
        return x[perm], y[perm]

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Full batches from a shuffle buffer; one short batch only when all data is smaller than a batch."""
        xs, ys, held = [], [], 0
        for images, labels in self.chunks(epoch):
            xs.append(images)
            ys.append(labels)
            held += len(images)
            if held >= self.buffer_size:
                x, y = self._shuffled(xs, ys)
                whole = len(x) - len(x) % self.batch_size
                for i in range(0, whole, self.batch_size):
                    yield x[i : i + self.batch_size], y[i : i + self.batch_size]
                xs, ys, held = [x[whole:]], [y[whole:]], len(x) - whole
        if held:
            x, y = self._shuffled(xs, ys)
            for i in range(0, len(x), self.batch_size):
                yield x[i : i + self.batch_size], y[i : i + self.batch_size]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in itertools.islice(self._batches(epoch), len(self)):
            stopping.check()
            yield self._augment(images), torch.from_numpy(labels).to(self.device)


TrainLoader = ResidentLoader | StreamingLoader


# ---------------------------------------------------------------- training helpers

class Lookahead:
    """An exponential average of the weights that the network is reset to (airbench's lookahead)."""

    def __init__(self, net: nn.Module):
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        for (name, param) in net.state_dict().items():
            if param.dtype.is_floating_point:
                self.average[name].lerp_(param, 1 - decay)
                param.copy_(self.average[name])


def seeded_on_device(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """`build()`'s network, initialised from `seed` without touching the global RNG, channels_last on the device."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = build()
    return net.to(device, memory_format=torch.channels_last)


def triangle(step: int, total: int, start: float, peak_at: float, end: float) -> float:
    """Piecewise-linear learning-rate factor: start -> 1 at peak_at * total -> end."""
    peak = max(1, int(peak_at * total))
    if step < peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * (step - peak) / max(1, total - peak)


def total_steps(loader: TrainLoader, epochs: float) -> int:
    return max(1, math.ceil(len(loader) * epochs))


class EpochLog:
    """Collects per-epoch figures; logs the first and last epoch and one every few seconds between."""

    def __init__(self, total_epochs: int, num_samples: int, every_seconds: float = 5.0):
        self.total_epochs, self.num_samples, self.every = total_epochs, num_samples, every_seconds
        self.rows: list[dict[str, float]] = []
        self.last_logged = -math.inf

    def add(self, epoch: int, loss: float, accuracy: float, seconds: float, images: int) -> None:
        self.rows.append({"epoch": epoch, "loss": round(loss, 5), "train_accuracy": round(accuracy, 5),
                          "seconds": round(seconds, 3)})
        now = time.monotonic()
        if epoch in (0, self.total_epochs - 1) or now - self.last_logged >= self.every:
            self.last_logged = now
            log.info("epoch %d/%d: loss %.4f, batch accuracy %.3f, %d images in %.1f s (%.0f img/s)",
                     epoch + 1, self.total_epochs, loss, accuracy, images, seconds, images / max(seconds, 1e-9))


# ---------------------------------------------------------------- prediction

@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, device: torch.device, *, tta_level: int, flip: bool,
                   batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """float32 logits (N, classes) for uint8 NHWC images.

    TTA levels as airbench: 0 none, 1 mirror, 2 mirror and a 1-pixel
    translation both ways. Mirroring is skipped when training did not flip
    (digits and text are not mirror-symmetric)."""
    model.eval()

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()
        return 0.5 * (logits + model(x.flip(-1)).float()) if flip and tta_level >= 1 else logits

    out = []
    for x in _unit_float_batches(images, device, data_dtype(device), batch_size):
        with autocast(device):
            logits = mirrored(x)
            if tta_level >= 2:
                padded = F.pad(x, (1,) * 4, mode="reflect")
                h, w = x.shape[-2:]
                shifted = [mirrored(padded[:, :, dy : dy + h, dx : dx + w].contiguous(memory_format=torch.channels_last))
                           for dy, dx in ((0, 0), (2, 2))]
                logits = 0.5 * logits + 0.25 * (shifted[0] + shifted[1])
        out.append(logits.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def predict_features(model: nn.Module, images: np.ndarray, device: torch.device, *, batch_size: int = 2000) -> np.ndarray:
    """float32 penultimate activations (N, D) for uint8 NHWC images: `model.features`, one view per image.

    No test-time augmentation: the feature-space scores (Frechet distance,
    precision and recall) embed each image once, and an average over
    mirrored and shifted views would describe a blurred image instead. No
    autocast either: features run in float32 on every device, since
    bf16's 8-bit mantissa would put about 0.4% of round-off into every
    distance and covariance the scores take."""
    model.eval()
    out = [model.features(x).float().cpu() for x in _unit_float_batches(images, device, torch.float32, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _unit_float_batches(images: np.ndarray, device: torch.device, dtype: torch.dtype, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 NHWC images -> float NCHW batches in [0, 1] on the device."""
    for start in range(0, len(images), batch_size):
        stopping.check()
        yield to_unit_float(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device), dtype)
