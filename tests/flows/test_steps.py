"""The pipeline's steps on digits, without Prefect: caching by fingerprint,
recomputation of exactly what changed, sanity controls and pinned numbers."""

import platform
import sys
from pathlib import Path

import pytest
import yaml

from casflow.flows import steps
from casflow.tasks.classifiers import training
from helpers import class_folders, run_steps

MODELS = [
    {"name": "real", "generator": {"kind": "real"}},
    {"name": "gauss", "generator": {"kind": "gaussian", "components": 16}},
    {"name": "shuffled", "generator": {"kind": "real-shuffled"}},
]


@pytest.fixture
def train_calls(monkeypatch):
    """Counts classifier trainings."""
    calls = []
    original = training.train

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "train", counting)
    return calls


def run_all(config_path):
    _, _, dataset, done = run_steps(config_path)
    return dataset, done


def cached(chains):
    return {name: tuple(step.cached for step in chain.steps()) for name, chain in chains.items()}


def test_rerun_samples_and_trains_nothing(tiny_config, train_calls):
    path = tiny_config(MODELS)
    dataset, first = run_all(path)
    assert not dataset.cached
    assert cached(first) == {"real": (False, False, False), "gauss": (False, False, False), "shuffled": (False, False, False)}
    assert len(train_calls) == 3
    dataset, second = run_all(path)
    assert dataset.cached and all(all(flags) for flags in cached(second).values())
    assert len(train_calls) == 3  # nothing trained the second time
    assert {n: r.evaluations[0].counts for n, r in first.items()} == {n: r.evaluations[0].counts for n, r in second.items()}


def test_editing_one_model_recomputes_that_model_only(tiny_config, train_calls):
    run_all(tiny_config(MODELS))
    edited = [MODELS[0], {"name": "gauss", "generator": {"kind": "gaussian", "components": 16, "temperature": 0.5}}, MODELS[2]]
    _, records = run_all(tiny_config(edited))
    assert cached(records) == {"real": (True, True, True), "gauss": (False, False, False), "shuffled": (True, True, True)}
    # `real` samples are the dataset's train shards, so their "cached" is the dataset step's
    assert records["real"].samples.shard_set.location.startswith("real/")
    assert len(train_calls) == 4


def test_recipe_change_retrains_every_model_and_reuses_samples(tiny_config, train_calls):
    path = tiny_config(MODELS)
    _, before = run_all(path)
    config = yaml.safe_load(path.read_text())
    config["classifier"]["options"]["epochs"] = 3
    path.write_text(yaml.safe_dump(config))
    _, after = run_all(path)
    assert {n: r.samples.cached for n, r in after.items()} == {"real": True, "gauss": True, "shuffled": True}
    assert not any(r.classifiers[0].cached for r in after.values())
    assert len(train_calls) == 6
    assert before["gauss"].samples.shard_set == after["gauss"].samples.shard_set


def test_renaming_a_model_reuses_everything(tiny_config, train_calls):
    run_all(tiny_config(MODELS))
    _, records = run_all(tiny_config([MODELS[0], {"name": "renamed", "generator": MODELS[1]["generator"]}]))
    assert all(all(flags) for flags in cached(records).values())


def test_folder_without_manifest_is_rebuilt_identically(tiny_config):
    path = tiny_config(MODELS[:2])
    _, first = run_all(path)
    shard_set = first["gauss"].samples.shard_set
    config = steps.read_config(str(path))
    store = steps.open_store(config.store)
    before = store.read_bytes(f"{shard_set.location}/shard-000000.tar")
    store.fs.rm(store.path(f"{shard_set.location}/manifest.json"))
    store.write_bytes(f"{shard_set.location}/shard-000000.tar", b"half a shard from a crash")
    _, second = run_all(path)
    assert not second["gauss"].samples.cached
    assert second["gauss"].samples.shard_set == shard_set
    assert store.read_bytes(f"{shard_set.location}/shard-000000.tar") == before
    assert second["gauss"].classifiers[0].cached  # the classifier's inputs did not change


