"""Result rows for the Parquet hand-off, from each model's step records, and
how a summary row is shown (the `cas` command and the Prefect artifacts).

CAS is the held-out real accuracy of a classifier trained only on a
model's samples; the CAS ratio divides it by the same recipe's accuracy
when trained on the real train split (the `real` model)."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any

import numpy as np

from casflow.tasks.compare import Change, best_set, newest_against_best
from casflow.tasks.metrics import ClassCounts, wilson_interval
from casflow.tasks.race import replay


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_time: datetime
    flow_run_id: str | None
    dataset: str
    dataset_fingerprint: str
    class_names: tuple[str, ...]
    recipe: str
    recipe_fingerprint: str  # the recipe and its hyperparameters: runs compare only under the same one
    seed: int
    classifier_seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ModelOutcome:
    """What one model's steps produced, one classifier and evaluation per classifier seed; error is set
    when a step failed."""

    model: str
    generator_kind: str
    error: str | None = None
    samples_fingerprint: str | None = None
    classifier_fingerprints: tuple[str, ...] = ()
    evaluation_fingerprints: tuple[str, ...] = ()
    n_train_per_class: tuple[int, ...] | None = None
    counts: tuple[ClassCounts, ...] = ()  # per seed, in the order of RunInfo.classifier_seeds
    sample_seconds: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    device: str | None = None
    samples_cached: bool | None = None
    classifier_cached: bool | None = None
    evaluation_cached: bool | None = None
    scores: dict[str, Any] | None = None  # {"classifier": fp, "overall": {...}, "per_class": {...}} (steps.score_samples)
    augmented: tuple[tuple[float, ClassCounts], ...] = ()  # (ratio, counts) of each Naive Augmentation Score classifier
    series: str | None = None  # a checkpoint of a series: the series' name and its step
    step: int | None = None
    classifier_seeds: tuple[int, ...] | None = None  # the seeds its classifiers trained with; None: the run's
    seeds_stopped: str | None = None  # adaptive seeds: why it took no more (tasks/seeds.py); None for a list

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.counts)

    @property
    def cached(self) -> bool:
        return bool(self.samples_cached and self.classifier_cached and self.evaluation_cached)

    @property
    def accuracy(self) -> SeedScores:
        return SeedScores(self.counts)


@dataclasses.dataclass(frozen=True)
class SeedScores:
    """Accuracies over one or more classifier seeds scored on the same eval images: means, and the
    spread across seeds (sample standard deviation; None with one seed). Intervals are Wilson 95%
    on the mean correct count: they describe the eval set's noise, the spread the seeds'."""

    counts: tuple[ClassCounts, ...]

    @property
    def n_eval(self) -> tuple[int, ...]:
        return self.counts[0].n_eval

    @property
    def top1_correct(self) -> np.ndarray:  # per class, mean over seeds
        return np.mean([c.top1_correct for c in self.counts], axis=0)

    @property
    def top5_correct(self) -> np.ndarray:
        return np.mean([c.top5_correct for c in self.counts], axis=0)

    @property
    def top1(self) -> float:
        return float(np.mean([c.top1 for c in self.counts]))

    @property
    def top5(self) -> float:
        return float(np.mean([c.top5 for c in self.counts]))

    @property
    def top1_seed_std(self) -> float | None:
        return float(np.std([c.top1 for c in self.counts], ddof=1)) if len(self.counts) > 1 else None

    def per_class_top1(self) -> list[float | None]:
        """None for a class without eval images: it has no accuracy (not 0%)."""
        return [float(c / n) if n else None for c, n in zip(self.top1_correct, self.n_eval)]

    def per_class_seed_std(self) -> list[float | None]:
        if len(self.counts) < 2:
            return [None] * len(self.n_eval)
        per_seed = np.array([c.per_class_top1() for c in self.counts])
        return [float(s) if n else None for s, n in zip(per_seed.std(axis=0, ddof=1), self.n_eval)]

    def worst_class(self) -> int | None:
        """The class of lowest top-1 among those with eval images (None if none has any)."""
        scores = [c / n if n else math.inf for c, n in zip(self.top1_correct, self.n_eval)]
        return int(np.argmin(scores)) if any(self.n_eval) else None

    def confusion(self) -> np.ndarray:
        """[true class][predicted class], summed over seeds."""
        return np.sum([np.array(c.confusion) for c in self.counts], axis=0)


def _keys(run: RunInfo, outcome: ModelOutcome) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "run_time": run.run_time, "flow_run_id": run.flow_run_id,
        "dataset": run.dataset, "dataset_fingerprint": run.dataset_fingerprint,
        "model": outcome.model, "generator_kind": outcome.generator_kind, "recipe": run.recipe, "seed": run.seed,
        "samples_fingerprint": outcome.samples_fingerprint,
        "classifier_fingerprint": outcome.classifier_fingerprints[0] if outcome.classifier_fingerprints else None,
        "series": outcome.series, "step": outcome.step,
    }


def per_class_rows(run: RunInfo, outcome: ModelOutcome) -> list[dict[str, Any]]:
    if not outcome.ok:
        return []
    accuracy = outcome.accuracy
    class_scores = (outcome.scores or {}).get("per_class", {})
    rows = []
    for c, (name, spread) in enumerate(zip(run.class_names, accuracy.per_class_seed_std())):
        n, top1, top5 = accuracy.n_eval[c], float(accuracy.top1_correct[c]), float(accuracy.top5_correct[c])
        low, high = wilson_interval(top1, n) if n else (None, None)  # no eval images: no accuracy, null (not 0%)
        rows.append(_keys(run, outcome) | {
            "class_index": c, "class_name": name,
            "n_train": outcome.n_train_per_class[c] if outcome.n_train_per_class else 0, "n_eval": n,
            "top1": top1 / n if n else None, "top5": top5 / n if n else None,
            "top1_ci_low": low, "top1_ci_high": high, "top1_seed_std": spread, "cached": outcome.cached,
        } | {score: values[c] for score, values in class_scores.items()})
    return rows


def summary_row(run: RunInfo, outcome: ModelOutcome, baseline: ModelOutcome | None) -> dict[str, Any]:
    row = _keys(run, outcome) | {
        "evaluation_fingerprint": outcome.evaluation_fingerprints[0] if outcome.evaluation_fingerprints else None,
        "recipe_fingerprint": run.recipe_fingerprint, "classifier_seeds": list(outcome.classifier_seeds or run.classifier_seeds),
        "classifier_fingerprints": list(outcome.classifier_fingerprints),
        "evaluation_fingerprints": list(outcome.evaluation_fingerprints),
        "classifier_seeds_used": len(outcome.classifier_fingerprints) if outcome.classifier_fingerprints else None,
        "seeds_stopped": outcome.seeds_stopped,
        "status": "ok" if outcome.ok else "failed", "error": outcome.error,
        "sample_seconds": outcome.sample_seconds, "train_seconds": outcome.train_seconds,
        "eval_seconds": outcome.eval_seconds, "device": outcome.device,
        "samples_cached": outcome.samples_cached, "classifier_cached": outcome.classifier_cached,
        "evaluation_cached": outcome.evaluation_cached, "cached": outcome.cached,
        "n_samples": sum(outcome.n_train_per_class) if outcome.n_train_per_class else None,
        "previous_run_id": None, "change": None, "delta_top1": None, "change_p_value": None,  # set by the comparison
    }
    if not outcome.ok:
        return row
    accuracy = outcome.accuracy
    n_eval = sum(accuracy.n_eval)
    low, high = wilson_interval(float(accuracy.top1_correct.sum()), n_eval)
    worst = accuracy.worst_class()
    row |= {
        "n_eval": n_eval, "cas_top1": accuracy.top1, "cas_top5": accuracy.top5,
        "cas_top1_ci_low": low, "cas_top1_ci_high": high, "cas_top1_seed_std": accuracy.top1_seed_std,
        "worst_class": None if worst is None else run.class_names[worst],
        "worst_class_top1": None if worst is None else accuracy.per_class_top1()[worst],
    }
    if outcome.scores:
        row |= outcome.scores["overall"] | {"scores_classifier_fingerprint": outcome.scores["classifier"]}
    if baseline is not None and baseline.ok:
        real1, real5 = baseline.accuracy.top1, baseline.accuracy.top5
        row |= {"real_top1": real1, "real_top5": real5,
                "cas_ratio_top1": accuracy.top1 / real1 if real1 else None,
                "cas_ratio_top5": accuracy.top5 / real5 if real5 else None}
        if outcome.augmented:  # against the real classifier of the same (first) seed
            real_first_seed = baseline.counts[0].top1
            row |= {"nas_ratios": [ratio for ratio, _ in outcome.augmented],
                    "nas_top1": [counts.top1 for _, counts in outcome.augmented],
                    "nas_delta_top1": [counts.top1 - real_first_seed for _, counts in outcome.augmented]}
    return row


def change_rows(class_names: tuple[str, ...], previous: dict[str, Any], current: dict[str, Any],
                changes: list[Change]) -> list[dict[str, Any]]:
    """One model's changes between two of its summary rows: overall, then per class."""
    keys = {"run_id": current["run_id"], "run_time": current["run_time"], "previous_run_id": previous["run_id"],
            "dataset": current["dataset"], "dataset_fingerprint": current["dataset_fingerprint"],
            "recipe": current["recipe"], "model": current["model"],
            "samples_fingerprint_before": previous["samples_fingerprint"],
            "samples_fingerprint_after": current["samples_fingerprint"]}
    return [keys | dataclasses.asdict(change) | {
        "class_name": None if change.class_index is None else class_names[change.class_index], "reason": None}
        for change in changes]


