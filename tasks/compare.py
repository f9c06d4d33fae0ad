"""Did it get better? Paired comparisons of two runs of one model on the same real eval images.

Two classifiers scored on the same images: only the images where they
disagree carry information about which is better (McNemar 1947;
Dietterich 1998 recommends the exact form over a paired t-test). With
several classifier seeds per run, an image's score is its correctness
averaged over the seeds (0, 1/k, ..., 1), and the test counts the images
whose score went up against those whose score went down: a sign test, which
with one seed is exactly the exact McNemar test.

Numerical choices, each named here and used below:
- p-value: exact two-sided binomial test on the discordant images,
  p = min(1, 2 * P[X <= min(up, down)]) with X ~ Binomial(up + down, 1/2).
- classes: one test per class; Holm's step-down adjustment across the
  classes keeps the family-wise error at ALPHA (the overall row is one test
  and is not adjusted).
- interval: delta = mean over images of (after - before); its 95% interval
  is the normal interval on those per-image differences (with one seed, the
  Wald interval for paired proportions), clipped to [-1, 1].
- seed noise: McNemar's test holds each run's classifiers fixed, so it does
  not see that retraining alone moves accuracy. With several seeds per run
  that movement is measured: s, the standard deviation of top-1 across a
  run's k seeds. A change is not a change unless it exceeds both the larger
  seed spread s and the 95% half-width of the seed noise in a difference of
  means, 1.96 * sqrt(s_before^2 / k_before + s_after^2 / k_after). With one
  seed the noise is unknown and only McNemar's test judges (see the README
  for how large that noise is on the demo data).
- verdict: `better` or `worse` when the adjusted p-value is below ALPHA and
  the change exceeds the seed noise; else `same`.

The same test judges the checkpoints of a series within one run (`best_set`):
each against the leader, Holm-adjusted across the series, and the newest
against the best earlier step (`newest_against_best`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from casflow.tasks.exits import USAGE, CasError

ALPHA = 0.05
Z_95 = 1.959963984540054  # two-sided 95%


class ComparisonError(CasError, ValueError):
    """Two runs that cannot be compared: the message says why and what to do."""

    exit_code = USAGE


def mcnemar_exact(up: int, down: int) -> float:
    """Exact two-sided p-value for `up` improvements against `down` regressions among discordant pairs."""
    n = up + down
    if n == 0:
        return 1.0
    from scipy.stats import binom  # here: scipy.stats takes most of a second to import

    return float(min(1.0, 2.0 * binom.cdf(min(up, down), n, 0.5)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_interval(differences: np.ndarray, z: float = Z_95) -> tuple[float, float]:
    """Normal interval for the mean of per-image differences, clipped to [-1, 1]: mean +- z * sd / sqrt(n)
    with the plug-in sd, so that with 0/1 correctness it is the Wald interval for paired proportions,
    (c - b) / n +- z * sqrt((b + c) / n - ((c - b) / n)^2) / sqrt(n)."""
    n = len(differences)
    if n == 0:
        return -1.0, 1.0
    mean = float(differences.mean())
    half = z * float(differences.std()) / math.sqrt(n)
    return max(-1.0, mean - half), min(1.0, mean + half)


def seed_spread(correct: np.ndarray) -> float | None:
    """Standard deviation of accuracy across seeds (rows of a seeds x images 0/1 matrix); None with one seed."""
    if correct.shape[0] < 2 or correct.shape[1] == 0:
        return None
    return float(correct.mean(axis=1).std(ddof=1))


def seed_noise(before: np.ndarray, after: np.ndarray, z: float = Z_95) -> float | None:
    """How large a change retraining alone makes likely: the larger seed spread, or the z-half-width of the
    seed noise in a difference of means if that is larger; None unless both runs have several seeds."""
    spreads = [seed_spread(before), seed_spread(after)]
    if None in spreads:
        return None
    band = z * math.sqrt(spreads[0] ** 2 / before.shape[0] + spreads[1] ** 2 / after.shape[0])
    return max(*spreads, band)


@dataclasses.dataclass(frozen=True)
class Change:
    """One model's change between two runs, overall (class_index None) or for one class."""

    class_index: int | None
    n_eval: int
    top1_before: float | None  # None (and the delta and its interval): a class without eval images
    top1_after: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    n_better: int  # images whose (seed-averaged) correctness went up
    n_worse: int  # ... went down
    p_value: float
    p_adjusted: float  # Holm across classes; the overall row's own p-value
    seed_spread: float | None  # the larger of the two runs' spreads
    seed_noise: float | None  # what a change must exceed to count; None with one seed
    significant: bool
    direction: str  # better | worse | same


def compare(before: np.ndarray, after: np.ndarray, labels: np.ndarray, num_classes: int) -> list[Change]:
    """The overall change and one per class.

    before, after: seeds x images arrays of top-1 correctness (0/1) on the same
    eval images in the same order; labels: the images' true classes."""
    if before.shape[1] != after.shape[1] or before.shape[1] != len(labels):
        raise ValueError(f"the runs were scored on different images ({before.shape[1]} vs {after.shape[1]})")
    groups = [None, *range(num_classes)]
    raw = []
    for c in groups:
        members = np.ones(len(labels), bool) if c is None else labels == c
        raw.append(_test(before[:, members], after[:, members]))
    class_adjusted = holm([r["p_value"] for r in raw[1:]])
    changes = []
    for c, r, p_adjusted in zip(groups, raw, [raw[0]["p_value"], *class_adjusted]):
        direction = _direction(r, p_adjusted)
        changes.append(Change(class_index=c, p_adjusted=p_adjusted, significant=direction != "same",
                              direction=direction, **r))
    return changes


