import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from casflow.tasks import datasets
from casflow.tasks.datasets.digits import digits
from casflow.tasks.datasets.hf_parquet import read_hf_parquet
from casflow.tasks.datasets.imagefolder import read_imagefolder
from casflow.tasks.errors import InputError
from casflow.tasks.limits import Limits

LIMITS = Limits()


def test_digits_are_real_uint8_images():
    data = digits()
    assert data.images.shape == (1797, 8, 8, 1) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.images.min() == 0
    assert data.class_names == tuple("0123456789")


def test_digits_read_without_scikit_learn_are_its_load_digits():
    """casflow reads the CSV scikit-learn ships instead of importing it (a second of every run on digits)."""
    import subprocess
    import sys

    script = ("import sys; from casflow.tasks.datasets.digits import digits; digits(); "
              "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    from sklearn.datasets import load_digits

    ours, theirs = digits(), load_digits()
    assert np.array_equal(ours.images, np.rint(theirs.images * (255 / 16)).astype(np.uint8)[:, :, :, None])
    assert np.array_equal(ours.labels, theirs.target) and ours.labels.dtype == np.int64
    assert ours.class_names == tuple(str(n) for n in theirs.target_names)


def test_stratified_split_is_deterministic_disjoint_and_balanced():
    train, held_out = datasets.digits_splits(0.2, 0)
    again_train, _ = datasets.digits_splits(0.2, 0)
    assert np.array_equal(train.images, again_train.images)
    assert len(train.labels) + len(held_out.labels) == 1797
    eval_share = np.bincount(held_out.labels) / np.bincount(np.concatenate([train.labels, held_out.labels]))
    assert np.all(np.abs(eval_share - 0.2) < 0.01)
    other_train, _ = datasets.digits_splits(0.2, 1)
    assert not np.array_equal(train.images, other_train.images)


def test_subset_per_class_caps_each_class():
    labels = np.repeat(np.arange(3), [5, 2, 9])
    chosen = datasets.subset_per_class(labels, 3, seed=0)
    assert list(np.bincount(labels[chosen])) == [3, 2, 3]
    assert np.all(np.diff(chosen) > 0)


def _png(value, size=4, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, (size, size), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _hf_table(blobs, labels, names=("cat", "dog")):
    table = pa.table({
        "image": pa.array([{"bytes": b, "path": f"img{i}.png"} for i, b in enumerate(blobs)],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array(labels, type=pa.int64()),
    })
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": list(names)}}
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buffer)
    buffer.seek(0)
    return buffer


class BytesFiles:
    """SourceFiles.open over one file in memory."""

    def __init__(self, buffer):
        self.data = buffer.getvalue() if hasattr(buffer, "getvalue") else buffer.read()

    def open(self, name):
        return io.BytesIO(self.data)


def _read_parquet(buffer, name, limits):
    """Both passes: the split read, then decoded whole."""
    return read_hf_parquet(BytesFiles(buffer), name, limits).decoded()


def test_hf_parquet_reader_decodes_images_and_class_names():
    data = _read_parquet(_hf_table([_png((10, 20, 30)), _png((200, 0, 0))], [1, 0]), "t.parquet", LIMITS)
    assert data.class_names == ("cat", "dog")
    assert data.images.shape == (2, 4, 4, 3)
    assert tuple(data.images[0, 0, 0]) == (10, 20, 30)
    assert list(data.labels) == [1, 0]


def test_hf_parquet_reader_errors_name_the_row():
    with pytest.raises(InputError, match="row 1"):
        _read_parquet(_hf_table([_png(1), b"not an image"], [0, 1]), "t.parquet", LIMITS)
    with pytest.raises(InputError, match="row 1 .*8x8"):
        _read_parquet(_hf_table([_png(1), _png(1, size=8)], [0, 1]), "t.parquet", LIMITS)
    with pytest.raises(InputError, match="label 5 outside"):
        _read_parquet(_hf_table([_png(1)], [5]), "t.parquet", LIMITS)


class DictTree:
    def __init__(self, files, name="tree"):
        self.files, self.name = files, name

    def paths(self):
        return sorted(self.files)

    def read(self, path):
        return self.files[path]


def test_imagefolder_reader_sorts_class_names():
    tree = DictTree({"zebra/1.png": _png(1, mode="L"), "ant/1.png": _png(2, mode="L"), "ant/2.png": _png(3, mode="L")})
    data = read_imagefolder(tree, LIMITS).decoded()
    assert data.class_names == ("ant", "zebra")
    assert list(data.labels) == [0, 0, 1]
    assert data.images.shape == (3, 4, 4, 1)


@pytest.mark.slow
def test_cifar10_parquet(cifar10_dir):
    with open(cifar10_dir / "test.parquet", "rb") as f:
        data = _read_parquet(f, "test.parquet", LIMITS)
    assert data.images.shape == (10000, 32, 32, 3)
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    assert data.counts() == (1000,) * 10


def test_the_registry_lists_every_kind_with_its_config():
    assert set(datasets.SOURCES) == {"digits", "hf-parquet", "imagefolder"}
    for kind, source in datasets.SOURCES.items():
        assert source.config.model_fields["kind"].annotation.__args__ == (kind,)


def test_hf_parquet_declared_size_is_checked_before_reading():
    table = _hf_table([_png(1), _png(2)], [0, 1])
    with pytest.raises(InputError, match=r"t.parquet: its row groups declare \d+ bytes uncompressed, more than "
                                         r"limits.max_file_bytes \(100\)"):
        _read_parquet(table, "t.parquet", Limits(max_file_bytes=100))
