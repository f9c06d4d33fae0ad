"""Feature-space scores, each pinned against a direct computation (loops over
scipy's cdist, scipy.linalg.sqrtm) on small seeded features and against the
authors' references (the `prdc` package for precision/recall/density/coverage,
pytorch-fid's FD formula), plus known answers, the seeded subsets, and the
memorisation rule on the embedded digits. Distances are float32 tiles
(tasks/scores.py): distances match float64 to 1e-5 relative."""

import functools

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from casflow.tasks import classifiers, datasets, scores
from casflow.tasks.classifiers import training
from casflow.tasks.classifiers.training import InMemorySamples
from casflow.tasks.generators.builtin import GaussianPCA
from casflow.tasks.samples import label_schedule

CPU = torch.device("cpu")
TINY = {"widths": [32, 64, 64], "epochs": 6, "batch_size": 64, "flip": False, "translate": 1}


def features(seed: int, n: int, d: int = 6, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ---------------------------------------------------------------- direct computations

def direct_kth_neighbour(points, k):
    d = cdist(points, points)
    return np.array([np.sort(np.delete(d[i], i))[k - 1] for i in range(len(points))])


def direct_precision_recall(real, fake, k):
    real_radii, fake_radii = direct_kth_neighbour(real, k), direct_kth_neighbour(fake, k)
    d = cdist(fake, real)
    precision = np.mean([any(d[j, i] <= real_radii[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(d[j, i] <= fake_radii[j] for j in range(len(fake))) for i in range(len(real))])
    return precision, recall


def direct_density_coverage(real, fake, k):
    radii = direct_kth_neighbour(real, k)
    d = cdist(real, fake)
    density = sum(d[i, j] <= radii[i] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = np.mean([d[i].min() <= radii[i] for i in range(len(real))])
    return density, coverage


def direct_frechet(a, b):
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    assert np.abs(root.imag).max() < 1e-6  # the round-off the eigenvalue route never produces
    return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root.real)


# ---------------------------------------------------------------- pinned against direct computations

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_scipy_sqrtm(seed):
    a, b = features(seed, 80), features(seed + 100, 60, shift=0.3) * np.linspace(0.5, 2.0, 6)
    assert scores.frechet_distance(a, b) == pytest.approx(direct_frechet(a, b), rel=1e-9)
    assert scores.frechet_distance(a, b) == pytest.approx(scores.frechet_distance(b, a), rel=1e-9)


def whitened(seed: int, n: int, d: int) -> np.ndarray:
    """Points whose sample mean is exactly 0 and sample covariance exactly the identity."""
    x = features(seed, n, d)
    x -= x.mean(0)
    return x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T


def test_frechet_distance_known_answer_for_diagonal_gaussians():
    # FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 when both covariances are diagonal
    scale_a, scale_b, shift = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 2.0, 1.5, 1.0]), np.array([1.0, -2.0, 0.0, 0.5])
    a, b = whitened(0, 200, 4) * scale_a, whitened(1, 150, 4) * scale_b + shift
    expected = np.sum(shift**2) + np.sum((scale_a - scale_b) ** 2)
    assert scores.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_kth_neighbour_and_nearest_match_cdist(k):
    points, queries = features(0, 40), features(1, 25)
    np.testing.assert_allclose(scores.kth_neighbour_distances(points, k), direct_kth_neighbour(points, k), rtol=1e-5)
    distances, nearest = scores.nearest_neighbours(queries, points)
    d = cdist(queries, points)
    np.testing.assert_array_equal(nearest, d.argmin(1))
    np.testing.assert_allclose(distances, d.min(1), rtol=1e-5)


@pytest.mark.parametrize("seed, k", [(0, 3), (1, 3), (2, 1), (3, 5)])
def test_precision_recall_match_brute_force(seed, k):
    real, fake = features(seed, 50), features(seed + 10, 40, shift=0.7)
    result = scores.precision_recall(real, fake, k=k)
    assert (result.precision, result.recall) == pytest.approx(direct_precision_recall(real, fake, k), abs=1e-12)
    assert 0 < result.precision < 1 and 0 < result.recall < 1  # a case where both the inside and outside are exercised


@pytest.mark.parametrize("seed, k", [(0, 5), (1, 5), (2, 2)])
def test_density_coverage_match_brute_force(seed, k):
    real, fake = features(seed, 50), features(seed + 10, 45, shift=0.5)
    result = scores.density_coverage(real, fake, k=k)
    assert (result.density, result.coverage) == pytest.approx(direct_density_coverage(real, fake, k), abs=1e-12)
    assert 0 < result.coverage < 1


def test_near_copies_match_brute_force():
    train, samples = features(0, 60), np.concatenate([features(0, 60)[:10] + 1e-3, features(1, 30)])
    d_train = cdist(train, train)
    np.fill_diagonal(d_train, np.inf)
    threshold = np.quantile(d_train.min(1), 0.05)
    d = cdist(samples, train)
    result = scores.near_copies(train, samples, quantile=0.05)
    assert result.threshold == pytest.approx(threshold, rel=1e-5) and result.threshold_points == 60
    np.testing.assert_array_equal(result.flags, d.min(1) < threshold)
    np.testing.assert_array_equal(result.nearest, d.argmin(1))
    assert result.flags[:10].all() and result.fraction == pytest.approx(result.flags.mean())


# ---------------------------------------------------------------- known answers and invariances

def test_identical_sets():
    x = features(0, 100, d=8)
    assert scores.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert scores.precision_recall(x, x) == scores.PrecisionRecall(1.0, 1.0)
    assert scores.density_coverage(x, x).coverage == 1.0
    assert scores.near_copies(x, x).fraction == 1.0  # every point is its own train image


def test_disjoint_sets_score_zero():
    real, fake = features(0, 30), features(1, 30, shift=100.0)
    assert scores.precision_recall(real, fake) == scores.PrecisionRecall(0.0, 0.0)
    assert scores.density_coverage(real, fake) == scores.DensityCoverage(0.0, 0.0)
    assert scores.near_copies(real, fake).fraction == 0.0


def test_blocks_do_not_change_the_numbers():
    real, fake = features(0, 70), features(1, 50, shift=0.4)
    one = 30  # tiles of 30 distances (6 query rows x 5 references): far below the sets' sizes
    radii = scores.kth_neighbour_distances(real, 3)
    np.testing.assert_allclose(scores.kth_neighbour_distances(real, 3, block_elements=one), radii, rtol=1e-5)
    np.testing.assert_allclose(scores.kth_neighbour_distances(real, 3, block_elements=300), radii, rtol=1e-5)
    np.testing.assert_array_equal(scores.balls_containing(fake, real, radii * 1.0001, block_elements=one),
                                  scores.balls_containing(fake, real, radii * 1.0001))
    for block in (2, 17, 10**9):  # 2: one query row against one or two references at a time
        distances, nearest = scores.nearest_neighbours(fake, real, block_elements=block)
        np.testing.assert_array_equal(nearest, cdist(fake, real).argmin(1))
        result = scores.near_copies(real, fake, quantile=0.2, block_elements=block)
        np.testing.assert_array_equal(result.nearest, nearest)
    assert scores.precision_recall(real, fake) == scores.precision_recall(real, fake)  # the same inputs, the same numbers


def test_uint8_pixels_are_searched_without_a_float_copy_and_match_floats():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(80, 3 * 8 * 8), dtype=np.uint8)
    samples = np.concatenate([train[:5], rng.integers(0, 256, size=(20, 192), dtype=np.uint8)])
    as_uint8, as_float = scores.near_copies(train, samples), scores.near_copies(train.astype(np.float64), samples.astype(np.float64))
    np.testing.assert_array_equal(as_uint8.nearest, as_float.nearest)
    np.testing.assert_allclose(as_uint8.distances, cdist(samples.astype(float), train.astype(float)).min(1), rtol=1e-5, atol=1e-2)
    assert as_uint8.flags[:5].all() and not as_uint8.flags[5:].any()


