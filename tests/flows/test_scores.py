"""Scores beside CAS through the steps: GAN-test, the feature-space scores and near copies
in the real baseline's classifier (steps.score_samples), the Naive Augmentation Score's
classifiers (steps.train_classifier with `augment`), caching and opt-outs. The numbers of
the scores themselves are pinned in tests/tasks/test_scores.py."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from casflow.flows import steps
from casflow.storage.results import PER_CLASS_SCHEMA, SUMMARY_SCHEMA
from casflow.tasks.config import ConfigError, parse_config
from casflow.tasks.datasets import digits_splits
from casflow.tasks.results import RunInfo, per_class_rows, summary_row
from helpers import run_steps, write_config


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Four models scored: the train split with light noise (a copier), a Gaussian, the same Gaussian at
    temperature 0 (class means only: sharp, no diversity), and the real baseline."""
    root = tmp_path_factory.mktemp("scores")
    train, _ = digits_splits(0.2, 0)
    noisy = np.clip(train.images + np.random.default_rng(0).normal(0, 5, train.images.shape), 0, 255).astype(np.uint8)
    (root / "in").mkdir()
    np.savez(root / "in" / "copies.npz", arr_0=noisy, arr_1=train.labels)
    models = [{"name": "copier", "generator": {"kind": "npz", "path": str(root / "in" / "copies.npz")}},
              {"name": "gauss", "generator": {"kind": "gaussian", "components": 32}},
              {"name": "means", "generator": {"kind": "gaussian", "components": 32, "temperature": 0.0}}]
    config, store, dataset, done = run_steps(write_config(root, models, scores={"augmentation": [0.5]}))
    real = done["real"].classifiers[0]
    scores = {name: steps.score_samples(config, store, chain.samples, real, dataset, "cpu") for name, chain in done.items()}
    return config, store, dataset, done, scores


def test_a_copier_is_flagged_while_its_cas_is_near_the_baseline_and_gaussians_are_not(scored):
    _, _, _, done, scores = scored
    cas = {name: record.evaluations[0].counts.top1 for name, record in done.items()}
    assert cas["copier"] >= cas["real"] - 0.03  # CAS alone cannot tell a copier from the real data
    assert scores["copier"].overall["memorized_fraction"] > 0.95
    assert scores["copier"].overall["memorized_fraction_features"] > 0.5
    assert scores["gauss"].overall["memorized_fraction"] < 0.01 and scores["gauss"].overall["memorized_fraction_features"] < 0.03
    assert all(f > 0.9 for f in scores["copier"].per_class["memorized_fraction"])


def test_sharp_but_not_diverse_shows_as_high_gan_test_and_low_recall(scored):
    _, _, _, done, scores = scored
    means, gauss = scores["means"].overall, scores["gauss"].overall
    assert means["gan_test_top1"] > done["means"].evaluations[0].counts.top1 + 0.1  # recognisable samples, a poor training set
    assert means["recall"] < gauss["recall"] and means["coverage"] < gauss["coverage"]
    assert means["fd"] > gauss["fd"] > scores["real"].overall["fd"]


def test_scores_say_which_classifier_and_are_cached_by_fingerprint(scored, tmp_path):
    config, store, dataset, done, scores = scored
    assert {record.classifier for record in scores.values()} == {done["real"].classifiers[0].fingerprint}
    again = steps.score_samples(config, store, done["gauss"].samples, done["real"].classifiers[0], dataset, "cpu")
    assert again.cached and again.overall == scores["gauss"].overall
    # another recipe: another real classifier, so the scores are computed again
    other = config.model_copy(update={"classifier": config.classifier.model_copy(update={"options": config.classifier.options
                                                                                     | {"epochs": 2}})})
    real = steps.train_classifier(other, store, done["real"].samples, dataset, "cpu", other.seed)
    rescored = steps.score_samples(other, store, done["gauss"].samples, real, dataset, "cpu")
    assert not rescored.cached and rescored.fingerprint != scores["gauss"].fingerprint


def test_scores_reach_the_result_rows(scored):
    config, _, dataset, done, scores = scored
    run = RunInfo("r", __import__("datetime").datetime.now(), None, "digits", dataset.fingerprint, dataset.class_names,
                  "fast", "f" * 64, 0, (0,))
    outcome = steps.outcome(config.models[0], done["copier"], None,
                            sample_scores=scores["copier"])
    row = summary_row(run, outcome, None)
    assert row["scores_classifier_fingerprint"] == done["real"].classifiers[0].fingerprint
    # the digits' sets are below the subsets' cap: every sample and every eval image, and the sizes say so
    assert (row["scores_n_samples"], row["scores_n_real"]) == (1438, 359)
    assert sum(scores["copier"].per_class["scores_n_samples"]) == 1438 and sum(scores["copier"].per_class["scores_n_real"]) == 359
    table = pa.Table.from_pylist([row], schema=SUMMARY_SCHEMA)
    assert table.column("scores_n_samples").to_pylist() == [1438]
    assert row["memorized_fraction"] == scores["copier"].overall["memorized_fraction"] and row["gan_test_top1"] > 0.9
    rows = per_class_rows(run, outcome)
    assert [r["memorized_fraction"] for r in rows] == scores["copier"].per_class["memorized_fraction"]
    assert pa.Table.from_pylist(rows, schema=PER_CLASS_SCHEMA).column("scores_n_real").to_pylist() == \
        scores["copier"].per_class["scores_n_real"]
    bare = summary_row(run, steps.outcome(config.models[0], done["copier"], None),
                       None)
    assert "gan_test_top1" not in bare  # written as null


def test_the_naive_augmentation_score_trains_on_real_plus_a_share_of_the_samples(scored, monkeypatch):
    from casflow.tasks.classifiers import training

    config, store, dataset, done, _ = scored
    seen = []
    original = training.train
    monkeypatch.setattr(training, "train", lambda recipe, data, **kw: seen.append(data) or original(recipe, data, **kw))
    augmented = steps.train_classifier(config, store, done["gauss"].samples, dataset, "cpu", config.seed, augment=0.5)
    (data,) = seen
    assert data.num_samples == 1438 + 719
    images, labels = data.decoded()
    assert len(images) == 1438 + 719 and np.bincount(labels[1438:]).min() >= 70  # a class-balanced prefix
    streamed = sum(len(chunk_labels) for _, chunk_labels in data.chunks(0))
    assert streamed == 1438 + 719  # the streaming path covers the same set
    assert augmented.augment == 0.5 and augmented.fingerprint != done["gauss"].classifiers[0].fingerprint
    evaluation = steps.evaluate_classifier(config, store, augmented, dataset, "cpu")
    assert evaluation.counts.top1 > 0.85
    again = steps.train_classifier(config, store, done["gauss"].samples, dataset, "cpu", config.seed, augment=0.5)
    assert again.cached and len(seen) == 1


@pytest.mark.parametrize("augmentation, words", [([0.5, 0.5], "distinct"), ([1.5], "less than or equal to 1"), ([0], "greater than 0")])
def test_bad_augmentation_ratios_are_config_errors(augmentation, words):
    with pytest.raises(ConfigError, match=words):
        parse_config(f"scores: {{augmentation: {augmentation}}}\nmodels: [{{name: g, generator: {{kind: gaussian}}}}]\n")
