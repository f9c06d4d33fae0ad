"""A local cache of shard sets decoded to uint8 arrays, keyed by the sha256 of
their manifest (which pins every shard's sha256): decode once, train many
times. Lives in $CASFLOW_CACHE_DIR, else ~/.cache/casflow; safe to delete, and optional: when it
cannot be written, shard sets are decoded in memory each time instead.

Each set is two files in `decoded/`: `<key>.labels.npy`, then
`<key>.images.npy` (uint8 N x H x W x C, a plain .npy file), written chunk
by chunk as the shards are decoded, each atomically; the images file is the
commit marker. Reading gives a read-only memory map, so neither building
nor using the cache holds the whole set in memory; `Decoded.window` (a range)
and `Decoded.take` (chosen rows) read with plain file reads, which leave
nothing mapped behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from casflow.storage.atomic import atomic_file

log = logging.getLogger("casflow.storage")

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]  # (uint8 NHWC images, int64 labels) in set order


def cache_dir() -> Path:
    return Path(os.environ.get("CASFLOW_CACHE_DIR") or Path.home() / ".cache" / "casflow")


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A decoded shard set: `images` is a read-only memory map of the cache file (or, when the cache
    cannot be written, an array in memory), `labels` an int64 array."""

    images: np.ndarray
    labels: np.ndarray
    path: Path | None = None  # the cache file of the images
    offset: int = 0  # where their pixels start in it

    def __len__(self) -> int:
        return len(self.labels)

    def window(self, start: int, stop: int) -> np.ndarray:
        """Images [start, stop) as a new array, read from the file (not through the mapping: a whole
        pass over a large set then keeps one window resident, not the set)."""
        stop = min(stop, len(self))
        if self.path is None:
            return np.array(self.images[start:stop])
        with open(self.path, "rb") as f:
            return self._read(f.fileno(), start, stop)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` (any order, repeats allowed) as a new array, read from the file a run of
        consecutive rows at a time, as `window` reads: nothing of the set stays resident but the rows asked for."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.path is None or not len(indices):
            return np.array(self.images[indices])
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"{self.path}: rows {indices.min()}..{indices.max()} asked of {len(self)}")
        wanted, where = np.unique(indices, return_inverse=True)
        rows = np.empty((len(wanted), *self.images.shape[1:]), dtype=np.uint8)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1  # runs of consecutive rows: one read each
        with open(self.path, "rb") as f:
            for run_start, run_stop in zip(np.r_[0, breaks], np.r_[breaks, len(wanted)]):
                first = int(wanted[run_start])
                rows[run_start:run_stop] = self._read(f.fileno(), first, first + int(run_stop - run_start))
        return rows[where.reshape(-1)]

    def _read(self, fd: int, start: int, stop: int) -> np.ndarray:
        row = int(np.prod(self.images.shape[1:]))
        data = os.pread(fd, (stop - start) * row, self.offset + start * row)
        if len(data) != (stop - start) * row:
            raise OSError(f"{self.path}: shorter than its header says")
        return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, *self.images.shape[1:])


_unwritable: set[str] = set()  # cache folders already reported as unwritable (one warning each per process)
_unwritable_lock = threading.Lock()


class _SourceFailed(Exception):
    """Wraps an error of the chunks being cached, so that it is never taken for the cache's own."""


def load_or_build(key: str, image_shape: tuple[int, int, int], chunks: Callable[[], Chunks]) -> Decoded:
    """The set from the cache, or from `chunks()` written to the cache as they come, then mapped.

    The cache is optional: when it cannot be written (a full disk, a read-only folder) the set is
    decoded again into memory, and one warning per process names the cache folder."""
    folder = cache_dir()
    images_path = folder / "decoded" / f"{key}.images.npy"
    labels_path = folder / "decoded" / f"{key}.labels.npy"
    if images_path.exists():
        try:
            return _open(images_path, labels_path)
        except (OSError, ValueError) as exc:  # a truncated file from a full disk, say
            log.warning("decoded cache %s unreadable (%s); rebuilding", images_path, exc)
    try:
        _write(images_path, labels_path, image_shape, _guarded(iter(chunks())))
        return _open(images_path, labels_path)
    except _SourceFailed as failed:
        raise failed.__cause__ from None
    except OSError as exc:
        with _unwritable_lock:
            first = str(folder) not in _unwritable
            _unwritable.add(str(folder))
        if first:
            log.warning("decoded cache %s cannot be written (%s): decoding shards in memory instead, every time "
                        "they are read (set CASFLOW_CACHE_DIR to a folder with space to cache them)",
                        folder, exc.strerror or exc)
    images, labels = [], []
    for chunk_images, chunk_labels in chunks():
        images.append(chunk_images)
        labels.append(chunk_labels)
    if not images:
        return Decoded(np.zeros((0, *image_shape), np.uint8), np.zeros(0, np.int64))
    return Decoded(np.concatenate(images), np.concatenate(labels).astype(np.int64))


def _guarded(chunks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    while True:
        try:
            item = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            raise _SourceFailed() from exc
        yield item


def _write(images_path: Path, labels_path: Path, image_shape: tuple[int, int, int], chunks: Chunks) -> None:
    """Images streamed into a temporary .npy whose header is fixed once the count is known, labels
    after; then each renamed into place, the images last."""
    labels: list[np.ndarray] = []
    with atomic_file(images_path) as f:
        header = _header(0, image_shape)
        f.write(header)
        count = 0
        for images, chunk_labels in chunks:
            if images.shape[1:] != tuple(image_shape):
                raise _SourceFailed() from ValueError(f"decoded images of shape {images.shape[1:]}, expected {image_shape}")
            f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
            labels.append(np.asarray(chunk_labels, dtype=np.int64))
            count += len(images)
        final = _header(count, image_shape)
        if len(final) != len(header):
            raise ValueError("npy header changed length")  # cannot happen: _header pads to a fixed length
        f.seek(0)
        f.write(final)
        f.seek(0, os.SEEK_END)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        with atomic_file(labels_path) as g:
            np.save(g, all_labels)
    with contextlib.suppress(OSError):  # the single-file format of earlier versions
        os.remove(images_path.parent / images_path.name.replace(".images.npy", ".npz"))


def _header(count: int, image_shape: tuple[int, int, int]) -> bytes:
    """A .npy (version 1.0) header for uint8 (count, H, W, C); numpy pads it to a multiple of 64 bytes,
    so its length does not change with the count's digits."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (count, *image_shape)})
    return buffer.getvalue()


def _open(images_path: Path, labels_path: Path) -> Decoded:
    labels = np.load(labels_path)
    if not len(labels):  # numpy cannot map an empty array
        return Decoded(np.load(images_path), labels)
    images = np.load(images_path, mmap_mode="r")
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return Decoded(images, labels, images_path, int(images.offset))
