"""Samples already drawn, in the formats generative-model code writes: `npz`
(ADM / guided-diffusion), `imagefolder`, `dataset-json` (StyleGAN2-ADA, EDM)
and `webdataset` shards.

Each reader returns a `streaming.Listing` (the labels now, the images when
asked) and names the file in every error; then the labels are checked, the
seeded budget subset chosen from them, and only the chosen images read,
decoded, checked and conformed to the dataset's size, a chunk at a time on
every core, all before anything is written. Memory stays a few chunks
whatever the input's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, ClassVar, Literal

import numpy as np

from casflow.tasks.errors import InputError
from casflow.tasks.files import FileTree, SourceFiles
from casflow.tasks.fingerprint import derive_seed, sha256_bytes
from casflow.tasks.generators.common import DrawRequest, Samples, SampleSource, settings_and_files
from casflow.tasks.images import CHUNK, IMAGE_EXTENSIONS, Transcode, check_decoded_bytes
from casflow.tasks.samples import check_labels, conformed_size, select_for_budget
from casflow.tasks.schema import Frozen, ResizeFilter
from casflow.tasks.streaming import (
    ImageChunk,
    Listing,
    array_chunks,
    check_every_image,
    encode_in_order,
    picked_chunks,
    tree_listing,
)


class _FromFiles(Frozen):
    """Options shared by generators whose samples are already drawn."""

    resize: ResizeFilter | None = None  # resize to the dataset's size with this PIL filter; else a size mismatch is an error
    allow_shortfall: bool = False  # accept fewer samples than the budget for a class (shows in the results)


class NpzGenerator(_FromFiles):
    """ADM / guided-diffusion sampler output: arr_0 uint8 NHWC, arr_1 int labels."""

    kind: Literal["npz"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class ImageFolderGenerator(_FromFiles):
    """One subfolder per class, matched to the dataset's class names."""

    kind: Literal["imagefolder"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class DatasetJsonGenerator(_FromFiles):
    """A zip or folder with dataset.json {"labels": [[relative_path, int], ...]} (StyleGAN2-ADA, EDM)."""

    kind: Literal["dataset-json"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class WebDatasetGenerator(_FromFiles):
    """WebDataset shards already on a store: `<key>.cls` labels and a png/jpg/jpeg/webp/ppm/bmp image."""

    kind: Literal["webdataset"]
    url: str  # a folder or prefix of .tar files, or a brace pattern shard-{000000..000009}.tar
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("url",)


def draw_npz(spec: NpzGenerator, request: DrawRequest) -> Samples:
    with _naming_files(request.model):
        try:
            file = request.files.open(spec.path)
        except FileNotFoundError:
            raise InputError("no such file", model=request.model, source=spec.path) from None
        with file:
            listing = read_npz(file, spec.path, request.model, max_decoded_bytes=request.limits.max_decoded_bytes)
            return _within_budget(listing, spec.path, spec, request)  # reads the images before the file closes


def draw_imagefolder(spec: ImageFolderGenerator, request: DrawRequest) -> Samples:
    with _naming_files(request.model):
        listing = read_class_folders(_tree(spec.path, request), request.class_names, request.model)
        return _within_budget(listing, spec.path, spec, request)


def draw_dataset_json(spec: DatasetJsonGenerator, request: DrawRequest) -> Samples:
    with _naming_files(request.model):
        listing = read_dataset_json(_tree(spec.path, request), request.model)
        return _within_budget(listing, spec.path, spec, request)


def draw_webdataset(spec: WebDatasetGenerator, request: DrawRequest) -> Samples:
    with _naming_files(request.model):  # duplicate keys, a truncated tar, too many shards: the message names it
        names = request.files.tar_names(spec.url)
        if not names:
            raise InputError("no .tar shards found", model=request.model, source=spec.url)
        listing = read_webdataset(lambda: request.files.iter_webdataset(names), spec.url, request.model)
        return _within_budget(listing, spec.url, spec, request)


def webdataset_content(spec: WebDatasetGenerator, files: SourceFiles, model: str) -> dict[str, Any]:
    """Each shard's digest: a brace pattern can name a shard that is not there, and that is an error."""
    with _naming_files(model):
        try:
            names = files.tar_names(spec.url)
        except FileNotFoundError:
            raise InputError(f"url {spec.url}: no such file or folder", model=model) from None
        digests = []
        for name in names:
            try:
                digests.append(files.digest(name))
            except FileNotFoundError:
                raise InputError("no such shard", model=model, source=name) from None
    return {"generator": spec.model_dump(exclude={"url"}), "sources": {"url": sha256_bytes("\n".join(digests).encode())}}


@contextlib.contextmanager
def _naming_files(model: str) -> Iterator[None]:
    """What the files refuse to read (a ValueError naming the file: not a regular file, over a limit,
    a corrupt archive) becomes that model's InputError: never retried, the other models go on."""
    try:
        yield
    except InputError as exc:
        raise exc.for_model(model) from None
    except ValueError as exc:
        raise InputError(str(exc), model=model) from None


SOURCES = (
    SampleSource(NpzGenerator, settings_and_files, draw_npz),
    SampleSource(ImageFolderGenerator, settings_and_files, draw_imagefolder),
    SampleSource(DatasetJsonGenerator, settings_and_files, draw_dataset_json),
    SampleSource(WebDatasetGenerator, webdataset_content, draw_webdataset),
)


def _within_budget(listing: Listing, where: str, spec: _FromFiles, request: DrawRequest) -> Samples:
    """The first image's header and the input's decoded size checked; pass 1's labels checked and the seeded
    budget subset chosen from them; the image size checked against the dataset's; then pass 2 reads,
    decodes, checks and encodes the chosen images only (`streaming.encode_in_order`), all before anything
    is written. When a label, budget or size check fails, every image is read and checked first and an
    unreadable one is what the error names, as when whole inputs were decoded before any other check."""
    model = request.model
    try:
        shape = listing.image_shape(request.limits.max_image_pixels)
        if listing.shape is None:  # image files: N x H x W x C from the first image's header
            check_decoded_bytes(len(listing), shape, request.limits.max_decoded_bytes, listing.where)
        try:
            labels = check_labels(listing.labels, len(request.class_names), model=model, source=where)
            order = select_for_budget(labels, request.budget, seed=derive_seed(request.seed, "subset"),
                                      allow_shortfall=spec.allow_shortfall, model=model, source=where)
            size = conformed_size(shape, listing.dtype, request.image_shape, resize_filter=spec.resize, model=model,
                                  source=where)
        except InputError:
            check_every_image(listing, shape, request.limits.max_image_pixels)  # an unreadable image is reported first
            raise
        transcode = Transcode(shape, request.limits.max_image_pixels, size, spec.resize)
        return encode_in_order(dataclasses.replace(listing, labels=labels), order, transcode, what=f"model {model}")
    except InputError as exc:
        raise exc.for_model(model) from None


def _tree(name: str, request: DrawRequest) -> FileTree:
    try:
        return request.files.tree(name)
    except FileNotFoundError:
        raise InputError("no such file or folder", model=request.model, source=name) from None


def read_npz(file: IO[bytes], source: str, model: str, *, max_decoded_bytes: int) -> Listing:
    """ADM / guided-diffusion `sample.py` output: arr_0 uint8 (N, H, W, C), arr_1 int labels (N,).

    Each array's shape is read from its .npy header first: one larger than max_decoded_bytes, or
    larger than its archive member holds, is an error before numpy allocates it. The labels are read
    now; the images later, a slice at a time, of the chosen rows only (stored or deflated members alike)."""
    try:
        if file.read(6) == b"\x93NUMPY":
            raise InputError("not an npz archive (np.load gives a ndarray); expected arr_0 images "
                             "and arr_1 labels as np.savez writes them", model=model, source=source)
        file.seek(0)
        archive = zipfile.ZipFile(file)
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        if "arr_0" not in members:
            raise InputError(f"no arr_0 (images) in the npz; it holds {sorted(members)}", model=model, source=source)
        if "arr_1" not in members:
            raise InputError("no arr_1 (labels) in the npz: was it sampled class-conditionally?", model=model, source=source)
        for key in ("arr_0", "arr_1"):
            _check_npy_header(archive, members[key], max_decoded_bytes, model=model, source=source)
        with archive.open(members["arr_1"]) as f:
            labels = np.lib.format.read_array(f, allow_pickle=False)
        with archive.open(members["arr_0"]) as f:
            shape, fortran_order, dtype, header_bytes = _npy_header(f)
    except InputError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise InputError(f"truncated or corrupt npz ({type(exc).__name__}: {exc})", model=model, source=source) from None
    if len(shape) != 4:
        raise InputError(f"arr_0 has shape {shape}, expected (N, H, W, C)", model=model, source=source)
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        raise InputError(f"arr_0 has shape {shape}, which looks (N, C, H, W); expected (N, H, W, C)",
                         model=model, source=source)
    if shape[0] != len(labels):
        raise InputError(f"arr_0 has {shape[0]} images but arr_1 {len(labels)} labels", model=model, source=source)

    def chunks(indices: np.ndarray) -> Iterator[ImageChunk]:
        try:
            with archive.open(members["arr_0"]) as f:
                if fortran_order:  # rare (np.save of a Fortran-ordered array): no row is contiguous, read it whole
                    yield from array_chunks(np.lib.format.read_array(f, allow_pickle=False), indices)
                    return
                yield from _npy_rows(f, header_bytes, shape, dtype, indices)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise InputError(f"truncated or corrupt npz ({type(exc).__name__}: {exc})", model=model, source=source) from None

    return Listing(source, labels, chunks, shape=tuple(int(d) for d in shape[1:]), dtype=dtype)


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) from the start of a .npy stream."""
    version = np.lib.format.read_magic(f)
    shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
    return shape, fortran_order, dtype, f.tell()


def _npy_rows(f: IO[bytes], header_bytes: int, shape: tuple[int, ...], dtype: np.dtype,
              indices: np.ndarray) -> Iterator[ImageChunk]:
    """Rows of a C-ordered .npy stream at sorted indices, CHUNK source rows read at a time (seeking forward only)."""
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    k = 0
    while k < len(indices):
        first = int(indices[k])
        block = indices[k : np.searchsorted(indices, first + CHUNK)]
        span = int(block[-1]) - first + 1
        f.seek(header_bytes + first * row_bytes)
        data = f.read(span * row_bytes)
        if len(data) != span * row_bytes:
            raise EOFError(f"arr_0 ends within row {first + len(data) // row_bytes}")
        rows = np.frombuffer(data, dtype=dtype).reshape(span, *shape[1:])
        yield rows[block - first], []
        k += len(block)


def _check_npy_header(archive: zipfile.ZipFile, member: str, max_bytes: int, *, model: str, source: str) -> None:
    """The array an npz member declares (shape and dtype in its .npy header), checked before it is read."""
    info = archive.getinfo(member if member in archive.namelist() else member.removesuffix(".npy"))
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
        header_bytes = f.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    name = member.removesuffix(".npy")
    if nbytes > max_bytes:
        raise InputError(f"{name} declares shape {shape} of {dtype} ({nbytes} bytes), more than limits.max_decoded_bytes "
                         f"({max_bytes}); refused before reading it", model=model, source=source)
    if nbytes > info.file_size - header_bytes:
        raise InputError(f"{name} declares shape {shape} of {dtype} ({nbytes} bytes) but the archive holds "
                         f"{info.file_size - header_bytes} bytes of it: truncated or corrupt npz", model=model, source=source)


def match_class_folders(folders: Iterable[str], class_names: tuple[str, ...], *, model: str, source: str) -> dict[str, int]:
    """Folder name -> class index, by the dataset's class name, or by index for integer names ('3', '003')."""
    index = {name: i for i, name in enumerate(class_names)}
    mapping, unknown = {}, []
    for folder in sorted(set(folders)):
        if folder in index:
            mapping[folder] = index[folder]
        elif folder.isdigit() and int(folder) < len(class_names):
            mapping[folder] = int(folder)
        else:
            unknown.append(folder)
    if unknown:
        raise InputError(f"folder(s) {', '.join(unknown[:5])} match no class of the dataset "
                         f"({', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''})", model=model, source=source)
    claimed: dict[int, str] = {}
    for folder, c in mapping.items():
        if c in claimed:
            raise InputError(f"folders {claimed[c]} and {folder} both map to class {c} ({class_names[c]})", model=model, source=source)
        claimed[c] = folder
    return mapping


def read_class_folders(tree: FileTree, class_names: tuple[str, ...], model: str) -> Listing:
    """<root>/<class>/<image>: one subfolder per class, matched to the dataset's class names."""
    files = [p for p in tree.paths() if "/" in p and p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
    if not files:
        raise InputError("no images in class subfolders", model=model, source=tree.name)
    mapping = match_class_folders((p.split("/", 1)[0] for p in files), class_names, model=model, source=tree.name)
    labels = np.array([mapping[p.split("/", 1)[0]] for p in files], dtype=np.int64)
    return tree_listing(tree, files, labels)


def read_dataset_json(tree: FileTree, model: str) -> Listing:
    """StyleGAN2-ADA / EDM layout: dataset.json {"labels": [[relative_path, int], ...]} beside the images."""
    paths = set(tree.paths())
    if "dataset.json" not in paths:
        raise InputError("no dataset.json at the top level", model=model, source=tree.name)
    try:
        entries = json.loads(tree.read("dataset.json"))["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"dataset.json is not {{\"labels\": [[path, int], ...]}} ({exc})", model=model, source=tree.name) from None
    if not entries:
        raise InputError("dataset.json has no labels (an unconditional model?)", model=model, source=tree.name)
    files, labels = [], []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], int)):
            raise InputError(f"dataset.json entry {str(entry)[:80]} is not [path, int]", model=model, source=tree.name)
        if entry[0] not in paths:
            raise InputError(f"dataset.json lists {entry[0]}, which is not in the archive", model=model, source=tree.name)
        files.append(entry[0])
        labels.append(entry[1])
    return tree_listing(tree, files, np.array(labels, dtype=np.int64))


def read_webdataset(samples: Callable[[], Iterable[tuple[str, dict[str, bytes]]]], source: str, model: str) -> Listing:
    """WebDataset samples with `.cls` and one image extension each; `samples()` streams them from the start
    (it is called once for the labels and once more for the chosen images)."""
    labels, first = [], None
    for label, blob, where in _labelled(samples(), source, model):
        labels.append(label)
        first = first or (blob, where)
    if first is None:
        raise InputError("no samples in the shards", model=model, source=source)

    def images() -> Iterator[tuple[bytes, str]]:
        for i, (label, blob, where) in enumerate(_labelled(samples(), source, model)):
            if i >= len(labels) or label != labels[i]:
                raise InputError("the shards changed while being read", model=model, source=where)
            yield blob, where

    return Listing(source, np.array(labels, dtype=np.int64), lambda indices: picked_chunks(images(), indices),
                   first=lambda: first)


def _labelled(samples: Iterable[tuple[str, dict[str, bytes]]], source: str, model: str) -> Iterator[tuple[int, bytes, str]]:
    """(label, image file, name) per WebDataset sample, each checked for one image and an integer `.cls`."""
    for key, parts in samples:
        where = f"{source} key {key}"
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
        if image_ext is None:
            raise InputError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) in sample; it has {sorted(parts)}", model=model, source=where)
        if "cls" not in parts:
            raise InputError("no .cls label in sample", model=model, source=where)
        try:
            label = int(parts["cls"].decode().strip())
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"label {parts['cls'][:20]!r} is not an integer", model=model, source=where) from None
        yield label, parts[image_ext], where