def test_shard_size_does_not_change_the_numbers(tmp_path, tiny_config):
    _, big = run_all(tiny_config(MODELS[:2]))
    _, small = run_all(tiny_config(MODELS[:2], name="small.yaml", store={"url": str(tmp_path / "other"), "shard_size": 100}))
    assert len(small["gauss"].samples.shard_set.shards) == 15 and len(big["gauss"].samples.shard_set.shards) == 1
    assert small["gauss"].samples.shard_set.fingerprint != big["gauss"].samples.shard_set.fingerprint
    assert small["gauss"].evaluations[0].counts == big["gauss"].evaluations[0].counts


def test_sanity_controls(tiny_config):
    _, records = run_all(tiny_config(MODELS))
    top1 = {name: r.evaluations[0].counts.top1 for name, r in records.items()}
    assert top1["real"] > 0.9  # the upper bound learns digits
    assert abs(top1["shuffled"] - 0.1) < 0.1  # label-shuffled samples: near chance (10 classes)
    assert top1["shuffled"] < top1["gauss"] <= top1["real"] + 0.02


# Pinned on the CPU with torch 2.14.1 (2026-11-23): the tiny recipe, seed 0, digits split 0.2/0.
# `gauss` is pinned for the CPU-independent Gaussian (CODE_VERSIONS["generator:gaussian"] 2).
# Tolerance: 1.5 points (5 of 359 eval images) for float reduction order in training on other CPUs
# (the samples themselves are byte-identical everywhere: test_builtin_samples_are_byte_identical_across_cpus).
PINNED_TOP1 = {"real": 0.9443, "gauss": 0.9081, "shuffled": 0.0975}


def test_pinned_numbers(tiny_config):
    _, records = run_all(tiny_config(MODELS))
    top1 = {name: round(r.evaluations[0].counts.top1, 4) for name, r in records.items()}
    for name, expected in PINNED_TOP1.items():
        assert top1[name] == pytest.approx(expected, abs=0.015), name


def test_imagefolder_dataset_through_the_pipeline(tmp_path, tiny_config):
    from casflow.tasks import datasets
    from casflow.tasks.images import encode_png

    train, held_out = datasets.digits_splits(0.2, 0)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for split, data in (("train", train), ("eval", held_out)):
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = tmp_path / "digits" / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:04d}.png").write_bytes(encode_png(image))
    dataset = {"kind": "imagefolder", "name": "digits-folders", "train": str(tmp_path / "digits" / "train"),
               "eval": str(tmp_path / "digits" / "eval")}
    record, records = run_all(tiny_config(MODELS[:2], dataset=dataset))
    assert record.class_names == tuple(sorted(names))  # sorted folder names, as torchvision's ImageFolder
    assert sum(record.train.count_per_class) == 1438 and sum(record.eval.count_per_class) == 359
    assert records["real"].evaluations[0].counts.top1 > 0.9 and records["gauss"].evaluations[0].counts.top1 > 0.8


# ---------------------------------------------------------------- the same samples on every CPU

DRAW_SCRIPT = """
import json, sys
from casflow.flows import steps
config = steps.read_config(sys.argv[1])
store = steps.open_store(config.store)
dataset = steps.prepare_dataset(config, store)
shards = {m.name: [s.sha256 for s in steps.draw_samples(config, store, m, dataset, "cpu").shard_set.shards]
          for m in config.models}
print(json.dumps(shards))
"""

