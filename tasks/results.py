"""Result rows for the Parquet hand-off, from each model's step records, and
how a summary row is shown (the `cas` command and the Prefect artifacts).

CAS is the held-out real accuracy of a classifier trained only on a
model's samples; the CAS ratio divides it by the same recipe's accuracy
when trained on the real train split (the `real` model)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from casflow.tasks.metrics import ClassCounts, wilson_interval


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_time: datetime
    flow_run_id: str | None
    dataset: str
    dataset_fingerprint: str
    class_names: tuple[str, ...]
    recipe: str
    seed: int


@dataclasses.dataclass(frozen=True)
class ModelOutcome:
    """What one model's steps produced; error is set when a step failed."""

    model: str
    generator_kind: str
    error: str | None = None
    samples_fingerprint: str | None = None
    classifier_fingerprint: str | None = None
    evaluation_fingerprint: str | None = None
    n_train_per_class: tuple[int, ...] | None = None
    counts: ClassCounts | None = None
    sample_seconds: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    device: str | None = None
    samples_cached: bool | None = None
    classifier_cached: bool | None = None
    evaluation_cached: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.counts is not None

    @property
    def cached(self) -> bool:
        return bool(self.samples_cached and self.classifier_cached and self.evaluation_cached)


def _keys(run: RunInfo, outcome: ModelOutcome) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "run_time": run.run_time, "flow_run_id": run.flow_run_id,
        "dataset": run.dataset, "dataset_fingerprint": run.dataset_fingerprint,
        "model": outcome.model, "generator_kind": outcome.generator_kind, "recipe": run.recipe, "seed": run.seed,
        "samples_fingerprint": outcome.samples_fingerprint, "classifier_fingerprint": outcome.classifier_fingerprint,
    }


def per_class_rows(run: RunInfo, outcome: ModelOutcome) -> list[dict[str, Any]]:
    if not outcome.ok:
        return []
    counts = outcome.counts
    rows = []
    for c, name in enumerate(run.class_names):
        n, top1, top5 = counts.n_eval[c], counts.top1_correct[c], counts.top5_correct[c]
        low, high = wilson_interval(top1, n)
        rows.append(_keys(run, outcome) | {
            "class_index": c, "class_name": name,
            "n_train": outcome.n_train_per_class[c] if outcome.n_train_per_class else 0, "n_eval": n,
            "top1": top1 / n if n else 0.0, "top5": top5 / n if n else 0.0,
            "top1_ci_low": low, "top1_ci_high": high, "cached": outcome.cached,
        })
    return rows


def summary_row(run: RunInfo, outcome: ModelOutcome, baseline: ModelOutcome | None) -> dict[str, Any]:
    row = _keys(run, outcome) | {
        "evaluation_fingerprint": outcome.evaluation_fingerprint,
        "status": "ok" if outcome.ok else "failed", "error": outcome.error,
        "sample_seconds": outcome.sample_seconds, "train_seconds": outcome.train_seconds,
        "eval_seconds": outcome.eval_seconds, "device": outcome.device,
        "samples_cached": outcome.samples_cached, "classifier_cached": outcome.classifier_cached,
        "evaluation_cached": outcome.evaluation_cached, "cached": outcome.cached,
        "n_samples": sum(outcome.n_train_per_class) if outcome.n_train_per_class else None,
    }
    if not outcome.ok:
        return row
    counts = outcome.counts
    n_eval = sum(counts.n_eval)
    low, high = wilson_interval(sum(counts.top1_correct), n_eval)
    worst = counts.worst_class()
    row |= {
        "n_eval": n_eval, "cas_top1": counts.top1, "cas_top5": counts.top5,
        "cas_top1_ci_low": low, "cas_top1_ci_high": high,
        "worst_class": run.class_names[worst], "worst_class_top1": counts.per_class_top1()[worst],
    }
    if baseline is not None and baseline.ok:
        real1, real5 = baseline.counts.top1, baseline.counts.top5
        row |= {"real_top1": real1, "real_top5": real5,
                "cas_ratio_top1": counts.top1 / real1 if real1 else None,
                "cas_ratio_top5": counts.top5 / real5 if real5 else None}
    return row


# ---------------------------------------------------------------- display

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_cells(row: dict[str, Any]) -> dict[str, str]:
    """A summary row as the cells people read, column name -> text."""
    return {
        "model": row["model"],
        "status": row["status"],
        "top-1": _pct(row.get("cas_top1")),
        "top-5": _pct(row.get("cas_top5")),
        "CAS/real": "-" if row.get("cas_ratio_top1") is None else f"{row['cas_ratio_top1']:.3f}",
        "worst class": "-" if row.get("worst_class") is None else f"{row['worst_class']} ({_pct(row['worst_class_top1'])})",
        "samples": "-" if row.get("n_samples") is None else str(row["n_samples"]),
        "cached": "yes" if row["cached"] else "no",
    }


def per_class_cells(row: dict[str, Any]) -> dict[str, str]:
    """A per-class row as the cells people read."""
    return {
        "model": row["model"], "class": f"{row['class_index']} {row['class_name']}", "n_train": str(row["n_train"]),
        "n_eval": str(row["n_eval"]), "top-1": _pct(row["top1"]),
        "95% interval": f"{_pct(row['top1_ci_low'])} - {_pct(row['top1_ci_high'])}", "top-5": _pct(row["top5"]),
    }
