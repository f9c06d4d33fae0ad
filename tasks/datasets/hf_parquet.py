"""`hf-parquet`: the Parquet layout the Hugging Face `datasets` library writes:
an `image` struct {bytes, path} and an int `label` column, class names in the
`huggingface` schema metadata (as in ../shared/datasets/cifar10)."""

from __future__ import annotations

import json
from typing import IO, ClassVar, Literal

import numpy as np
from pydantic import Field

from casflow.tasks.datasets.common import (
    DatasetSource,
    LabeledImages,
    Splits,
    check_label_range,
    file_digests,
    subset_per_class,
)
from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.images import decode_stack
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen

LIMIT_PER_CLASS_SEED = 0  # the seeded per-class subset of `limit_per_class`


class HFParquetDataset(Frozen):
    """Hugging Face style Parquet: image{bytes,path} + label, class names in the schema metadata."""

    kind: Literal["hf-parquet"]
    name: str
    train: str  # path or URL of the train split's Parquet file
    eval: str
    limit_per_class: int | None = Field(None, gt=0)  # seeded per-class subset of both splits, for quick runs
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("train", "eval")


def load(spec: HFParquetDataset, files: SourceFiles, limits: Limits) -> Splits:
    splits = []
    for name in (spec.train, spec.eval):
        with files.open(name) as f:
            data = read_hf_parquet(f, name, limits)
        if spec.limit_per_class:
            data = data.take(subset_per_class(data.labels, spec.limit_per_class, LIMIT_PER_CLASS_SEED))
        splits.append(data)
    return splits[0], splits[1]


def read_hf_parquet(file: IO[bytes], source: str, limits: Limits) -> LabeledImages:
    """`image` struct{bytes, path} + `label` int; class names from the `huggingface` schema metadata.

    The row groups' declared uncompressed size is checked against limits.max_file_bytes before they are read."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(file).metadata
        declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if declared > limits.max_file_bytes:
            raise InputError(f"its row groups declare {declared} bytes uncompressed, more than limits.max_file_bytes "
                             f"({limits.max_file_bytes}); refused before reading them", source=source)
        file.seek(0)
        table = pq.read_table(file, columns=["image", "label"])
    except InputError:
        raise
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
    images = decode_stack(blobs, sources, max_pixels=limits.max_image_pixels, max_decoded_bytes=limits.max_decoded_bytes,
                          what=source)
    check_label_range(labels, len(class_names), source)
    return LabeledImages(images, labels, class_names)


SOURCE = DatasetSource(HFParquetDataset, file_digests, load)
