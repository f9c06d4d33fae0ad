"""Per-class accuracy and its uncertainty.

Top-1 and top-5 are fractions of the real held-out images of a class that
the classifier gets right (top-5: the true class among the 5 highest
logits; with 5 classes or fewer top-5 is 1 by definition). Overall accuracy
is pooled over all held-out images. Intervals are Wilson score intervals at
95%, which stay inside [0, 1] and behave at 0% and 100%, where mode-dropped
classes sit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

WILSON_Z = 1.959963984540054  # two-sided 95%


@dataclasses.dataclass(frozen=True)
class ClassCounts:
    """Correct counts per class; what the evaluation step stores."""

    n_eval: tuple[int, ...]
    top1_correct: tuple[int, ...]
    top5_correct: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]  # [true class][predicted class]

    @property
    def top1(self) -> float:
        return sum(self.top1_correct) / max(1, sum(self.n_eval))

    @property
    def top5(self) -> float:
        return sum(self.top5_correct) / max(1, sum(self.n_eval))

    def per_class_top1(self) -> list[float]:
        return [c / n if n else float("nan") for c, n in zip(self.top1_correct, self.n_eval)]

    @classmethod
    def from_dict(cls, data: dict) -> ClassCounts:
        """Inverse of dataclasses.asdict (JSON turns tuples into lists)."""
        return cls(n_eval=tuple(data["n_eval"]), top1_correct=tuple(data["top1_correct"]),
                   top5_correct=tuple(data["top5_correct"]), confusion=tuple(tuple(r) for r in data["confusion"]))


def count_correct(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> ClassCounts:
    k = min(5, num_classes)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, top[:, 0]), 1)
    return ClassCounts(
        n_eval=tuple(int(n) for n in np.bincount(labels, minlength=num_classes)),
        top1_correct=tuple(int(n) for n in np.bincount(labels[hit1], minlength=num_classes)),
        top5_correct=tuple(int(n) for n in np.bincount(labels[hit5], minlength=num_classes)),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )


def top_predictions(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the (up to) 5 highest-scoring classes, best first (int32, N x k), the probability
    of the true class and that of the predicted (top-1) class (float32 each), a softmax of the
    logits (after TTA averaging). Ties in the logits go to the lower class index, as in `count_correct`."""
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k].astype(np.int32)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    return top, probabilities[rows, labels].astype(np.float32), probabilities[rows, top[:, 0]].astype(np.float32)


def wilson_interval(successes: float, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
