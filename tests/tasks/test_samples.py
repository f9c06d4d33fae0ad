import numpy as np
import pytest

from casflow.tasks.errors import InputError
from casflow.tasks.images import decode_image, encode_png, to_uint8
from casflow.tasks.samples import check_labels, class_interleaved, conform_images, label_schedule, select_for_budget


def test_label_schedule_is_round_robin_and_meets_the_budget():
    schedule = label_schedule([2, 3, 1])
    assert list(schedule) == [0, 1, 2, 0, 1, 1]
    assert list(np.bincount(label_schedule([142, 146, 0, 5]), minlength=4)) == [142, 146, 0, 5]


def test_select_for_budget_takes_a_seeded_subset_classes_interleaved():
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    chosen = select_for_budget(labels, [2, 3], seed=0, allow_shortfall=False, model="m", source="s")
    assert list(np.bincount(labels[chosen])) == [2, 3]
    assert list(labels[chosen]) == [0, 1, 0, 1, 1]
    for c in (0, 1):  # source order within a class
        assert np.all(np.diff(chosen[labels[chosen] == c]) > 0)
    assert np.array_equal(chosen, select_for_budget(labels, [2, 3], seed=0, allow_shortfall=False, model="m", source="s"))
    others = {tuple(select_for_budget(labels, [2, 3], seed=s, allow_shortfall=False, model="m", source="s")) for s in range(10)}
    assert len(others) > 1


def test_class_interleaved_matches_the_label_schedule():
    labels = np.repeat(np.arange(3), [4, 2, 3])  # grouped by class, as CIFAR-10's Parquet is
    order = class_interleaved(labels)
    assert list(labels[order]) == list(label_schedule([4, 2, 3]))
    assert sorted(order) == list(range(9))
    assert list(order[labels[order] == 0]) == [0, 1, 2, 3]


def test_shortfall_is_an_error_unless_allowed():
    labels = np.array([0, 0, 1])
    with pytest.raises(InputError, match="model 'm' s: too few samples: class 1 has 1 of 2"):
        select_for_budget(labels, [2, 2], seed=0, allow_shortfall=False, model="m", source="s")
    chosen = select_for_budget(labels, [2, 2], seed=0, allow_shortfall=True, model="m", source="s")
    assert list(labels[chosen]) == [0, 1, 0]


def test_labels_outside_the_classes():
    with pytest.raises(InputError, match="label 10 outside the dataset's 10 classes"):
        check_labels(np.array([0, 10]), 10, model="m", source="s")
    with pytest.raises(InputError, match="integers"):
        check_labels(np.array([0.0, 1.0]), 10, model="m", source="s")


def test_conform_images_checks_size_and_channels_and_resizes_on_request():
    images = np.zeros((3, 16, 16, 1), np.uint8)
    with pytest.raises(InputError, match="16x16, the dataset's are 8x8"):
        conform_images(images, (8, 8, 1), resize_filter=None, model="m", source="s")
    with pytest.raises(InputError, match="3 channels, the dataset has 1"):
        conform_images(np.zeros((3, 8, 8, 3), np.uint8), (8, 8, 1), resize_filter=None, model="m", source="s")
    assert conform_images(images, (8, 8, 1), resize_filter="bicubic", model="m", source="s").shape == (3, 8, 8, 1)


@pytest.mark.parametrize("output_range, array, expected", [
    ("0..1", np.array([0.0, 0.5, 1.0]), [0, 128, 255]),
    ("-1..1", np.array([-1.0, 0.0, 1.0]), [0, 128, 255]),
    ("uint8", np.array([0, 7, 255], np.uint8), [0, 7, 255]),
])
def test_to_uint8_maps_declared_ranges(output_range, array, expected):
    assert list(to_uint8(array, output_range, model="m", source="s")) == expected


@pytest.mark.parametrize("output_range, array, words", [
    ("0..1", np.array([0.0, np.nan]), "NaN"),
    ("0..1", np.array([0.0, np.inf]), "infinite"),
    ("0..1", np.array([-0.5, 1.0]), "outside the declared output_range 0..1"),
    ("uint8", np.array([0.0, 1.0]), "expected uint8"),
    ("-1..1", np.array([0, 1], np.int32), "expected float"),
])
def test_to_uint8_rejects_bad_values(output_range, array, words):
    with pytest.raises(InputError, match=words):
        to_uint8(array, output_range, model="m", source="s")


def test_png_round_trip_is_lossless_and_deterministic():
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        image = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
        data = encode_png(image)
        assert data == encode_png(image.copy())
        assert np.array_equal(decode_image(data, "x", max_pixels=64), image)


def test_corrupt_image_names_the_source():
    with pytest.raises(InputError, match="file.png: corrupt or unreadable image"):
        decode_image(b"\x89PNG\r\n\x1a\n garbage", "file.png", max_pixels=64)
