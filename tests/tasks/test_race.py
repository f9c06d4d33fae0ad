"""Racing a series (tasks/race.py): who is dropped when, what each stop means, and the error across rounds,
on small seeded correctness arrays."""

import numpy as np
import pytest

from casflow.tasks.compare import ALPHA, best_set
from casflow.tasks.race import MAX_SEEDS, ONE_LEFT, SETTLED, judge, race, round_alpha

N_EVAL = 359  # the digits eval split's size


def simulated(accuracy: dict[int, float], seed_shift: float = 0.0, rng_seed: int = 0):
    """train(step, seed): each classifier gets an image right with the checkpoint's accuracy, moved by a
    per-(step, seed) shift of up to +-seed_shift (retraining noise); records every call."""
    calls = []

    def train(step: int, seed: int) -> np.ndarray:
        calls.append((step, seed))
        rng = np.random.default_rng([rng_seed, step, seed])
        p = accuracy[step] + seed_shift * rng.uniform(-1, 1)
        return (rng.random(N_EVAL) < p).astype(np.float64)

    return train, calls


def test_far_worse_checkpoints_get_one_seed_and_the_best_wins():
    accuracy = {750: 0.10, 1500: 0.40, 2250: 0.70, 3000: 0.97, 3750: 0.97, 4500: 0.975}
    train, calls = simulated(accuracy, seed_shift=0.01)
    result = race(list(accuracy), [0, 1, 2, 3, 4], train)
    assert result.rounds[0].dropped == (750, 1500, 2250)
    assert {step for step, seed in calls if seed != 0} <= {3000, 3750, 4500}  # later seeds: contenders only
    assert result.seeds[750] == result.seeds[1500] == result.seeds[2250] == 1
    assert result.pick in {3000, 3750, 4500} and set(result.best_set) <= {3000, 3750, 4500}
    assert result.trainings == len(calls) == sum(result.seeds.values()) < 6 * 5
    assert calls[:6] == [(step, 0) for step in sorted(accuracy)]  # round 1: every checkpoint, seeds in order


def test_one_contender_left_stops_after_round_one():
    train, calls = simulated({1: 0.3, 2: 0.95, 3: 0.5})
    result = race([3, 1, 2], [7, 8, 9], train)
    assert (result.pick, result.best_set, result.stopped) == (2, (2,), ONE_LEFT)
    assert result.trainings == 3 and len(result.rounds) == 1


def test_equal_contenders_settle_once_their_gap_is_within_the_seed_spread():
    # each classifier misses 30 or 36 images (alternate seeds), a different window of them for every training:
    # after two seeds every checkpoint has the same mean and a spread of 1.2 points, so more seeds drop nobody
    def train(step: int, seed: int) -> np.ndarray:
        wrong = 30 + 6 * ((step + seed) % 2)
        start = 40 * step + 100 * seed
        return ~np.isin(np.arange(N_EVAL), np.arange(start, start + wrong) % N_EVAL)

    result = race([0, 1, 2], [0, 1, 2, 3, 4], train)
    assert result.stopped == SETTLED and len(result.rounds) == 2
    assert result.best_set == (0, 1, 2) and result.trainings == 6
    assert result.pick == max(result.best_set, key=lambda s: (np.mean([train(s, 0), train(s, 1)]), -s))


def test_a_gap_beyond_an_unmeasured_spread_runs_to_max_seeds():
    # retraining changes nothing (spread 0) and 3 images separate the two: never significant, never settled
    def train(step: int, seed: int) -> np.ndarray:
        return (np.arange(N_EVAL) < 300 + 3 * step).astype(np.float64)

    result = race([0, 1], [0, 1, 2, 3], train)
    assert (result.stopped, result.pick, result.best_set, result.trainings) == (MAX_SEEDS, 1, (0, 1), 8)


def test_each_round_tests_at_alpha_over_max_seeds():
    # 12 images worse, 3 better: raw p = 0.035, dropped by one best set at ALPHA, kept by a round of a 5-seed race
    leader = (np.arange(100) < 90).astype(float)[None]
    other = np.isin(np.arange(100), [*range(78), *range(90, 93)]).astype(float)[None]
    assert not {s.step: s for s in best_set({1: leader, 2: other})}[2].in_best_set
    assert round_alpha(5) == ALPHA / 5
    judgement = judge({1: leader, 2: other}, max_seeds=5)
    assert judgement.contenders == (1, 2) and judgement.dropped == () and judgement.stop is None


def test_the_race_rarely_drops_a_checkpoint_as_good_as_the_leader():
    # 200 races of four equally good checkpoints (retraining noise included): any drop is a wrong one
    wrong = 0
    for repetition in range(200):
        train, _ = simulated({1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9}, seed_shift=0.005, rng_seed=repetition)
        wrong += race([1, 2, 3, 4], [0, 1, 2, 3, 4], train).best_set != (1, 2, 3, 4)
    assert wrong <= 200 * ALPHA


def test_bad_input():
    train, _ = simulated({1: 0.5})
    with pytest.raises(ValueError, match="distinct steps"):
        race([1, 1], [0], train)
    with pytest.raises(ValueError, match="distinct seeds"):
        race([1], [], train)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        judge({}, 3)
