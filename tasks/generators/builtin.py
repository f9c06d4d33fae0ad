"""Built-in sources that need nothing but the real train split: `real` (the
baseline), `real-shuffled` (a negative control) and `gaussian` (a
class-conditional Gaussian in PCA space)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
from pydantic import Field

from casflow.tasks.datasets import LabeledImages
from casflow.tasks.files import SourceFiles
from casflow.tasks.fingerprint import code_version, derive_seed
from casflow.tasks.generators.common import DrawRequest, Samples, SampleSource, settings_and_files
from casflow.tasks.samples import encode_samples, label_schedule
from casflow.tasks.schema import Frozen

COMPONENT_GRID = 2.0**-16  # PCA eigenvectors are rounded to multiples of this (see GaussianPCA)


class RealGenerator(Frozen):
    """The real train split itself: the upper bound and the CAS baseline."""

    kind: Literal["real"]


class ShuffledRealGenerator(Frozen):
    """Real train images with labels permuted under the seed: a negative control that scores near chance."""

    kind: Literal["real-shuffled"]


class GaussianGenerator(Frozen):
    """A class-conditional Gaussian in PCA space, fitted on the real train split."""

    kind: Literal["gaussian"]
    components: int = Field(32, gt=0)  # PCA dimensions kept
    temperature: float = Field(1.0, ge=0)  # scales the sampling std; < 1 trades diversity away, like truncation


def draw_shuffled(spec: ShuffledRealGenerator, request: DrawRequest) -> Samples:
    return encode_samples(*shuffled_labels(request.real_train(), derive_seed(request.seed, "shuffle")))


def draw_gaussian(spec: GaussianGenerator, request: DrawRequest) -> Samples:
    gaussian = GaussianPCA.fit(request.real_train(), spec.components)
    labels = label_schedule(request.budget)
    return encode_samples(gaussian.sample(labels, derive_seed(request.seed, "gaussian"), spec.temperature), labels)


def gaussian_content(spec: GaussianGenerator, files: SourceFiles, model: str) -> dict:
    """The settings and the algorithm's version: samples drawn by an older version are not reused."""
    inputs = settings_and_files(spec, files, model)
    inputs["generator"]["code_version"] = code_version("generator:gaussian")
    return inputs


SOURCES = (
    SampleSource(RealGenerator, settings_and_files, draw=None),  # its samples are the real train split's shards
    SampleSource(ShuffledRealGenerator, settings_and_files, draw_shuffled),
    SampleSource(GaussianGenerator, gaussian_content, draw_gaussian),
)


