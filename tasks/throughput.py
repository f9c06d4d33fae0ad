"""How fast each step runs, for `cas plan`'s estimates: rates earlier runs measured, else defaults.

A step's work is counted in units whose cost is roughly linear in them:

  samples    samples drawn                      per generator kind and device
  train      images seen (training images x epochs)  per recipe, image shape and device
  evaluate   real eval images predicted         per recipe, image shape and device
  scores     samples scored                     per recipe, image shape and device

Earlier runs' measurements (`Measurement`, read from the store's commit markers and results by
`flows/plan.py`) give a rate: the median of units / seconds over the measurements of the same step,
key (recipe or generator kind), device and image shape, those of the same variant (the recipe's
fingerprint: its hyperparameters; for samples the dataset's fingerprint) preferred when there are any.
Without one, the default below, scaled from the image size it was measured at by pixels (the
convolutions' cost grows with H x W). Plain numbers, no torch.
"""

from __future__ import annotations

import dataclasses
import statistics

STEPS = ("samples", "train", "evaluate", "scores")


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One earlier step's work and time, as a commit marker (or a results row, for samples) recorded it."""

    step: str  # one of STEPS
    key: str  # the recipe's name; for samples the generator's kind
    variant: str | None  # the recipe's fingerprint; for samples the dataset's fingerprint
    device: str  # as training logs it: "cpu" or the GPU's name (torch.cuda.get_device_name)
    image_shape: tuple[int, int, int] | None  # None for samples (the dataset's shape is in `variant`)
    units: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class Default:
    rate: float  # units per second at `shape`
    shape: tuple[int, int, int]  # the image shape it was measured at
    source: str  # where the number comes from


@dataclasses.dataclass(frozen=True)
class Rate:
    per_second: float
    source: str  # "history (n)" or "default (...)"
    measured: int  # how many earlier measurements it is the median of; 0 for a default


# ---------------------------------------------------------------- defaults

DIGITS = (8, 8, 1)
CIFAR = (32, 32, 3)
CPU_SOURCE = "cas demo, median over its steps, 2-core CPU at load 2-7, 2026-12-02"
# benchmarks/cifar10_gpu.py on one H200, 2026-12-04 (benchmarks/results/cifar10_gpu-2026-12-04-h200-*.md): the
# training loop's mean over 3 runs, `fast` 3.04 s for 9.9 epochs of 50,000 CIFAR-10 images, `accurate` 21.29 s for
# 40; the evaluate step (weights in, shards decoded from the warm cache, TTA predictions) 0.19 s and 0.63 s for 10,000.
H200 = "benchmarks/cifar10_gpu.py, one H200, 2026-12-04"
# (recipe, "cpu" | "gpu") -> images x epochs per second
TRAIN: dict[tuple[str, str], Default] = {
    ("fast", "cpu"): Default(16_800.0, DIGITS, CPU_SOURCE),
    ("accurate", "cpu"): Default(16_800.0 / 15, DIGITS, "fast's CPU rate / 15 (airbench96's FLOPs / airbench94's); a guess"),
    ("paper", "cpu"): Default(16_800.0 / 30, DIGITS, "fast's CPU rate / 30 (ResNet-18); a guess"),
    ("fast", "gpu"): Default(9.9 * 50_000 / 3.04, CIFAR, H200),
    ("accurate", "gpu"): Default(40 * 50_000 / 21.29, CIFAR, H200),
    ("paper", "gpu"): Default(9.9 * 50_000 / 3.04 / 20, CIFAR, "fast's GPU rate / 20 (ResNet-18); a guess"),
}
# (recipe, "cpu" | "gpu") -> eval images per second, the step's whole time (load weights, decode, predict with TTA)
EVALUATE: dict[tuple[str, str], Default] = {
    ("fast", "cpu"): Default(7_600.0, DIGITS, CPU_SOURCE),
    ("accurate", "cpu"): Default(7_600.0 / 15, DIGITS, "fast's CPU rate / 15; a guess"),
    ("paper", "cpu"): Default(7_600.0 / 30, DIGITS, "fast's CPU rate / 30; a guess"),
    ("fast", "gpu"): Default(10_000 / 0.19, CIFAR, H200),
    ("accurate", "gpu"): Default(10_000 / 0.63, CIFAR, H200),
    ("paper", "gpu"): Default(10_000 / 0.63 / 2, CIFAR, "accurate's GPU rate / 2; a guess"),
}
# (recipe, "cpu" | "gpu") -> samples scored per second (features of samples, eval and train images; nearest neighbours)
SCORES: dict[tuple[str, str], Default] = {
    ("fast", "cpu"): Default(460.0, DIGITS, CPU_SOURCE),
    ("accurate", "cpu"): Default(460.0 / 15, DIGITS, "fast's CPU rate / 15; a guess"),
    ("paper", "cpu"): Default(460.0 / 30, DIGITS, "fast's CPU rate / 30; a guess"),
    ("fast", "gpu"): Default(20_000.0, CIFAR, "a guess"),
    ("accurate", "gpu"): Default(5_000.0, CIFAR, "a guess"),
    ("paper", "gpu"): Default(2_500.0, CIFAR, "a guess"),
}
# generator kind -> samples per second, any device (most kinds read files: the CPU decodes and encodes PNG)
SAMPLES: dict[str, Default] = {
    "gaussian": Default(6_700.0, DIGITS, CPU_SOURCE),
    "real-shuffled": Default(10_000.0, DIGITS, CPU_SOURCE),
    "*": Default(1000.0, (64, 64, 3), "benchmarks/results/scale-2026-11-29.md: file formats drew 650-1,400 images/s"),
}


