"""What every sample source shares: the record a kind family registers, and
the request a draw gets.

A source kind gives three things:
  config    its pydantic config model (a `kind` literal; LOCATION_FIELDS name the files it reads)
  content   what the samples fingerprint sees of it: its settings and the content digests of its
            files, never its name or where the files live
  draw      the validated sample stream, (label, PNG bytes) per sample in stored order; None for
            `real`, whose samples are the real train split itself
A draw does every check it can before it returns (files are read and checked
whole, a Python factory is built), so a bad input fails before anything is
written; what a Python generator returns is checked batch by batch as the
stream is consumed.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from typing import Any

from casflow.tasks.datasets import LabeledImages
from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen, location_fields

Samples = Iterator[tuple[int, bytes]]  # (label, PNG bytes)


@dataclasses.dataclass(frozen=True)
class DrawRequest:
    """Everything a draw may use besides its own config."""

    model: str  # for error messages
    seed: int  # the run's seed; each source derives its own from it
    budget: tuple[int, ...]  # samples per class: the real train split's counts (the CAS protocol)
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) of the dataset
    device: str  # where a Python generator runs
    files: SourceFiles
    real_train: Callable[[], LabeledImages]  # the decoded real train split, for the built-in generators
    limits: Limits  # what one input may make casflow read (the config's `limits:`)


@dataclasses.dataclass(frozen=True)
class SampleSource:
    config: type[Frozen]
    content: Callable[[Any, SourceFiles, str], dict[str, Any]]  # (spec, files, model name) -> fingerprint inputs
    draw: Callable[[Any, DrawRequest], Samples] | None

    @property
    def kind(self) -> str:
        return typing.get_args(self.config.model_fields["kind"].annotation)[0]


def settings_and_files(spec: Frozen, files: SourceFiles, model: str) -> dict[str, Any]:
    """The usual `content`: the spec without its locations, and the content digest of each file it names."""
    digests = {}
    for field in location_fields(spec):
        name = getattr(spec, field)
        if name is None:
            continue
        try:
            digests[field] = files.digest(name)
        except FileNotFoundError:
            raise InputError(f"{field} {name}: no such file or folder", model=model) from None
        except ValueError as exc:  # not a regular file, too large, too many files: the message names it
            raise InputError(str(exc), model=model) from None
    return {"generator": spec.model_dump(exclude=set(location_fields(spec))), "sources": digests}
