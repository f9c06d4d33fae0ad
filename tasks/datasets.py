"""Real labelled datasets as uint8 arrays: the embedded digits, Hugging Face
style Parquet, and ImageFolder trees; deterministic stratified splits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import IO

import numpy as np

from tasks.errors import InputError
from tasks.files import FileTree
from tasks.images import IMAGE_EXTENSIONS, decode_many, stack_images


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

    def take(self, indices: np.ndarray) -> "LabeledImages":
        return LabeledImages(self.images[indices], self.labels[indices], self.class_names)


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


# ---------------------------------------------------------------- digits (embedded default)

def digits() -> LabeledImages:
    """scikit-learn's bundled digits (UCI optical digits): 1,797 8x8 grey images.

    Pixel values 0..16 map to uint8 by round(v * 255 / 16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, :, :, None]
    return LabeledImages(images, bunch.target.astype(np.int64), tuple(str(n) for n in bunch.target_names))


def digits_splits(eval_fraction: float, split_seed: int) -> tuple[LabeledImages, LabeledImages]:
    data = digits()
    train, held_out = stratified_split(data.labels, eval_fraction, split_seed)
    return data.take(train), data.take(held_out)


def content_digest(data: LabeledImages) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(data.labels.astype("<i8").tobytes())
    h.update(json.dumps(list(data.class_names)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- Hugging Face style Parquet

def read_hf_parquet(file: IO[bytes], source: str) -> LabeledImages:
    """`image` struct{bytes, path} + `label` int; class names from the `huggingface` schema metadata."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file, columns=["image", "label"])
    except Exception as exc:
        raise InputError(f"not a readable Parquet file with image and label columns ({exc})", source=source) from None
    metadata = table.schema.metadata or {}
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        class_names = tuple(features["label"]["names"])
    except (KeyError, ValueError, TypeError):
        raise InputError("no class names: expected ClassLabel names in the 'huggingface' schema metadata", source=source) from None
    labels = table.column("label").to_numpy().astype(np.int64)
    images_column = table.column("image").combine_chunks()
    blobs = images_column.field("bytes").to_pylist()
    paths = images_column.field("path").to_pylist()
    sources = [f"{source}: row {i} ({p})" for i, p in enumerate(paths)]
    if any(b is None for b in blobs):
        row = next(i for i, b in enumerate(blobs) if b is None)
        raise InputError("image bytes missing", source=sources[row])
    images = stack_images(decode_many(blobs, sources), sources)
    _check_label_range(labels, len(class_names), source)
    return LabeledImages(images, labels, class_names)


# ---------------------------------------------------------------- ImageFolder

def read_imagefolder(tree: FileTree) -> LabeledImages:
    """<root>/<class name>/<image>; class names sorted, as torchvision's ImageFolder."""
    files = [p for p in tree.paths() if "/" in p and p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
    class_names = tuple(sorted({p.split("/", 1)[0] for p in files}))
    if not class_names:
        raise InputError("no class folders with images found", source=tree.name)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[p.split("/", 1)[0]] for p in files], dtype=np.int64)
    sources = [f"{tree.name}/{p}" for p in files]
    images = stack_images(decode_many([tree.read(p) for p in files], sources), sources)
    return LabeledImages(images, labels, class_names)


def _check_label_range(labels: np.ndarray, num_classes: int, source: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise InputError(f"label {int(labels[bad][0])} outside the {num_classes} classes", source=source)
