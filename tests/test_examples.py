"""examples/cfg_flow.py, the guided flow-matching reference model: its
plumbing on a version trained for a few seconds (shapes, range,
determinism, guidance, a weights-only checkpoint, casflow's Python entry
point), not the quality of its samples (benchmarks/guidance_sweep.py)."""

import io

import numpy as np
import pytest
import torch

from casflow.flows import shard_data, steps
from examples import cfg_flow
from helpers import write_config

TINY = cfg_flow.Hyper(steps=40, batch_size=64, warmup=5, hidden=32, depth=1)


@pytest.fixture(scope="module")
def checkpoint():
    return cfg_flow.train_digits(TINY, seed=0, log_every=0)


def test_checkpoint_is_plain_tensors_and_ints(checkpoint, tmp_path):
    path = tmp_path / "cfg_flow.pt"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["config"] == {"channels": 1, "height": 8, "width": 8, "num_classes": 10, "hidden": 32, "depth": 1,
                                "train_steps": 40, "seed": 0}
    assert all(isinstance(v, torch.Tensor) for v in loaded["model"].values())


def test_training_is_seeded(checkpoint):
    again = cfg_flow.train_digits(TINY, seed=0, log_every=0)
    other = cfg_flow.train_digits(TINY, seed=1, log_every=0)
    assert all(torch.equal(checkpoint["model"][k], again["model"][k]) for k in checkpoint["model"])
    assert not torch.equal(checkpoint["model"]["inp.weight"], other["model"]["inp.weight"])


def test_samples_shape_range_determinism_and_guidance(checkpoint):
    labels = np.arange(30) % 10
    sampler = cfg_flow.make_sampler(checkpoint, device="cpu", guidance=1.0, steps=8)
    x = sampler.sample(labels, 0)
    assert x.shape == (30, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(x, sampler.sample(labels, 0))
    assert not torch.equal(x, sampler.sample(labels, 1))
    assert not torch.equal(x, cfg_flow.make_sampler(checkpoint, guidance=4.0, steps=8).sample(labels, 0))
    assert sampler.num_classes == 10
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        cfg_flow.make_sampler(checkpoint, guidance=-1.0)


def test_runs_as_a_casflow_python_entry_point(checkpoint, tmp_path):
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    (tmp_path / "cfg_flow.pt").write_bytes(buffer.getvalue())
    generator = {"kind": "python", "entry_point": "examples.cfg_flow:make_sampler", "checkpoint": str(tmp_path / "cfg_flow.pt"),
                 "output_range": "-1..1", "layout": "NCHW", "options": {"guidance": 2.0, "steps": 4}, "batch_size": 500}
    config = steps.read_config(str(write_config(tmp_path, [{"name": "cfg", "generator": generator}])))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    samples = steps.draw_samples(config, store, config.models[0], dataset, "cpu")
    assert samples.shard_set.count_per_class == dataset.train.count_per_class
    images, labels = shard_data.load_decoded(store, samples.shard_set, "cfg")
    assert images.shape == (1438, 8, 8, 1) and images.dtype == np.uint8
    assert steps.draw_samples(config, store, config.models[0], dataset, "cpu").cached


def test_checkpoints_every_n_steps_are_the_training_as_it_stood_then():
    saved = {}
    final = cfg_flow.train_digits(TINY, seed=0, log_every=0, save_every=20,
                                  save=lambda step, ckpt: saved.update({step: {k: v.clone() for k, v in ckpt["model"].items()}}))
    assert sorted(saved) == [20, 40]
    assert all(torch.equal(saved[40][k], final["model"][k]) for k in final["model"])  # the last one is the result
    assert not torch.equal(saved[20]["inp.weight"], saved[40]["inp.weight"])


@pytest.mark.slow
def test_the_series_script_writes_the_same_bytes_twice(tmp_path):
    import hashlib
    import subprocess
    import sys

    def run(out):
        subprocess.run([sys.executable, "-m", "examples.cfg_flow_series", "--out", str(out), "--steps", "40",
                        "--every", "20"], cwd=cfg_flow.__file__.rsplit("/examples/", 1)[0], check=True,
                       capture_output=True, timeout=300)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("ckpt-*.pt"))}

    first = run(tmp_path / "a")
    assert list(first) == ["ckpt-20.pt", "ckpt-40.pt"] and first == run(tmp_path / "b")
    assert "series:" in (tmp_path / "a" / "series.yaml").read_text()
