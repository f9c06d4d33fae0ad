"""Every recipe's hyperparameters, without torch: the table of recipes.

A config is validated and a classifier fingerprinted from these alone, so a
run whose classifiers are all cached never imports torch (2-4 s of a cached
run on a 2-core CPU). Each recipe module (`fast.py`, `accurate.py`,
`paper.py`) takes its `Hyper` from `RECIPES` here and holds its network and
training loop. A recipe's code version is `recipe:<name>` in
`casflow.tasks.fingerprint.CODE_VERSIONS`: bump it there when the recipe's
output changes for the same inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import ConfigDict


@dataclasses.dataclass(frozen=True)
class FastHyper:
    """`fast`: airbench94's CIFAR-10 settings."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    # optimisation: lr and weight decay per 1024 examples, decoupled from momentum and from each other
    epochs: float = 9.9
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0  # BatchNorm biases learn this much faster (no extra decay)
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3  # the whitening layer's bias trains this many epochs, then freezes
    lookahead_every: int = 5  # steps between lookahead updates
    # augmentation
    flip: bool = True
    translate: int = 2  # pixels, reflect-padded
    cutout: int = 0  # side of the blanked square in pixels; 0 = off
    # network
    widths: tuple[int, int, int] = (64, 256, 256)
    convs_per_group: int = 2  # 3 adds a residual third conv (airbench96)
    batchnorm_momentum: float = 0.6
    whiten_kernel: int = 2
    logit_scale: float = 1 / 9
    # evaluation
    tta_level: int = 2  # 0 none, 1 mirror, 2 mirror + translate


@dataclasses.dataclass(frozen=True)
class AccurateHyper(FastHyper):
    """`accurate`: airbench96, `fast`'s network with a residual third conv per group."""

    epochs: float = 40.0
    lr: float = 9.0
    translate: int = 4
    cutout: int = 12
    widths: tuple[int, int, int] = (128, 512, 512)
    convs_per_group: int = 3


@dataclasses.dataclass(frozen=True)
class PaperHyper:
    """`paper`: a torchvision ResNet, SGD with warm-up and cosine decay."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    epochs: float = 40.0
    batch_size: int = 512
    lr: float = 0.2  # at batch_size; scale linearly if you change it
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.0
    flip: bool = True
    translate: int = 4
    cutout: int = 0
    tta_level: int = 0


# The recipes: name -> hyperparameter class (the module casflow.tasks.classifiers.<name> trains it).
RECIPES = {"fast": FastHyper, "accurate": AccurateHyper, "paper": PaperHyper}
