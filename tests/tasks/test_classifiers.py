import numpy as np
import pytest
import torch

from tasks import classifiers, datasets, training
from tasks.classifiers.common import ResidentLoader, cutout, predict_logits, random_crop
from tasks.metrics import count_correct

CPU = torch.device("cpu")
TINY = {"widths": [32, 64, 64], "epochs": 6, "batch_size": 64, "flip": False, "translate": 1}


@pytest.fixture(scope="module")
def digits():
    return datasets.digits_splits(0.2, 0)


def _accuracy(recipe, hp, net, held_out):
    logits = training.predict(hp, net, held_out.images, CPU)
    return count_correct(logits, held_out.labels, 10).top1


def test_hyperparameters_apply_options_and_reject_unknown():
    hp = classifiers.hyperparameters("fast", {"epochs": 3, "widths": [8, 8, 8]})
    assert hp.epochs == 3 and hp.widths == (8, 8, 8) and hp.batch_size == 1024
    with pytest.raises(ValueError, match="options.epoch: not a hyperparameter"):
        classifiers.hyperparameters("fast", {"epoch": 3})
    with pytest.raises(ValueError, match="options.widths"):
        classifiers.hyperparameters("fast", {"widths": [1, 2]})
    assert classifiers.hyperparameters("accurate", {}).convs_per_group == 3
    with pytest.raises(ValueError, match="unknown classifier recipe"):
        classifiers.recipe("tiny")


def test_training_is_reproducible_with_the_seed(digits):
    train, held_out = digits
    hp = classifiers.hyperparameters("fast", TINY | {"epochs": 2})
    first, _ = training.train("fast", hp, train.images, train.labels, num_classes=10, device=CPU, seed=0)
    second, _ = training.train("fast", hp, train.images, train.labels, num_classes=10, device=CPU, seed=0)
    other, _ = training.train("fast", hp, train.images, train.labels, num_classes=10, device=CPU, seed=1)
    a, b, c = (training.predict(hp, n, held_out.images, CPU) for n in (first, second, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("recipe, options", [
    ("fast", TINY),
    ("accurate", TINY | {"cutout": 3, "translate": 1}),
    ("paper", {"epochs": 3, "batch_size": 64, "flip": False, "translate": 1, "lr": 0.05}),
])
def test_every_recipe_learns_digits_on_the_cpu(digits, recipe, options):
    train, held_out = digits
    hp = classifiers.hyperparameters(recipe, options)
    net, log = training.train(recipe, hp, train.images, train.labels, num_classes=10, device=CPU, seed=0)
    assert _accuracy(recipe, hp, net, held_out) > 0.8
    assert log["device"] == "cpu" and log["steps"] > 0 and len(log["epochs"]) >= 1


def test_weights_round_trip(digits):
    train, held_out = digits
    hp = classifiers.hyperparameters("fast", TINY | {"epochs": 1})
    net, _ = training.train("fast", hp, train.images, train.labels, num_classes=10, device=CPU, seed=0)
    loaded = training.load_weights("fast", hp, training.weights_bytes(net), image_shape=(8, 8, 1), num_classes=10, device=CPU)
    assert np.array_equal(training.predict(hp, net, held_out.images, CPU), training.predict(hp, loaded, held_out.images, CPU))


def test_streaming_training_learns_as_well(digits):
    train, held_out = digits
    hp = classifiers.hyperparameters("fast", TINY)

    def chunks(epoch):
        order = np.random.default_rng(epoch).permutation(len(train.labels) // 100 + 1)
        for i in order:
            yield train.images[i * 100 : (i + 1) * 100], train.labels[i * 100 : (i + 1) * 100]

    net, log = training.train_streaming("fast", hp, chunks, num_samples=len(train.labels), image_shape=(8, 8, 1),
                                        num_classes=10, device=CPU, seed=0)
    assert _accuracy("fast", hp, net, held_out) > 0.8


def test_prediction_does_not_depend_on_its_batch_size(digits):
    train, held_out = digits
    hp = classifiers.hyperparameters("fast", TINY | {"epochs": 1, "tta_level": 2})
    net, _ = training.train("fast", hp, train.images, train.labels, num_classes=10, device=CPU, seed=0)
    whole = predict_logits(net, held_out.images, CPU, tta_level=2, flip=True, batch_size=1000)
    pieces = predict_logits(net, held_out.images, CPU, tta_level=2, flip=True, batch_size=7)
    np.testing.assert_allclose(whole, pieces, rtol=1e-4, atol=1e-5)


def test_random_crop_matches_slicing():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    padded = torch.nn.functional.pad(images, (2,) * 4, mode="reflect")
    out = random_crop(padded, 2, g)
    assert out.shape == images.shape
    for i in range(2):  # each crop is some window of the padded image
        windows = [padded[i, :, y : y + 6, x : x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_cutout_blanks_one_square_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(4, 3, 10, 10)
    out = cutout(x, 3, torch.zeros(3), g)
    assert torch.all((out == 0).sum(dim=(1, 2, 3)) == 3 * 9)


def test_resident_loader_batches_cover_the_data_once_per_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(4, 1).repeat(4, 2)
    loader = ResidentLoader(images, np.arange(10), CPU, batch_size=3, flip=False, translate=0, seed=0)
    labels = torch.cat([y for _, y in loader.epoch(0)])
    assert len(labels) == 9 and len(set(labels.tolist())) == 9  # drop_last: 3 full batches
