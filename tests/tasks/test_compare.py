"""The statistics that judge a change between two runs, pinned against scipy and direct computations."""

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.stats import binomtest

from casflow.tasks.compare import ALPHA, compare, holm, mcnemar_exact, paired_interval, previous_run, seed_spread


@pytest.mark.parametrize("up, down", [(0, 0), (1, 0), (0, 1), (5, 1), (10, 10), (3, 17), (100, 70), (9, 31), (1000, 950)])
def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs(up, down):
    expected = 1.0 if up + down == 0 else binomtest(up, up + down, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(up, down) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(up, down) == mcnemar_exact(down, up)


def test_mcnemar_pinned_values():
    assert mcnemar_exact(0, 20) == pytest.approx(2 * 0.5**20)  # all 20 discordant pairs one way
    assert mcnemar_exact(5, 1) == pytest.approx(0.21875)  # 2 * (1 + 6) / 64


def _holm_by_definition(p):
    """Holm's step-down rule written out: the i-th smallest p-value times (m - i + 1), running max, capped at 1."""
    m, order = len(p), np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    for rank, i in enumerate(order):
        adjusted[i] = min(1.0, max((m - j) * p[order[j]] for j in range(rank + 1)))
    return adjusted


@pytest.mark.parametrize("p", [
    [0.01, 0.04, 0.03, 0.005],
    [0.5, 0.5, 0.5],
    [1e-6, 0.2, 0.011, 0.012, 0.9, 0.049, 0.0001, 0.3, 0.02, 0.7],
    [0.0],
])
def test_holm_matches_its_definition(p):
    assert holm(p) == pytest.approx(list(_holm_by_definition(np.array(p))))


def test_holm_pinned_values():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_paired_interval_is_the_wald_interval_for_paired_proportions():
    b, c, same = 7, 19, 333  # b images got worse, c got better, the rest agree
    n = b + c + same
    differences = np.array([-1.0] * b + [1.0] * c + [0.0] * same)
    delta = (c - b) / n
    half = 1.959963984540054 * math.sqrt((b + c) / n - delta**2) / math.sqrt(n)
    assert paired_interval(differences) == pytest.approx((delta - half, delta + half))
    assert paired_interval(np.zeros(10)) == (0.0, 0.0)
    assert paired_interval(np.ones(5)) == (1.0, 1.0)  # clipped


def _correct(n_images, wrong, seeds=1):
    out = np.ones((seeds, n_images))
    out[:, wrong] = 0
    return out


def test_a_class_that_broke_is_worse_and_the_others_are_not():
    labels = np.repeat(np.arange(10), 36)
    before = _correct(360, [])
    after = _correct(360, np.flatnonzero(labels == 3)[:30])  # 30 of 36 threes now wrong
    changes = compare(before, after, labels, 10)
    overall, classes = changes[0], changes[1:]
    assert overall.class_index is None and overall.direction == "worse" and overall.n_worse == 30
    assert overall.delta == pytest.approx(-30 / 360)
    assert classes[3].direction == "worse" and classes[3].significant
    assert classes[3].p_adjusted == pytest.approx(min(1.0, 10 * mcnemar_exact(0, 30)))  # Holm: the smallest p times 10
    assert all(c.direction == "same" and c.p_value == 1.0 for i, c in enumerate(classes) if i != 3)


def test_few_discordant_images_are_not_a_change():
    labels = np.repeat(np.arange(2), 100)
    before, after = _correct(200, [0, 1, 2]), _correct(200, [150, 151, 152, 153, 154])
    (overall, *_) = compare(before, after, labels, 2)
    assert overall.p_value > ALPHA and overall.direction == "same" and overall.delta == pytest.approx(-2 / 200)


def test_a_change_within_the_seed_spread_is_not_better():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 500)
    # two seeds per run that disagree on many images: a spread of several points
    before = np.stack([rng.random(1000) < 0.70, rng.random(1000) < 0.80]).astype(float)
    after = np.stack([rng.random(1000) < 0.76, rng.random(1000) < 0.86]).astype(float)
    (overall, *_) = compare(before, after, labels, 2)
    assert overall.seed_spread == pytest.approx(max(seed_spread(before), seed_spread(after)))
    assert abs(overall.delta) < overall.seed_spread and overall.p_value < ALPHA
    assert not overall.significant and overall.direction == "same"


def test_one_seed_has_no_spread():
    assert seed_spread(np.ones((1, 5))) is None
    assert seed_spread(np.array([[1, 1, 0, 0], [1, 1, 1, 1]], float)) == pytest.approx(np.std([0.5, 1.0], ddof=1))


def test_different_images_refuse_to_compare():
    with pytest.raises(ValueError, match="different images"):
        compare(np.ones((1, 5)), np.ones((1, 6)), np.zeros(6, int), 1)


def _row(run_id, samples="s1", status="ok", **extra):
    when = datetime(int(run_id[:4]), int(run_id[5:7]), 1, tzinfo=timezone.utc)  # ids "YYYY-MM...": runs of a month tie
    return {"run_id": run_id, "run_time": when, "model": "m", "status": status, "dataset_fingerprint": "d",
            "recipe_fingerprint": "r", "classifier_seeds": [0], "samples_fingerprint": samples} | extra


def test_previous_run_is_the_latest_earlier_success_with_other_samples():
    current = _row("2026-05", samples="s3")
    history = [
        _row("2026-01", samples="s1"),
        _row("2026-02", samples="s2"),
        _row("2026-03", samples="s3"),  # the same samples: nothing to judge against
        _row("2026-04", samples="s9", status="failed"),
        _row("2026-04b", samples="s9", dataset_fingerprint="other"),
        _row("2026-04c", samples="s9", recipe_fingerprint="other"),
        _row("2026-04d", samples="s9", classifier_seeds=[0, 1]),
        _row("2026-04e", samples="s9", recipe_fingerprint=None),  # a run from before recipes were fingerprinted
        _row("2026-06", samples="s9"),  # later than the current run
        _row("2026-04f", samples="s9") | {"model": "other"},
    ]
    assert previous_run(history, current)["run_id"] == "2026-02"
    assert previous_run(history[2:], current) is None


