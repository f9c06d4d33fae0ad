"""Feature-space scores of a model's samples against real images, beside CAS.

CAS says whether samples teach a classifier the real classes; these say why
not. Each takes plain arrays, (N, D) features (a classifier's penultimate
activations, or flattened pixels, uint8 is fine), and returns plain numbers:

  frechet_distance   Heusel et al. 2017 (FID's formula): Gaussians fitted to both sets
  precision_recall   Kynkaenniemi et al. 2019: k-NN manifolds, k = 3
  density_coverage   Naeem et al. 2020: k-NN balls around real points only, k = 5
  near_copies        memorisation: samples that sit on top of a real train image
  gan_test           Shmelkov et al. 2018: the real-trained classifier's accuracy on the samples
  per_class          any of the first three, class by class
  set_scores         FD, P/R, D/C overall and per class on seeded subsets, as the scores step stores them

Distances and k-NN run in torch on the given device (the scores step passes
the model's: a GPU when it has one), in float32, one tile of at most
`block_elements` squared distances at a time (queries x references, both
streamed), so memory stays bounded for any set size: the references are
never held as floats whole, only one block of them. A set given as `Rows`
(the scores step's decoded images: a file read with plain reads) is read a
block at a time and never held whole, even as uint8. Squared distances by
|q|^2 + |r|^2 - 2 q.r after centring both sets on the references' mean
(distances are unchanged, the cancellation in the expansion smaller);
round-off below zero is clipped to zero. Float32 on 64-d features or 3072
pixels moves a distance by about 1e-6 of its size: a ball test flips only
for a point within that of a ball's edge. The same inputs on the same device
give the same numbers; another device or block size may differ by that
rounding. The matmuls are full FP32, torch's default on CUDA (TF32, if a
caller turns it on with torch.backends.cuda.matmul.allow_tf32, would cost
about 1e-3 relative). faiss was not used: exact search here is a matmul plus
a running top-k, which torch does on the GPU at matmul speed
(benchmarks/knn_backend.py compares faiss-cpu's exact index on the CPU).

A point's k-th nearest neighbour within its own set excludes the point
itself (by index), as in the authors' code. Balls are closed (distance <=
radius), as the papers define them; the reference implementations differ on
`<` vs `<=`, which matters only for exact ties (duplicated points).

Set sizes: FD, P/R, D/C and GAN-test use a seeded subset of at most
`SUBSET_LIMIT` points per set (10k, as Naeem et al. evaluate P/R/D/C), and
per class at most as many per class; the scores step records the sizes used
(`scores_n_samples`, `scores_n_real`). All k-NN scores depend on the set
sizes (a larger set has smaller k-NN radii), and FD is biased upward by
roughly a constant over N (Chong & Forsyth 2020: FID at 5k images sits
measurably above FID at 50k): compare models at equal sizes only, which
CAS's budget and the fixed cap give. Near copies are not subsampled: every
sample is searched against the whole train split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from casflow.tasks.fingerprint import derive_seed
from casflow.tasks.metrics import ClassCounts, count_correct

DISTANCE_BLOCK_ELEMENTS = {"cpu": 2**22, "cuda": 2**28}  # float32 squared distances per tile: 16 MiB, 1 GiB
PRECISION_RECALL_K = 3  # Kynkaenniemi et al. 2019, section 3
DENSITY_COVERAGE_K = 5  # Naeem et al. 2020, section 4 (k = 5 with 10k real and fake samples)
NEAR_COPY_QUANTILE = 0.01  # see near_copies: about 1% of fresh real images fall below it
SUBSET_LIMIT = 10_000  # points per set (and per class) for FD, P/R, D/C, GAN-test and the near-copy threshold
SUBSET_SEED = 0  # the subsets' seed: fixed, so a model's scores do not move with the run's seed

Score = TypeVar("Score")


# ---------------------------------------------------------------- seeded subsets

def subset(n: int, limit: int, seed: int, *salt: int | str) -> np.ndarray:
    """Sorted indices of at most `limit` of n points: all of them when n <= limit, else a seeded draw without
    replacement (seed and salt, e.g. ("samples", class) -> one stream per set)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(derive_seed(seed, *salt)).choice(n, size=limit, replace=False))


