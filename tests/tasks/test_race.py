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


def test_a_round_that_drops_nobody_settles_the_race_and_the_last_seed_ends_it():
    # retraining changes nothing (spread 0) and 3 images separate the two: never significant, and the gap is
    # beyond the spread, but the second seed separates nobody
    def train(step: int, seed: int) -> np.ndarray:
        return (np.arange(N_EVAL) < 300 + 3 * step).astype(np.float64)

    result = race([0, 1], [0, 1, 2, 3], train)
    assert (result.stopped, result.pick, result.best_set, result.trainings) == (SETTLED, 1, (0, 1), 4)
    assert judge({0: train(0, 0)[None], 1: train(1, 0)[None]}, 4).stop is None  # one seed each: too early
    assert race([0, 1], [0, 1], train).stopped == MAX_SEEDS  # the seeds ran out first


def test_a_round_that_drops_someone_is_not_settled():
    # two seeds each; step 2 is far worse and leaves now, and 0 and 1 are 3 images apart with no seed spread
    two = lambda right: np.stack([(np.arange(N_EVAL) < right).astype(np.float64)] * 2)  # noqa: E731
    judgement = judge({0: two(300), 1: two(303), 2: two(200)}, 4)
    assert judgement.dropped == (2,) and judgement.contenders == (0, 1) and judgement.stop is None


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


def raced_arrays():
    """A race's result and the correctness arrays it left: per step, the seeds it got, in order."""
    accuracy = {100: 0.3, 200: 0.9, 300: 0.9, 400: 0.91}
    train, calls = simulated(accuracy, seed_shift=0.01, rng_seed=3)
    result = race(list(accuracy), [0, 1, 2, 3], train)
    given = list(calls)  # train records its calls: read them before calling it again
    return result, {step: np.stack([train(step, seed) for s, seed in given if s == step]) for step in accuracy}


def test_replay_decides_the_race_again_from_what_it_left():
    from casflow.tasks.race import replay

    result, correct = raced_arrays()
    again = replay(correct, 4)
    assert (again.pick, again.best_set, again.seeds, again.stopped) == (result.pick, result.best_set, result.seeds,
                                                                        result.stopped)
    assert result.seeds[100] == 1 and result.trainings < 16
    more = dict(correct) | {100: np.concatenate([correct[100], correct[100]])}  # a seed the race did not give
    with pytest.raises(ValueError, match="step 100 has 2 classifier seeds where its race gives 1"):
        replay(more, 4)
    fewer = dict(correct) | {200: correct[200][:1]}
    with pytest.raises(ValueError, match="step 200 has 1 classifier seeds where its race gives more"):
        replay(fewer, 4)


def test_the_best_table_of_a_race_shows_its_rounds_and_seeds():
    from casflow.tasks.results import best_rows

    result, correct = raced_arrays()
    summary = [{"run_id": "r", "run_time": None, "dataset": "digits", "dataset_fingerprint": "d", "recipe": "fast",
                "series": "cfg", "model": f"cfg@{step}", "samples_fingerprint": "s", "n_eval": N_EVAL,
                "cas_top1_ci_low": None, "cas_top1_ci_high": None, "step": step} for step in correct]
    rows = {r["step"]: r for r in best_rows(summary, correct, race_max_seeds=4)}
    assert {step: r["seeds"] for step, r in rows.items()} == result.seeds
    assert rows[100]["race_round"] == 1 and not rows[100]["in_best_set"] and rows[100]["p_adjusted"] < ALPHA / 4
    assert [s for s, r in rows.items() if r["in_best_set"]] == list(result.best_set)
    assert [s for s, r in rows.items() if r["is_leader"]] == [result.pick]
    assert all(r["selection"] == "race" and r["max_seeds"] == 4 for r in rows.values())
    plain = best_rows(summary, correct)
    assert all(r["selection"] == "all" and r["race_round"] is None and r["max_seeds"] is None for r in plain)
