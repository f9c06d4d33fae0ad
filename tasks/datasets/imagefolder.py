"""`imagefolder`: one folder per split, one subfolder per class, class names
sorted as torchvision's ImageFolder sorts them. Read file by file."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from casflow.tasks.datasets.common import DatasetSource, Split, Splits, file_digests, split_of
from casflow.tasks.errors import InputError
from casflow.tasks.files import FileTree, SourceFiles
from casflow.tasks.images import IMAGE_EXTENSIONS
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen
from casflow.tasks.streaming import tree_listing


class ImageFolderDataset(Frozen):
    """One folder per split, one subfolder per class (class names sorted)."""

    kind: Literal["imagefolder"]
    name: str
    train: str
    eval: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("train", "eval")


def load(spec: ImageFolderDataset, files: SourceFiles, limits: Limits) -> Splits:
    what = f"dataset {spec.name}"
    return read_imagefolder(files.tree(spec.train), limits, what), read_imagefolder(files.tree(spec.eval), limits, what)


def read_imagefolder(tree: FileTree, limits: Limits, what: str = "dataset") -> Split:
    """<root>/<class name>/<image>; class names sorted, as torchvision's ImageFolder."""
    files = [p for p in tree.paths() if "/" in p and p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
    class_names = tuple(sorted({p.split("/", 1)[0] for p in files}))
    if not class_names:
        raise InputError("no class folders with images found", source=tree.name)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[p.split("/", 1)[0]] for p in files], dtype=np.int64)
    return split_of(tree_listing(tree, files, labels), class_names, limits, what)


SOURCE = DatasetSource(ImageFolderDataset, file_digests, load)
