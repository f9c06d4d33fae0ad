import hashlib
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset

from casflow.storage.shards import (
    ShardFormatError,
    iter_shard_set,
    iter_tar,
    load_shard_set,
    write_shard_set,
)
from casflow.storage.store import IntegrityError, Store
from casflow.tasks.images import decode_image
from casflow.tasks.samples import encode_samples

FP = "0f" * 32


def _samples(n=25, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    return images, labels


def _write(store, location, images, labels, shard_size=10):
    return write_shard_set(store, location, encode_samples(images, labels), shard_size=shard_size, fingerprint=FP,
                           fingerprint_inputs={"test": 1}, class_names=("a", "b", "c", "d"), image_shape=(6, 5, 3))


def test_same_samples_give_byte_identical_shards(tmp_path):
    images, labels = _samples()
    first = _write(Store(str(tmp_path / "one")), "samples/x", images, labels)
    second = _write(Store(str(tmp_path / "two")), "samples/x", images, labels)
    assert [s.name for s in first.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert first.shards == second.shards and first.manifest_sha256 == second.manifest_sha256
    for shard in first.shards:
        one = (tmp_path / "one" / "samples" / "x" / shard.name).read_bytes()
        assert one == (tmp_path / "two" / "samples" / "x" / shard.name).read_bytes()
        assert hashlib.sha256(one).hexdigest() == shard.sha256
    assert first.count_per_class == tuple(np.bincount(labels, minlength=4))


def test_round_trip_through_our_reader(tmp_path):
    store = Store(str(tmp_path))
    images, labels = _samples()
    written = _write(store, "samples/x", images, labels)
    loaded = load_shard_set(store, "samples/x")
    assert loaded == written
    got = list(iter_shard_set(store, loaded))
    assert [k for k, _ in got] == [f"{i:09d}" for i in range(25)]
    assert all(np.array_equal(decode_image(p["png"], k, max_pixels=2**20), images[i]) for i, (k, p) in enumerate(got))
    assert [int(p["cls"]) for _, p in got] == list(labels)


def test_shards_read_back_with_webdataset_and_tar(tmp_path):
    store = Store(str(tmp_path))
    images, labels = _samples()
    _write(store, "samples/x", images, labels)
    pattern = str(tmp_path / "samples" / "x" / "shard-{000000..000002}.tar")
    got = list(webdataset.WebDataset(pattern, shardshuffle=False).decode("rgb8").to_tuple("png", "cls"))
    assert len(got) == 25
    assert np.array_equal(got[3][0], images[3]) and int(got[3][1]) == labels[3]
    with tarfile.open(tmp_path / "samples" / "x" / "shard-000000.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members[:2]] == ["000000000.cls", "000000000.png"]
        assert {(m.mtime, m.uname, m.mode) for m in members} == {(0, "casflow", 0o444)}
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "samples" / "x" / "shard-000002.tar")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == "000000020.cls" and len(listing) == 10


def test_no_manifest_means_not_committed(tmp_path):
    store = Store(str(tmp_path))
    images, labels = _samples()
    _write(store, "samples/x", images, labels)
    (tmp_path / "samples" / "x" / "manifest.json").unlink()
    assert load_shard_set(store, "samples/x") is None


def test_corrupted_shard_is_an_error_naming_it(tmp_path):
    store = Store(str(tmp_path))
    images, labels = _samples()
    shard_set = _write(store, "samples/x", images, labels)
    path = tmp_path / "samples" / "x" / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="shard-000001.tar: sha256"):
        list(iter_shard_set(store, shard_set))
    path.write_bytes(bytes(data[:-512]))
    with pytest.raises(IntegrityError, match="shard-000001.tar: .* bytes, manifest says"):
        load_shard_set(store, "samples/x")
    path.unlink()
    with pytest.raises(IntegrityError, match="shard-000001.tar: listed in the manifest but missing"):
        load_shard_set(store, "samples/x")


def test_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.tar"
    with webdataset.TarWriter(str(path)) as writer:
        writer.write({"__key__": "a", "cls": b"1", "png": b"x"})
        writer.write({"__key__": "b", "cls": b"1", "png": b"x"})
        writer.write({"__key__": "a", "cls": b"2", "png": b"y"})
    with open(path, "rb") as f, pytest.raises(ShardFormatError, match="dup.tar: duplicate key a"):
        list(iter_tar(f, "dup.tar"))


def test_a_tar_member_over_the_limit_is_refused_before_it_is_read(tmp_path):
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("a.cls", b"1"), ("a.png", b"x" * 5000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    with pytest.raises(ShardFormatError, match=r"s.tar: member a.png is 5000 bytes, more than limits.max_file_bytes \(4096\)"):
        list(iter_tar(buffer, "s.tar", max_member_bytes=4096))
    buffer.seek(0)
    assert [key for key, _ in iter_tar(buffer, "s.tar", max_member_bytes=5000)] == ["a"]