def test_too_few_points_for_k_5_still_give_precision_and_recall():
    out = scores.feature_scores(features(0, 5), features(1, 5))
    assert out["precision"] is not None and out["recall"] is not None and out["density"] is None and out["coverage"] is None


def test_too_few_points_and_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="k = 3 needs at least 4 points"):
        scores.precision_recall(features(0, 3), features(1, 10))
    with pytest.raises(ValueError, match="expected \\(N, D\\) features"):
        scores.frechet_distance(np.zeros(5), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="at least 2 points"):
        scores.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------- per class and GAN-test

def test_per_class_scores_each_class_on_its_own():
    real, fake = features(0, 60), features(1, 45, shift=0.2)
    real_labels, fake_labels = np.arange(60) % 3, np.arange(45) % 3
    score = functools.partial(scores.precision_recall, k=2)
    got = scores.per_class(score, real, real_labels, fake, fake_labels, 3)
    assert got == [score(real[real_labels == c], fake[fake_labels == c]) for c in range(3)]
    fds = scores.per_class(scores.frechet_distance, real, real_labels, fake, fake_labels, 3)
    assert fds[1] == pytest.approx(direct_frechet(real[real_labels == 1], fake[fake_labels == 1]), rel=1e-9)
    with pytest.raises(ValueError, match="class 3: .*at least 2 points"):
        scores.per_class(scores.frechet_distance, real, real_labels, fake, fake_labels, 4)


