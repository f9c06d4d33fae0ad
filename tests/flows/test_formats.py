"""Bring your own model: each generator kind on digits, and a table of bad inputs.

Inputs are built from the real digits train split (8x8 grey, classes "0".."9"),
so the accuracies mean something. Everything runs through `flows.steps`
without Prefect; the flow-level isolation is in test_pipeline.py. Each bad
input runs beside good models and must fail alone: an InputError whose
message names the model, the file (or shard, or batch) and the problem, and
a store left exactly as it was (the good models' artifacts byte for byte,
nothing at all for the bad one).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import shutil
import struct
import sys
import textwrap
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset
from PIL import Image

from casflow.flows import records, steps
from casflow.storage import sources
from casflow.tasks.classifiers import training
from casflow.tasks.datasets import LabeledImages, digits_splits
from casflow.tasks.errors import InputError
from casflow.tasks.generators import files
from casflow.tasks.images import encode_png
from casflow.tasks.limits import Limits
from casflow.tasks.results import RunInfo, per_class_rows
from helpers import write_config

GOOD = {"name": "gauss", "generator": {"kind": "gaussian", "components": 16}}
GENS = "casflow_formats_gens"  # the test's Python generators (written below)
BROKEN = "casflow_formats_broken"  # a module that raises at import
ARGPARSE = "casflow_formats_argparse"  # a module that parses the command line at import, and exits
LIMITS = Limits()


# ---------------------------------------------------------------- running the steps, one model failing alone

@dataclasses.dataclass
class Run:
    dataset: records.DatasetRecord
    done: dict[str, records.ModelChain]
    errors: dict[str, BaseException]
    messages: dict[str, str]  # what the flow reports for each failed model


def run_models(config_path: Path) -> Run:
    """Every model of the config through the steps; a model's failure stops that model only, as in the flow."""
    config = steps.read_config(str(config_path))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    run = Run(dataset, {}, {}, {})
    for model in config.all_models:
        try:
            samples = steps.draw_samples(config, store, model, dataset, "cpu")
            classifier = steps.train_classifier(config, store, samples, dataset, "cpu", config.seed)
            evaluation = steps.evaluate_classifier(config, store, classifier, dataset, "cpu")
        except Exception as exc:
            run.errors[model.name] = exc
            run.messages[model.name] = steps.describe_failure(model.name, exc)
            continue
        run.done[model.name] = records.ModelChain(samples, ((classifier, evaluation),))
    return run


def snapshot(root: Path) -> dict[str, str]:
    """Every file below a store, with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- writing inputs in each format

def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_class_folders(root: Path, images: np.ndarray, labels: np.ndarray, ext: str = "png") -> Path:
    """<root>/<class name>/<index>.<ext>, as torchvision's ImageFolder reads."""
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / str(label) / f"{i:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[:, :, 0]).save(path)
    return root


def dataset_json_files(images: np.ndarray, labels: np.ndarray) -> dict[str, bytes]:
    """StyleGAN2-ADA's dataset_tool layout: 00000/img00000000.png ... and dataset.json."""
    paths = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    out = {p: encode_png(image) for p, image in zip(paths, images)}
    out["dataset.json"] = json.dumps({"labels": [[p, int(label)] for p, label in zip(paths, labels)]}).encode()
    return out


def write_tree(root: Path, contents: dict[str, bytes]) -> Path:
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, contents: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def write_shards(root: Path, shards: list[list[dict]]) -> Path:
    """Shards written by the webdataset package's TarWriter (its default encoders: arrays to jpg/png, int cls to text)."""
    root.mkdir(parents=True, exist_ok=True)
    for n, samples in enumerate(shards):
        with webdataset.TarWriter(str(root / f"shard-{n:06d}.tar")) as writer:
            for sample in samples:
                writer.write(sample)
    return root


def wds_samples(images: np.ndarray, labels: np.ndarray, ext: str, start: int = 0) -> list[dict]:
    return [{"__key__": f"sample{start + i:06d}", ext: image[:, :, 0], "cls": int(label)}
            for i, (image, label) in enumerate(zip(images, labels))]


def shifted(images: np.ndarray, pixels: int) -> np.ndarray:
    """Images moved right by a pixel or so: more digits of the same kind, for a surplus."""
    return np.roll(images, pixels, axis=2)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def train() -> LabeledImages:
    return digits_splits(0.2, 0)[0]