# Other CPUs, simulated on this one: OpenBLAS kernels for older and newer cores, one or two BLAS
# threads, and numpy's SIMD loops turned off (NPY_DISABLE_CPU_FEATURES). Each with the /proc/cpuinfo flag
# its kernels need: a core type this CPU lacks dies of SIGILL, so it is left out here.
CPU_VARIANTS = [
    ({"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1"}, "pni"),  # pni: SSE3
    ({"OPENBLAS_CORETYPE": "Nehalem", "OPENBLAS_NUM_THREADS": "2"}, "sse4_2"),
    ({"OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "1"}, "avx"),
    ({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"}, "avx2"),
    ({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "2", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL"},
     "avx2"),
    ({"OPENBLAS_CORETYPE": "SkylakeX", "OPENBLAS_NUM_THREADS": "2"}, "avx512bw"),
]


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64" or not sys.platform.startswith("linux"),
                    reason="OpenBLAS x86 core types, read from /proc/cpuinfo")
def test_builtin_samples_are_byte_identical_across_cpus(tmp_path):
    import json
    import os
    import subprocess

    flags = cpu_flags()
    variants = [variant for variant, flag in CPU_VARIANTS if flag in flags]
    assert len(variants) >= 4, f"only {variants} run on this CPU"  # every x86-64 CPU since 2013 runs five
    models = [{"name": "g32", "generator": {"kind": "gaussian", "components": 32}},
              {"name": "g32-t0.3", "generator": {"kind": "gaussian", "components": 32, "temperature": 0.3}},
              {"name": "g4", "generator": {"kind": "gaussian", "components": 4}},
              {"name": "shuffled", "generator": {"kind": "real-shuffled"}}]
    (tmp_path / "draw.py").write_text(DRAW_SCRIPT)
    shards = []
    for n, variant in enumerate(variants):
        config = tmp_path / f"config-{n}.yaml"
        config.write_text(yaml.safe_dump({"store": {"url": str(tmp_path / f"store-{n}")}, "models": models}))
        env = dict(os.environ, OMP_NUM_THREADS=variant.get("OPENBLAS_NUM_THREADS", "1"),
                   CASFLOW_CACHE_DIR=str(tmp_path / f"cache-{n}"), **variant)
        result = subprocess.run([sys.executable, str(tmp_path / "draw.py"), str(config)], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{variant}: exit {result.returncode}: {result.stderr[-3000:]}"
        shards.append(json.loads(result.stdout.strip().splitlines()[-1]))
    for variant, got in zip(variants[1:], shards[1:]):
        assert got == shards[0], f"{variant}: {[m for m in got if got[m] != shards[0][m]]} differ from {variants[0]}"


def test_a_full_decoded_cache_falls_back_to_the_shards(tiny_config, small_disk, monkeypatch, caplog):
    from helpers import fill

    cache = small_disk(64 * 1024, name="cache")
    fill(cache)
    monkeypatch.setenv("CASFLOW_CACHE_DIR", str(cache))
    with caplog.at_level("WARNING", logger="casflow"):
        _, records = run_all(tiny_config(MODELS))
    assert {name: r.evaluations[0].counts.top1 > 0 for name, r in records.items()} == {"real": True, "gauss": True, "shuffled": True}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "No space left on device" in warnings[0], warnings
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name != "filler"]  # nothing half-written


@pytest.mark.parametrize("missing_from", ["eval", "train"])
def test_an_imagefolder_class_missing_from_a_split_is_one_line_naming_it(tmp_path, tiny_config, missing_from):
    from casflow.tasks.errors import InputError

    splits = {"train": {"ant": 3, "bee": 3, "cat": 3}, "eval": {"ant": 2, "bee": 2, "cat": 2}}
    del splits[missing_from]["bee"]
    config = steps.read_config(str(tiny_config(MODELS[:1], dataset=class_folders(tmp_path / "data", splits))))
    with pytest.raises(InputError) as info:
        steps.prepare_dataset(config, steps.open_store(config.store))
    message = str(info.value)
    assert "\n" not in message and message.startswith("dataset folders: ")
    assert f"class 'bee' has no images in the {missing_from} split" in message
    assert "'ant'" not in message and "'cat'" not in message  # only the class at fault is named
