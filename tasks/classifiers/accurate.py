"""`accurate`: the airbench96 recipe: `fast`'s network and training loop with
a residual third conv per group, wider groups, stronger augmentation
(4-pixel translation, 12-pixel cutout) and 40 epochs (`hyper.AccurateHyper`)."""

from __future__ import annotations

from casflow.tasks.classifiers import fast
from casflow.tasks.classifiers.hyper import AccurateHyper

Hyper = AccurateHyper

build = fast.build
train = fast.train