@pytest.fixture(scope="module", autouse=True)
def user_modules(tmp_path_factory):
    """The Python generators of the table on sys.path for this module."""
    root = tmp_path_factory.mktemp("user-modules")
    (root / f"{GENS}.py").write_text(textwrap.dedent("""
        import numpy as np

        class Sampler:
            def __init__(self, fault):
                self.fault = fault
                if fault == "classes":
                    self.num_classes = 5

            def sample(self, labels, seed):
                rng = np.random.default_rng(seed)
                side = 16 if self.fault == "size" else 8
                x = rng.random((len(labels), side, side, 1), dtype=np.float32)  # NHWC in [0, 1]
                if self.fault == "raises":
                    raise RuntimeError("CUDA out of memory")
                if self.fault == "nan":
                    x[3, 2, 1, 0] = np.nan
                if self.fault == "inf":
                    x[-1, 0, 0, 0] = -np.inf
                if self.fault == "range":
                    x = x * 2
                if self.fault == "count":
                    x = x[:-1]
                if self.fault == "list":
                    return x.tolist()
                if self.fault == "exit":
                    import sys
                    sys.exit(3)
                return x

        def make(checkpoint, device, fault=None):
            if fault == "factory":
                raise RuntimeError("cannot build the network")
            if fault == "factory-exit":
                raise SystemExit("bad flag")
            return Sampler(fault)

        def no_sample(checkpoint, device):
            return object()
    """))
    (root / f"{BROKEN}.py").write_text("import a_package_that_is_not_installed\n")
    (root / f"{ARGPARSE}.py").write_text(textwrap.dedent("""
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--checkpoint-dir", required=True)
        args = parser.parse_args()  # at import: what a training script does

        def make(checkpoint, device):
            raise AssertionError("never reached")
    """))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop(GENS, None)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Run]:
    """A store with the dataset, the real baseline and the good model committed."""
    directory = tmp_path_factory.mktemp("template")
    run = run_models(write_config(directory, [GOOD]))
    assert not run.errors
    return directory / "store", run


@pytest.fixture(scope="module")
def good_store(template, tmp_path_factory) -> Path:
    """One store for the good-path tests: the baseline is trained once."""
    store = tmp_path_factory.mktemp("good") / "store"
    shutil.copytree(template[0], store)
    return store


# ---------------------------------------------------------------- one good path per kind

def good_python(root: Path, train: LabeledImages) -> dict:
    from examples.class_means import fit_digits

    root.mkdir(parents=True)
    torch.save(fit_digits(), root / "class_means.pt")
    return {"kind": "python", "entry_point": "examples.class_means:make_sampler", "checkpoint": str(root / "class_means.pt"),
            "output_range": "-1..1", "layout": "NCHW", "options": {"noise": 0.5}, "batch_size": 200}


def good_npz(root: Path, train: LabeledImages) -> dict:
    # twice the budget (the digits and the digits moved by a pixel): a seeded subset is taken
    images = np.concatenate([train.images, shifted(train.images, 1)])
    labels = np.concatenate([train.labels, train.labels])
    return {"kind": "npz", "path": str(write_npz(root / "samples.npz", arr_0=images, arr_1=labels))}


def good_imagefolder(root: Path, train: LabeledImages) -> dict:
    return {"kind": "imagefolder", "path": str(write_class_folders(root / "folders", train.images, train.labels))}


def good_dataset_json_zip(root: Path, train: LabeledImages) -> dict:
    return {"kind": "dataset-json", "path": str(write_zip(root / "samples.zip", dataset_json_files(train.images, train.labels)))}


def good_dataset_json_folder(root: Path, train: LabeledImages) -> dict:
    return {"kind": "dataset-json", "path": str(write_tree(root / "samples", dataset_json_files(train.images, train.labels)))}


def good_webdataset(root: Path, train: LabeledImages) -> dict:
    half = len(train.labels) // 2  # one shard of JPEGs, one of PNGs
    shards = [wds_samples(train.images[:half], train.labels[:half], "jpg"),
              wds_samples(train.images[half:], train.labels[half:], "png", start=half)]
    return {"kind": "webdataset", "url": str(write_shards(root / "shards", shards))}


GOOD_PATHS: dict[str, tuple[Callable[[Path, LabeledImages], dict], float]] = {
    # kind: (input builder, least top-1 on the real eval split; real data scores about 0.94 with this classifier)
    "python": (good_python, 0.75),  # class means plus independent pixel noise: a weak but real model
    "npz": (good_npz, 0.85),
    "imagefolder": (good_imagefolder, 0.85),
    "dataset-json-zip": (good_dataset_json_zip, 0.85),
    "dataset-json-folder": (good_dataset_json_folder, 0.85),
    "webdataset": (good_webdataset, 0.85),
}


