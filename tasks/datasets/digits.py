"""`digits`: scikit-learn's bundled digits (UCI optical digits), 1,797 real 8x8
grey images in 10 classes, split into train and eval by a seeded stratified
split. The embedded default: nothing to download."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from casflow.tasks.datasets.common import DatasetSource, LabeledImages, Splits, content_digest, stratified_split
from casflow.tasks.files import SourceFiles
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen


class DigitsDataset(Frozen):
    """scikit-learn's bundled digits: 1,797 real 8x8 grey images, 10 classes."""

    kind: Literal["digits"] = "digits"
    name: str = "digits"
    eval_fraction: float = Field(0.2, gt=0, lt=1)  # stratified held-out split
    split_seed: int = 0


def digits() -> LabeledImages:
    """All 1,797 images; pixel values 0..16 map to uint8 by round(v * 255 / 16).

    Read from the file scikit-learn ships, as `sklearn.datasets.load_digits` reads it (a gzipped CSV, 64
    pixels and the label per row), without importing scikit-learn: that takes about a second, and every
    run on digits fingerprints these images, cached runs too."""
    with gzip.open(_digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    images = np.rint(table[:, :-1].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)[:, :, :, None]
    return LabeledImages(images, table[:, -1].astype(np.int64), tuple(str(n) for n in range(10)))


def _digits_file() -> Path:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the digits dataset is scikit-learn's: pip install scikit-learn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def digits_splits(eval_fraction: float, split_seed: int) -> Splits:
    data = digits()
    train, held_out = stratified_split(data.labels, eval_fraction, split_seed)
    return data.take(train), data.take(held_out)


def load(spec: DigitsDataset, files: SourceFiles, limits: Limits) -> Splits:
    train, held_out = digits_splits(spec.eval_fraction, spec.split_seed)  # embedded: nothing to bound
    return train.split(f"dataset {spec.name} train"), held_out.split(f"dataset {spec.name} eval")


def content(spec: DigitsDataset, files: SourceFiles) -> dict[str, str]:
    train, held_out = digits_splits(spec.eval_fraction, spec.split_seed)
    return {"train": content_digest(train), "eval": content_digest(held_out)}


SOURCE = DatasetSource(DigitsDataset, content, load)
