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
        raise InputError(_class_mismatch(train.class_names, held_out.class_names), source=f"dataset {spec.name}")
    if train.image_shape != held_out.image_shape:
        raise InputError(f"train images are {train.image_shape}, eval images {held_out.image_shape}",
                         source=f"dataset {spec.name}")
    return train, held_out


CLASSES_NAMED = 5  # a mismatch names this many classes of each kind, then counts the rest


def _class_mismatch(train: tuple[str, ...], held_out: tuple[str, ...]) -> str:
    """One line naming the classes that one split has and the other lacks (imagefolder: a class folder
    with images on one side only), or saying that the same classes come in another order."""
    def named(missing: list[str], split: str) -> str:
        shown = ", ".join(repr(name) for name in missing[:CLASSES_NAMED])
        more = f" and {len(missing) - CLASSES_NAMED} more" if len(missing) > CLASSES_NAMED else ""
        return f"{'class' if len(missing) == 1 else 'classes'} {shown}{more} {'has' if len(missing) == 1 else 'have'} " \
               f"no images in the {split} split"

    problems = [named(missing, split) for missing, split in
                (([n for n in train if n not in held_out], "eval"), ([n for n in held_out if n not in train], "train")) if missing]
    if not problems:
        return f"train and eval splits list the same classes in another order: {train} vs {held_out}"
    return "; ".join(problems) + " (every class needs images in both)"

