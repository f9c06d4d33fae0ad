"""What every dataset kind shares: labelled uint8 images, splits read in two
passes (`Split`), seeded splits and subsets, and the record a kind module
registers (its config, its content digest, its loader)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.images import Transcode, check_decoded_bytes, decode_chunk
from casflow.tasks.limits import Limits
from casflow.tasks.parallel import ordered_map
from casflow.tasks.samples import class_interleaved
from casflow.tasks.schema import Frozen, location_fields
from casflow.tasks.streaming import Listing, array_chunks, encode_in_order


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

    def split(self, what: str) -> Split:
        """As a `Split` (images already in memory)."""
        listing = Listing(what, self.labels, lambda indices: array_chunks(self.images, indices), shape=self.image_shape)
        return Split(listing, self.class_names, self.image_shape, self.images.shape[1] * self.images.shape[2], what)


@dataclasses.dataclass(frozen=True)
class Split:
    """A real split as it is read: labels, class names and image shape now (pass 1 and the first image's
    header), images when `stored()` encodes them (`streaming.encode_in_order`), so a split of any size
    is sharded in memory that does not grow with it."""

    listing: Listing
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    max_pixels: int
    what: str  # names the dataset in errors: "dataset cifar10"
    keep: np.ndarray | None = None  # the indices kept (a per-class limit), sorted; None: all

    @property
    def labels(self) -> np.ndarray:
        return self.listing.labels if self.keep is None else self.listing.labels[self.keep]

    def counts(self) -> tuple[int, ...]:
        return tuple(int(n) for n in np.bincount(self.labels, minlength=len(self.class_names)))

    def stored(self, workers: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(label, PNG) per sample in the stored order (classes interleaved: sources often come grouped
        by class), every image read and checked before this returns."""
        kept = np.arange(len(self.listing)) if self.keep is None else self.keep
        order = kept[class_interleaved(self.listing.labels[kept])]
        try:
            return encode_in_order(self.listing, order, Transcode(self.image_shape, self.max_pixels), what=self.what,
                                   workers=workers)
        except InputError:
            raise
        except ValueError as exc:  # what the files refuse to read (not a regular file, over a limit): the message names it
            raise InputError(str(exc), source=self.what) from None

    def decoded(self) -> LabeledImages:
        """The whole split decoded in memory (small data: tests, the built-in digits)."""
        kept = np.arange(len(self.listing)) if self.keep is None else self.keep
        images = np.empty((len(kept), *self.image_shape), dtype=np.uint8)
        chunks = self.listing.chunks(kept)
        if self.listing.shape is None:  # image files
            chunks = ordered_map(decode_chunk, ((blobs, sources, self.max_pixels, self.image_shape) for blobs, sources in chunks))
        else:
            chunks = (images for images, _ in chunks)
        done = 0
        for chunk in chunks:
            images[done : done + len(chunk)] = chunk
            done += len(chunk)
        return LabeledImages(images, self.labels, self.class_names)


def split_of(listing: Listing, class_names: tuple[str, ...], limits: Limits, what: str,
             keep: np.ndarray | None = None) -> Split:
    """A split with its image shape from the first image's header, N x H x W x C checked against
    limits.max_decoded_bytes (as the whole split would decode) before any image is decoded."""
    try:
        shape = listing.image_shape(limits.max_image_pixels)
    except InputError as exc:
        raise exc if exc.source else InputError(exc.problem, source=what) from None
    check_decoded_bytes(len(listing), shape, limits.max_decoded_bytes, listing.where)
    return Split(listing, class_names, shape, limits.max_image_pixels, what, keep)


Splits = tuple[Split, Split]  # (train, eval)


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """One dataset kind: its config model, what its fingerprint sees of the data, and its loader."""

    config: type[Frozen]  # with a `kind` literal, a `name`, and LOCATION_FIELDS for files it reads
    content: Callable[[Any, SourceFiles], dict[str, str]]  # digests of the data, never where it lives
    load: Callable[[Any, SourceFiles, Limits], Splits]  # (spec, files, limits) -> (train, eval), images unread

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
