"""Real labelled datasets, one module per kind, and the registry the config
and the pipeline ask. A kind module defines its config model, what its
fingerprint sees of the data (`content`) and its loader, as `SOURCE`; adding
a kind is one new module and one line in `SOURCES`."""

from __future__ import annotations

from typing import Any

from casflow.tasks.datasets import digits, hf_parquet, imagefolder
from casflow.tasks.datasets.common import (
    DatasetSource,
    LabeledImages,
    Split,
    Splits,
    content_digest,
    stratified_split,
    subset_per_class,
)
from casflow.tasks.datasets.digits import digits_splits
from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.limits import Limits
from casflow.tasks.schema import location_fields

SOURCES: dict[str, DatasetSource] = {s.kind: s for s in (
    digits.SOURCE,
    hf_parquet.SOURCE,
    imagefolder.SOURCE,
)}

__all__ = ["SOURCES", "DatasetSource", "LabeledImages", "Split", "Splits", "content_digest", "digits_splits",
           "fingerprint_inputs", "load", "stratified_split", "subset_per_class"]


def fingerprint_inputs(spec: Any, files: SourceFiles) -> dict[str, Any]:
    """What changes the dataset's shards: its settings and content, never its name or where it lives."""
    return {"dataset": spec.model_dump(exclude={"name", *location_fields(spec)}),
            "content": SOURCES[spec.kind].content(spec, files)}


def load(spec: Any, files: SourceFiles, limits: Limits) -> Splits:
    """The train and eval splits, checked to agree on classes and image shape; read within `limits`.
    Their images are read when `Split.stored()` encodes them."""
    try:
        train, held_out = SOURCES[spec.kind].load(spec, files, limits)
    except InputError:
        raise
    except ValueError as exc:  # what the files refuse to read (not a regular file, over a limit): the message names it
        raise InputError(str(exc), source=f"dataset {spec.name}") from None
    if train.class_names != held_out.class_names:
        raise InputError(f"train and eval splits have different classes: {train.class_names} vs {held_out.class_names}",
                         source=f"dataset {spec.name}")
    if train.image_shape != held_out.image_shape:
        raise InputError(f"train images are {train.image_shape}, eval images {held_out.image_shape}",
                         source=f"dataset {spec.name}")
    return train, held_out
