"""What every dataset kind shares: labelled uint8 images, seeded splits, and
the record a kind module registers (its config, its content digest, its loader)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen, location_fields


@dataclasses.dataclass(frozen=True)
class LabeledImages:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> tuple[int, ...]:
        return tuple(int(n) for n in np.bincount(self.labels, minlength=len(self.class_names)))

    def take(self, indices: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[indices], self.labels[indices], self.class_names)


Splits = tuple[LabeledImages, LabeledImages]  # (train, eval)


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """One dataset kind: its config model, what its fingerprint sees of the data, and its loader."""

    config: type[Frozen]  # with a `kind` literal, a `name`, and LOCATION_FIELDS for files it reads
    content: Callable[[Any, SourceFiles], dict[str, str]]  # digests of the data, never where it lives
    load: Callable[[Any, SourceFiles, Limits], Splits]  # (spec, files, limits) -> (train, eval)

    @property
    def kind(self) -> str:
        return typing.get_args(self.config.model_fields["kind"].annotation)[0]


def file_digests(spec: Frozen, files: SourceFiles) -> dict[str, str]:
    """The content digest of each file the spec names: the `content` of most kinds."""
    digests = {}
    for field in location_fields(spec):
        try:
            digests[field] = files.digest(getattr(spec, field))
        except FileNotFoundError:
            raise InputError(f"{field} {getattr(spec, field)}: no such file or folder",
                             source=f"dataset {spec.name}") from None
        except ValueError as exc:  # not a regular file, over a limit: the message names the file
            raise InputError(str(exc), source=f"dataset {spec.name}") from None
    return digests


# ---------------------------------------------------------------- splits

def stratified_split(labels: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded permutation; the first round(n * eval_fraction) go to eval. Indices sorted."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_eval = int(round(len(members) * eval_fraction))
        held_out.append(members[:n_eval])
        train.append(members[n_eval:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


def subset_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` indices per class, chosen by a seeded permutation; sorted."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def content_digest(data: LabeledImages) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(data.labels.astype("<i8").tobytes())
    h.update(json.dumps(list(data.class_names)).encode())
    return h.hexdigest()


def check_label_range(labels: np.ndarray, num_classes: int, source: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise InputError(f"label {int(labels[bad][0])} outside the {num_classes} classes", source=source)
