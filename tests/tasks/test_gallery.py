"""The failure gallery's choices: which models, which real eval images (the most confident misses) and
which samples beside them (the nearest of a class), on seeded tiny data against brute force."""

import numpy as np
import pytest

from casflow.tasks import gallery, report


def test_the_most_confident_misses_are_chosen_most_confident_first():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    confidence = rng.uniform(0.25, 1, 200).astype(np.float32)
    confidence[predicted == labels] += 1  # right answers are the most confident of all, and never a miss
    confidence[[5, 9]] = 2.5  # a tie among the most confident, if both are misses
    picks = gallery.most_confident_misses(labels, predicted, confidence)
    misses = [i for i in range(200) if predicted[i] != labels[i]]
    expected = sorted(misses, key=lambda i: (-float(confidence[i]), i))[: gallery.MISSES_SHOWN]
    assert picks.tolist() == expected and len(picks) == 8
    assert all(predicted[picks] != labels[picks])
    assert list(confidence[picks]) == sorted(confidence[picks], reverse=True)


def test_fewer_misses_than_shown_gives_them_all_and_none_gives_none():
    labels = np.array([0, 1, 2, 3])
    assert gallery.most_confident_misses(labels, np.array([0, 2, 2, 1]), np.array([0.9, 0.4, 0.8, 0.7])).tolist() == [3, 1]
    assert gallery.most_confident_misses(labels, labels, np.ones(4)).tolist() == []
    with pytest.raises(ValueError, match="4 labels, 3 predictions"):
        gallery.most_confident_misses(labels, labels[:3], np.ones(4))


def test_the_nearest_samples_are_of_the_asked_class_nearest_first():
    rng = np.random.default_rng(1)
    references, reference_labels = rng.normal(size=(300, 16)).astype(np.float32), rng.integers(0, 5, 300)
    reference_labels[reference_labels == 4] = 3  # class 4 has no samples
    reference_labels[np.flatnonzero(reference_labels == 2)[2:]] = 1  # class 2 has two
    queries, classes = rng.normal(size=(6, 16)).astype(np.float32), np.array([0, 1, 2, 3, 4, 0])
    found = gallery.nearest_of_class(queries, classes, references, reference_labels)
    for query, c, indices in zip(queries, classes, found):
        members = np.flatnonzero(reference_labels == c)
        distances = np.linalg.norm(references[members] - query, axis=1)
        assert indices.tolist() == members[np.argsort(distances)][:3].tolist()
    assert [len(f) for f in found] == [3, 3, 2, 3, 0, 3]


def row(model, series=None, status="ok"):
    return {"model": model, "series": series, "status": status}


def test_plain_models_series_leaders_and_regressions_get_a_gallery():
    summary = [row("real"), row("gauss"), row("broken", status="failed"), row("ddpm@1", "ddpm"), row("ddpm@2", "ddpm"),
               row("ddpm@3", "ddpm"), row("ddpm@4", "ddpm"), row("gan@1", "gan")]
    best = [{"model": m, "is_leader": m in ("ddpm@2", "gan@1"), "vs_best_so_far": "worse" if m == "ddpm@4" else None}
            for m in ("ddpm@1", "ddpm@2", "ddpm@3", "ddpm@4", "gan@1")]
    changes = [{"model": "ddpm@3", "direction": "worse"}, {"model": "ddpm@1", "direction": "same"},
               {"model": "ddpm@1", "direction": "unknown"}]
    assert gallery.gallery_models(summary, changes, best) == ["real", "gauss", "ddpm@2", "ddpm@3", "ddpm@4", "gan@1"]


def test_the_gallery_renders_each_miss_with_class_names_and_confidence():
    image = np.zeros((8, 8, 1), np.uint8)
    miss = report.Miss(image, 3, 8, 0.9731, np.stack([image] * 3), np.empty((0, 8, 8, 1), np.uint8))
    names = tuple(f"<c{i}>" for i in range(10))
    page = report._gallery_section({"m&co": report.Gallery((miss,)), "old": report.Gallery((), "stored before")}, names)
    assert "true <b>&lt;c3&gt;</b>, taken for <b>&lt;c8&gt;</b> (97.3%)" in page and "<h3>m&amp;co</h3>" in page
    assert page.count("data:image/png;base64,") == 2 and "(no samples of this class)" in page
    assert "<h3>old</h3><p>stored before</p>" in page


def test_a_gallery_reads_back_as_it_was_stored():
    rng = np.random.default_rng(0)
    misses = tuple(report.Miss(image=rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), true_class=t, predicted_class=p,
                               confidence=c, true_neighbours=rng.integers(0, 256, (k, 8, 8, 1), dtype=np.uint8),
                               predicted_neighbours=rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8))
                   for t, p, c, k in ((3, 8, 0.9, 3), (5, 9, 0.25, 0)))  # a class without samples: no neighbours
    for found in (report.Gallery(misses), report.Gallery((), "its classifier got every real eval image right")):
        back = gallery.decode(gallery.encode(found))
        assert back.note == found.note and len(back.misses) == len(found.misses)
        for a, b in zip(back.misses, found.misses):
            assert (a.true_class, a.predicted_class, a.confidence) == (b.true_class, b.predicted_class, b.confidence)
            for field in ("image", "true_neighbours", "predicted_neighbours"):
                assert np.array_equal(getattr(a, field), getattr(b, field)) and getattr(a, field).dtype == np.uint8