@pytest.mark.parametrize("kind", GOOD_PATHS)
def test_good_path(kind, good_store, train, tmp_path):
    build, least_top1 = GOOD_PATHS[kind]
    generator = build(tmp_path / "in", train)
    run = run_models(write_config(tmp_path, [{"name": "mine", "generator": generator}], store_url=str(good_store)))
    assert not run.errors, run.messages
    samples, evaluation = run.done["mine"].samples, run.done["mine"].evaluations[0]
    assert not samples.cached
    assert samples.shard_set.count_per_class == run.dataset.train.count_per_class  # the CAS budget, class by class
    assert evaluation.counts.top1 >= least_top1, evaluation.counts.top1
    assert evaluation.counts.top1 <= run.done["real"].evaluations[0].counts.top1 + 0.03

    # the same content at another path: the same fingerprint, a cache hit
    field = {"python": "checkpoint", "webdataset": "url"}.get(generator["kind"], "path")
    moved = tmp_path / "elsewhere" / Path(generator[field]).name
    moved.parent.mkdir()
    shutil.move(generator[field], moved)
    config = steps.read_config(str(write_config(tmp_path, [{"name": "renamed", "generator": generator | {field: str(moved)}}],
                                                name="moved.yaml", store_url=str(good_store))))
    store = steps.open_store(config.store)
    again = steps.draw_samples(config, store, config.models[0], steps.prepare_dataset(config, store), "cpu")
    assert again.cached and again.shard_set.fingerprint == samples.shard_set.fingerprint


def test_class_folders_match_by_name_not_order():
    names = ("zebra", "ant", "cat")
    assert files.match_class_folders(["ant", "cat", "zebra"], names, model="m", source="s") == {"zebra": 0, "ant": 1, "cat": 2}
    assert files.match_class_folders(["001", "2"], names, model="m", source="s") == {"001": 1, "2": 2}  # integer names: indices


def test_webdataset_folder_finds_shards_in_subfolders(tmp_path, train):
    root = tmp_path / "shards"
    write_shards(root / "part-a", [wds_samples(train.images[:3], train.labels[:3], "png")])
    write_shards(root / "part-b", [wds_samples(train.images[3:5], train.labels[3:5], "jpg", start=3)])
    user_files = sources.Files(max_file_bytes=LIMITS.max_file_bytes, max_files=LIMITS.max_files)
    urls = user_files.tar_names(str(root))
    assert urls == [f"{root}/part-a/shard-000000.tar", f"{root}/part-b/shard-000000.tar"]
    listing = files.read_webdataset(lambda: user_files.iter_webdataset(urls), str(root), "m")
    assert list(listing.labels) == list(train.labels[:5])
    images = [images for images, _ in listing.chunks(np.arange(5))][0]
    assert len(images) == 5 and images[0][:4] == b"\x89PNG"


def test_resize_on_request(tmp_path, good_store, train):
    big = np.repeat(np.repeat(train.images, 2, axis=1), 2, axis=2)  # 16x16
    generator = {"kind": "npz", "path": str(write_npz(tmp_path / "big.npz", arr_0=big, arr_1=train.labels)), "resize": "box"}
    run = run_models(write_config(tmp_path, [{"name": "big", "generator": generator}], store_url=str(good_store)))
    assert not run.errors, run.messages
    samples, evaluation = run.done["big"].samples, run.done["big"].evaluations[0]
    assert samples.shard_set.image_shape == (8, 8, 1)
    assert evaluation.counts.top1 >= 0.85


def test_allow_shortfall_shows_in_n_train(tmp_path, good_store, train):
    keep = without_class(5, keep=40)(train)  # class 5: 40 samples of its budget of 146
    generator = {"kind": "npz", "path": str(write_npz(tmp_path / "short.npz", arr_0=train.images[keep], arr_1=train.labels[keep])),
                 "allow_shortfall": True}
    config_path = write_config(tmp_path, [{"name": "short", "generator": generator}], store_url=str(good_store))
    run = run_models(config_path)
    assert not run.errors, run.messages
    expected = [40 if c == 5 else n for c, n in enumerate(run.dataset.train.count_per_class)]
    samples = run.done["short"].samples
    assert list(samples.shard_set.count_per_class) == expected
    model = steps.read_config(str(config_path)).models[0]
    rows = per_class_rows(_run_info(run), steps.outcome(model, run.done["short"], error=None))
    assert [row["n_train"] for row in rows] == expected  # the shortfall shows in the results