def shuffled_labels(train: LabeledImages, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real train images with labels permuted under the seed: class balance kept, signal gone.

    A classifier trained on this scores near chance; a CAS pipeline that
    reports more is leaking labels."""
    rng = np.random.default_rng(seed)
    return train.images, rng.permutation(train.labels)


@dataclasses.dataclass(frozen=True)
class GaussianPCA:
    """A class-conditional Gaussian in the space of the top principal components.

    Fit: PCA of the flattened train images (pixel values 0..255), then per
    class the mean and full covariance of its projections. Sample:
    z = mean_c + temperature * L_c @ eps, image = pixel mean + z @ components,
    rounded and clipped to uint8. Temperature < 1 narrows every class, the
    way truncation does for GANs: sharper samples, less diversity.

    The same images and seed give the same bytes on any CPU, BLAS, thread
    count or SIMD level, because no result depends on the order of a float
    reduction:
      - X^T X and the pixel sums are sums of integers, exact in float64 in any
        order (every partial sum is below 2^53);
      - LAPACK's eigenvectors differ in their last bits between BLAS kernels, so
        they are rounded to multiples of COMPONENT_GRID (2^-16): far coarser
        than that noise (about 1e-15 here), so every machine rounds alike
        unless an entry falls within the noise of a rounding boundary;
      - the projections X @ components^T are then exact as well (integers times
        multiples of 2^-16, partial sums far below 2^53);
      - everything else (class covariances, Cholesky factors, the sampling
        matmuls) is elementwise arithmetic in a fixed order (`_ordered_matmul`,
        `_cholesky`, math.fsum), which IEEE 754 rounds the same everywhere.
    So a pixel that lands on a rounding boundary (x.5) lands there on every machine."""

    pixel_mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal up to COMPONENT_GRID
    class_means: np.ndarray  # (C, k), centred: z = (x - pixel_mean) @ components^T
    class_cholesky: np.ndarray  # (C, k, k)
    image_shape: tuple[int, int, int]

    @classmethod
    def fit(cls, train: LabeledImages, components: int) -> GaussianPCA:
        x = train.images.reshape(len(train.images), -1)
        n, d = x.shape
        k = min(components, d)
        pixel_sums = x.sum(axis=0, dtype=np.int64)
        pixel_mean = pixel_sums / n
        covariance = (_integer_gram(x) - np.outer(pixel_sums, pixel_sums) / n) / max(1, n - 1)
        eigenvectors = np.linalg.eigh(covariance)[1]
        top = np.round(eigenvectors[:, ::-1][:, :k].T / COMPONENT_GRID) * COMPONENT_GRID  # (k, D), largest variance first
        top *= np.where(top[np.arange(k), np.abs(top).argmax(axis=1)] < 0, -1, 1)[:, None]  # a fixed sign per vector
        projections = _project(x, top)  # exact
        mean_projection = np.array([math.fsum(pixel_mean * row) for row in top])
        num_classes = len(train.class_names)
        means = np.zeros((num_classes, k))
        cholesky = np.zeros((num_classes, k, k))
        for c in range(num_classes):
            zc = projections[train.labels == c]
            if len(zc) == 0:
                raise ValueError(f"class {c} has no train images to fit")
            class_mean = zc.sum(axis=0) / len(zc)  # the sum is exact (multiples of 2^-16)
            centred = zc - class_mean
            cov = _ordered_matmul(centred.T, centred) / (len(zc) - 1) if len(zc) > 1 else np.zeros((k, k))
            jitter = 1e-6 * max(math.fsum(np.diag(cov)) / k, 1.0)  # keeps small classes positive definite
            cholesky[c] = _cholesky(cov + jitter * np.eye(k))
            means[c] = class_mean - mean_projection
        return cls(pixel_mean, top, means, cholesky, train.image_shape)

    def sample(self, labels: np.ndarray, seed: int, temperature: float, rows: int = 4096) -> np.ndarray:
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((len(labels), self.components.shape[0]))
        noise = np.zeros_like(eps)
        for c in np.unique(labels):
            members = labels == c
            noise[members] = _ordered_matmul(eps[members], self.class_cholesky[c].T)  # L_c @ eps per sample
        z = self.class_means[labels] + temperature * noise
        out = np.empty((len(labels), self.components.shape[1]), dtype=np.uint8)
        for start in range(0, len(labels), rows):  # bounds the float64 temporaries
            x = self.pixel_mean + _ordered_matmul(z[start : start + rows], self.components)
            out[start : start + rows] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return out.reshape(len(labels), *self.image_shape)


def _integer_gram(x: np.ndarray, rows: int = 4096) -> np.ndarray:
    """X^T X of uint8 rows, in float64 and exact: integers whose every partial sum stays below 2^53
    (n * 255^2 < 2^53 for n up to 1.3e11), so any BLAS kernel and blocking gives the same bits."""
    gram = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), rows):
        chunk = x[start : start + rows].astype(np.float64)
        gram += chunk.T @ chunk
    return gram


def _project(x: np.ndarray, components: np.ndarray, rows: int = 4096) -> np.ndarray:
    """uint8 rows times components on the 2^-16 grid: exact in float64 (each partial sum is a multiple
    of 2^-16 below 255 * sqrt(D) in magnitude), so the BLAS kernel does not matter."""
    return np.concatenate([x[start : start + rows].astype(np.float64) @ components.T
                           for start in range(0, len(x), rows)] or [np.zeros((0, len(components)))])


def _ordered_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b accumulated over the inner dimension in a fixed order, by elementwise operations only:
    the same bits on every CPU (a BLAS kernel sums in an order of its choosing)."""
    out = np.zeros((a.shape[0], b.shape[1]))
    for j in range(a.shape[1]):
        out += a[:, j : j + 1] * b[j]
    return out


def _cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, right-looking, by elementwise operations and math.sqrt only (LAPACK's
    blocked factorisation depends on the BLAS kernel)."""
    a = a.copy()
    lower = np.zeros_like(a)
    for j in range(len(a)):
        if not a[j, j] > 0:
            raise ValueError("covariance is not positive definite")
        pivot = math.sqrt(a[j, j])
        lower[j, j] = pivot
        lower[j + 1 :, j] = a[j + 1 :, j] / pivot
        a[j + 1 :, j + 1 :] -= np.multiply.outer(lower[j + 1 :, j], lower[j + 1 :, j])
    return lower
