"""Integrity of every committed object: checked on read, and by `cas verify [--fix]`, on a
local folder here and on SeaweedFS below. Faults are made by hand: a flipped byte in a
shard or in a classifier's weights, a truncated marker, a killed results write."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from casflow.flows import steps
from casflow.flows.cli import main
from casflow.storage import verify
from casflow.storage.store import IntegrityError, Store
from helpers import run_steps, write_config

MODELS = [{"name": "gauss", "generator": {"kind": "gaussian", "components": 8}}]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    run_steps(write_config(root, MODELS))
    return root / "store"


@pytest.fixture
def store_dir(template, tmp_path):
    shutil.copytree(template, tmp_path / "store")
    return tmp_path / "store"


def flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_sound_store_has_nothing_wrong(store_dir, capsys):
    assert verify.verify(Store(str(store_dir))) == []
    assert main(["verify", "--store", str(store_dir)]) == 0
    assert "nothing wrong" in capsys.readouterr().out


def test_a_flipped_byte_in_a_committed_shard_is_found_and_fixed(store_dir, tmp_path, capsys):
    (shard,) = store_dir.glob("samples/*/shard-000000.tar")
    before = shard.read_bytes()
    flip(shard)
    store = Store(str(store_dir))
    assert verify.verify(store, full=False) == []  # same size: only a full check reads the bytes
    (finding,) = verify.verify(store)
    assert finding.location == f"samples/{shard.parent.name}/shard-000000.tar" and "sha256" in finding.problem
    assert main(["verify", "--store", str(store_dir)]) == 1
    out = capsys.readouterr().out
    assert str(shard) in out and "--fix" in out
    assert main(["verify", "--store", str(store_dir), "--fix"]) == 0
    assert not shard.parent.exists()
    config = write_config(tmp_path, MODELS, store_url=str(store_dir), name="again.yaml")
    _, _, _, done = run_steps(config)  # the next run rebuilds it, byte for byte
    assert not done["gauss"].samples.cached and shard.read_bytes() == before
    assert verify.verify(store) == []


def test_corrupt_weights_fail_the_evaluation_by_name_and_verify_finds_them(tmp_path):
    config, store, dataset, done = run_steps(write_config(tmp_path, MODELS), evaluate=False)
    classifier = done["gauss"].classifiers[0]
    weights = tmp_path / "store" / "classifiers" / classifier.fingerprint / "model.pt"
    flip(weights, len(weights.read_bytes()) // 2)
    with pytest.raises(IntegrityError, match=rf"{classifier.fingerprint}/model.pt: sha256 .* disagrees with its commit marker"):
        steps.evaluate_classifier(config, store, classifier, dataset, "cpu")
    found = [f for f in verify.verify(store) if f.location.startswith("classifiers/")]
    assert [f.repair for f in found] == [f"classifiers/{classifier.fingerprint}"]
    verify.repair(store, found)
    retrained = steps.train_classifier(config, store, done["gauss"].samples, dataset, "cpu", config.seed)
    assert not retrained.cached
    assert steps.evaluate_classifier(config, store, retrained, dataset, "cpu").counts.top1 > 0.5


def test_damaged_markers_and_predictions_are_found(store_dir):
    store = Store(str(store_dir))
    evaluations = sorted(store_dir.glob("evaluations/*"))
    (evaluations[0] / "metrics.json").write_bytes((evaluations[0] / "metrics.json").read_bytes()[:40])
    flip(evaluations[1] / "predictions.parquet", 200)
    (train_log,) = list(store_dir.glob("classifiers/*/train_log.json"))[:1]
    train_log.write_text("[1, 2")
    problems = {f.location.split("/")[1]: f.problem for f in verify.verify(store)}
    assert "unreadable commit marker" in problems[evaluations[0].name]
    assert "predictions.parquet: sha256" in problems[evaluations[1].name]
    assert "unreadable commit marker" in problems[train_log.parent.name]


def test_interrupted_writes_are_debris_only_once_stale(store_dir):
    store = Store(str(store_dir))
    young = store_dir / "samples" / ("ab" * 32)
    young.mkdir()
    (young / "shard-000000.tar").write_bytes(b"another run, writing now")
    assert verify.verify(store, full=False) == []  # a live writer's work in progress
    old = time.time() - verify.STALE_SECONDS - 60
    os.utime(young / "shard-000000.tar", (old, old))
    (finding,) = verify.verify(store, full=False)
    assert finding.location == f"samples/{'ab' * 32}" and "no manifest.json" in finding.problem
    verify.repair(store, [finding])
    assert not young.exists()


def test_a_run_killed_while_writing_results_is_not_listed_and_a_damaged_file_is_named(store_dir, tmp_path, capsys):
    from datetime import datetime, timezone

    from casflow.storage import results

    store = Store(str(store_dir))
    when = datetime(2026, 11, 28, 2, tzinfo=timezone.utc)
    good = {"run_id": "20261128T020000Z-good", "run_time": when, "dataset": "digits", "dataset_fingerprint": "d", "model": "m",
            "generator_kind": "real", "recipe": "fast", "seed": 0, "status": "ok", "cached": True, "cas_top1": 0.9}
    results.write_table(store, "summary", [good], good["run_id"], when)
    killed = store_dir / "results" / "summary" / "date=2026-11-28" / "run=20261128T030000Z-killed"
    killed.mkdir(parents=True)
    (killed / "part-0.parquet.tmp-otherhost-1-abc").write_bytes(b"PAR1 half a file")  # SIGKILL mid-write
    assert results.run_ids(store) == ["20261128T020000Z-good"]
    assert main(["results", "--store", str(store_dir), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["20261128T020000Z-good"]

    (part,) = store_dir.glob("results/summary/*/run=20261128T020000Z-good/part-0.parquet")
    part.write_bytes(part.read_bytes()[:50])
    assert main(["results", "--store", str(store_dir)]) == 1
    err = capsys.readouterr().err
    assert str(part) in err and "unreadable summary results" in err and "Traceback" not in err
    findings = verify.verify(store, full=False)
    assert any(f.location.endswith("run=20261128T020000Z-good/part-0.parquet") and f.repair is None for f in findings)


@pytest.mark.s3
def test_verify_and_fix_on_s3(s3, tmp_path):
    config, store, _, done = run_steps(write_config(tmp_path, MODELS, store_url=s3.store_url))
    location = f"{done['gauss'].samples.shard_set.location}/shard-000000.tar"
    data = bytearray(store.read_bytes(location))
    data[-100] ^= 0xFF
    store.write_bytes(location, bytes(data))
    (finding,) = verify.verify(store)
    assert finding.location == location and finding.repair == done["gauss"].samples.shard_set.location
    verify.repair(store, [finding])
    _, _, _, again = run_steps(write_config(tmp_path, MODELS, store_url=s3.store_url, name="again.yaml"))
    assert not again["gauss"].samples.cached and verify.verify(store) == []