# ---------------------------------------------------------------- bad inputs, each beside good models

@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    build: Callable[[Path, LabeledImages], tuple[dict, str]]  # -> (generator, what the message must name as the place)
    problem: tuple[str, ...]  # words the message must contain
    limits: dict | None = None  # the config's `limits:` for this run (small ones, to test with small files)


def npz_of(images_fn=lambda t: t.images, labels_fn=lambda t: t.labels, **extra) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        path = write_npz(root / "bad.npz", arr_0=images_fn(train), arr_1=labels_fn(train))
        return {"kind": "npz", "path": str(path), **extra}, "bad.npz"
    return build


def without_class(c: int, keep: int = 0) -> Callable:
    def mask(train: LabeledImages) -> np.ndarray:
        return (train.labels != c) | (np.cumsum(train.labels == c) <= keep)
    return mask


def npz_truncated(root, train):
    path = write_npz(root / "bad.npz", arr_0=train.images, arr_1=train.labels)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return {"kind": "npz", "path": str(path)}, "bad.npz"


def npz_unconditional(root, train):
    return {"kind": "npz", "path": str(write_npz(root / "bad.npz", arr_0=train.images))}, "bad.npz"


def npz_is_npy(root, train):
    root.mkdir(parents=True)
    with open(root / "bad.npz", "wb") as f:
        np.save(f, train.images)  # one array, not an archive
    return {"kind": "npz", "path": str(root / "bad.npz")}, "bad.npz"


def npz_missing(root, train):
    return {"kind": "npz", "path": str(root / "bad.npz")}, "bad.npz"


def folders(edit: Callable[[Path, LabeledImages], str]) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        tree = write_class_folders(root / "bad_folders", train.images, train.labels)
        return {"kind": "imagefolder", "path": str(tree)}, edit(tree, train)
    return build


def first_file(tree: Path, class_name: str) -> Path:
    return sorted((tree / class_name).iterdir())[0]


def add_cat_folder(tree, train):
    write_class_folders(tree / "cat", train.images[:1], np.array([0]))  # cat/0/00000.png: the folder is cat
    return "bad_folders"


def corrupt_image(tree, train):
    path = first_file(tree, "3")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return f"3/{path.name}"


def drop_class_folder(tree, train):
    shutil.rmtree(tree / "7")
    return "bad_folders"


def odd_size_image(tree, train):
    path = first_file(tree, "4")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(path)
    return f"4/{path.name}"


def transparent_image(tree, train):
    path = first_file(tree, "2")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(path)
    return f"2/{path.name}"


def dataset_json(edit: Callable[[dict[str, bytes]], dict[str, bytes]], as_zip: bool = True) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        contents = edit(dataset_json_files(train.images, train.labels))
        path = write_zip(root / "bad.zip", contents) if as_zip else write_tree(root / "bad_dataset", contents)
        return {"kind": "dataset-json", "path": str(path)}, path.name
    return build


def labels_json(contents: dict[str, bytes], labels) -> dict[str, bytes]:
    return contents | {"dataset.json": json.dumps({"labels": labels}).encode()}


def list_missing_image(contents):
    entries = json.loads(contents["dataset.json"])["labels"]
    return labels_json(contents, entries + [["00001/img99999999.png", 3]])


def label_twelve(contents):
    entries = json.loads(contents["dataset.json"])["labels"]
    entries[10][1] = 12
    return labels_json(contents, entries)


def zip_truncated(root, train):
    path = write_zip(root / "bad.zip", dataset_json_files(train.images, train.labels))
    path.write_bytes(path.read_bytes()[:5000])
    return {"kind": "dataset-json", "path": str(path)}, "bad.zip"


def zip_bad_crc(root, train):
    path = write_zip(root / "bad.zip", dataset_json_files(train.images, train.labels))
    data = bytearray(path.read_bytes())
    offset = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("00000/img00000005.png").header_offset
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])  # from the local file header
    data[offset + 30 + name_length + extra_length + 30] ^= 0xFF  # a flipped byte inside the stored PNG
    path.write_bytes(bytes(data))
    return {"kind": "dataset-json", "path": str(path)}, "00000/img00000005.png"


def shards(edit: Callable[[list[list[dict]]], tuple[list[list[dict]], str]]) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        half = len(train.labels) // 2
        samples = [wds_samples(train.images[:half], train.labels[:half], "png"),
                   wds_samples(train.images[half:], train.labels[half:], "jpg", start=half)]
        samples, where = edit(samples)
        return {"kind": "webdataset", "url": str(write_shards(root / "bad_shards", samples))}, where
    return build


