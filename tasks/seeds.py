"""Seeds where they decide: how many classifier seeds tonight's comparison with the previous night needs
(`classifier.seeds: {min: m, max: M}`).

A model trains its first `min` seeds; after each seed, `decide` judges it against its previous run (whose
classifiers are already trained and stored) and either settles the verdict or asks for one more seed, up
to `max`. A large change settles at once; so does a result that more seeds could not turn into a change.
Only close calls pay for more seeds.

The procedure, a group-sequential test (Jennison & Turnbull 2000, "Group Sequential Methods with
Applications to Clinical Trials", ch. 2 and 10), each choice named here and used below:
- statistic: the change in top-1, d = mean over tonight's seeds and images minus the same for the
  previous run, against the seed noise of a difference of means, z = d / (s * sqrt(1/k_before + 1/k_after)).
- seed noise s: the seed spread pooled (by degrees of freedom, k - 1 per run) over the previous run's seeds,
  tonight's, and the earlier runs of the same model (their summary rows' spread): while tonight has one seed
  its own spread is unknown, and the earlier nights measure it. At least MIN_DF degrees of freedom are needed;
  with fewer, the model takes another seed. The pooled spread is plugged in as if known (normal critical
  values): Student's t at a few degrees of freedom (4.30 at 2 for the last look, 31.6 for an interim one)
  would keep a 22-point change from settling at one seed, which is what the range is for; the error rates
  below are therefore those of the known-spread design, and the benchmark measures the real ones.
- eval-set noise: a change must also pass the paired sign test on the same eval images (compare's McNemar,
  at ALPHA), as the fixed-seed verdict does.
- efficacy (Haybittle 1971; Peto et al. 1976): an interim look (fewer than `max` seeds) settles a change
  at two-sided EARLY_ALPHA; the look at `max` seeds at ALPHA. The chance of a false alarm under no change is
  at most ALPHA + (looks - 1) * EARLY_ALPHA (Bonferroni over the looks: 0.054 for {min: 1, max: 5}), since
  stopping for `same` only removes chances to reject.
- futility (stochastic curtailment, Lan, Simon & Halperin 1982; Jennison & Turnbull ch. 10): an interim look
  settles `same` when, were the true change the one estimated now, the look at `max` seeds would call it a
  change with probability below FUTILITY. This costs detection power near the threshold; its value was chosen
  on one half of the benchmark's draws and measured on the other (benchmarks/adaptive_seeds.py).
- no previous run: nothing to judge; the model stops at `min`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from casflow.tasks.compare import ALPHA, mcnemar_exact, run_order, seed_spread

EARLY_ALPHA = 0.001  # two-sided level of each interim look (Haybittle-Peto)
FUTILITY = 0.5  # conditional power below which an interim look settles `same` (benchmarks/adaptive_seeds.py chose it)
MIN_DF = 2  # degrees of freedom of the pooled seed spread before it is trusted
HISTORY_RUNS = 10  # earlier runs whose seed spreads count, the latest first

# why a model stopped taking seeds (the summary's `seeds_stopped`)
NO_PREVIOUS = "no previous run"
CHANGED = "change settled"
SAME = "no change settled"
MAX_SEEDS = "max seeds"


@dataclasses.dataclass(frozen=True)
class Noise:
    """The seed spread (standard deviation of top-1 across classifier seeds) pooled over runs, and its
    degrees of freedom."""

    spread: float
    df: int


def pooled_noise(runs: Sequence[tuple[float | None, int]]) -> Noise | None:
    """Pool (spread, seeds) pairs by their degrees of freedom (seeds - 1): runs with one seed add nothing.
    None when no run has two seeds."""
    usable = [(s, k - 1) for s, k in runs if s is not None and k >= 2]
    df = sum(f for _, f in usable)
    if df == 0:
        return None
    return Noise(math.sqrt(sum(f * s * s for s, f in usable) / df), df)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One look: tonight's `seeds` against the previous run's, and whether to stop."""

    seeds: int  # tonight's seeds so far
    delta: float | None  # top-1 change, tonight minus the previous run (None without one)
    z: float | None  # delta over the seed noise of the difference of means
    p_value: float | None  # the paired sign test on the eval images (McNemar with one seed each)
    noise: Noise | None  # the pooled seed spread the look used
    threshold: float | None  # the |delta| this look's critical value asked of a change
    conditional_power: float | None  # an interim look's chance that `max` seeds would call a change
    verdict: str | None  # better | worse | same once stopped (None without a previous run)
    stop: str | None  # NO_PREVIOUS | CHANGED | SAME | MAX_SEEDS, or None: train one more seed