def device_class(device: str) -> str:
    return "cpu" if device == "cpu" else "gpu"


def default_rate(step: str, key: str, device: str, image_shape: tuple[int, int, int] | None) -> Rate:
    """The table's rate for a step, scaled by pixels to `image_shape` (unscaled when it is None)."""
    if step == "samples":
        default = SAMPLES.get(key, SAMPLES["*"])
    else:
        table = {"train": TRAIN, "evaluate": EVALUATE, "scores": SCORES}[step]
        default = table.get((key, device_class(device))) or table[("fast", device_class(device))]
    scale = 1.0 if image_shape is None else _pixels(default.shape) / _pixels(image_shape)
    return Rate(default.rate * scale, f"default ({default.source})", 0)


def _pixels(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1]


# ---------------------------------------------------------------- estimates

def rate(history: list[Measurement], step: str, key: str, variant: str | None, device: str,
         image_shape: tuple[int, int, int] | None) -> Rate:
    """The median rate of the matching measurements (same variant first), else the default."""
    matching = [m for m in history if m.step == step and m.key == key and m.device == device and m.seconds > 0
                and m.units > 0 and (image_shape is None or m.image_shape is None or tuple(m.image_shape) == tuple(image_shape))]
    same_variant = [m for m in matching if variant is not None and m.variant == variant]
    chosen = same_variant or matching
    if not chosen:
        return default_rate(step, key, device, image_shape)
    return Rate(statistics.median(m.units / m.seconds for m in chosen), f"history ({len(chosen)})", len(chosen))


def seconds(units: float, step_rate: Rate) -> float:
    return units / step_rate.per_second


# ---------------------------------------------------------------- bytes

TAR_BLOCK = 512
# docs/imagenet.md: PNG (level 1) of 64x64 photographs, measured on tiled CIFAR-10 images on this project's
# machine (2026-11-29): 8,682 bytes, 0.71 of the raw pixels; the upper of its two bounds
PNG_FRACTION_OF_RAW = 0.71
# a tar header for the `.png` and one for the `.cls`, the `.cls` block, and on average half a block of padding
TAR_FRAMING = 3 * TAR_BLOCK + TAR_BLOCK // 2
SHARD_BYTES_SOURCE = "PNG at 0.71 of raw pixels + 1.8 kB tar framing (docs/imagenet.md)"


def shard_bytes_per_sample(image_shape: tuple[int, int, int]) -> int:
    """A sample's bytes in a shard when no shard set of that shape is on the store to measure: its PNG,
    estimated from the raw pixels, and its tar framing (10,516 bytes at 64x64x3)."""
    height, width, channels = image_shape
    return round(PNG_FRACTION_OF_RAW * height * width * channels) + TAR_FRAMING


# predictions.parquet per eval image (key, label, top-5, p_true, p_top1; zstd) when no evaluation on the store says
# `cas demo` on this project's 2-core CPU machine, 2026-12-05, its first six evaluations: 6,493 to 6,622 bytes for
# 359 eval images (18.1 to 18.4 per image, median 18.2); tests/flows/test_plan.py ties it to stored objects within 10%
PREDICTION_BYTES_PER_IMAGE = 18.2


# ---------------------------------------------------------------- races

# A racing series (selection: race) gives every checkpoint its first classifier seed, and further seeds only to
# the contenders: a plan counts the worst case, every checkpoint with max_seeds, and beside it this measured share
# of the further seeds. benchmarks/results/race-2026-12-04.md: 20 races of examples/cfg_flow_series.py's
# 8 checkpoints with at most 5 seeds used 18.2 trainings on average (13 to 26) of the full protocol's 40, so
# 10.2 of the 32 further trainings. One series on digits: a series of closer checkpoints takes more.
RACE_SOURCE = "benchmarks/results/race-2026-12-04.md: 8 checkpoints, max 5 seeds, 18.2 of 40 trainings on average"
RACE_FURTHER_SEEDS_SHARE = (18.2 - 8) / (40 - 8)
# Adaptive seeds (classifier.seeds: {min, max}) train `min` seeds, then more only while tonight's comparison is
# not settled: a plan counts the worst case, `max` seeds, and beside it this measured share of the further
# seeds. benchmarks/results/adaptive_seeds-2026-12-05.md: with {min 1, max 5}, 1.75 seeds per night on average
# over every night of its chains (redraws and regressions of the demo's generators), so 0.75 of 4 further seeds.
SEEDS_SOURCE = "benchmarks/results/adaptive_seeds-2026-12-05.md: {min 1, max 5}, 1.75 seeds per night on average"
SEEDS_FURTHER_SHARE = (1.75 - 1) / (5 - 1)
FURTHER_SHARE = {"race": RACE_FURTHER_SEEDS_SHARE, "seeds": SEEDS_FURTHER_SHARE}  # by PlannedStep.further