def shard_keys_repeat(samples):
    samples[1][7]["__key__"] = samples[0][3]["__key__"]
    return samples, "shard-000001.tar"


def shard_bad_png(samples):
    samples[0][3] = {"__key__": samples[0][3]["__key__"], "png": b"\x89PNG\r\n\x1a\nnot really", "cls": 1}
    return samples, f"shard-000000.tar:{samples[0][3]['__key__']}"


def shard_no_cls(samples):
    del samples[1][2]["cls"]
    return samples, f"shard-000001.tar:{samples[1][2]['__key__']}"


def shard_text_cls(samples):
    samples[0][9]["cls"] = b"three"
    return samples, f"shard-000000.tar:{samples[0][9]['__key__']}"


def shard_cls_ten(samples):
    samples[1][0]["cls"] = 10
    return samples, "bad_shards"


def wds_truncated(root, train):
    url = shards(lambda s: (s, ""))(root, train)[0]["url"]
    shard = Path(url) / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return {"kind": "webdataset", "url": url}, "shard-000001.tar"


def wds_missing_shard(root, train):
    url = shards(lambda s: (s, ""))(root, train)[0]["url"]
    return {"kind": "webdataset", "url": f"{url}/shard-{{000000..000002}}.tar"}, "shard-000002.tar"


def python(fault: str | None = None, entry: str = f"{GENS}:make", where: str = "sample() batch 0", **extra) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        options = {"fault": fault} if fault else {}
        return {"kind": "python", "entry_point": entry, "output_range": "0..1", "options": options, **extra}, where
    return build


def python_checkpoint(write: Callable[[Path], None]) -> Callable:
    def build(root: Path, train: LabeledImages) -> tuple[dict, str]:
        root.mkdir(parents=True)
        write(root / "weights.pt")
        generator = {"kind": "python", "entry_point": f"{GENS}:make", "output_range": "0..1", "checkpoint": str(root / "weights.pt")}
        return generator, "weights.pt"
    return build


def unsafe_pickle(path: Path) -> None:
    torch.save({"weights": torch.zeros(3), "args": argparse.Namespace(lr=0.1)}, path)  # a pickled class


class RunsACommand:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def malicious_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"weights": [0.0], "payload": RunsACommand()}))  # a plain pickle, protocol 5


# ---------------------------------------------------------------- small inputs that declare huge reads

