"""Inputs of any size in memory that does not grow with them: two passes and a spool.

Every input of labelled images (a model's samples in a file, folder, archive
or shards; a real dataset split) is read as a `Listing`:

  pass 1  the labels and the structure (file lists, archive and tar headers,
          .npy headers), cheap and whole: the caller checks them, chooses
          the samples (the seeded budget subset, a per-class limit) and the
          stored order (classes interleaved) from labels alone
  pass 2  `encode_in_order`: only the chosen images, read in input order (the
          order every file format reads fastest), decoded, checked against
          the first image's header, resized when asked and encoded as PNG on
          every core (`parallel.ordered_map`), a chunk at a time, into a
          local spool file ($TMPDIR, as large as the shards will be)
  pass 3  the returned iterator: (label, PNG) in the stored order, read back
          from the spool, for `storage.shards.write_shard_set`

Every check on the images runs in pass 2, before the iterator is returned,
so nothing is written for an input that fails one. PNG encoding is a pure
function of the pixels, so the shards are byte for byte those that decoding
the whole input into memory gave, for any number of workers.
"""

from __future__ import annotations

import array
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from casflow.tasks.files import FileTree
from casflow.tasks.images import CHUNK, Transcode, decode_chunk, header_shape, png_chunk
from casflow.tasks.parallel import ordered_map
from casflow.tasks.progress import Progress

ImageChunk = tuple[np.ndarray | list[bytes], list[str]]  # uint8 NHWC images, or image files and the names errors show


@dataclasses.dataclass(frozen=True)
class Listing:
    """An input's samples: labels in input order now, images of chosen indices later.

    `first` gives the first image's file and its name (its header sets the
    input's (H, W, C)); sources of arrays give `shape` instead. `chunks`
    takes sorted, unique indices and yields their images in that order, in
    chunks of at most CHUNK."""

    where: str  # names the input in errors
    labels: np.ndarray  # as the input states them (the caller checks them)
    chunks: Callable[[np.ndarray], Iterator[ImageChunk]]
    first: Callable[[], tuple[bytes, str]] | None = None
    shape: tuple[int, int, int] | None = None  # for arrays: (H, W, C) from the array's header
    dtype: np.dtype = dataclasses.field(default_factory=lambda: np.dtype(np.uint8))

    def __len__(self) -> int:
        return len(self.labels)

    def image_shape(self, max_pixels: int) -> tuple[int, int, int]:
        """(H, W, C) of the input: the first image's header (checked against max_pixels), or the array's."""
        if self.shape is not None:
            return self.shape
        if self.first is None or not len(self.labels):
            raise ValueError(f"{self.where}: no images")
        return header_shape(*self.first(), max_pixels)


def encode_in_order(listing: Listing, order: np.ndarray, transcode: Transcode, *, what: str,
                    workers: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Pass 2 now, pass 3 lazily: (label, PNG bytes) of listing's samples at `order`'s indices, in that order.

    Each index may appear once. Every chosen image is read, checked and
    encoded before this returns; a failing one raises here, the first in
    input order whatever the worker count. `what` heads the progress lines."""
    order = np.asarray(order, dtype=np.int64)
    wanted = np.unique(order)
    if len(wanted) != len(order):
        raise ValueError("encode_in_order: an index appears twice in the order")
    spool = Spool()
    try:
        progress = Progress(f"{what}: decoding and encoding", len(wanted))
        jobs = ((images, sources, transcode) for images, sources in listing.chunks(wanted))
        for pngs in ordered_map(png_chunk, jobs, workers=workers):
            spool.extend(pngs)
            progress.update(len(pngs))
        if len(spool) != len(wanted):
            raise RuntimeError(f"{listing.where}: {len(spool)} images read for {len(wanted)} chosen")
    except BaseException:
        spool.close()
        raise
    return _replay(spool, np.searchsorted(wanted, order), listing.labels[order])


def check_every_image(listing: Listing, shape: tuple[int, int, int], max_pixels: int, *, workers: int | None = None) -> None:
    """Reads and decodes every image of the input (on every core, a chunk at a time, nothing kept) and raises
    the first one's error in input order: an unreadable file, a corrupt image, another size."""
    chunks = listing.chunks(np.arange(len(listing)))
    if listing.shape is None:
        for _ in ordered_map(decode_chunk, ((blobs, sources, max_pixels, shape) for blobs, sources in chunks), workers=workers):
            pass
    else:
        for _ in chunks:
            pass


def _replay(spool: Spool, positions: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, bytes]]:
    try:
        for position, label in zip(positions, labels):
            yield int(label), spool[int(position)]
    finally:
        spool.close()


class Spool:
    """Byte strings appended to an anonymous local temporary file, read back by index."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._offsets = array.array("q", [0])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def extend(self, items: Iterable[bytes]) -> None:
        for item in items:
            self._file.write(item)
            self._offsets.append(self._offsets[-1] + len(item))
        self._file.flush()

    def __getitem__(self, index: int) -> bytes:
        start, stop = self._offsets[index], self._offsets[index + 1]
        return os.pread(self._file.fileno(), stop - start, start)

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------- chunks from the common kinds of input

def array_chunks(images: np.ndarray, indices: np.ndarray) -> Iterator[ImageChunk]:
    """Chunks of an array in memory (or memory-mapped)."""
    for start in range(0, len(indices), CHUNK):
        yield images[indices[start : start + CHUNK]], []


def read_chunks(read: Callable[[int], tuple[bytes, str]], indices: np.ndarray) -> Iterator[ImageChunk]:
    """Chunks of files read one by one by index (a folder's, an archive's): (bytes, name) = read(i)."""
    for start in range(0, len(indices), CHUNK):
        blobs, sources = [], []
        for i in indices[start : start + CHUNK]:
            blob, source = read(int(i))
            blobs.append(blob)
            sources.append(source)
        yield blobs, sources


def picked_chunks(samples: Iterable[tuple[bytes, str]], indices: np.ndarray) -> Iterator[ImageChunk]:
    """Chunks of the samples at `indices` from a stream of every sample in input order (tar shards, Parquet
    row groups), read to the last index wanted."""
    blobs, sources, k, seen = [], [], 0, 0
    if not len(indices):
        return
    stream = iter(samples)
    for i, (blob, source) in enumerate(stream):
        seen = i + 1
        if i != indices[k]:
            continue
        blobs.append(blob)
        sources.append(source)
        k += 1
        if len(blobs) == CHUNK or k == len(indices):
            yield blobs, sources
            blobs, sources = [], []
        if k == len(indices):
            break
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    if k != len(indices):
        raise ValueError(f"the input changed while being read: it ended after {seen} samples, sample {int(indices[k])} "
                         "is missing")


def tree_listing(tree: FileTree, files: list[str], labels: np.ndarray) -> Listing:
    """The files of a folder or zip, read one by one when their images are wanted."""

    def read(i: int) -> tuple[bytes, str]:
        return tree.read(files[i]), f"{tree.name}/{files[i]}"

    return Listing(tree.name, labels, lambda indices: read_chunks(read, indices), first=lambda: read(0))
