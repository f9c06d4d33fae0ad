"""The sample budget and everything that checks samples before they are stored.

CAS protocol: one synthetic sample per real training image, same label, so
the synthetic set has the real train split's size and class balance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from casflow.tasks.errors import InputError
from casflow.tasks.images import encode_many, resize


def label_schedule(budget: Sequence[int]) -> np.ndarray:
    """Labels to draw, round-robin over classes until each has its budget (0,1,2,..,0,1,2,..).

    Every batch cut from it is close to class-balanced, and it needs no seed."""
    grouped = np.repeat(np.arange(len(budget), dtype=np.int64), budget)
    return grouped[class_interleaved(grouped)]


def class_interleaved(labels: np.ndarray) -> np.ndarray:
    """Indices that put samples in the label schedule's round-robin class order (0,1,2,..,0,1,2,..),
    keeping each class's own order. Stored sets then never come grouped by class, so any
    prefix or streamed window of them is close to class-balanced."""
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = labels == c
        rank[members] = np.arange(members.sum())
    return np.lexsort((labels, rank))


def select_for_budget(labels: np.ndarray, budget: Sequence[int], *, seed: int, allow_shortfall: bool,
                      model: str, source: str) -> np.ndarray:
    """Indices meeting the budget per class.

    More samples than the budget: a seeded subset (a permutation with
    numpy's default_rng(seed) per class, first `budget` taken), in source
    order within each class, classes interleaved. Fewer: an error naming the
    class, unless allow_shortfall."""
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for c, want in enumerate(budget):
        members = np.flatnonzero(labels == c)
        if len(members) < want:
            short.append(f"class {c} has {len(members)} of {want}")
            chosen.append(members)
        else:
            chosen.append(np.sort(rng.permutation(members)[:want]))
    if short and not allow_shortfall:
        raise InputError("too few samples: " + "; ".join(short[:5]) + (" ..." if len(short) > 5 else "")
                         + " (set allow_shortfall: true to accept)", model=model, source=source)
    chosen = np.sort(np.concatenate(chosen))
    return chosen[class_interleaved(labels[chosen])]


def check_labels(labels: np.ndarray, num_classes: int, *, model: str, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {labels.shape}", model=model, source=source)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {labels.dtype}", model=model, source=source)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise InputError(f"label {int(labels[bad][0])} outside the dataset's {num_classes} classes (0..{num_classes - 1})",
                         model=model, source=source)
    return labels.astype(np.int64)


def conform_images(images: np.ndarray, image_shape: tuple[int, int, int], *, resize_filter: str | None,
                   model: str, source: str) -> np.ndarray:
    """uint8 NHWC at the dataset's size: resized only when the config asks, else a mismatch is an error."""
    if images.ndim != 4:
        if images.dtype != np.uint8:
            raise InputError(f"expected uint8 images, got dtype {images.dtype}", model=model, source=source)
        raise InputError(f"expected images of shape (N, H, W, C), got shape {images.shape}", model=model, source=source)
    size = conformed_size(images.shape[1:], images.dtype, image_shape, resize_filter=resize_filter, model=model, source=source)
    return images if size is None else resize(images, *size, resize_filter)


def conformed_size(shape: tuple[int, ...], dtype: np.dtype, image_shape: tuple[int, int, int], *, resize_filter: str | None,
                   model: str, source: str) -> tuple[int, int] | None:
    """Checks images of (H, W, C) `shape` against the dataset's `image_shape`, before any is read:
    uint8, the same channels, and the same size unless the config asks to resize. Returns the
    (H, W) to resize to, or None when the sizes agree."""
    if dtype != np.uint8:
        raise InputError(f"expected uint8 images, got dtype {dtype}", model=model, source=source)
    height, width, channels = image_shape
    if shape[2] != channels:
        raise InputError(f"images have {shape[2]} channels, the dataset has {channels}", model=model, source=source)
    if tuple(shape[:2]) == (height, width):
        return None
    if resize_filter is None:
        raise InputError(f"images are {shape[0]}x{shape[1]}, the dataset's are {height}x{width} "
                         "(set resize: bicubic, say, to resize)", model=model, source=source)
    return height, width


def check_class_count(num_source_classes: int, num_classes: int, *, model: str, source: str) -> None:
    if num_source_classes != num_classes:
        raise InputError(f"{num_source_classes} classes, the dataset has {num_classes}", model=model, source=source)


def encode_samples(images: np.ndarray, labels: np.ndarray, chunk: int = 4096) -> Iterator[tuple[int, bytes]]:
    """(label, PNG bytes) per sample, in order; storage assigns the keys.

    Encoded on every core (worker processes) a chunk at a time, to bound memory."""
    for start in range(0, len(images), chunk):
        pngs = encode_many(images[start : start + chunk])
        yield from zip((int(label) for label in labels[start : start + chunk]), pngs)
