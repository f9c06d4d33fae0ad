"""The small frozen records the steps pass between them (references to committed objects, never
tensors), and a model's chain of them.

A record names what a step committed on the store (its fingerprint, the shard set) and how it
came about (cached, seconds, device); `ModelChain` groups one model's records by role, so the
flow reads "the classifiers" or "the NAS evaluations" by name, never by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

from casflow.storage.shards import ShardSet
from casflow.tasks.metrics import ClassCounts

T = TypeVar("T")
U = TypeVar("U")


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    name: str
    fingerprint: str
    train: ShardSet
    eval: ShardSet
    cached: bool

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names


@dataclasses.dataclass(frozen=True)
class SamplesRecord:
    model: str
    shard_set: ShardSet
    cached: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class ClassifierRecord:
    model: str
    fingerprint: str
    seed: int
    samples: SamplesRecord
    cached: bool
    train_seconds: float
    device: str
    augment: float | None = None  # trained on the real train split plus this share of it in samples (NAS)


@dataclasses.dataclass(frozen=True)
class EvaluationRecord:
    model: str
    fingerprint: str
    classifier: ClassifierRecord
    counts: ClassCounts
    cached: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class ResultsRecord:
    run_id: str
    per_class_uri: str
    changes_uri: str
    summary_uri: str
    summary: list[dict]
    changes: list[dict]
    best: tuple[dict, ...] = ()  # the best table's rows: the run's series of checkpoints
    best_uri: str | None = None  # written only by a run with a series


@dataclasses.dataclass(frozen=True)
class ScoresRecord:
    model: str
    fingerprint: str
    classifier: str  # the real baseline's classifier: GAN-test's predictions and the features come from it
    overall: dict[str, float | None]
    per_class: dict[str, list[float | None]]
    cached: bool
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelChain(Generic[T]):
    """One model's steps by role: its samples; a classifier and its evaluation per classifier seed;
    the same per Naive Augmentation Score ratio. `T` is a step's record, or the future of one while
    the flow runs."""

    samples: T
    seeds: tuple[tuple[T, T], ...]  # (classifier, evaluation) per classifier seed, in config order
    augmented: tuple[tuple[T, T], ...] = ()  # (classifier, evaluation) per NAS ratio, in config order

    def steps(self) -> list[T]:
        """Every step in the order the chain runs them."""
        return [self.samples, *(s for pair in self.seeds + self.augmented for s in pair)]

    def map(self, fn: Callable[[T], U]) -> ModelChain[U]:
        pairs = lambda ps: tuple((fn(c), fn(e)) for c, e in ps)  # noqa: E731
        return ModelChain(fn(self.samples), pairs(self.seeds), pairs(self.augmented))

    @property
    def classifiers(self) -> tuple[T, ...]:
        return tuple(c for c, _ in self.seeds)

    @property
    def evaluations(self) -> tuple[T, ...]:
        return tuple(e for _, e in self.seeds)

    @property
    def augmented_evaluations(self) -> tuple[T, ...]:
        return tuple(e for _, e in self.augmented)