def test_previous_run_is_chosen_by_run_time_not_by_the_random_tail_of_the_id():
    """Run ids carry the start time to the second and then a random tail: three runs in one second whose
    ids sort opposite to their start times."""
    second = datetime(2026, 12, 1, 2, 0, 0, tzinfo=timezone.utc)
    at = lambda ms: second + timedelta(milliseconds=ms)  # noqa: E731
    first = _row("2026-12", samples="s1") | {"run_id": "20261201T020000Z-ffffffff", "run_time": at(100)}
    second_run = _row("2026-12", samples="s2") | {"run_id": "20261201T020000Z-88888888", "run_time": at(400)}
    current = _row("2026-12", samples="s3") | {"run_id": "20261201T020000Z-00000000", "run_time": at(900)}
    assert previous_run([first, second_run], current)["run_id"] == second_run["run_id"]
    assert previous_run([first], current)["run_id"] == first["run_id"]
    assert previous_run([first, current], second_run)["run_id"] == first["run_id"]  # a later run is never the previous


# ---------------------------------------------------------------- the best set of a series of checkpoints

def _right_on(*right: range | list[int], n: int = 100) -> np.ndarray:
    """seeds x images 0/1 correctness: one row per seed, 1 on the images listed for it."""
    rows = np.zeros((len(right), n))
    for row, images in zip(rows, right):
        row[list(images)] = 1
    return rows


def test_best_set_keeps_the_leader_and_those_not_significantly_worse():
    from casflow.tasks.compare import best_set

    series = {
        1000: _right_on(range(60)),  # 30 images the leader gets right and it does not, none the other way
        2000: _right_on(range(88)),  # 2 worse, 0 better
        3000: _right_on(range(90)),  # the leader: 90%
        4000: _right_on([*range(80), *range(90, 95)]),  # 10 worse, 5 better
    }
    standings = {s.step: s for s in best_set(series)}
    assert [s.step for s in best_set(series)] == [1000, 2000, 3000, 4000]
    assert standings[3000].is_leader and standings[3000].in_best_set and standings[3000].p_value is None
    assert (standings[1000].n_better, standings[1000].n_worse) == (0, 30)
    assert standings[1000].delta == pytest.approx(-0.30)
    # hand-worked: raw p = 2 * 0.5^30, 2 * 0.5^2 = 0.5, 2 * P[Bin(15, 1/2) <= 5] = 2 * 4944 / 32768;
    # Holm over the three: the smallest times 3, then 0.3018 * 2 = 0.6036, then max(0.6036, 0.5 * 1)
    assert standings[1000].p_adjusted == pytest.approx(3 * 2 * 0.5**30)
    assert standings[4000].p_value == pytest.approx(2 * 4944 / 32768)
    assert standings[4000].p_adjusted == pytest.approx(2 * 2 * 4944 / 32768)
    assert standings[2000].p_adjusted == pytest.approx(2 * 2 * 4944 / 32768)
    assert {s.step for s in standings.values() if s.in_best_set} == {2000, 3000, 4000}


def test_best_set_controls_the_error_across_the_series():
    from casflow.tasks.compare import best_set

    series = {
        1: _right_on(range(90)),  # the leader
        2: _right_on([*range(78), *range(90, 93)]),  # 12 worse, 3 better: raw p = 2 * 576 / 32768 = 0.035 < ALPHA
        3: _right_on(range(50)),  # 40 worse: far below
        4: _right_on(range(89)),  # 1 worse
    }
    standings = {s.step: s for s in best_set(series)}
    assert standings[2].p_value == pytest.approx(2 * 576 / 32768) and standings[2].p_value < ALPHA
    assert standings[2].p_adjusted == pytest.approx(2 * 2 * 576 / 32768)  # second smallest of three: times 2
    assert standings[2].in_best_set  # alone it would be dropped; among three tests it is not
    assert not standings[3].in_best_set and standings[4].in_best_set


def test_best_set_is_seed_aware():
    from casflow.tasks.compare import best_set

    # the leader's seeds disagree a lot (90% and 50%): a 10-point gap is within what retraining moves
    series = {1: _right_on(range(90), range(50)), 2: _right_on(range(60), range(60))}
    standings = {s.step: s for s in best_set(series)}
    assert standings[1].is_leader
    assert standings[2].p_value < ALPHA  # the sign test alone: 10 images up, 30 down
    assert standings[2].seed_noise > abs(standings[2].delta)
    assert standings[2].in_best_set


def test_the_leader_among_equals_is_the_earliest_step():
    from casflow.tasks.compare import best_set

    standings = best_set({5: _right_on(range(70)), 3: _right_on(range(70)), 9: _right_on(range(10))})
    assert [s.step for s in standings if s.is_leader] == [3]
    assert [s.in_best_set for s in standings] == [True, True, False]


def test_newest_against_best_so_far():
    from casflow.tasks.compare import newest_against_best

    assert newest_against_best({1: _right_on(range(50))}) is None
    assert newest_against_best({1: _right_on(range(50)), 2: _right_on(range(90)), 3: _right_on(range(89))}) == (2, "same")
    assert newest_against_best({1: _right_on(range(50)), 2: _right_on(range(90)), 3: _right_on(range(40))}) == (2, "worse")
    assert newest_against_best({1: _right_on(range(50)), 2: _right_on(range(60)), 3: _right_on(range(95))}) == (2, "better")
