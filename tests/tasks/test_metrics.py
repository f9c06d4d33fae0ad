import numpy as np
import pytest

from casflow.tasks.metrics import ClassCounts, count_correct, wilson_interval
from casflow.tasks.results import SeedScores


def test_count_correct_per_class_top1_top5_and_confusion():
    logits = np.array([
        [9, 1, 0, 0, 0, 0, 0],  # true 0: top-1 right
        [0, 1, 9, 8, 7, 6, 5],  # true 0: not even in top-5 (0 is lowest)
        [1, 9, 2, 3, 4, 5, 0],  # true 1: right
        [9, 8, 7, 6, 5, 0, 1],  # true 6: not in top-5
        [5, 4, 3, 2, 9, 0, 1],  # true 2: top-5 but not top-1
    ], dtype=np.float32)
    labels = np.array([0, 0, 1, 6, 2])
    counts = count_correct(logits, labels, 7)
    assert counts.n_eval == (2, 1, 1, 0, 0, 0, 1)
    assert counts.top1_correct == (1, 1, 0, 0, 0, 0, 0)
    assert counts.top5_correct == (1, 1, 1, 0, 0, 0, 0)
    assert counts.top1 == pytest.approx(2 / 5) and counts.top5 == pytest.approx(3 / 5)
    assert counts.confusion[0] == (1, 0, 1, 0, 0, 0, 0)
    assert SeedScores((counts,)).worst_class() == 2  # 0% with images; empty classes never count as worst
    assert ClassCounts.from_dict(__import__("dataclasses").asdict(counts)) == counts


def test_top5_with_five_classes_or_fewer_is_one():
    counts = count_correct(np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 3, 3)
    assert counts.top5 == 1.0


def test_wilson_interval_pinned_values():
    # Reference values from scipy.stats.binomtest(k, n).proportion_ci(method="wilson").
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-6)
    assert wilson_interval(36, 40) == pytest.approx((0.7694822, 0.9604205), abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_class_without_eval_images_has_no_accuracy_nor_seed_spread():
    seeds = tuple(ClassCounts(n_eval=(4, 0, 2), top1_correct=(c, 0, 1), top5_correct=(4, 0, 2),
                              confusion=((0,) * 3,) * 3) for c in (1, 3))
    scores = SeedScores(seeds)
    assert scores.per_class_top1() == [0.5, None, 0.5]  # not 0% and not NaN
    assert scores.per_class_seed_std()[1] is None and scores.per_class_seed_std()[0] == pytest.approx(0.3535534)
    assert scores.worst_class() in (0, 2)
