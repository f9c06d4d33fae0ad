"""`hf-parquet`: the Parquet layout the Hugging Face `datasets` library writes:
an `image` struct {bytes, path} and an int `label` column, class names in the
`huggingface` schema metadata (as in ../shared/datasets/cifar10). Read by
row group: the labels first, the images in a second pass."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from casflow.tasks.datasets.common import (
    DatasetSource,
    Split,
    Splits,
    check_label_range,
    file_digests,
    split_of,
    subset_per_class,
)
from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.images import CHUNK
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen
from casflow.tasks.streaming import Listing, picked_chunks

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
        split = read_hf_parquet(files, name, limits, what=f"dataset {spec.name}")
        if spec.limit_per_class:
            split = dataclasses.replace(split, keep=subset_per_class(split.listing.labels, spec.limit_per_class,
                                                                      LIMIT_PER_CLASS_SEED))
        splits.append(split)
    return splits[0], splits[1]


def read_hf_parquet(files: SourceFiles, name: str, limits: Limits, what: str = "dataset") -> Split:
    """`image` struct{bytes, path} + `label` int; class names from the `huggingface` schema metadata.

    The row groups' declared uncompressed size is checked against limits.max_file_bytes before they are
    read. Pass 1 reads the label column only; the images are read later a row group at a time."""
    import pyarrow.parquet as pq

    with files.open(name) as f:
        try:
            parquet = pq.ParquetFile(f)
            metadata = parquet.metadata
            declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
            if declared > limits.max_file_bytes:
                raise InputError(f"its row groups declare {declared} bytes uncompressed, more than limits.max_file_bytes "
                                 f"({limits.max_file_bytes}); refused before reading them", source=name)
            if "image" not in parquet.schema_arrow.names:
                raise ValueError("no image column")
            labels = parquet.read(columns=["label"]).column("label").to_numpy().astype(np.int64)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"not a readable Parquet file with image and label columns ({exc})", source=name) from None
        schema_metadata = parquet.schema_arrow.metadata or {}
    try:
        features = json.loads(schema_metadata[b"huggingface"])["info"]["features"]
        class_names = tuple(features["label"]["names"])
    except (KeyError, ValueError, TypeError):
        raise InputError("no class names: expected ClassLabel names in the 'huggingface' schema metadata", source=name) from None
    check_label_range(labels, len(class_names), name)

    def images() -> Iterator[tuple[bytes, str]]:
        with files.open(name) as f:
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=CHUNK, columns=["image"]):
                column = batch.column(0)
                for blob, path in zip(column.field("bytes").to_pylist(), column.field("path").to_pylist()):
                    source = f"{name}: row {row} ({path})"
                    if blob is None:
                        raise InputError("image bytes missing", source=source)
                    yield blob, source
                    row += 1

    stream = images()
    first = next(stream, None)
    stream.close()
    listing = Listing(name, labels, lambda indices: picked_chunks(images(), indices), first=lambda: first)
    return split_of(listing, class_names, limits, what)


SOURCE = DatasetSource(HFParquetDataset, file_digests, load)