def best_rows(checkpoints: list[dict[str, Any]], correct: dict[int, np.ndarray],
              race_max_seeds: int | None = None) -> list[dict[str, Any]]:
    """The `best` table's rows of one series: its checkpoints' summary rows (status ok) and, per step, their
    seeds x images top-1 correctness on the same eval images (`compare.best_set`, `newest_against_best`).
    A series that raced (`race_max_seeds`) shows its race: each checkpoint against the leader of the round
    that dropped it, or of the last round; the best set is the race's (tasks/race.replay)."""
    by_step = {row["step"]: row for row in checkpoints}
    newest = newest_against_best(correct)
    if race_max_seeds is None:
        standings, dropped_in = best_set(correct), {}
    else:
        raced = replay(correct, race_max_seeds)
        dropped_in = {step: number for number, judgement in enumerate(raced.rounds, 1) for step in judgement.dropped}
        last = {s.step: s for judgement in raced.rounds for s in judgement.standings}  # the latest standing of each
        standings = [dataclasses.replace(last[step], is_leader=step == raced.pick, in_best_set=step in raced.best_set)
                     for step in sorted(correct)]
    rows = []
    for standing in standings:
        row = by_step[standing.step]
        rows.append({
            "run_id": row["run_id"], "run_time": row["run_time"], "dataset": row["dataset"],
            "dataset_fingerprint": row["dataset_fingerprint"], "recipe": row["recipe"], "series": row["series"],
            "step": standing.step, "model": row["model"], "samples_fingerprint": row["samples_fingerprint"],
            "n_eval": row["n_eval"], "cas_top1": standing.top1, "cas_top1_ci_low": row["cas_top1_ci_low"],
            "cas_top1_ci_high": row["cas_top1_ci_high"], "is_leader": standing.is_leader, "delta": standing.delta,
            "n_better": standing.n_better, "n_worse": standing.n_worse, "p_value": standing.p_value,
            "p_adjusted": standing.p_adjusted, "seed_noise": standing.seed_noise, "in_best_set": standing.in_best_set,
            "vs_best_so_far": newest[1] if newest and standing.step == max(correct) else None,
            "best_so_far_model": by_step[newest[0]]["model"] if newest and standing.step == max(correct) else None,
            "seeds": int(correct[standing.step].shape[0]), "selection": "all" if race_max_seeds is None else "race",
            "max_seeds": race_max_seeds, "race_round": dropped_in.get(standing.step), "reason": None,
        })
    return rows


