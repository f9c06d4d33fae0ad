"""`accurate`: the airbench96 recipe: `fast`'s network and training loop with
a residual third conv per group, wider groups, stronger augmentation
(4-pixel translation, 12-pixel cutout) and 40 epochs."""

from __future__ import annotations

import dataclasses

from casflow.tasks.classifiers import fast

VERSION = 2


@dataclasses.dataclass(frozen=True)
class Hyper(fast.Hyper):
    epochs: float = 40.0
    lr: float = 9.0
    translate: int = 4
    cutout: int = 12
    widths: tuple[int, int, int] = (128, 512, 512)
    convs_per_group: int = 3


build = fast.build
train = fast.train