def test_fraction_per_class():
    flags = np.array([True, False, True, True, False])
    labels = np.array([0, 0, 1, 1, 0])
    np.testing.assert_allclose(scores.fraction_per_class(flags, labels, 3), [1 / 3, 1.0, np.nan])


def test_gan_test_is_the_accuracy_on_the_samples_per_class():
    logits = np.eye(3)[[0, 1, 2, 0, 0, 1]]
    labels = np.array([0, 1, 2, 1, 2, 1])
    counts = scores.gan_test(logits, labels, 3)
    assert counts.top1 == pytest.approx(4 / 6)
    assert counts.per_class_top1() == pytest.approx([1.0, 2 / 3, 0.5])


# ---------------------------------------------------------------- memorisation on the digits

@pytest.fixture(scope="module")
def digits_sets():
    """Real train and eval digits, noisy copies of the train images, and the PCA Gaussian's samples."""
    train, held_out = datasets.digits_splits(0.2, 0)
    rng = np.random.default_rng(0)
    light_noise = 5.0  # pixel std on the 0..255 scale: 2% of the range, invisible at a glance
    noisy = np.clip(np.rint(train.images + rng.normal(0, light_noise, train.images.shape)), 0, 255).astype(np.uint8)
    labels = label_schedule(train.counts())
    gaussian = GaussianPCA.fit(train, components=32).sample(labels, seed=0, temperature=1.0)
    return train, {"eval": (held_out.images, held_out.labels), "noisy-copies": (noisy, train.labels),
                   "gaussian-pca32": (gaussian, labels)}


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64)


def test_near_copies_flag_noisy_training_images_not_the_gaussian_in_pixel_space(digits_sets):
    train, sets = digits_sets
    fraction = {name: scores.near_copies(pixels(train.images), pixels(images)) for name, (images, _) in sets.items()}
    assert fraction["noisy-copies"].fraction == 1.0
    assert fraction["gaussian-pca32"].fraction <= 0.005
    assert fraction["eval"].fraction <= 0.03  # fresh real images: the rule's base rate, about its 1% quantile
    noisy_labels = sets["noisy-copies"][1]
    assert np.all(scores.fraction_per_class(fraction["noisy-copies"].flags, noisy_labels, 10) == 1.0)
    assert np.array_equal(fraction["noisy-copies"].nearest, np.arange(len(train.labels)))  # each found its source


def test_near_copies_in_classifier_features(digits_sets):
    train, sets = digits_sets
    recipe = classifiers.resolve("fast", TINY)
    net, _ = training.train(recipe, InMemorySamples(train.images, train.labels), num_classes=10, device=CPU, seed=0,
                            resident_limit_gb=16.0)
    reference = training.features(recipe, net, train.images, CPU)
    fraction = {name: scores.near_copies(reference, training.features(recipe, net, images, CPU)).fraction
                for name, (images, _) in sets.items()}
    assert fraction["noisy-copies"] >= 0.8
    assert fraction["gaussian-pca32"] <= 0.02
    assert fraction["eval"] <= 0.03


# ---------------------------------------------------------------- the authors' references as oracles

