"""Feature-space scores of a model's samples against real images, beside CAS.

CAS says whether samples teach a classifier the real classes; these say why
not. Each takes plain arrays, (N, D) float features (a classifier's
penultimate activations, or flattened pixels), and returns plain numbers:

  frechet_distance   Heusel et al. 2017 (FID's formula): Gaussians fitted to both sets
  precision_recall   Kynkaenniemi et al. 2019: k-NN manifolds, k = 3
  density_coverage   Naeem et al. 2020: k-NN balls around real points only, k = 5
  near_copies        memorisation: samples that sit on top of a real train image
  gan_test           Shmelkov et al. 2018: the real-trained classifier's accuracy on the samples
  per_class          any of the first three, class by class

Distances are Euclidean, in float64, computed a block of rows at a time
(`DISTANCE_BLOCK_ELEMENTS` distances held at once), so memory stays bounded
for any set size; the same inputs give the same numbers. A point's k-th
nearest neighbour within its own set excludes the point itself (by index),
as in the authors' code. Balls are closed (distance <= radius), as the
papers define them; the reference implementations differ on `<` vs `<=`,
which matters only for exact ties (duplicated points).

All k-NN scores depend on the set sizes (a larger set has smaller k-NN
radii); compare models on sets of equal size, which CAS's budget gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

from casflow.tasks.metrics import ClassCounts, count_correct

DISTANCE_BLOCK_ELEMENTS = 2**22  # float64 distances held at once: 32 MiB per block
PRECISION_RECALL_K = 3  # Kynkaenniemi et al. 2019, section 3
DENSITY_COVERAGE_K = 5  # Naeem et al. 2020, section 4 (k = 5 with 10k real and fake samples)
NEAR_COPY_QUANTILE = 0.01  # see near_copies: about 1% of fresh real images fall below it

Score = TypeVar("Score")


# ---------------------------------------------------------------- distances in blocks

def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected (N, D) features, got shape {x.shape}")
    return x


def distance_blocks(queries: np.ndarray, references: np.ndarray, *,
                    block_elements: int = DISTANCE_BLOCK_ELEMENTS) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, Euclidean distances from those query rows to every reference), block by block.

    Squared distances by |q|^2 + |r|^2 - 2 q.r in float64, after centring both
    sets on the references' mean (distances are unchanged, the cancellation in
    the expansion smaller); round-off below zero is clipped to zero."""
    queries, references = _as_features(queries, "queries"), _as_features(references, "references")
    centre = references.mean(axis=0) if len(references) else 0.0
    queries, references = queries - centre, references - centre
    reference_norms = np.einsum("ij,ij->i", references, references)
    rows = max(1, block_elements // max(1, len(references)))
    for start in range(0, len(queries), rows):
        block = queries[start : start + rows]
        squared = np.einsum("ij,ij->i", block, block)[:, None] + reference_norms[None, :] - 2.0 * (block @ references.T)
        yield slice(start, start + len(block)), np.sqrt(np.maximum(squared, 0.0, out=squared))


def kth_neighbour_distances(points: np.ndarray, k: int, *, block_elements: int = DISTANCE_BLOCK_ELEMENTS) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set (itself excluded)."""
    points = _as_features(points, "points")
    if not 1 <= k < len(points):
        raise ValueError(f"k = {k} needs at least {k + 1} points, got {len(points)}")
    out = np.empty(len(points))
    for rows, distances in distance_blocks(points, points, block_elements=block_elements):
        distances[np.arange(len(distances)), np.arange(rows.start, rows.stop)] = np.inf  # not its own neighbour
        out[rows] = np.partition(distances, k - 1, axis=1)[:, k - 1]
    return out


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, *,
                       block_elements: int = DISTANCE_BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest reference; ties go to the lowest index."""
    queries, references = _as_features(queries, "queries"), _as_features(references, "references")
    distances, indices = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for rows, block in distance_blocks(queries, references, block_elements=block_elements):
        indices[rows] = block.argmin(axis=1)
        distances[rows] = block[np.arange(len(block)), indices[rows]]
    return distances, indices


def balls_containing(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray, *,
                     block_elements: int = DISTANCE_BLOCK_ELEMENTS) -> np.ndarray:
    """For each query, how many closed balls (centre i, radius i) contain it."""
    queries, centres = _as_features(queries, "queries"), _as_features(centres, "centres")
    counts = np.empty(len(queries), dtype=np.int64)
    for rows, block in distance_blocks(queries, centres, block_elements=block_elements):
        counts[rows] = (block <= radii[None, :]).sum(axis=1)
    return counts


# ---------------------------------------------------------------- Frechet distance

def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):

        |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    Means and unbiased covariances (N - 1) in float64, as pytorch-fid. The
    trace of the matrix square root is taken by eigenvalues instead of
    scipy.linalg.sqrtm: S_a S_b has the same eigenvalues as the symmetric
    positive semi-definite S_a^(1/2) S_b S_a^(1/2), whose eigenvalues numpy's
    eigvalsh returns real. So no imaginary parts arise (sqrtm of the
    non-symmetric product returns small ones from round-off, which
    pytorch-fid checks below 1e-3 and drops, and it needs an eps offset
    when the product is singular); eigenvalues that round-off makes slightly
    negative are clipped to 0, and so is a total of order -1e-12 for
    identical sets. Biased upward at small N (Chong & Forsyth 2020): compare
    values at equal set sizes only."""
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Frechet distance needs two sets of at least 2 points of one dimension, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


# ---------------------------------------------------------------- k-NN manifolds

@dataclasses.dataclass(frozen=True)
class PrecisionRecall:
    precision: float  # share of samples inside the real manifold: fidelity
    recall: float  # share of real points inside the samples' manifold: diversity


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PRECISION_RECALL_K) -> PrecisionRecall:
    """Improved precision and recall (Kynkaenniemi et al. 2019).

    A set's manifold is the union of closed balls around its points, each
    with the radius of that point's k-th nearest neighbour in the set.
    Precision: the share of fake points inside the real manifold; recall: the
    share of real points inside the fake manifold. k = 3 as the paper."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    real_radii, fake_radii = kth_neighbour_distances(real, k), kth_neighbour_distances(fake, k)
    return PrecisionRecall(precision=float(np.mean(balls_containing(fake, real, real_radii) > 0)),
                           recall=float(np.mean(balls_containing(real, fake, fake_radii) > 0)))