def _direction(test: dict[str, Any], p_adjusted: float, alpha: float = ALPHA) -> str:
    """better | worse when the adjusted p-value is below alpha and the change exceeds the seed noise; else same."""
    beyond_noise = test["seed_noise"] is None or abs(test["delta"] or 0.0) > test["seed_noise"]
    if not (p_adjusted < alpha and beyond_noise and test["delta"]):
        return "same"
    return "better" if test["delta"] > 0 else "worse"


@dataclasses.dataclass(frozen=True)
class Standing:
    """One checkpoint of a series against the series' leader (its highest top-1), on the same eval images."""

    step: int
    top1: float  # mean over classifier seeds
    is_leader: bool
    delta: float | None  # top1 minus the leader's; None for the leader
    n_better: int | None  # images this checkpoint scores better than the leader (seed-averaged)
    n_worse: int | None
    p_value: float | None  # the paired test against the leader, as night to night
    p_adjusted: float | None  # Holm across the series' other checkpoints
    seed_noise: float | None
    in_best_set: bool  # the leader, or not significantly worse than it


def best_set(correct: dict[int, np.ndarray], alpha: float = ALPHA) -> list[Standing]:
    """Each checkpoint of a series (step -> seeds x images top-1 correctness on the same eval images) against
    the leader, in step order. The leader has the highest mean top-1 (the earliest step among equals); every
    other checkpoint is tested against it with the night-to-night test (paired, seed-aware), the p-values
    Holm-adjusted across the series so that the chance of dropping any checkpoint that is as good as the
    leader stays at `alpha`. The best set: the leader and every checkpoint not significantly worse."""
    steps = sorted(correct)
    top1 = {step: float(correct[step].mean()) for step in steps}
    leader = max(steps, key=lambda step: (top1[step], -step))
    others = [step for step in steps if step != leader]
    tests = {step: _test(correct[leader], correct[step]) for step in others}
    adjusted = dict(zip(others, holm([tests[step]["p_value"] for step in others])))
    standings = []
    for step in steps:
        if step == leader:
            standings.append(Standing(step, top1[step], True, None, None, None, None, None, None, True))
            continue
        t = tests[step]
        worse = _direction(t, adjusted[step], alpha) == "worse"
        standings.append(Standing(step, top1[step], False, t["delta"], t["n_better"], t["n_worse"], t["p_value"],
                                  adjusted[step], t["seed_noise"], not worse))
    return standings


def newest_against_best(correct: dict[int, np.ndarray]) -> tuple[int, str] | None:
    """(the best earlier step, the newest checkpoint's verdict against it: better | worse | same), by the
    night-to-night test and rule (one test, unadjusted); None for a series of one checkpoint."""
    steps = sorted(correct)
    if len(steps) < 2:
        return None
    newest, earlier = steps[-1], steps[:-1]
    best = max(earlier, key=lambda step: (float(correct[step].mean()), -step))
    test = _test(correct[best], correct[newest])
    return best, _direction(test, test["p_value"])


def _test(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    score_before, score_after = before.mean(axis=0), after.mean(axis=0)  # per image, averaged over seeds
    differences = score_after - score_before
    up, down = int((differences > 0).sum()), int((differences < 0).sum())
    empty = len(differences) == 0  # a class without eval images: no accuracy before or after, no change
    low, high = (None, None) if empty else paired_interval(differences)
    spreads = [s for s in (seed_spread(before), seed_spread(after)) if s is not None]
    noise = seed_noise(before, after)
    return {
        "n_eval": len(differences),
        "top1_before": None if empty else float(score_before.mean()),
        "top1_after": None if empty else float(score_after.mean()),
        "delta": None if empty else float(differences.mean()),
        "delta_ci_low": low, "delta_ci_high": high,
        "n_better": up, "n_worse": down,
        "p_value": mcnemar_exact(up, down),
        "seed_spread": max(spreads) if spreads else None,
        "seed_noise": noise,
    }


def run_order(row: dict[str, Any]) -> tuple:
    """A run's place in time: its start time (`run_time`), then its id. Run ids start with the start time
    to the second only, and their random tail orders two runs of the same second by chance."""
    return row["run_time"], row["run_id"]


def previous_run(history: Sequence[dict[str, Any]], current: dict[str, Any],
                 any_seeds: bool = False) -> dict[str, Any] | None:
    """The summary row a model's row is compared with: its latest earlier successful run (by run time) on
    the same dataset, recipe and classifier seeds whose samples differ; None when there is none. With
    `any_seeds` (adaptive seeds, whose runs train as many as each comparison needs) the seeds may differ."""
    same = ("model", "dataset_fingerprint", "recipe_fingerprint") + (() if any_seeds else ("classifier_seeds",))
    candidates = [row for row in history
                  if run_order(row) < run_order(current) and row["status"] == "ok"
                  and all(row.get(k) is not None and row.get(k) == current[k] for k in same)
                  and row["samples_fingerprint"] != current["samples_fingerprint"]]
    return max(candidates, key=run_order, default=None)