# ---------------------------------------------------------------- distances in tiles, on the device

def _device(device: Any):
    import torch

    return torch.device(device)


@runtime_checkable
class Rows(Protocol):
    """A set of points too large to hold, read a block at a time: `window(start, stop)` and `take(indices)` give
    new arrays of those rows (any trailing shape: a row is flattened to one point), so a pass over the set keeps
    one block in memory (storage's decoded image sets are such: a file read with plain reads)."""

    def __len__(self) -> int: ...

    def window(self, start: int, stop: int) -> np.ndarray: ...

    def take(self, indices: np.ndarray) -> np.ndarray: ...


class _Points:
    """(N, D) points as the tiles read them, a block at a time, as tensors on the device in their own dtype
    (uint8 pixels stay 1 byte a value until a tile converts its block): from an array or tensor in memory, or
    from `Rows` (never whole). `subset`: these points are the source's rows at those sorted indices."""

    def __init__(self, source: Any, what: str, device, subset: np.ndarray | None = None):
        import torch

        self.device, self.subset = device, subset
        if isinstance(source, Rows):
            self.rows, self.tensor = source, None
            dim = int(np.prod(source.window(0, 0).shape[1:], dtype=np.int64))
            count = len(source)
        else:
            t = source if isinstance(source, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(source))
            if t.ndim != 2:
                raise ValueError(f"{what}: expected (N, D) features, got shape {tuple(t.shape)}")
            self.rows, self.tensor = None, t.to(device)
            count, dim = t.shape
        self.dim = dim
        self.count = count if subset is None else len(subset)

    def __len__(self) -> int:
        return self.count

    def block(self, start: int, stop: int):
        """Points [start, stop)."""
        if self.subset is not None:
            return self._source_rows(self.subset[start:stop])
        if self.tensor is not None:
            return self.tensor[start:stop]
        return self._on_device(self.rows.window(start, min(stop, self.count)))

    def take(self, indices: np.ndarray):
        """The points at `indices` (any order)."""
        indices = np.asarray(indices, dtype=np.int64)
        return self._source_rows(indices if self.subset is None else self.subset[indices])

    def _source_rows(self, indices: np.ndarray):
        import torch

        if self.tensor is not None:
            return self.tensor[torch.as_tensor(indices, device=self.device)]
        return self._on_device(self.rows.take(indices))

    def _on_device(self, array: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array).reshape(len(array), self.dim)).to(self.device)


def _as_points(x: Any, what: str, device) -> _Points:
    return x if isinstance(x, _Points) else _Points(x, what, device)


def _block_elements(device, block_elements: int | None) -> int:
    return block_elements or DISTANCE_BLOCK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]