@dataclasses.dataclass(frozen=True)
class DensityCoverage:
    density: float  # mean number of real balls around a sample, over k: about 1 for matching sets, unbounded
    coverage: float  # share of real balls with at least one sample in them


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DENSITY_COVERAGE_K) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020): balls around real points only,
    so a few fake outliers cannot inflate a fake manifold.

        density  = 1/(k M) sum_j #{i : fake_j in B(real_i, NND_k(real_i))}
        coverage = 1/N #{i : some fake_j in B(real_i, NND_k(real_i))}

    with N real and M fake points; k = 5 as the paper."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    real_radii = kth_neighbour_distances(real, k)
    nearest_fake, _ = nearest_neighbours(real, fake)
    return DensityCoverage(density=float(balls_containing(fake, real, real_radii).sum() / (k * len(fake))),
                           coverage=float(np.mean(nearest_fake <= real_radii)))


# ---------------------------------------------------------------- memorisation

@dataclasses.dataclass(frozen=True)
class NearCopies:
    flags: np.ndarray  # (M,) bool: the sample is a near copy of a train image
    distances: np.ndarray  # (M,) distance from each sample to its nearest train image
    nearest: np.ndarray  # (M,) index of that train image
    threshold: float  # the distance below which a sample is a near copy

    @property
    def fraction(self) -> float:
        return float(np.mean(self.flags)) if len(self.flags) else float("nan")


