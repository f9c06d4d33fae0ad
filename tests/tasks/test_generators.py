import textwrap

import numpy as np
import pytest

from casflow.tasks import datasets
from casflow.tasks.errors import InputError
from casflow.tasks.generators import builtin, python_entry
from casflow.tasks.samples import label_schedule


@pytest.fixture(scope="module")
def train():
    return datasets.digits_splits(0.2, 0)[0]


def test_shuffled_labels_keep_balance_and_lose_the_signal(train):
    images, labels = builtin.shuffled_labels(train, seed=0)
    assert np.array_equal(np.bincount(labels), np.bincount(train.labels))
    assert np.mean(labels == train.labels) < 0.2
    assert np.array_equal(labels, builtin.shuffled_labels(train, seed=0)[1])


def test_gaussian_pca_is_seeded_and_class_conditional(train):
    model = builtin.GaussianPCA.fit(train, components=16)
    labels = label_schedule(train.counts())
    a = model.sample(labels, seed=0, temperature=1.0)
    assert a.shape == (len(labels), 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, model.sample(labels, seed=0, temperature=1.0))
    assert not np.array_equal(a, model.sample(labels, seed=1, temperature=1.0))
    # class means of the samples sit nearer their own class's real mean than any other's
    real_means = np.stack([train.images[train.labels == c].reshape(-1, 64).mean(0) for c in range(10)])
    sample_means = np.stack([a[labels == c].reshape(-1, 64).mean(0) for c in range(10)])
    distances = ((sample_means[:, None] - real_means[None]) ** 2).sum(-1)
    assert np.array_equal(distances.argmin(1), np.arange(10))


def test_temperature_narrows_the_spread(train):
    model = builtin.GaussianPCA.fit(train, components=16)
    labels = np.zeros(500, dtype=np.int64)
    wide = model.sample(labels, 0, 1.0).astype(float).std(0).mean()
    narrow = model.sample(labels, 0, 0.2).astype(float).std(0).mean()
    assert narrow < 0.5 * wide


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module on sys.path; returns its name."""
    def make(source: str) -> str:
        name = f"user_gen_{tmp_path.name.replace('-', '_')}"  # unique: imported modules stay cached
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name
    return make


def test_python_entry_point_draws_in_seeded_batches(user_module):
    name = user_module("""
        import numpy as np
        class S:
            def sample(self, labels, seed):
                rng = np.random.default_rng(seed)
                return rng.random((len(labels), 8, 8, 1)).astype(np.float32)
        def make(checkpoint, device, **options):
            return S()
    """)
    sampler = python_entry.make_sampler(python_entry.load_factory(f"{name}:make", "m"), None, "cpu", {},
                                        entry_point=f"{name}:make", model="m")
    kwargs = dict(seed=0, batch_size=7, output_range="0..1", layout="NHWC", image_shape=(8, 8, 1), resize_filter=None, model="m")
    batches = list(python_entry.draw(sampler, [10, 10], **kwargs))
    assert [len(b[1]) for b in batches] == [7, 7, 6]
    again = list(python_entry.draw(sampler, [10, 10], **kwargs))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(batches, again))
    assert np.bincount(np.concatenate([b[1] for b in batches])).tolist() == [10, 10]


@pytest.mark.parametrize("source, entry, words", [
    ("raise RuntimeError('boom at import')", "make", "(RuntimeError: boom at import)"),
    ("x = 1", "make", "has no callable 'make'"),
])
def test_python_entry_point_import_errors(user_module, source, entry, words):
    name = user_module(source)
    with pytest.raises(InputError) as info:
        python_entry.load_factory(f"{name}:{entry}", "m")
    assert words in str(info.value) and "model 'm'" in str(info.value) and f"{name}:{entry}" in str(info.value)


def test_example_entry_point_runs():
    from examples.class_means import fit_digits, make_sampler

    sampler = make_sampler(fit_digits(), device="cpu", noise=0.5)
    out = sampler.sample(np.array([0, 1, 2]), 0)
    assert out.shape == (3, 1, 8, 8) and float(out.min()) >= -1 and float(out.max()) <= 1


def test_entry_point_by_file_path_and_from_the_working_directory(tmp_path, monkeypatch):
    source = "def make(checkpoint, device):\n    return 'sampler'\n"
    (tmp_path / "gen_by_path.py").write_text(source)
    assert python_entry.load_factory(f"{tmp_path / 'gen_by_path.py'}:make", "m")(None, device="cpu") == "sampler"
    digest = python_entry.code_digest(f"{tmp_path / 'gen_by_path.py'}:make", "m")
    assert len(digest) == 64
    (tmp_path / "gen_in_cwd.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert python_entry.load_factory("gen_in_cwd:make", "m")(None, device="cpu") == "sampler"
    with pytest.raises(InputError, match="cannot import .*missing.py"):
        python_entry.load_factory(f"{tmp_path / 'missing.py'}:make", "m")


def test_the_registry_lists_every_kind_with_its_config_and_draw():
    from casflow.tasks import generators
    from casflow.tasks.config import parse_config

    assert set(generators.SOURCES) == {"real", "real-shuffled", "gaussian", "python", "npz", "imagefolder",
                                       "dataset-json", "webdataset"}
    for kind, source in generators.SOURCES.items():
        assert source.kind == kind and callable(source.content)
        assert (source.draw is None) == (kind == "real")  # only `real` draws nothing: its samples are the train split
    config = parse_config("models: [{name: n, generator: {kind: npz, path: x.npz, resize: box}}]\n")
    assert type(config.models[0].generator) is generators.SOURCES["npz"].config
