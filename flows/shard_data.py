"""Committed shard sets as the steps read them: decoded once into the local cache, streamed in a
seeded shard order for training, mixed with the real train split for the Naive Augmentation Score,
or a few images per class for the report.

Between storage/ (shards, manifests, the decoded cache) and tasks/ (PNG decoding on every core,
training's `TrainingSamples` protocol): the one place that knows both.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from casflow.storage import decoded_cache
from casflow.storage.shards import ShardInfo, ShardSet, iter_shard_set
from casflow.storage.store import Store
from casflow.tasks.fingerprint import derive_seed
from casflow.tasks.images import CHUNK, decode_chunk, decode_stack
from casflow.tasks.parallel import ordered_map
from casflow.tasks.progress import Progress


@dataclasses.dataclass(frozen=True)
class StoredSamples:
    """A committed shard set as training reads it (`training.TrainingSamples`): decoded whole
    through the local cache, or streamed shard by shard in a seeded order per epoch."""

    store: Store
    shard_set: ShardSet
    what: str  # for progress lines
    seed: int

    @property
    def num_samples(self) -> int:
        return self.shard_set.num_samples

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shard_set.image_shape

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        return load_decoded(self.store, self.shard_set, self.what)

    def chunks(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        shards = self.shard_set.shards
        order = np.random.default_rng(derive_seed(self.seed, "shard-order", epoch)).permutation(len(shards))
        return decoded_chunks(self.store, self.shard_set, [shards[i] for i in order])


@dataclasses.dataclass(frozen=True)
class MixedSamples:
    """The real train split and the first `extra_count` of a model's samples as one training set (NAS).
    Stored sets interleave their classes, so a prefix is class-balanced."""

    real: StoredSamples
    extra: StoredSamples
    extra_count: int

    @property
    def num_samples(self) -> int:
        return self.real.num_samples + self.extra_count

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.real.image_shape

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        (real_images, real_labels), (images, labels) = self.real.decoded(), self.extra.decoded()
        return (np.concatenate([real_images, images[: self.extra_count]]),
                np.concatenate([real_labels, labels[: self.extra_count]]))

    def chunks(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The real split's chunks alternating with the prefix's, both in their epoch's order."""
        shards, left, prefix = self.extra.shard_set.shards, self.extra_count, []
        for shard in shards:
            if left <= 0:
                break
            prefix.append((shard, min(left, shard.num_samples)))
            left -= shard.num_samples
        order = np.random.default_rng(derive_seed(self.extra.seed, "shard-order", epoch)).permutation(len(prefix))
        extra = (
            (images[:keep], labels[:keep])
            for (images, labels), keep in zip(decoded_chunks(self.extra.store, self.extra.shard_set,
                                                             [prefix[i][0] for i in order]), [prefix[i][1] for i in order]))
        for real_chunk, extra_chunk in itertools.zip_longest(self.real.chunks(epoch), extra):
            yield from (chunk for chunk in (real_chunk, extra_chunk) if chunk is not None)


def load_decoded(store: Store, shard_set: ShardSet, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A shard set as uint8 images (a read-only memory map of the local cache) and labels."""
    decoded = decoded_set(store, shard_set, what)
    return decoded.images, decoded.labels


def decoded_set(store: Store, shard_set: ShardSet, what: str) -> decoded_cache.Decoded:
    """A shard set decoded once per manifest into the local cache, chunk by chunk on every core."""

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        progress = Progress(f"{what}: decoding {shard_set.location}", shard_set.num_samples)
        for images, labels in decoded_chunks(store, shard_set, shard_set.shards):
            progress.update(len(labels))
            yield images, labels

    return decoded_cache.load_or_build(shard_set.manifest_sha256, shard_set.image_shape, chunks)


def in_batches(decoded: decoded_cache.Decoded, compute: Callable[[np.ndarray], np.ndarray], rows: np.ndarray | None = None,
               *, size: int) -> np.ndarray:
    """compute(images) over a decoded set's images (or those at `rows`, in that order), `size` at a time, the outputs
    concatenated. Each batch is read from the local cache's file as it is needed, so a pass over any set holds
    one batch of images; batches of the same size as compute's own give the outputs one call would."""
    count = len(decoded) if rows is None else len(rows)
    outputs = [compute(decoded.window(start, start + size) if rows is None else decoded.take(rows[start : start + size]))
               for start in range(0, count, size)]
    return np.concatenate(outputs) if outputs else compute(decoded.window(0, 0))


def decoded_chunks(store: Store, shard_set: ShardSet, shards: Sequence[ShardInfo]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per shard, streamed from the store with sha256 checks, decoded on every core
    (jobs of CHUNK images, across shard boundaries, so the workers never wait for the next shard)."""
    height, width, channels = shard_set.image_shape  # our own shards hold images of their manifest's shape
    jobs_labels: collections.deque[tuple[str, np.ndarray]] = collections.deque()

    def jobs() -> Iterator[tuple]:
        for shard in shards:
            one = dataclasses.replace(shard_set, shards=(shard,))
            where = f"{store.uri(shard_set.location)}/{shard.name}"
            blobs, labels, keys = [], [], []
            for key, parts in iter_shard_set(store, one):
                blobs.append(parts["png"])
                labels.append(int(parts["cls"]))
                keys.append(f"{where} key {key}")
                if len(blobs) == CHUNK:
                    jobs_labels.append((shard.name, np.array(labels, dtype=np.int64)))
                    yield blobs, keys, height * width, (height, width, channels)
                    blobs, labels, keys = [], [], []
            if blobs:
                jobs_labels.append((shard.name, np.array(labels, dtype=np.int64)))
                yield blobs, keys, height * width, (height, width, channels)

    images, labels, current = [], [], None
    for decoded in ordered_map(decode_chunk, jobs()):
        name, chunk_labels = jobs_labels.popleft()
        if name != current and images:
            yield np.concatenate(images), np.concatenate(labels)
            images, labels = [], []
        current = name
        images.append(decoded)
        labels.append(chunk_labels)
    if images:
        yield np.concatenate(images), np.concatenate(labels)


def first_per_class(store: Store, shard_set: ShardSet, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images of each class in stored order, decoding only those."""
    wanted = dict.fromkeys(range(len(shard_set.class_names)), per_class)
    for c, n in enumerate(shard_set.count_per_class):
        wanted[c] = min(wanted[c], n)
    blobs, labels, sources = [], [], []
    samples = iter_shard_set(store, shard_set)
    try:
        for key, parts in samples:
            label = int(parts["cls"])
            if wanted.get(label, 0) > 0:
                wanted[label] -= 1
                blobs.append(parts["png"])
                labels.append(label)
                sources.append(f"{store.uri(shard_set.location)} key {key}")
            if not any(wanted.values()):
                break
    finally:
        samples.close()
    height, width, channels = shard_set.image_shape
    images = decode_stack(blobs, sources, max_pixels=height * width, max_decoded_bytes=len(blobs) * height * width * channels,
                          what=store.uri(shard_set.location))
    return images, np.array(labels, dtype=np.int64)
