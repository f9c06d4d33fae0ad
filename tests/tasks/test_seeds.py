"""Seeds where they decide (tasks/seeds.py): which looks settle, which continue, the bound on seeds and the
false-alarm rate, on small seeded seeds x images correctness arrays."""

import numpy as np
import pytest

from casflow.tasks.seeds import (
    CHANGED,
    MAX_SEEDS,
    NO_PREVIOUS,
    SAME,
    Noise,
    conditional_power,
    decide,
    pooled_noise,
)

N_EVAL = 359  # the digits eval split's size


def night(accuracy: float, seeds: int, spread: float, rng_seed: int) -> np.ndarray:
    """seeds x images correctness: each classifier's accuracy moved by its seed (sd `spread`), its images drawn."""
    rng = np.random.default_rng(rng_seed)
    rows = [rng.random(N_EVAL) < accuracy + spread * rng.standard_normal() for _ in range(seeds)]
    return np.stack(rows).astype(np.float64)


def run(before: np.ndarray | None, tonight: np.ndarray, min_seeds: int = 1, max_seeds: int = 5, history=()):
    """The flow's loop: one more of tonight's seeds until a look stops; the last decision."""
    for k in range(1, tonight.shape[0] + 1):
        decision = decide(before, tonight[:k], min_seeds, max_seeds, history)
        if decision.stop:
            return decision
    raise AssertionError("never stopped")


def test_a_large_change_settles_at_the_first_seed():
    before = night(0.96, 3, 0.01, 0)
    decision = run(before, night(0.72, 5, 0.01, 1))
    assert (decision.seeds, decision.verdict, decision.stop) == (1, "worse", CHANGED)
    assert decision.delta == pytest.approx(-0.24, abs=0.03)


def test_an_identical_model_settles_same_at_the_first_seed():
    before = night(0.96, 3, 0.01, 0)
    decision = decide(before, before[1:2], 1, 5)  # tonight's first classifier is one of last night's
    assert (decision.seeds, decision.verdict, decision.stop) == (1, "same", SAME)
    assert decision.conditional_power < 0.1


def test_a_close_call_takes_more_seeds():
    before = night(0.95, 3, 0.0, 0)
    spread = pooled_noise([(0.01, 3)]).spread
    tonight = before[:1].copy()
    tonight[0, np.flatnonzero(tonight[0] == 1)[:5]] = 0  # 5 images (1.4 points) worse than last night's first seed
    delta = tonight.mean() - before.mean()
    decision = decide(before, tonight, 1, 5, history=[(spread, 3)])
    assert decision.stop is None and decision.verdict is None
    assert 0.1 <= decision.conditional_power < 1 and abs(decision.delta - delta) < 1e-12


def test_min_seeds_are_trained_before_any_stop_and_max_is_never_exceeded():
    before = night(0.96, 3, 0.01, 0)
    assert decide(before, night(0.50, 1, 0.01, 1), 2, 5).stop is None  # a huge change, but min is 2
    assert decide(before, night(0.50, 2, 0.01, 1), 2, 5).stop == CHANGED
    with pytest.raises(ValueError, match="max is 3"):
        decide(before, night(0.96, 4, 0.01, 1), 1, 3)
    for rng_seed in range(20):  # close calls and redraws alike stop at max at the latest
        decision = run(night(0.95, 3, 0.01, rng_seed), night(0.94, 3, 0.01, 100 + rng_seed), max_seeds=3)
        assert decision.seeds <= 3 and decision.stop is not None
        if decision.seeds == 3 and decision.stop != CHANGED:
            assert decision.stop in (MAX_SEEDS, SAME)


def test_without_a_seed_noise_estimate_a_model_takes_seeds_until_it_has_one():
    before = night(0.96, 1, 0.01, 0)  # one seed last night, no history: nothing measures the spread
    tonight = night(0.955, 5, 0.01, 1)
    assert decide(before, tonight[:1], 1, 5).stop is None
    assert decide(before, tonight[:2], 1, 5).noise.df == 1 and decide(before, tonight[:2], 1, 5).stop is None
    assert decide(before, tonight[:3], 1, 5).noise.df == 2
    with_history = decide(before, tonight[:1], 1, 5, history=[(0.01, 3)])
    assert with_history.noise == Noise(0.01, 2) and with_history.stop is not None


def test_no_previous_run_stops_at_min():
    tonight = night(0.96, 2, 0.01, 0)
    assert decide(None, tonight[:1], 2, 5).stop is None
    assert (decide(None, tonight, 2, 5).stop, decide(None, tonight, 2, 5).verdict) == (NO_PREVIOUS, None)


def test_pooled_noise_weights_runs_by_degrees_of_freedom():
    noise = pooled_noise([(0.01, 3), (0.02, 2), (None, 1), (0.5, 1)])
    assert noise.df == 3 and noise.spread == pytest.approx(np.sqrt((2 * 0.01**2 + 0.02**2) / 3))
    assert pooled_noise([(None, 1)]) is None


def test_conditional_power_is_low_for_no_change_and_high_for_a_clear_one():
    assert conditional_power(0.0, 0.01, 3, 1, 5, 2.0) < 1e-3
    assert conditional_power(0.03, 0.01, 3, 1, 5, 2.0) > 0.99
    assert conditional_power(0.01, 0.01, 3, 5, 5, 2.0) == 0.0  # no seeds left: whether it already clears the bar


def test_the_false_alarm_rate_under_no_change_stays_within_its_bound():
    # 300 nights without a change, seed noise of one point (the demo's gaussian-pca32): flagged at most
    # ALPHA + 4 * EARLY_ALPHA = 5.4% of the time, with room for the simulation's own noise
    flagged, seeds = 0, []
    for rng_seed in range(300):
        before = night(0.96, 3, 0.01, 2 * rng_seed)
        decision = run(before, night(0.96, 5, 0.01, 2 * rng_seed + 1), history=[(0.01, 5)])
        flagged += decision.verdict != "same"
        seeds.append(decision.seeds)
    assert flagged / 300 <= 0.09
    assert np.mean(seeds) < 3  # fewer than three fixed seeds on average


def test_earlier_spreads_are_the_models_earlier_runs_latest_first_without_the_previous_one():
    from datetime import datetime, timezone

    from casflow.tasks.seeds import earlier_spreads

    def row(run: int, spread, seeds: int, **other):
        return {"run_id": f"r{run}", "run_time": datetime(2026, 12, run, tzinfo=timezone.utc), "status": "ok",
                "model": "m", "dataset_fingerprint": "d", "recipe_fingerprint": "r", "cas_top1_seed_std": spread,
                "classifier_fingerprints": ["c"] * seeds} | other
    history = [row(1, 0.01, 3), row(2, 0.02, 2), row(3, None, 1), row(4, 0.03, 3, model="other"),
               row(5, 0.04, 4, recipe_fingerprint="other"), row(6, 0.05, 2, status="failed"), row(7, 0.06, 5),
               row(9, 0.07, 3)]
    current = row(8, None, 1)
    assert earlier_spreads(history, current, previous=history[6]) == [(0.02, 2), (0.01, 3)]
    assert earlier_spreads(history, current, previous=None) == [(0.06, 5), (0.02, 2), (0.01, 3)]
