"""Inputs read in two passes (labels, then the chosen images on worker processes) give the shards that
decoding each input whole in memory gave, byte for byte, for every file kind and any worker count.

The oracle below is the whole-array path as it was: every image decoded into one array in input order,
the labels checked, the seeded budget subset taken, the images conformed, encoded and sharded.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset

from casflow.flows import shard_data, steps
from casflow.storage import decoded_cache
from casflow.storage.shards import write_shard_set
from casflow.storage.store import Store
from casflow.tasks import parallel
from casflow.tasks.classifiers import training
from casflow.tasks.config import ClassifierConfig
from casflow.tasks.datasets import digits_splits
from casflow.tasks.errors import InputError
from casflow.tasks.fingerprint import derive_seed
from casflow.tasks.images import decode_chunk, encode_png
from casflow.tasks.samples import class_interleaved, conform_images, encode_samples, select_for_budget
from helpers import write_config

SHARD_SIZE = 300


@pytest.fixture(scope="module")
def source():
    """Digits in RGB at 12x12 with a surplus (the digits and the digits moved by a pixel), shuffled:
    the budget subset, the class interleaving and the resize all have work to do."""
    train = digits_splits(0.2, 0)[0]
    images = np.concatenate([train.images, np.roll(train.images, 1, axis=2)])
    images = np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=3)
    images[..., 1] //= 2
    labels = np.concatenate([train.labels, train.labels])
    order = np.random.default_rng(3).permutation(len(labels))
    return images[order], labels[order]


def write_input(kind: str, root: Path, images: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """The input in one format, and the order in which its reader sees the samples."""
    root.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    if kind in ("npz", "npz-compressed"):
        (np.savez if kind == "npz" else np.savez_compressed)(root / "s.npz", arr_0=images, arr_1=labels)
        return {"kind": "npz", "path": str(root / "s.npz")}, np.arange(n)
    if kind == "imagefolder":
        for i in range(n):
            (root / "f" / str(labels[i])).mkdir(parents=True, exist_ok=True)
            (root / "f" / str(labels[i]) / f"{i:06d}.png").write_bytes(encode_png(images[i]))
        return {"kind": "imagefolder", "path": str(root / "f")}, np.array(sorted(range(n), key=lambda i: (str(labels[i]), i)))
    if kind == "dataset-json":
        with zipfile.ZipFile(root / "s.zip", "w") as archive:
            for i in range(n):
                archive.writestr(f"{i // 1000:05d}/img{i:08d}.png", encode_png(images[i]))
            archive.writestr("dataset.json", json.dumps({"labels": [[f"{i // 1000:05d}/img{i:08d}.png", int(labels[i])]
                                                                    for i in range(n)]}))
        return {"kind": "dataset-json", "path": str(root / "s.zip")}, np.arange(n)
    assert kind == "webdataset"
    (root / "wds").mkdir()
    for part in range(2):
        with webdataset.TarWriter(str(root / "wds" / f"shard-{part:06d}.tar")) as writer:
            for i in range(part * n // 2, (part + 1) * n // 2):
                writer.write({"__key__": f"s{i:06d}", "png": encode_png(images[i]), "cls": str(int(labels[i]))})
    return {"kind": "webdataset", "url": str(root / "wds")}, np.arange(n)


def oracle_shards(store: Store, images: np.ndarray, labels: np.ndarray, budget, seed: int, resize: str) -> list[str]:
    """The whole-array path: decode all (PNG round trip is exact), subset, conform, encode, shard."""
    chosen = select_for_budget(labels, budget, seed=derive_seed(seed, "subset"), allow_shortfall=False, model="m", source="s")
    conformed = conform_images(images[chosen], (8, 8, 3), resize_filter=resize, model="m", source="s")
    shard_set = write_shard_set(store, "oracle", encode_samples(conformed, labels[chosen]), shard_size=SHARD_SIZE,
                                fingerprint="0" * 64, fingerprint_inputs={}, class_names=tuple("0123456789"),
                                image_shape=(8, 8, 3), what="oracle")
    return [s.sha256 for s in shard_set.shards]


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "imagefolder", "dataset-json", "webdataset"])
def test_streamed_shards_equal_the_whole_array_path(kind, source, tmp_path, monkeypatch):
    images, labels = source
    generator, seen = write_input(kind, tmp_path / "in", images, labels)
    generator["resize"] = "bicubic"
    # an RGB dataset of 8x8: the real train split of digits, three times over
    rgb = tmp_path / "rgb"
    train, held_out = digits_splits(0.2, 0)
    for split, data in (("train", train), ("eval", held_out)):
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            (rgb / split / str(label)).mkdir(parents=True, exist_ok=True)
            (rgb / split / str(label) / f"{i:05d}.png").write_bytes(encode_png(np.repeat(image, 3, axis=2)))
    dataset = {"kind": "imagefolder", "name": "rgb", "train": str(rgb / "train"), "eval": str(rgb / "eval")}
    shards = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("CASFLOW_WORKERS", workers)
        config = steps.read_config(str(write_config(tmp_path, [{"name": "m", "generator": generator}], dataset=dataset,
                                                    store={"url": str(tmp_path / f"store-{workers}"), "shard_size": SHARD_SIZE})))
        store = steps.open_store(config.store)
        record = steps.prepare_dataset(config, store)
        samples = steps.draw_samples(config, store, config.models[0], record, "cpu")
        shards[workers] = [s.sha256 for s in samples.shard_set.shards]
    budget = record.train.count_per_class
    expected = oracle_shards(Store(str(tmp_path / "oracle")), images[seen], labels[seen], budget, config.samples_seed(config.models[0]),
                             "bicubic")
    assert shards["1"] == shards["2"] == expected


def test_real_splits_stream_to_the_shards_of_the_whole_array_path(tmp_path, monkeypatch):
    """An imagefolder dataset (file by file): interleaved classes, byte for byte, any worker count."""
    train = digits_splits(0.2, 0)[0]
    root = tmp_path / "data"
    for split in ("train", "eval"):
        for i, (image, label) in enumerate(zip(train.images, train.labels)):
            (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            (root / split / f"c{label}" / f"{i:05d}.png").write_bytes(encode_png(image))
    seen = np.array(sorted(range(len(train.labels)), key=lambda i: (train.labels[i], i)))  # c0..c9 sort as the digits
    images, labels = train.images[seen], train.labels[seen]
    interleaved = class_interleaved(labels)
    oracle = write_shard_set(Store(str(tmp_path / "oracle")), "o", encode_samples(images[interleaved], labels[interleaved]),
                             shard_size=SHARD_SIZE, fingerprint="0" * 64, fingerprint_inputs={},
                             class_names=tuple(f"c{c}" for c in range(10)), image_shape=(8, 8, 1))
    dataset = {"kind": "imagefolder", "name": "d", "train": str(root / "train"), "eval": str(root / "eval")}
    for workers in ("1", "2"):
        monkeypatch.setenv("CASFLOW_WORKERS", workers)
        config = steps.read_config(str(write_config(
            tmp_path, [{"name": "real", "generator": {"kind": "real"}}], dataset=dataset,
            store={"url": str(tmp_path / f"store-{workers}"), "shard_size": SHARD_SIZE})))
        record = steps.prepare_dataset(config, steps.open_store(config.store))
        assert [s.sha256 for s in record.train.shards] == [s.sha256 for s in oracle.shards]
        assert record.eval.shards == record.train.shards


def test_a_bad_image_in_the_eval_split_commits_neither_split(tmp_path):
    train = digits_splits(0.2, 0)[0]
    root = tmp_path / "data"
    for split in ("train", "eval"):
        for i, (image, label) in enumerate(zip(train.images[:200], train.labels[:200])):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            (root / split / str(label) / f"{i:05d}.png").write_bytes(encode_png(image))
    (root / "eval" / "3" / "00007.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    config = steps.read_config(str(write_config(
        tmp_path, [{"name": "real", "generator": {"kind": "real"}}],
        dataset={"kind": "imagefolder", "name": "d", "train": str(root / "train"), "eval": str(root / "eval")})))
    store = steps.open_store(config.store)
    with pytest.raises(InputError, match="3/00007.png: corrupt or unreadable image"):
        steps.prepare_dataset(config, store)
    assert not list((tmp_path / "store").rglob("manifest.json"))


def test_an_npz_is_read_a_slice_at_a_time_whatever_its_layout(tmp_path):
    """Stored, deflated and Fortran-ordered arrays give the same chosen rows."""
    from casflow.tasks.generators.files import read_npz

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (700, 5, 6, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 700)
    wanted = np.sort(rng.choice(700, 300, replace=False))
    for name, save, array in (("stored", np.savez, images), ("deflated", np.savez_compressed, images),
                              ("fortran", np.savez, np.asfortranarray(images))):
        save(tmp_path / f"{name}.npz", arr_0=array, arr_1=labels)
        with open(tmp_path / f"{name}.npz", "rb") as f:
            listing = read_npz(f, name, "m", max_decoded_bytes=2**30)
            got = np.concatenate([chunk for chunk, _ in listing.chunks(wanted)])
        assert listing.shape == (5, 6, 3) and np.array_equal(listing.labels, labels)
        assert np.array_equal(got, images[wanted]), name


def test_ordered_map_keeps_order_and_reports_the_first_failure_in_order():
    assert list(parallel.ordered_map(divmod, [(i, 7) for i in range(50)], workers=2)) == [divmod(i, 7) for i in range(50)]
    with pytest.raises(InputError, match="image 3") as raised:
        list(parallel.ordered_map(decode_chunk, [([b"x"], [f"image {i}"], 100, (1, 1, 1)) for i in range(3, 9)], workers=2))
    assert raised.value.source == "image 3" and raised.value.problem.startswith("corrupt or unreadable image")
    error = pickle.loads(pickle.dumps(InputError("bad", model="m", source="f")))
    assert (error.problem, error.model, error.source, str(error)) == ("bad", "m", "f", "model 'm' f: bad")


def test_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv("CASFLOW_WORKERS", "3")
    assert parallel.default_workers() == 3
    monkeypatch.setenv("CASFLOW_WORKERS", "none")
    with pytest.raises(ValueError, match="CASFLOW_WORKERS='none'"):
        parallel.default_workers()


def test_the_decoded_cache_is_written_chunk_by_chunk_and_read_in_windows(tmp_path, monkeypatch):
    monkeypatch.setenv("CASFLOW_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    chunks = [(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), rng.integers(0, 10, n)) for n in (5, 7, 3)]
    built = decoded_cache.load_or_build("k", (4, 4, 3), lambda: iter(chunks))
    images, labels = np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
    assert isinstance(built.images, np.memmap) and np.array_equal(built.images, images) and np.array_equal(built.labels, labels)
    assert np.array_equal(np.load(tmp_path / "cache" / "decoded" / "k.images.npy"), images)  # a plain .npy file
    again = decoded_cache.load_or_build("k", (4, 4, 3), lambda: pytest.fail("rebuilt"))
    assert np.array_equal(np.concatenate([again.window(s, s + 4) for s in range(0, 15, 4)]), images)

    def failing():
        yield chunks[0]
        raise FileNotFoundError("a shard went missing")

    with pytest.raises(FileNotFoundError, match="a shard went missing"):  # the source's error, not a cache problem
        decoded_cache.load_or_build("other", (4, 4, 3), failing)
    assert not (tmp_path / "cache" / "decoded" / "other.images.npy").exists()


@pytest.mark.parametrize("writable", [True, False])  # the cache file, and the in-memory set of an unwritable cache
def test_chosen_rows_of_the_decoded_cache_are_read_as_indexing_gives_them(writable, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    if not writable:
        cache.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CASFLOW_CACHE_DIR", str(cache))
    images = np.random.default_rng(2).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    decoded = decoded_cache.load_or_build("rows", (4, 4, 3), lambda: iter([(images[:25], np.zeros(25, np.int64)),
                                                                           (images[25:], np.zeros(15, np.int64))]))
    assert (decoded.path is not None) == writable
    for rows in ([3], [0, 1, 2, 9, 10, 39], [39, 2, 2, 17, 0], np.arange(40), []):  # runs, any order, repeats
        taken = decoded.take(np.array(rows, dtype=np.int64))
        assert taken.shape == (len(rows), 4, 4, 3) and np.array_equal(taken, images[np.array(rows, dtype=np.int64)])
    with pytest.raises(IndexError):
        decoded.take(np.array([40]))


def test_features_and_logits_batch_by_batch_from_the_cache_equal_one_call(tmp_path, monkeypatch):
    monkeypatch.setenv("CASFLOW_CACHE_DIR", str(tmp_path / "cache"))
    recipe = ClassifierConfig(recipe="fast", options={"widths": [8, 8, 8], "tta_level": 2}).resolved
    net = training.load_weights(recipe, training.weights_bytes(recipe.module.build(recipe.hp, (8, 8, 3), 10)),
                                image_shape=(8, 8, 3), num_classes=10, device=torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (2 * training.PREDICT_BATCH + 123, 8, 8, 3), dtype=np.uint8)
    decoded = decoded_cache.load_or_build("batches", (8, 8, 3), lambda: iter([(images, np.zeros(len(images), np.int64))]))
    rows = np.sort(np.random.default_rng(1).choice(len(images), size=training.PREDICT_BATCH + 7, replace=False))
    seen = []
    features = lambda x: seen.append(len(x)) or training.features(recipe, net, x, torch.device("cpu"))  # noqa: E731
    assert np.array_equal(shard_data.in_batches(decoded, features, size=training.PREDICT_BATCH),
                          training.features(recipe, net, images, torch.device("cpu")))
    assert max(seen) == training.PREDICT_BATCH  # a batch at a time, never the set
    logits = lambda x: training.predict(recipe, net, x, torch.device("cpu"))  # noqa: E731
    assert np.array_equal(shard_data.in_batches(decoded, logits, rows, size=training.PREDICT_BATCH), logits(images[rows]))


def test_evaluation_window_by_window_gives_the_logits_of_one_call():
    recipe = ClassifierConfig(recipe="fast", options={"widths": [8, 8, 8], "tta_level": 2}).resolved
    net = training.load_weights(recipe, training.weights_bytes(recipe.module.build(recipe.hp, (8, 8, 3), 10)),
                                image_shape=(8, 8, 3), num_classes=10, device=torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (2 * training.PREDICT_BATCH + 123, 8, 8, 3), dtype=np.uint8)
    whole = training.predict(recipe, net, images, torch.device("cpu"))
    windows = np.concatenate([training.predict(recipe, net, images[s : s + training.PREDICT_BATCH], torch.device("cpu"))
                              for s in range(0, len(images), training.PREDICT_BATCH)])
    assert np.array_equal(whole, windows)


def test_pngs_are_the_same_bytes_in_a_worker_process():
    images = np.random.default_rng(1).integers(0, 256, (600, 6, 6, 3), dtype=np.uint8)
    from casflow.tasks.images import encode_many

    assert encode_many(images, workers=2) == encode_many(images, workers=1) == [encode_png(i) for i in images]