@pytest.mark.parametrize("seed, n_real, n_fake, d, shift", [(0, 300, 250, 64, 0.3), (1, 500, 500, 16, 0.0), (2, 200, 400, 64, 1.0)])
def test_precision_recall_density_coverage_match_the_prdc_package(seed, n_real, n_fake, d, shift):
    prdc = pytest.importorskip("prdc")  # Naeem et al.'s own code (test extra)
    real, fake = features(seed, n_real, d), features(seed + 50, n_fake, d, shift=shift) * 1.1
    for k in (scores.PRECISION_RECALL_K, scores.DENSITY_COVERAGE_K):
        reference = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        pr, dc = scores.precision_recall(real, fake, k=k), scores.density_coverage(real, fake, k=k)
        # prdc's balls are open (<), ours closed (<=): equal without ties; float32 may move a point within
        # 1e-5 of a ball's edge, which these seeded sets do not have
        assert (pr.precision, pr.recall, dc.density, dc.coverage) == pytest.approx(
            (reference["precision"], reference["recall"], reference["density"], reference["coverage"]), abs=1e-12)
    together = scores.manifold_scores(real, fake)  # the one-pass version feature_scores uses, k = 3 and 5
    assert together == (scores.precision_recall(real, fake), scores.density_coverage(real, fake))
    for block in (50, 10**9):
        assert scores.manifold_scores(real, fake, block_elements=block) == together


def pytorch_fid_frechet(a, b):
    """pytorch-fid's calculate_frechet_distance (src/pytorch_fid/fid_score.py, v0.3.0), verbatim in substance:
    scipy sqrtm of the covariance product, an eps offset when it is singular, imaginary parts below 1e-3 dropped."""
    mu1, mu2, sigma1, sigma2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # inside pytorch-fid
@pytest.mark.parametrize("seed, d", [(0, 16), (1, 64)])
def test_frechet_distance_matches_pytorch_fid(seed, d):
    a = features(seed, 2000, d) @ np.random.default_rng(seed).normal(size=(d, d)) / np.sqrt(d)
    b = features(seed + 1, 1500, d, shift=0.2) * np.linspace(0.5, 1.5, d)
    assert scores.frechet_distance(a, b) == pytest.approx(pytorch_fid_frechet(a, b), rel=1e-6)
    try:  # the package itself, where it is installed (it downloads nothing until Inception weights are asked for)
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError:
        return
    reference = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert scores.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


# ---------------------------------------------------------------- seeded subsets

def test_subsets_are_seeded_sorted_and_bind_only_above_the_limit():
    np.testing.assert_array_equal(scores.subset(50, 100, 0, "x"), np.arange(50))
    picked = scores.subset(1000, 100, 0, "x")
    assert len(picked) == 100 == len(set(picked)) and np.all(np.diff(picked) > 0) and picked.max() < 1000
    np.testing.assert_array_equal(picked, scores.subset(1000, 100, 0, "x"))
    assert not np.array_equal(picked, scores.subset(1000, 100, 0, "y"))
    labels = np.repeat(np.arange(3), [10, 300, 40])
    sets = scores.set_subsets(labels, 3, "samples", limit=50)
    assert [len(rows) for rows in sets.per_class] == [10, 50, 40] and len(sets.overall) == 50
    assert all(np.all(labels[rows] == c) for c, rows in enumerate(sets.per_class))


def test_set_scores_use_the_documented_subsets_and_record_their_sizes():
    real, fake = features(0, 400, 8), features(1, 600, 8, shift=0.3)
    real_labels, fake_labels = np.arange(400) % 4, np.arange(600) % 4
    overall, per_class = scores.set_scores(real, real_labels, fake, fake_labels, 4, limit=120)
    r, f = scores.set_subsets(real_labels, 4, "real", limit=120), scores.set_subsets(fake_labels, 4, "samples", limit=120)
    assert overall == scores.feature_scores(real[r.overall], fake[f.overall]) | {"scores_n_real": 120, "scores_n_samples": 120}
    assert per_class["scores_n_real"] == [100] * 4 and per_class["scores_n_samples"] == [120] * 4
    assert per_class["fd"][2] == scores.feature_scores(real[r.per_class[2]], fake[f.per_class[2]])["fd"]
    # below the limit nothing is dropped: the numbers are those of the whole sets
    whole, _ = scores.set_scores(real, real_labels, fake, fake_labels, 4, limit=10_000)
    assert whole == scores.feature_scores(real, fake) | {"scores_n_real": 400, "scores_n_samples": 600}