def decide(before: np.ndarray | None, after: np.ndarray, min_seeds: int, max_seeds: int,
           history: Sequence[tuple[float | None, int]] = (), futility: float = FUTILITY) -> Decision:
    """Whether tonight's seeds settle the comparison with the previous run.

    before: the previous run's seeds x eval images top-1 correctness (0/1), None without a previous run;
    after: tonight's, on the same images in the same order; history: (seed spread, seeds) of the model's
    earlier runs, the previous one left out (its spread is measured from `before`)."""
    if not 1 <= min_seeds <= max_seeds:
        raise ValueError(f"seeds: need 1 <= min <= max, got min {min_seeds}, max {max_seeds}")
    k = after.shape[0]
    if k > max_seeds:
        raise ValueError(f"{k} seeds trained where max is {max_seeds}")
    if before is None:
        return Decision(k, None, None, None, None, None, None, None, NO_PREVIOUS if k >= min_seeds else None)
    if before.shape[1] != after.shape[1]:
        raise ValueError(f"the runs were scored on different images ({before.shape[1]} vs {after.shape[1]})")
    k_before = before.shape[0]
    differences = after.mean(axis=0) - before.mean(axis=0)
    delta = float(differences.mean())
    p_value = mcnemar_exact(int((differences > 0).sum()), int((differences < 0).sum()))
    noise = pooled_noise([(seed_spread(before), k_before), (seed_spread(after), k), *history[:HISTORY_RUNS]])
    last = k >= max_seeds
    if k < min_seeds or ((noise is None or noise.df < MIN_DF) and not last):
        return Decision(k, delta, None, p_value, noise, None, None, None, None)
    if noise is None or noise.df < MIN_DF:  # at max without a seed-noise estimate: the eval images alone judge
        verdict = _direction(delta, p_value < ALPHA)
        return Decision(k, delta, None, p_value, noise, None, None, verdict, MAX_SEEDS)
    sd = noise.spread * math.sqrt(1 / k_before + 1 / k)
    z = _ratio(delta, sd)
    from scipy.stats import norm  # here: scipy.stats takes most of a second to import

    final_critical = float(norm.isf(ALPHA / 2))
    if last:
        verdict = _direction(delta, abs(z) >= final_critical and p_value < ALPHA)
        return Decision(k, delta, z, p_value, noise, final_critical * sd, None, verdict, MAX_SEEDS)
    early_critical = float(norm.isf(EARLY_ALPHA / 2))
    if abs(z) >= early_critical and p_value < ALPHA:
        return Decision(k, delta, z, p_value, noise, early_critical * sd, None, _direction(delta, True), CHANGED)
    power = conditional_power(delta, noise.spread, k_before, k, max_seeds, final_critical)
    stop = SAME if power < futility else None
    return Decision(k, delta, z, p_value, noise, early_critical * sd, power, "same" if stop else None, stop)


def conditional_power(delta: float, spread: float, k_before: int, k: int, max_seeds: int, critical: float) -> float:
    """The chance that the change over `max_seeds` seeds exceeds critical x its seed noise, if the true change
    is `delta` and tonight's remaining max_seeds - k seeds vary with `spread` around it (the previous run's
    seeds are fixed)."""
    remaining = max_seeds - k
    bar = critical * spread * math.sqrt(1 / k_before + 1 / max_seeds)
    sd = spread * math.sqrt(remaining) / max_seeds
    if sd == 0:
        return float(abs(delta) >= bar)
    from scipy.stats import norm

    return float(norm.sf((bar - delta) / sd) + norm.cdf((-bar - delta) / sd))


def _ratio(delta: float, sd: float) -> float:
    if sd > 0:
        return delta / sd
    return 0.0 if delta == 0 else math.copysign(math.inf, delta)


def _direction(delta: float, changed: bool) -> str:
    if not changed or delta == 0:
        return "same"
    return "better" if delta > 0 else "worse"


def earlier_spreads(history: Sequence[dict[str, Any]], current: dict[str, Any],
                    previous: dict[str, Any] | None) -> list[tuple[float | None, int]]:
    """(seed spread, seeds) of the model's earlier successful runs on the same dataset and recipe, the latest
    first, at most HISTORY_RUNS, the previous run left out (its own seeds are compared): `decide`'s history."""
    same = ("model", "dataset_fingerprint", "recipe_fingerprint")
    earlier = [row for row in history
               if run_order(row) < run_order(current) and row["status"] == "ok"
               and all(row.get(k) == current[k] for k in same)
               and (previous is None or row["run_id"] != previous["run_id"])
               and row.get("cas_top1_seed_std") is not None]
    earlier.sort(key=run_order, reverse=True)
    return [(row["cas_top1_seed_std"], len(row["classifier_fingerprints"] or [])) for row in earlier[:HISTORY_RUNS]]