def bomb_png(path: Path, height: int, width: int) -> Path:
    """A grey PNG of height x width zeros, a few KB on disk, written row by row (never whole in memory)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def bomb_in_folder(tree, train):
    path = first_file(tree, "6")
    bomb_png(path, 5000, 5000)  # 25 million pixels, 25 KB on disk
    return f"6/{path.name}"


def fifo_in_folder(tree, train):
    import os

    os.mkfifo(tree / "1" / "stream.png")  # reading it waits for a writer that never comes
    return "1/stream.png"


def dev_zero_in_folder(tree, train):
    (tree / "8" / "zero.png").symlink_to("/dev/zero")  # never ends
    return "8/zero.png"


def npz_fifo(root, train):
    import os

    root.mkdir(parents=True)
    os.mkfifo(root / "bad.npz")
    return {"kind": "npz", "path": str(root / "bad.npz")}, "bad.npz"


def npz_compressed_bomb(root, train):
    root.mkdir(parents=True)
    np.savez_compressed(root / "bad.npz", arr_0=np.zeros((2000, 64, 64, 3), np.uint8), arr_1=np.zeros(2000, np.int64))
    return {"kind": "npz", "path": str(root / "bad.npz")}, "bad.npz"  # 24.6 MB of zeros in 25 KB


def npz_lying_header(root, train):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 8, 8, 1)})
    buffer.write(train.images.tobytes())  # 1,438 images, not a million
    labels = io.BytesIO()
    np.save(labels, train.labels)
    return {"kind": "npz", "path": str(write_zip(root / "bad.npz", {"arr_0.npy": buffer.getvalue(),
                                                                     "arr_1.npy": labels.getvalue()}))}, "bad.npz"


def zip_bomb_member(root, train):
    path = root / "bad.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in dataset_json_files(train.images, train.labels).items():
            archive.writestr(name, b"\0" * 50_000_000 if name == "00000/img00000005.png" else data)
    return {"kind": "dataset-json", "path": str(path)}, "00000/img00000005.png"


def wds_billion_shards(root, train):
    url = shards(lambda s: (s, ""))(root, train)[0]["url"]
    return {"kind": "webdataset", "url": f"{url}/shard-{{000000000..999999999}}.tar"}, "shard-{000000000..999999999}.tar"


def python_checkpoint_symlink(target: str) -> Callable:
    return python_checkpoint(lambda p: p.symlink_to(target))


BAD = [
    # npz (ADM / guided-diffusion)
    Bad("npz-16px", npz_of(lambda t: np.repeat(np.repeat(t.images, 2, 1), 2, 2)), ("16x16, the dataset's are 8x8", "resize")),
    Bad("npz-rgb", npz_of(lambda t: np.repeat(t.images, 3, 3)), ("3 channels, the dataset has 1",)),
    Bad("npz-float", npz_of(lambda t: t.images.astype(np.float32) / 255), ("expected uint8 images, got dtype float32",)),
    Bad("npz-nchw", npz_of(lambda t: t.images.transpose(0, 3, 1, 2)), ("looks (N, C, H, W); expected (N, H, W, C)",)),
    Bad("npz-label-10", npz_of(labels_fn=lambda t: np.where(np.arange(len(t.labels)) == 5, 10, t.labels)),
        ("label 10 outside the dataset's 10 classes",)),
    Bad("npz-float-labels", npz_of(labels_fn=lambda t: t.labels.astype(np.float64)), ("labels must be integers",)),
    Bad("npz-class-missing", npz_of(lambda t: t.images[without_class(3)(t)], lambda t: t.labels[without_class(3)(t)]),
        ("too few samples: class 3 has 0 of 146", "allow_shortfall")),
    Bad("npz-class-short", npz_of(lambda t: t.images[without_class(5, 40)(t)], lambda t: t.labels[without_class(5, 40)(t)]),
        ("too few samples: class 5 has 40 of 146",)),
    Bad("npz-more-labels", npz_of(labels_fn=lambda t: np.append(t.labels, 0)), ("arr_0 has 1438 images but arr_1 1439 labels",)),
    Bad("npz-truncated", npz_truncated, ("truncated or corrupt npz",)),
    Bad("npz-unconditional", npz_unconditional, ("no arr_1 (labels)",)),
    Bad("npz-is-npy", npz_is_npy, ("not an npz archive",)),
    Bad("npz-missing", npz_missing, ("no such file or folder",)),
    # ImageFolder
    Bad("folder-no-such-class", folders(add_cat_folder), ("folder(s) cat match no class of the dataset",)),
    Bad("folder-corrupt-image", folders(corrupt_image), ("corrupt or unreadable image",)),
    Bad("folder-class-missing", folders(drop_class_folder), ("too few samples: class 7 has 0 of",)),
    Bad("folder-odd-size", folders(odd_size_image), ("image is 9x9 with 1 channel, the first image is 8x8",)),
    Bad("folder-transparent", folders(transparent_image), ("transparent pixels",)),
    # dataset.json (StyleGAN2-ADA, EDM)
    Bad("json-truncated-zip", zip_truncated, ("truncated or corrupt zip",)),
    Bad("json-bad-crc", zip_bad_crc, ("bad.zip", "fails its CRC check")),
    Bad("json-path-missing", dataset_json(list_missing_image), ("lists 00001/img99999999.png, which is not in the archive",)),
    Bad("json-null-labels", dataset_json(lambda c: labels_json(c, None)), ("no labels (an unconditional model?)",)),
    Bad("json-null-label", dataset_json(lambda c: labels_json(c, [["00000/img00000000.png", None]])), ("is not [path, int]",)),
    Bad("json-absent", dataset_json(lambda c: {k: v for k, v in c.items() if k != "dataset.json"}), ("no dataset.json",)),
    Bad("json-label-12-folder", dataset_json(label_twelve, as_zip=False), ("label 12 outside the dataset's 10 classes",)),
    # WebDataset shards
    Bad("wds-duplicate-key", shards(shard_keys_repeat), ("duplicate key sample000003",)),
    Bad("wds-corrupt-image", shards(shard_bad_png), ("corrupt or unreadable image",)),
    Bad("wds-no-cls", shards(shard_no_cls), ("no .cls label",)),
    Bad("wds-text-cls", shards(shard_text_cls), ("label b'three' is not an integer",)),
    Bad("wds-label-10", shards(shard_cls_ten), ("label 10 outside the dataset's 10 classes",)),
    Bad("wds-truncated", wds_truncated, ("truncated tar file", "samples after it are missing")),
    Bad("wds-missing-shard", wds_missing_shard, ("no such shard",)),
    # Python entry points
    Bad("py-import-error", python(entry=f"{BROKEN}:make", where=f"{BROKEN}:make"),
        ("cannot import", "ModuleNotFoundError", "a_package_that_is_not_installed")),
    Bad("py-no-factory", python(entry=f"{GENS}:nope", where=f"{GENS}:nope"), ("has no callable 'nope'",)),
    Bad("py-factory-raises", python("factory", where=f"{GENS}:make"), ("raised RuntimeError: cannot build the network",)),
    Bad("py-factory-exits", python("factory-exit", where=f"{GENS}:make"), ("raised SystemExit", "sys.exit('bad flag')")),
    Bad("py-sample-exits", python("exit"), ("sample() raised SystemExit", "sys.exit(3)")),
    Bad("py-argparse-at-import", python(entry=f"{ARGPARSE}:make", where=f"{ARGPARSE}:make"),
        ("cannot import", "SystemExit", "sys.exit(2)")),
    Bad("py-no-sample", python(entry=f"{GENS}:no_sample", where=f"{GENS}:no_sample"),
        ("returned object, which has no sample(labels, seed)",)),
    Bad("py-sample-raises", python("raises"), ("sample() raised RuntimeError: CUDA out of memory",)),
    Bad("py-wrong-count", python("count"), ("sample() returned 255 images for 256 labels",)),
    Bad("py-nan", python("nan"), ("1 NaN values",)),
    Bad("py-inf", python("inf"), ("1 infinite values",)),
    Bad("py-out-of-range", python("range"), ("outside the declared output_range 0..1",)),
    Bad("py-float-as-uint8", python(output_range="uint8"), ("expected uint8 images (output_range: uint8), got dtype float32",)),
    Bad("py-nhwc-as-nchw", python(layout="NCHW"), ("(256, 8, 8, 1), which looks NHWC, but the config declares layout: NCHW",)),
    Bad("py-16px", python("size"), ("16x16, the dataset's are 8x8",)),
    Bad("py-list", python("list"), ("sample() returned list, expected a numpy array or torch tensor",)),
    Bad("py-class-count", python("classes", where=f"{GENS}:make"), ("5 classes, the dataset has 10",)),
    Bad("py-unreadable-checkpoint", python_checkpoint(lambda p: p.write_bytes(b"PK\x03\x04 half a zip")), ("unreadable checkpoint",)),
    Bad("py-unsafe-checkpoint", python_checkpoint(unsafe_pickle),
        ("checkpoint refused as unsafe", "argparse.Namespace", "set allow_unsafe_checkpoint: true")),
    Bad("py-malicious-checkpoint", python_checkpoint(malicious_pickle),
        ("checkpoint refused as unsafe", "posix.system (os.system)", "set allow_unsafe_checkpoint: true")),
    Bad("py-whole-module-checkpoint", python_checkpoint(lambda p: torch.save(torch.nn.Linear(2, 2), p)),
        ("checkpoint refused as unsafe", "torch.nn.modules.linear.Linear", "set allow_unsafe_checkpoint: true")),
    Bad("py-missing-checkpoint", python_checkpoint(lambda p: None), ("no such file",)),
    # small inputs that declare huge reads, and inputs that never end: refused before reading
    Bad("folder-decompression-bomb", folders(bomb_in_folder),
        ("image is 5000x5000 (25000000 pixels), more than limits.max_image_pixels (16777216); refused before decoding",)),
    Bad("folder-over-decoded-limit", folders(lambda tree, train: "bad_folders"),
        ("1438 images of 8x8 with 1 channel decode to 92032 bytes, more than limits.max_decoded_bytes (50000)",),
        limits={"max_decoded_bytes": 50_000}),
    Bad("folder-fifo", folders(fifo_in_folder), ("not a regular file (a pipe)",)),
    Bad("folder-dev-zero", folders(dev_zero_in_folder), ("not a regular file (a device)",)),
    Bad("folder-too-many-files", folders(lambda tree, train: "bad_folders"), ("1438 files, more than limits.max_files (1000)",),
        limits={"max_files": 1000}),
    Bad("npz-fifo", npz_fifo, ("not a regular file (a pipe)",)),
    Bad("npz-compressed-bomb", npz_compressed_bomb,
        ("arr_0 declares shape (2000, 64, 64, 3) of uint8 (24576000 bytes), more than limits.max_decoded_bytes (10000000)",),
        limits={"max_decoded_bytes": 10_000_000}),
    Bad("npz-lying-header", npz_lying_header, ("arr_0 declares shape (1000000, 8, 8, 1)", "truncated or corrupt npz")),
    Bad("json-zip-bomb", zip_bomb_member,
        ("is 50000000 bytes once extracted, more than limits.max_file_bytes (10000000)",), limits={"max_file_bytes": 10_000_000}),
    Bad("json-too-many-members", dataset_json(lambda c: c), ("1439 archive members, more than limits.max_files (1000)",),
        limits={"max_files": 1000}),
    Bad("wds-billion-shards", wds_billion_shards, ("names 1000000000 shards, more than limits.max_files (10000000)",)),
    Bad("wds-shard-too-large", shards(lambda s: (s, "shard-000000.tar")), ("bytes, more than limits.max_file_bytes (1000000)",),
        limits={"max_file_bytes": 1_000_000}),
    Bad("py-checkpoint-dev-zero", python_checkpoint_symlink("/dev/zero"), ("not a regular file (a device)",)),
    Bad("py-checkpoint-too-large", python_checkpoint(unsafe_pickle), ("bytes, more than limits.max_file_bytes (100)",),
        limits={"max_file_bytes": 100}),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_fails_alone(bad, template, train, tmp_path):
    template_store, template_run = template
    store = tmp_path / "store"
    shutil.copytree(template_store, store)
    before = snapshot(store)
    generator, where = bad.build(tmp_path / "in", train)
    sections = {"limits": bad.limits} if bad.limits else {}
    run = run_models(write_config(tmp_path, [{"name": "bad", "generator": generator}, GOOD], store_url=str(store), **sections))

    assert set(run.errors) == {"bad"}, run.messages
    assert isinstance(run.errors["bad"], InputError), repr(run.errors["bad"])  # bad input: never retried
    message = run.messages["bad"]
    assert message.startswith("model 'bad'"), message
    assert where in message, message
    for words in bad.problem:
        assert words in message, message

    # the good models finished, from their committed artifacts, and the store is as it was:
    # nothing for the bad model (no folder, no manifest), the rest byte for byte
    assert {name: [step.cached for step in chain.steps()] for name, chain in run.done.items()} == {"real": [True] * 3, "gauss": [True] * 3}
    assert run.done["gauss"].evaluations[0].counts == template_run.done["gauss"].evaluations[0].counts
    assert snapshot(store) == before


# ---------------------------------------------------------------- fixing the input, then rerunning

def test_rerun_after_fix_recomputes_that_model_only(tmp_path, train, monkeypatch):
    trained = []
    original = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: trained.append(1) or original(*a, **k))
    labels = train.labels.copy()
    labels[100] = 10
    path = write_npz(tmp_path / "in" / "samples.npz", arr_0=train.images, arr_1=labels)
    config_path = write_config(tmp_path, [{"name": "adm", "generator": {"kind": "npz", "path": str(path)}}, GOOD])

    first = run_models(config_path)
    assert set(first.errors) == {"adm"} and set(first.done) == {"real", "gauss"}
    assert "model 'adm'" in first.messages["adm"] and "samples.npz" in first.messages["adm"]
    assert len(trained) == 2
    config = steps.read_config(str(config_path))
    store = steps.open_store(config.store)
    summary = steps.write_results(store, _run_info(first), _outcomes(config, first), config.baseline.name).summary
    failed = next(row for row in summary if row["model"] == "adm")
    assert failed["status"] == "failed" and "label 10 outside" in failed["error"]
    assert [row["status"] for row in summary if row["model"] != "adm"] == ["ok", "ok"]
    assert len(list((tmp_path / "store" / "samples").iterdir())) == 1  # gauss's; nothing of adm's

    write_npz(path, arr_0=train.images, arr_1=train.labels)  # fixed
    second = run_models(config_path)
    assert not second.errors
    assert {n: [step.cached for step in chain.steps()] for n, chain in second.done.items()} == {
        "real": [True, True, True], "adm": [False, False, False], "gauss": [True, True, True]}
    assert len(trained) == 3  # adm only
    assert second.done["adm"].evaluations[0].counts.top1 > 0.85


def _run_info(run: Run) -> RunInfo:
    return RunInfo("test-run", datetime.now(timezone.utc), None, "digits", run.dataset.fingerprint, run.dataset.class_names,
                   "fast", "f" * 64, 0, (0,))


def _outcomes(config, run: Run) -> list:
    return [steps.outcome(m, run.done[m.name], error=None) if m.name in run.done
            else steps.outcome(m, None, error=run.messages[m.name]) for m in config.all_models]
