import numpy as np
import pytest
import torch

from casflow.tasks import classifiers, datasets
from casflow.tasks.classifiers import training
from casflow.tasks.classifiers.common import ResidentLoader, cutout, predict_logits, random_crop, seeded_on_device
from casflow.tasks.classifiers.training import InMemorySamples
from casflow.tasks.fingerprint import code_version
from casflow.tasks.metrics import count_correct

CPU = torch.device("cpu")
TINY = {"widths": [32, 64, 64], "epochs": 6, "batch_size": 64, "flip": False, "translate": 1}


@pytest.fixture(scope="module")
def digits():
    return datasets.digits_splits(0.2, 0)


def _train(recipe, data, seed=0, resident_limit_gb=16.0):
    return training.train(recipe, InMemorySamples(data.images, data.labels), num_classes=10, device=CPU, seed=seed,
                          resident_limit_gb=resident_limit_gb)


def _accuracy(recipe, net, held_out):
    logits = training.predict(recipe, net, held_out.images, CPU)
    return count_correct(logits, held_out.labels, 10).top1


def test_recipes_resolve_with_options_and_reject_unknown():
    recipe = classifiers.resolve("fast", {"epochs": 3, "widths": [8, 8, 8]})
    assert recipe.hp.epochs == 3 and recipe.hp.widths == (8, 8, 8) and recipe.hp.batch_size == 1024
    assert recipe.version == code_version("recipe:fast") and recipe.fingerprint_inputs()["hyperparameters"]["epochs"] == 3
    with pytest.raises(ValueError, match="options.epoch: not a hyperparameter"):
        classifiers.resolve("fast", {"epoch": 3})
    with pytest.raises(ValueError, match="options.widths"):
        classifiers.resolve("fast", {"widths": [1, 2]})
    assert classifiers.resolve("accurate", {}).hp.convs_per_group == 3
    with pytest.raises(ValueError, match="unknown classifier recipe"):
        classifiers.resolve("tiny", {})


def test_training_is_reproducible_with_the_seed(digits):
    train, held_out = digits
    recipe = classifiers.resolve("fast", TINY | {"epochs": 2})
    first, _ = _train(recipe, train)
    second, _ = _train(recipe, train)
    other, _ = _train(recipe, train, seed=1)
    a, b, c = (training.predict(recipe, n, held_out.images, CPU) for n in (first, second, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("recipe, options", [
    ("fast", TINY),
    ("accurate", TINY | {"cutout": 3, "translate": 1}),
    ("paper", {"epochs": 3, "batch_size": 64, "flip": False, "translate": 1, "lr": 0.05}),
])
def test_every_recipe_learns_digits_on_the_cpu(digits, recipe, options):
    train, held_out = digits
    recipe = classifiers.resolve(recipe, options)
    net, log = _train(recipe, train)
    assert _accuracy(recipe, net, held_out) > 0.8
    assert log["device"] == "cpu" and log["steps"] > 0 and len(log["epochs"]) >= 1


def test_weights_round_trip(digits):
    train, held_out = digits
    recipe = classifiers.resolve("fast", TINY | {"epochs": 1})
    net, _ = _train(recipe, train)
    loaded = training.load_weights(recipe, training.weights_bytes(net), image_shape=(8, 8, 1), num_classes=10, device=CPU)
    assert np.array_equal(training.predict(recipe, net, held_out.images, CPU), training.predict(recipe, loaded, held_out.images, CPU))


def test_data_path_follows_the_resident_limit():
    assert training.data_path(1000, (32, 32, 3), resident_limit_gb=16) == "resident"
    assert training.data_path(1000, (32, 32, 3), resident_limit_gb=3.072e-3) == "resident"  # exactly the limit
    assert training.data_path(1001, (32, 32, 3), resident_limit_gb=3.072e-3) == "streaming"


class StreamOnly(InMemorySamples):
    def decoded(self):
        raise AssertionError("a set over the resident limit must not be loaded whole")


def test_streaming_training_learns_as_well(digits):
    train, held_out = digits
    recipe = classifiers.resolve("fast", TINY)
    net, log = training.train(recipe, StreamOnly(train.images, train.labels, chunk_size=100), num_classes=10,
                              device=CPU, seed=0, resident_limit_gb=1e-6)
    assert _accuracy(recipe, net, held_out) > 0.8


def test_prediction_does_not_depend_on_its_batch_size(digits):
    train, held_out = digits
    recipe = classifiers.resolve("fast", TINY | {"epochs": 1, "tta_level": 2})
    net, _ = _train(recipe, train)
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


# ---------------------------------------------------------------- penultimate features

def _old_fast_forward(net, x):
    """fast.Net.forward as it was before features() existed, spelled out."""
    x = torch.nn.functional.gelu(net.whiten(net.normalize(x)))
    return net.head(torch.amax(net.groups(x), dim=(2, 3))) * net.logit_scale


@pytest.mark.parametrize("recipe, options, width", [
    ("fast", TINY, 64),
    ("accurate", TINY, 64),
    ("paper", {}, 512),
])
def test_features_are_the_penultimate_activations_and_leave_the_logits_alone(recipe, options, width):
    recipe = classifiers.resolve(recipe, options)
    net = seeded_on_device(lambda: recipe.module.build(recipe.hp, (8, 8, 1), 10), 0, CPU).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats, logits = net.features(x), net(x)
        if recipe.name == "paper":
            assert torch.equal(logits, net.resnet.fc(feats))
            assert torch.equal(logits, net.resnet(net.normalize(x)))  # torchvision's own forward, as stored weights expect
        else:
            assert torch.equal(logits, net.head(feats) * net.logit_scale)
            assert torch.equal(logits, _old_fast_forward(net, x))  # bit-identical to the logits before features()
    assert feats.shape == (5, width)


def test_training_features_are_float32_without_tta_and_batch_independent(digits):
    train, held_out = digits
    recipe = classifiers.resolve("fast", TINY | {"epochs": 1, "tta_level": 2})
    net, _ = _train(recipe, train)
    feats = training.features(recipe, net, held_out.images, CPU)
    assert feats.dtype == np.float32 and feats.shape == (len(held_out.labels), 64)
    with torch.no_grad():  # one view per image: the network's features of the image as it is
        direct = net.features(torch.from_numpy(held_out.images).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(training.features(recipe, net, held_out.images, CPU, batch_size=7), feats, rtol=1e-5, atol=1e-6)