def test_the_near_copy_threshold_from_a_subset_of_train_images_is_their_leave_one_out_quantile():
    train, samples = features(0, 300), features(1, 50)
    result = scores.near_copies(train, samples, quantile=0.1, threshold_points=100)
    queries = scores.subset(300, 100, scores.SUBSET_SEED, "near-copy threshold")
    d = cdist(train[queries], train)
    d[np.arange(100), queries] = np.inf
    assert result.threshold_points == 100 and result.threshold == pytest.approx(np.quantile(d.min(1), 0.1), rel=1e-5)
    np.testing.assert_array_equal(result.nearest, cdist(samples, train).argmin(1))  # every sample, the whole train split


class BoundedRows:
    """`scores.Rows` over images in memory that refuses any read of more than `most` rows: a search that held a
    set whole, or read it whole once, fails here."""

    def __init__(self, images: np.ndarray, most: int):
        self.images, self.most, self.largest = images, most, 0

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        assert len(rows) <= self.most, f"read {len(rows)} rows at once, more than a block ({self.most})"
        self.largest = max(self.largest, len(rows))
        return rows.copy()

    def window(self, start: int, stop: int) -> np.ndarray:
        return self._read(self.images[start:stop])

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self._read(self.images[indices])


@pytest.mark.parametrize("threshold_points", [100, 10_000])  # a subset of the train split, and all of it
def test_near_copies_of_images_read_a_block_at_a_time_equal_the_search_in_one_block(threshold_points):
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, size=(300, 4, 4, 3), dtype=np.uint8)
    noisy = np.clip(train[:40].astype(int) + rng.integers(-2, 3, size=(40, 4, 4, 3)), 0, 255).astype(np.uint8)
    samples = np.concatenate([noisy, rng.integers(0, 256, size=(160, 4, 4, 3), dtype=np.uint8)])
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    block = 24 * 48  # tiles of 24 x 48 distances and reads of at most 48 rows (exact distances: 24), sets of 200 and 300
    one_block = scores.near_copies(flat(train), flat(samples), threshold_points=threshold_points, block_elements=10**9)
    same_tiles = scores.near_copies(flat(train), flat(samples), threshold_points=threshold_points, block_elements=block)
    train_rows, sample_rows = BoundedRows(train, 48), BoundedRows(samples, 48)
    streamed = scores.near_copies(train_rows, sample_rows, threshold_points=threshold_points, block_elements=block)
    assert 0 < train_rows.largest <= 48 and 0 < sample_rows.largest <= 48
    for field in ("flags", "distances", "nearest"):  # the same tiles from rows as from arrays: the same numbers
        np.testing.assert_array_equal(getattr(streamed, field), getattr(same_tiles, field))
    assert (streamed.threshold, streamed.threshold_points) == (same_tiles.threshold, min(threshold_points, 300))
    np.testing.assert_array_equal(streamed.flags, one_block.flags)  # and the same answer as one block
    np.testing.assert_array_equal(streamed.nearest, one_block.nearest)
    np.testing.assert_allclose(streamed.distances, one_block.distances, rtol=1e-6)
    assert streamed.threshold == pytest.approx(one_block.threshold, rel=1e-6)
    assert streamed.flags[:40].all() and streamed.fraction < 1


# ---------------------------------------------------------------- on a GPU (skipped without CUDA)

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_scores_on_cuda_match_the_cpu():
    real, fake = features(0, 3000, 64), features(1, 2500, 64, shift=0.2)
    labels_real, labels_fake = np.arange(3000) % 10, np.arange(2500) % 10
    on_cpu = scores.set_scores(real, labels_real, fake, labels_fake, 10, limit=2000)
    on_gpu = scores.set_scores(real, labels_real, fake, labels_fake, 10, limit=2000, device="cuda")
    for name, value in on_cpu[0].items():
        assert on_gpu[0][name] == pytest.approx(value, abs=2e-3), name
    pixels = np.random.default_rng(0).integers(0, 256, size=(4000, 3072), dtype=np.uint8)
    samples = np.concatenate([pixels[:100], np.random.default_rng(1).integers(0, 256, size=(900, 3072), dtype=np.uint8)])
    cpu, gpu = scores.near_copies(pixels, samples), scores.near_copies(pixels, samples, device="cuda")
    np.testing.assert_array_equal(cpu.nearest, gpu.nearest)
    np.testing.assert_allclose(cpu.distances, gpu.distances, rtol=1e-4, atol=1e-2)