class _Tiles:
    """Queries against references, a tile at a time: float32 blocks centred on the references' mean. Each
    consumer appends columns to both blocks so that one matmul gives what it compares (`_k_nearest_squared`:
    |r|^2 - 2 q.r; `_balls_containing_squared`: |q - r|^2 - radius^2), so a tile is written once and read once."""

    CACHE_BLOCKS = 4  # references up to this many tiles' worth of floats are converted once, not per query block

    def __init__(self, queries, references, device, block_elements: int | None):
        import torch

        self.device = _device(device)
        self.queries, self.references = _as_points(queries, "queries", self.device), _as_points(references, "references", self.device)
        if self.queries.dim != self.references.dim:
            raise ValueError(f"queries have {self.queries.dim} dimensions, references {self.references.dim}")
        elements = _block_elements(self.device, block_elements)
        self.cols = max(1, min(len(self.references), math.isqrt(elements)))
        self.rows = max(1, elements // self.cols)
        self.cached = len(self.references) * self.references.dim <= self.CACHE_BLOCKS * elements
        total = torch.zeros(self.references.dim, dtype=torch.float64, device=self.device)
        for start in range(0, len(self.references), self.cols):  # the mean in float64, a block at a time
            total += self.references.block(start, start + self.cols).to(torch.float64).sum(0)
        self.centre = (total / max(1, len(self.references))).to(torch.float32)

    def blocks(self, points, size: int) -> Iterator[tuple[int, Any, Any]]:
        """(start, centred float32 block, its squared norms)."""
        for start in range(0, len(points), size):
            block = points.block(start, start + size).to(_float32()) - self.centre
            yield start, block, (block * block).sum(1)

    def tiles(self, query_columns: Callable, reference_columns: Callable) -> Iterator[tuple[int, Iterator[tuple[int, Any]]]]:
        """(query start, iterator of (reference start, tile)) per query block; tile = query_columns(start, block,
        norms) @ reference_columns(start, block, norms).T."""
        references = list(self._references(reference_columns)) if self.cached else None
        for q_start, q, q_norms in self.blocks(self.queries, self.rows):
            left = query_columns(q_start, q, q_norms)
            yield q_start, ((r_start, left @ right.T) for r_start, right in (references or self._references(reference_columns)))

    def _references(self, reference_columns: Callable):
        for r_start, r, r_norms in self.blocks(self.references, self.cols):
            yield r_start, reference_columns(r_start, r, r_norms)


def _float32():
    import torch

    return torch.float32


def _k_nearest_squared(queries, references, k: int, *, exclude: np.ndarray | None = None, device="cpu",
                       block_elements: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances (N, k), ascending, and indices of each query's k nearest references, streaming over
    both sets. `exclude[i]`: a reference index query i may not take (itself, when the sets are one)."""
    import torch

    tiles = _Tiles(queries, references, device, block_elements)
    n = len(tiles.queries)
    if not 1 <= k <= len(tiles.references) - (exclude is not None):
        raise ValueError(f"k = {k} needs at least {k + (exclude is not None)} points, got {len(tiles.references)}")
    out_d, out_i = np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64)
    skip = None if exclude is None else torch.as_tensor(exclude, device=tiles.device)
    one = lambda block: torch.ones(len(block), 1, dtype=block.dtype, device=block.device)  # noqa: E731
    query_norms = {}
    rows = tiles.tiles(lambda start, q, norms: query_norms.__setitem__(start, norms) or torch.cat([q, one(q)], 1),
                       lambda start, r, norms: torch.cat([-2.0 * r, norms[:, None]], 1))  # tile: |r|^2 - 2 q.r
    for q_start, row in rows:
        best_d = best_i = None
        for r_start, tile in row:
            if skip is not None:
                own = skip[q_start : q_start + len(tile)] - r_start
                hit = ((own >= 0) & (own < tile.shape[1])).nonzero().squeeze(1)
                tile[hit, own[hit]] = torch.inf
            if k == 1:
                d, i = tile.min(dim=1, keepdim=True)
            else:
                d, i = torch.topk(tile, min(k, tile.shape[1]), dim=1, largest=False)
            i = i + r_start
            if best_d is None:
                best_d, best_i = d, i
            elif k == 1:
                closer = d < best_d  # ties keep the earlier (lower) index
                best_d, best_i = torch.where(closer, d, best_d), torch.where(closer, i, best_i)
            else:
                merged = torch.cat([best_d, d], 1)
                best_d, order = torch.topk(merged, min(k, merged.shape[1]), dim=1, largest=False)
                best_i = torch.gather(torch.cat([best_i, i], 1), 1, order)
        best_d = (best_d + query_norms.pop(q_start)[:, None]).clamp_(min=0.0)  # + |q|^2: squared distances
        out_d[q_start : q_start + len(best_d)] = best_d.cpu().numpy()
        out_i[q_start : q_start + len(best_d)] = best_i.cpu().numpy()
    return out_d, out_i


def _kth_squared(points, k: int, *, device="cpu", block_elements: int | None = None) -> np.ndarray:
    n = len(points)
    if not 1 <= k < n:
        raise ValueError(f"k = {k} needs at least {k + 1} points, got {n}")
    d, _ = _k_nearest_squared(points, points, k, exclude=np.arange(n), device=device, block_elements=block_elements)
    return d[:, k - 1]


def kth_neighbour_distances(points, k: int, *, device="cpu", block_elements: int | None = None) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set (itself excluded)."""
    return np.sqrt(_kth_squared(points, k, device=device, block_elements=block_elements).astype(np.float64))


def _exact_distances(queries, references, indices: np.ndarray, *, device="cpu", block_elements: int | None = None) -> np.ndarray:
    """|q_i - r_indices[i]| by direct differences (float32 on the device, summed in float64): the expansion's
    round-off, which grows with the norms, gone. An exact copy is at 0, not at a few units of round-off.
    A block of rows holds about a tile's worth of values; each row's sum is its own, whatever the block."""
    import torch

    device = _device(device)
    queries, references = _as_points(queries, "queries", device), _as_points(references, "references", device)
    rows = max(1, _block_elements(device, block_elements) // max(1, queries.dim))
    out = np.empty(len(queries))
    for start in range(0, len(queries), rows):
        diff = (queries.block(start, start + rows).to(torch.float32)
                - references.take(indices[start : start + rows]).to(torch.float32))
        out[start : start + len(diff)] = (diff * diff).sum(1, dtype=torch.float64).sqrt().cpu().numpy()
    return out


def nearest_neighbours(queries, references, *, exclude: np.ndarray | None = None, device="cpu",
                       block_elements: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest reference (`exclude[i]`: a reference query i may not take).
    The nearest is found in float32 tiles (ties go to the lowest index, within that rounding); its distance is
    then recomputed exactly (`_exact_distances`)."""
    _, nearest = _k_nearest_squared(queries, references, 1, exclude=exclude, device=device, block_elements=block_elements)
    return _exact_distances(queries, references, nearest[:, 0], device=device, block_elements=block_elements), nearest[:, 0]


def k_nearest(queries, references, k: int, *, device="cpu", block_elements: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (N, k) and nearest first, of each query's k nearest references, found in the
    float32 tiles (ties go to the lower index, within their rounding)."""
    squared, nearest = _k_nearest_squared(queries, references, k, device=device, block_elements=block_elements)
    return np.sqrt(squared.astype(np.float64)), nearest


def _balls_containing_squared(queries, centres, squared_radii: np.ndarray, *, device="cpu",
                              block_elements: int | None = None) -> np.ndarray:
    import torch

    tiles = _Tiles(queries, centres, device, block_elements)
    radii = torch.as_tensor(np.asarray(squared_radii, dtype=np.float32), device=tiles.device)
    counts = np.zeros(len(tiles.queries), dtype=np.int64)
    ones = lambda block: torch.ones(len(block), 1, dtype=block.dtype, device=block.device)  # noqa: E731
    rows = tiles.tiles(lambda start, q, norms: torch.cat([q, norms[:, None], ones(q)], 1),  # tile: |q - c|^2 - radius^2
                       lambda start, c, norms: torch.cat([-2.0 * c, ones(c), (norms - radii[start : start + len(c)])[:, None]], 1))
    for q_start, row in rows:
        total = None
        for _, tile in row:
            inside = (tile <= 0).sum(1, dtype=torch.int32)
            total = inside if total is None else total + inside
        counts[q_start : q_start + len(total)] = total.cpu().numpy()
    return counts


def balls_containing(queries, centres, radii: np.ndarray, *, device="cpu", block_elements: int | None = None) -> np.ndarray:
    """For each query, how many closed balls (centre i, radius i) contain it."""
    radii = np.asarray(radii, dtype=np.float64)
    return _balls_containing_squared(queries, centres, radii * radii, device=device, block_elements=block_elements)


# ---------------------------------------------------------------- Frechet distance

def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected (N, D) features, got shape {x.shape}")
    return x

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
    values at equal set sizes only. Stays in float64 numpy on the CPU: its cost is
    N D^2 for the covariances (subsets of `SUBSET_LIMIT` points) and D^3 for the
    eigenvalues, small beside the k-NN work."""
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


def precision_recall(real, fake, k: int = PRECISION_RECALL_K, *, device="cpu") -> PrecisionRecall:
    """Improved precision and recall (Kynkaenniemi et al. 2019).

    A set's manifold is the union of closed balls around its points, each
    with the radius of that point's k-th nearest neighbour in the set.
    Precision: the share of fake points inside the real manifold; recall: the
    share of real points inside the fake manifold. k = 3 as the paper."""
    real_radii, fake_radii = _kth_squared(real, k, device=device), _kth_squared(fake, k, device=device)
    return PrecisionRecall(precision=float(np.mean(_balls_containing_squared(fake, real, real_radii, device=device) > 0)),
                           recall=float(np.mean(_balls_containing_squared(real, fake, fake_radii, device=device) > 0)))


@dataclasses.dataclass(frozen=True)
class DensityCoverage:
    density: float  # mean number of real balls around a sample, over k: about 1 for matching sets, unbounded
    coverage: float  # share of real balls with at least one sample in them


def density_coverage(real, fake, k: int = DENSITY_COVERAGE_K, *, device="cpu") -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020): balls around real points only,
    so a few fake outliers cannot inflate a fake manifold.

        density  = 1/(k M) sum_j #{i : fake_j in B(real_i, NND_k(real_i))}
        coverage = 1/N #{i : some fake_j in B(real_i, NND_k(real_i))}

    with N real and M fake points; k = 5 as the paper."""
    real_radii = _kth_squared(real, k, device=device)
    nearest_fake, _ = _k_nearest_squared(real, fake, 1, device=device)
    return DensityCoverage(density=float(_balls_containing_squared(fake, real, real_radii, device=device).sum() / (k * len(fake))),
                           coverage=float(np.mean(nearest_fake[:, 0] <= real_radii)))


# ---------------------------------------------------------------- memorisation

@dataclasses.dataclass(frozen=True)
class NearCopies:
    flags: np.ndarray  # (M,) bool: the sample is a near copy of a train image
    distances: np.ndarray  # (M,) distance from each sample to its nearest train image
    nearest: np.ndarray  # (M,) index of that train image
    threshold: float  # the distance below which a sample is a near copy
    threshold_points: int = 0  # train images whose leave-one-out distances gave the threshold

    @property
    def fraction(self) -> float:
        return float(np.mean(self.flags)) if len(self.flags) else float("nan")


def near_copies(train, samples, quantile: float = NEAR_COPY_QUANTILE, *, threshold_points: int = SUBSET_LIMIT,
                seed: int = SUBSET_SEED, device="cpu", block_elements: int | None = None) -> NearCopies:
    """Which samples are near copies of a real train image (memorisation).

    Rule: a sample is a near copy when its distance to the nearest train
    image is below the `quantile` of the train images' leave-one-out
    nearest-neighbour distances (each train image to its nearest *other*
    train image). In words: it sits closer to a train image than 99% of
    train images sit to any other. A model that draws fresh images from the
    data distribution has about `quantile` of its samples flagged (fresh real
    digits, the eval split: 1.1% in pixel space); a model that returns its
    training images with light noise has nearly all of them flagged.

    Every sample is searched against the whole train split, exactly (float32
    tiles on the device, a running nearest per sample over train blocks):
    M x N distances, the one quadratic part of the scores. The threshold's
    quantile is estimated from a seeded subset of at most `threshold_points`
    train images, each against the whole train split (itself excluded): the
    same distances as from all of them, estimated from 10k points (about 100
    below the 1% quantile), and linear in N.

    Why not Alaa et al. 2022's authenticity rule (a sample is inauthentic
    when its nearest real point is closer to it than to that point's own
    nearest real neighbour): fresh real images fail it at a high rate, 44%
    of the digits eval split and 21% of the PCA-Gaussian's samples in pixel
    space, because in 64 dimensions a fresh point is often its neighbour's
    nearest neighbour. Its authors test it against that base rate; a single
    fraction cannot. The quantile rule's base rate is `quantile` by
    construction and needs no test.

    Works in any space: flattened pixels (uint8 or floats) or classifier
    features. The threshold comes from the whole train set, so every class
    is judged by the same distance (classes that are tighter in that space
    have a higher base rate)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    queries = subset(len(train), threshold_points, seed, "near-copy threshold")
    if len(queries) < 1 or len(train) < 2:
        raise ValueError(f"near copies need at least 2 train images, got {len(train)}")
    train_points = _as_points(train, "train", _device(device))
    query_rows = train_points if len(queries) == len(train_points) else _Points(train, "train", _device(device), queries)
    leave_one_out, _ = nearest_neighbours(query_rows, train_points, exclude=queries, device=device, block_elements=block_elements)
    threshold = float(np.quantile(leave_one_out, quantile))
    distances, nearest = nearest_neighbours(samples, train_points, device=device, block_elements=block_elements)
    return NearCopies(flags=distances < threshold, distances=distances, nearest=nearest, threshold=threshold,
                      threshold_points=len(queries))


# ---------------------------------------------------------------- GAN-test and per class

def gan_test(sample_logits: np.ndarray, sample_labels: np.ndarray, num_classes: int) -> ClassCounts:
    """GAN-test (Shmelkov et al. 2018): a classifier trained on real images
    predicts the model's samples; its accuracy is how recognisable the
    samples are as their class (fidelity; blind to diversity, unlike CAS,
    which is GAN-train). The counts per class are those of `count_correct`:
    `.top1`, `.per_class_top1()`. The scores step gives it the samples of
    `set_subsets` (at most `SUBSET_LIMIT` overall and per class)."""
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

@dataclasses.dataclass(frozen=True)
class Subsets:
    """Which points the set-level scores use: indices into a set, overall and per class."""
    overall: np.ndarray
    per_class: list[np.ndarray]

    @property
    def union(self) -> np.ndarray:
        return np.union1d(self.overall, np.concatenate(self.per_class)) if self.per_class else self.overall


def set_subsets(labels: np.ndarray, num_classes: int, what: str, *, limit: int = SUBSET_LIMIT,
                seed: int = SUBSET_SEED) -> Subsets:
    """At most `limit` points of a labelled set overall and at most `limit` of each class, seeded by (seed, what,
    class): the same set gives the same subsets in every run."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    return Subsets(overall=subset(len(labels), limit, seed, what),
                   per_class=[m[subset(len(m), limit, seed, what, c)] for c, m in enumerate(members)])


def manifold_scores(real, fake, *, device="cpu", block_elements: int | None = None) -> tuple[PrecisionRecall, DensityCoverage]:
    """`precision_recall` (k = PRECISION_RECALL_K) and `density_coverage` (k = DENSITY_COVERAGE_K) with the
    k-NN work shared: each set's radii from one search within it, then one pass over fake x real tiles that
    counts all four (precision and density by fake row, recall and coverage by real column). Three passes of
    distances instead of seven; the same comparisons, so the same numbers."""
    import torch

    k_pr, k_dc = PRECISION_RECALL_K, DENSITY_COVERAGE_K
    real_t, fake_t = _as_points(real, "real", _device(device)), _as_points(fake, "fake", _device(device))
    if min(len(real_t), len(fake_t)) <= max(k_pr, k_dc):
        raise ValueError(f"k = {max(k_pr, k_dc)} needs at least {max(k_pr, k_dc) + 1} points, got {len(real_t)} and {len(fake_t)}")
    real_k, _ = _k_nearest_squared(real_t, real_t, max(k_pr, k_dc), exclude=np.arange(len(real_t)), device=device,
                                   block_elements=block_elements)
    fake_k, _ = _k_nearest_squared(fake_t, fake_t, k_pr, exclude=np.arange(len(fake_t)), device=device,
                                   block_elements=block_elements)
    tiles = _Tiles(fake_t, real_t, device, block_elements)
    as_tensor = lambda x: torch.as_tensor(x, device=tiles.device)  # noqa: E731
    real_pr, real_dc, fake_pr = as_tensor(real_k[:, k_pr - 1]), as_tensor(real_k[:, k_dc - 1]), as_tensor(fake_k[:, k_pr - 1])
    ones = lambda block: torch.ones(len(block), 1, dtype=block.dtype, device=block.device)  # noqa: E731
    rows = tiles.tiles(lambda start, f, norms: torch.cat([f, norms[:, None], ones(f)], 1),  # tile: |f - r|^2
                       lambda start, r, norms: torch.cat([-2.0 * r, ones(r), norms[:, None]], 1))
    in_real = torch.zeros(len(fake_t), dtype=torch.bool, device=tiles.device)
    density = torch.zeros(len(fake_t), dtype=torch.int64, device=tiles.device)
    in_fake = torch.zeros(len(real_t), dtype=torch.bool, device=tiles.device)
    covered = torch.zeros(len(real_t), dtype=torch.bool, device=tiles.device)
    for f_start, row in rows:
        for r_start, tile in row:
            f_rows, r_cols = slice(f_start, f_start + tile.shape[0]), slice(r_start, r_start + tile.shape[1])
            inside_dc = tile <= real_dc[None, r_cols]
            in_real[f_rows] |= (tile <= real_pr[None, r_cols]).any(1)
            density[f_rows] += inside_dc.sum(1)
            in_fake[r_cols] |= (tile <= fake_pr[f_rows, None]).any(0)
            covered[r_cols] |= inside_dc.any(0)
    return (PrecisionRecall(precision=float(in_real.double().mean()), recall=float(in_fake.double().mean())),
            DensityCoverage(density=float(density.sum().item() / (k_dc * len(fake_t))), coverage=float(covered.double().mean())))


def feature_scores(real, fake, *, device="cpu") -> dict[str, float | None]:
    """Frechet distance, precision/recall and density/coverage of two feature sets; None where a set (one
    class's, say) has too few points for a score."""
    out: dict[str, float | None] = {}
    try:
        together = sum(map(dataclasses.astuple, manifold_scores(real, fake, device=device)), ())
    except ValueError:  # too few points for k = 5: each on its own, so that P/R (k = 3) may still be computed
        together = None
    for names, score in ((("fd",), lambda: (frechet_distance(real, fake),)),
                         (("precision", "recall"), lambda: together[:2] if together else
                          dataclasses.astuple(precision_recall(real, fake, device=device))),
                         (("density", "coverage"), lambda: together[2:] if together else
                          dataclasses.astuple(density_coverage(real, fake, device=device)))):
        try:
            values = score()
        except ValueError:
            values = (None,) * len(names)
        out |= {name: finite_or_none(value) for name, value in zip(names, values)}
    return out


def set_scores(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray, num_classes: int, *,
               limit: int = SUBSET_LIMIT, seed: int = SUBSET_SEED, device="cpu",
               seconds: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """FD, precision/recall and density/coverage overall and per class, each on `set_subsets` of both sets,
    with the sizes used: `scores_n_real` and `scores_n_samples` (overall: ints; per class: lists).
    `seconds`, when given, gets the time of the overall and the per-class scores."""
    import time

    real_sets, fake_sets = set_subsets(real_labels, num_classes, "real", limit=limit, seed=seed), \
        set_subsets(fake_labels, num_classes, "samples", limit=limit, seed=seed)
    started = time.perf_counter()
    overall: dict[str, Any] = feature_scores(real[real_sets.overall], fake[fake_sets.overall], device=device)
    overall |= {"scores_n_real": len(real_sets.overall), "scores_n_samples": len(fake_sets.overall)}
    middle = time.perf_counter()
    by_class = [feature_scores(real[r], fake[f], device=device) for r, f in zip(real_sets.per_class, fake_sets.per_class)]
    per_class_scores: dict[str, list[Any]] = {name: [scores_of_class[name] for scores_of_class in by_class]
                                              for name in by_class[0]} if by_class else {}
    per_class_scores |= {"scores_n_real": [len(r) for r in real_sets.per_class],
                         "scores_n_samples": [len(f) for f in fake_sets.per_class]}
    if seconds is not None:
        seconds |= {"set_scores_overall": middle - started, "set_scores_per_class": time.perf_counter() - middle}
    return overall, per_class_scores


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities (an empty class) are stored as null; counts stay ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None if value is None or not np.isfinite(value) else float(value)
