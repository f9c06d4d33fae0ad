"""`imagefolder`: one folder per split, one subfolder per class, class names
sorted as torchvision's ImageFolder sorts them."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from casflow.tasks.datasets.common import DatasetSource, LabeledImages, Splits, file_digests
from casflow.tasks.errors import InputError
from casflow.tasks.files import FileTree, SourceFiles
from casflow.tasks.images import IMAGE_EXTENSIONS, decode_stack
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen


class ImageFolderDataset(Frozen):
    """One folder per split, one subfolder per class (class names sorted)."""

    kind: Literal["imagefolder"]
    name: str
    train: str
    eval: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("train", "eval")


def load(spec: ImageFolderDataset, files: SourceFiles, limits: Limits) -> Splits:
    return read_imagefolder(files.tree(spec.train), limits), read_imagefolder(files.tree(spec.eval), limits)


def read_imagefolder(tree: FileTree, limits: Limits) -> LabeledImages:
    """<root>/<class name>/<image>; class names sorted, as torchvision's ImageFolder."""
    files = [p for p in tree.paths() if "/" in p and p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
    class_names = tuple(sorted({p.split("/", 1)[0] for p in files}))
    if not class_names:
        raise InputError("no class folders with images found", source=tree.name)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[p.split("/", 1)[0]] for p in files], dtype=np.int64)
    sources = [f"{tree.name}/{p}" for p in files]
    images = decode_stack([tree.read(p) for p in files], sources, max_pixels=limits.max_image_pixels,
                          max_decoded_bytes=limits.max_decoded_bytes, what=tree.name)
    return LabeledImages(images, labels, class_names)


SOURCE = DatasetSource(ImageFolderDataset, file_digests, load)