UNKNOWN = "unknown"  # the verdict of a comparison that could not be made: not `same`, which would say it was


def unknown_best_rows(checkpoints: list[dict[str, Any]], reason: str,
                      race_max_seeds: int | None = None) -> list[dict[str, Any]]:
    """The `best` table's rows of a series whose best set could not be decided (a checkpoint's predictions
    unreadable): each checkpoint's CAS from its summary row, no leader, `in_best_set` null, the newest
    checkpoint's verdict against the best so far `unknown`, and the reason on every row."""
    newest = max(row["step"] for row in checkpoints)
    return [{
        "run_id": row["run_id"], "run_time": row["run_time"], "dataset": row["dataset"],
        "dataset_fingerprint": row["dataset_fingerprint"], "recipe": row["recipe"], "series": row["series"],
        "step": row["step"], "model": row["model"], "samples_fingerprint": row["samples_fingerprint"],
        "n_eval": row["n_eval"], "cas_top1": row["cas_top1"], "cas_top1_ci_low": row["cas_top1_ci_low"],
        "cas_top1_ci_high": row["cas_top1_ci_high"], "is_leader": False, "delta": None, "n_better": None,
        "n_worse": None, "p_value": None, "p_adjusted": None, "seed_noise": None, "in_best_set": None,
        "vs_best_so_far": UNKNOWN if row["step"] == newest and len(checkpoints) > 1 else None,
        "best_so_far_model": None, "seeds": len(row["classifier_seeds"] or []) or None,
        "selection": "all" if race_max_seeds is None else "race", "max_seeds": race_max_seeds, "race_round": None,
        "reason": reason,
    } for row in checkpoints]


