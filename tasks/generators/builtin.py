"""Built-in sources that need nothing but the real train split: `real` (the
baseline), `real-shuffled` (a negative control) and `gaussian` (a
class-conditional Gaussian in PCA space)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field

from casflow.tasks.datasets import LabeledImages
from casflow.tasks.fingerprint import derive_seed
from casflow.tasks.generators.common import DrawRequest, Samples, SampleSource, settings_and_files
from casflow.tasks.samples import encode_samples, label_schedule
from casflow.tasks.schema import Frozen


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


SOURCES = (
    SampleSource(RealGenerator, settings_and_files, draw=None),  # its samples are the real train split's shards
    SampleSource(ShuffledRealGenerator, settings_and_files, draw_shuffled),
    SampleSource(GaussianGenerator, settings_and_files, draw_gaussian),
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
    way truncation does for GANs: sharper samples, less diversity."""

    pixel_mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal
    class_means: np.ndarray  # (C, k)
    class_cholesky: np.ndarray  # (C, k, k)
    image_shape: tuple[int, int, int]

    @classmethod
    def fit(cls, train: LabeledImages, components: int) -> GaussianPCA:
        x = train.images.reshape(len(train.images), -1).astype(np.float32)
        pixel_mean = x.mean(axis=0, dtype=np.float64)
        centred = x - pixel_mean.astype(np.float32)
        covariance = (centred.T @ centred).astype(np.float64) / max(1, len(x) - 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        k = min(components, x.shape[1])
        top = eigenvectors[:, ::-1][:, :k].T  # (k, D), largest variance first
        top *= np.where(top[np.arange(k), np.abs(top).argmax(axis=1)] < 0, -1, 1)[:, None]  # a fixed sign per vector
        z = centred.astype(np.float64) @ top.T
        num_classes = len(train.class_names)
        means = np.zeros((num_classes, k))
        cholesky = np.zeros((num_classes, k, k))
        for c in range(num_classes):
            zc = z[train.labels == c]
            if len(zc) == 0:
                raise ValueError(f"class {c} has no train images to fit")
            means[c] = zc.mean(axis=0)
            cov = np.cov(zc, rowvar=False).reshape(k, k) if len(zc) > 1 else np.zeros((k, k))
            jitter = 1e-6 * max(np.trace(cov) / k, 1.0)  # keeps small classes positive definite
            cholesky[c] = np.linalg.cholesky(cov + jitter * np.eye(k))
        return cls(pixel_mean, top, means, cholesky, train.image_shape)

    def sample(self, labels: np.ndarray, seed: int, temperature: float) -> np.ndarray:
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((len(labels), self.components.shape[0]))
        z = self.class_means[labels] + temperature * np.einsum("nij,nj->ni", self.class_cholesky[labels], eps)
        x = z @ self.components + self.pixel_mean
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(len(labels), *self.image_shape)