def near_copies(train: np.ndarray, samples: np.ndarray, quantile: float = NEAR_COPY_QUANTILE) -> NearCopies:
    """Which samples are near copies of a real train image (memorisation).

    Rule: a sample is a near copy when its distance to the nearest train
    image is below the `quantile` of the train images' leave-one-out
    nearest-neighbour distances (each train image to its nearest *other*
    train image). In words: it sits closer to a train image than 99% of
    train images sit to any other. A model that draws fresh images from the
    data distribution has about `quantile` of its samples flagged (fresh real
    digits, the eval split: 1.1% in pixel space); a model that returns its
    training images with light noise has nearly all of them flagged.

    Why not Alaa et al. 2022's authenticity rule (a sample is inauthentic
    when its nearest real point is closer to it than to that point's own
    nearest real neighbour): fresh real images fail it at a high rate, 44%
    of the digits eval split and 21% of the PCA-Gaussian's samples in pixel
    space, because in 64 dimensions a fresh point is often its neighbour's
    nearest neighbour. Its authors test it against that base rate; a single
    fraction cannot. The quantile rule's base rate is `quantile` by
    construction and needs no test.

    Works in any space: flattened pixels (as floats) or classifier features.
    The threshold comes from the whole train set, so every class is judged
    by the same distance (classes that are tighter in that space have a
    higher base rate)."""
    train, samples = _as_features(train, "train"), _as_features(samples, "samples")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    threshold = float(np.quantile(kth_neighbour_distances(train, 1), quantile))
    distances, nearest = nearest_neighbours(samples, train)
    return NearCopies(flags=distances < threshold, distances=distances, nearest=nearest, threshold=threshold)


# ---------------------------------------------------------------- GAN-test and per class

def gan_test(sample_logits: np.ndarray, sample_labels: np.ndarray, num_classes: int) -> ClassCounts:
    """GAN-test (Shmelkov et al. 2018): a classifier trained on real images
    predicts the model's samples; its accuracy is how recognisable the
    samples are as their class (fidelity; blind to diversity, unlike CAS,
    which is GAN-train). The counts per class are those of `count_correct`:
    `.top1`, `.per_class_top1()`."""
    return count_correct(sample_logits, sample_labels, num_classes)


def per_class(score: Callable[[np.ndarray, np.ndarray], Score], real: np.ndarray, real_labels: np.ndarray,
              fake: np.ndarray, fake_labels: np.ndarray, num_classes: int) -> list[Score]:
    """`score(real of class c, fake of class c)` for each class c in 0..num_classes-1.

    Give hyperparameters with functools.partial (e.g. k). A class with too
    few points for the score raises ValueError naming the class."""
    real, fake = np.asarray(real), np.asarray(fake)
    results = []
    for c in range(num_classes):
        try:
            results.append(score(real[real_labels == c], fake[fake_labels == c]))
        except ValueError as exc:
            raise ValueError(f"class {c}: {exc}") from None
    return results


def fraction_per_class(flags: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The share of flagged samples in each class (near copies per class); NaN for a class without samples."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    flagged = np.bincount(labels, weights=flags.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, flagged / counts, np.nan)


# ---------------------------------------------------------------- the set-level scores together, as stored

def feature_scores(real: np.ndarray, fake: np.ndarray) -> dict[str, float | None]:
    """Frechet distance, precision/recall and density/coverage of two feature sets; None where a set (one
    class's, say) has too few points for a score."""
    out: dict[str, float | None] = {}
    for names, score in ((("fd",), lambda: (frechet_distance(real, fake),)),
                         (("precision", "recall"), lambda: dataclasses.astuple(precision_recall(real, fake))),
                         (("density", "coverage"), lambda: dataclasses.astuple(density_coverage(real, fake)))):
        try:
            values = score()
        except ValueError:
            values = (None,) * len(names)
        out |= {name: finite_or_none(value) for name, value in zip(names, values)}
    return out


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities (an empty class) are stored as null."""
    return None if value is None or not np.isfinite(value) else float(value)