def not_compared_row(previous: dict[str, Any] | None, current: dict[str, Any], reason: str) -> dict[str, Any]:
    """The changes row of a model whose comparison could not be made: overall, verdict `unknown`, the
    reason (naming the file that was missing or unreadable) and no numbers. `previous` is None when the
    previous run itself could not be found (its summary unreadable)."""
    return {"run_id": current["run_id"], "run_time": current["run_time"],
            "previous_run_id": previous["run_id"] if previous else None,
            "dataset": current["dataset"], "dataset_fingerprint": current["dataset_fingerprint"],
            "recipe": current["recipe"], "model": current["model"],
            "samples_fingerprint_before": previous["samples_fingerprint"] if previous else None,
            "samples_fingerprint_after": current["samples_fingerprint"],
            "class_index": None, "class_name": None, "significant": False, "direction": UNKNOWN, "reason": reason}


def regressions(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The significant changes for the worse, overall or in a class (Holm-adjusted across classes)."""
    return [row for row in changes if row["direction"] == "worse"]


def unknowns(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparisons that could not be made: a gate that passed them would pass an unjudged model."""
    return [row for row in changes if row["direction"] == UNKNOWN]


# ---------------------------------------------------------------- display

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_cells(row: dict[str, Any], best_so_far: dict[str, str] | None = None, seeds: bool = False) -> dict[str, str]:
    """A summary row as the cells people read, column name -> text; with `best_so_far` (a run with a series,
    `best_so_far_verdicts`), the newest checkpoints' verdict against the best earlier step beside `vs last`;
    with `seeds` (a run with adaptive seeds, `adaptive_seeds`), the seeds each model took and why it stopped."""
    spread = row.get("cas_top1_seed_std")
    cells = {
        "model": row["model"],
        "status": row["status"],
        # with several classifier seeds: the mean, and the spread across seeds in points
        "top-1": _pct(row.get("cas_top1")) if spread is None else f"{100 * row['cas_top1']:.2f}±{100 * spread:.2f}%",
        "top-5": _pct(row.get("cas_top5")),
        "CAS/real": "-" if row.get("cas_ratio_top1") is None else f"{row['cas_ratio_top1']:.3f}",
        "worst class": "-" if row.get("worst_class") is None else f"{row['worst_class']} ({_pct(row['worst_class_top1'])})",
        "vs last": "-" if row.get("change") is None else row["change"] if row.get("delta_top1") is None
                   else f"{100 * row['delta_top1']:+.2f} {row['change']}",
        "samples": "-" if row.get("n_samples") is None else str(row["n_samples"]),
        "cached": "yes" if row["cached"] else "no",
    }
    if seeds:
        used, stopped = row.get("classifier_seeds_used"), row.get("seeds_stopped")
        cells = _after(cells, "vs last", "seeds", "-" if used is None else f"{used}" + (f" ({stopped})" if stopped else ""))
    if best_so_far:
        cells = _after(cells, "vs last", "vs best so far", best_so_far.get(row["model"], "-"))
    return cells


def _after(cells: dict[str, str], column: str, name: str, value: str) -> dict[str, str]:
    items = list(cells.items())
    at = list(cells).index(column) + 1
    return dict(items[:at] + [(name, value)] + items[at:])


def adaptive_seeds(rows: list[dict[str, Any]]) -> bool:
    """Whether a run's summary rows took adaptive seeds (a `seeds` column in its tables)."""
    return any(row.get("seeds_stopped") for row in rows)


def best_so_far_verdicts(best: list[dict[str, Any]]) -> dict[str, str]:
    """Model -> its verdict against the best earlier step of its series, for each series' newest checkpoint."""
    return {r["model"]: r["vs_best_so_far"] + (f" (vs {r['best_so_far_model']})" if r["best_so_far_model"] else "")
            for r in best if r["vs_best_so_far"]}


SCORE_COLUMNS = ("gan_test_top1", "fd", "precision", "recall", "density", "coverage", "memorized_fraction",
                 "memorized_fraction_features", "nas_delta_top1")


def has_scores(row: dict[str, Any]) -> bool:
    return any(row.get(column) is not None for column in SCORE_COLUMNS)


def scores_cells(row: dict[str, Any]) -> dict[str, str]:
    """The scores beside CAS of a summary row as the cells people read (NAS in points of top-1 per ratio)."""
    number = lambda value, digits=3: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
    ratios, deltas = row.get("nas_ratios") or [], row.get("nas_delta_top1") or []
    near = (row.get("memorized_fraction"), row.get("memorized_fraction_features"))
    return {
        "model": row["model"],
        "GAN-test": _pct(row.get("gan_test_top1")),
        "FD": number(row.get("fd"), 2),
        "precision": number(row.get("precision")), "recall": number(row.get("recall")),
        "density": number(row.get("density")), "coverage": number(row.get("coverage")),
        "near copies px/feat": "-" if near[0] is None else f"{_pct(near[0])} / {_pct(near[1])}",
        "NAS (ratio: change)": " ".join(f"{r:g}:{100 * d:+.2f}" for r, d in zip(ratios, deltas)) or "-",
    }


def change_cells(row: dict[str, Any]) -> dict[str, str]:
    """A row of the changes table as the cells people read (deltas in percentage points); a comparison
    that was not made shows its reason as its verdict."""
    if row["direction"] == UNKNOWN:
        return {"model": row["model"], "class": class_label(row["class_index"], row["class_name"])} | dict.fromkeys(
            ("before", "after", "change", "95% interval", "images +/-", "p", "seed noise"), "-") | {
            "verdict": f"{UNKNOWN}: {row.get('reason') or 'not compared'}"}
    return {
        "model": row["model"],
        "class": class_label(row["class_index"], row["class_name"]),
        "before": _pct(row["top1_before"]), "after": _pct(row["top1_after"]),
        "change": "-" if row["delta"] is None else f"{100 * row['delta']:+.2f}",  # None: a class without eval images
        "95% interval": "-" if row["delta_ci_low"] is None else f"{100 * row['delta_ci_low']:+.2f} .. {100 * row['delta_ci_high']:+.2f}",
        "images +/-": f"+{row['n_better']}/-{row['n_worse']}",
        "p": f"{row['p_adjusted']:.2g}",
        "seed noise": "-" if row.get("seed_noise") is None else f"{100 * row['seed_noise']:.2f}",
        "verdict": row["direction"],
    }


def best_cells(row: dict[str, Any]) -> dict[str, str]:
    """A row of the best table: one checkpoint's CAS with its interval, against its series' leader; a series
    whose best set is unknown (`unknown_best_rows`) shows its CAS and `unknown`."""
    interval = "-" if row["cas_top1_ci_low"] is None else \
        f"{100 * row['cas_top1_ci_low']:.2f} .. {100 * row['cas_top1_ci_high']:.2f}"
    judged = row["in_best_set"] is not None
    return {
        "step": str(row["step"]),
        "top-1": _pct(row["cas_top1"]),
        "95% interval": interval,
        "vs leader": "leader" if row["is_leader"] else "-" if row["delta"] is None else f"{100 * row['delta']:+.2f}",
        "images +/-": "-" if row["is_leader"] or not judged else f"+{row['n_better']}/-{row['n_worse']}",
        "p (Holm)": "-" if row["p_adjusted"] is None else f"{row['p_adjusted']:.2g}",
        "seeds": "-" if row.get("seeds") is None else str(row["seeds"]),
        "best set": UNKNOWN if not judged else "yes" if row["in_best_set"] else "no" if row.get("race_round") is None
        else f"no (round {row['race_round']})",
        "newest vs best so far": "-" if row["vs_best_so_far"] is None else row["vs_best_so_far"]
        if row["best_so_far_model"] is None else
        f"{row['vs_best_so_far']} (vs step {row['best_so_far_model'].rsplit('@', 1)[1]})",
    }


def class_label(index: int | None, name: str | None) -> str:
    """`3 cat`, or `3` where the name is the index (digits)."""
    if index is None:
        return "all"
    return name if name == str(index) else f"{index} {name}"


def per_class_cells(row: dict[str, Any]) -> dict[str, str]:
    """A per-class row as the cells people read; a score the row lacks (null: too few images of the class for
    it, or not asked for) is `-`, or left out with `per_class_table`."""
    number = lambda value: "-" if value is None else f"{value:.3f}"  # noqa: E731
    low, high = row["top1_ci_low"], row["top1_ci_high"]
    return {
        "model": row["model"], "class": class_label(row["class_index"], row["class_name"]), "n_train": str(row["n_train"]),
        "n_eval": str(row["n_eval"]), "top-1": _pct(row["top1"]),
        "95% interval": "-" if low is None else f"{_pct(low)} - {_pct(high)}", "top-5": _pct(row["top5"]),
        "GAN-test": _pct(row.get("gan_test_top1")), "precision": number(row.get("precision")),
        "recall": number(row.get("recall")), "near copies": _pct(row.get("memorized_fraction")),
    }


PER_CLASS_SCORE_CELLS = {"GAN-test": "gan_test_top1", "precision": "precision", "recall": "recall",
                         "near copies": "memorized_fraction"}


def per_class_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per-class rows as cells with the same columns in every row: a score column where any row has that score."""
    shown = {cell for cell, column in PER_CLASS_SCORE_CELLS.items() if any(r.get(column) is not None for r in rows)}
    return [{k: v for k, v in per_class_cells(r).items() if k not in PER_CLASS_SCORE_CELLS or k in shown} for r in rows]
