"""Empty and tiny classes through the steps, the results, `cas results`, `cas compare` and `cas report`.

The data: digits as a Hugging Face Parquet dataset (class names from its metadata, so a split may lack
a class) whose eval split has no 9s, and whose class 1 has two train images and one eval image. Two
nights of one model on one store, written as the flow writes them (no Prefect)."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casflow.flows import records, steps
from casflow.flows.cli import main, render_per_class
from casflow.storage import results
from casflow.tasks.datasets import digits_splits
from casflow.tasks.images import encode_png
from casflow.tasks.results import RunInfo
from helpers import run_steps, write_config

START = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
EMPTY, TINY = 9, 1  # no eval images; two train images and one eval image


def _hf_parquet(path: Path, images: np.ndarray, labels: np.ndarray) -> str:
    table = pa.table({
        "image": pa.array([{"bytes": encode_png(image), "path": f"{i}.png"} for i, image in enumerate(images)],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array(labels, type=pa.int64()),
    })
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": [str(c) for c in range(10)]}}
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}), path)
    return str(path)


def _night(config_path: Path, night: int) -> records.ResultsRecord:
    """Every model through the steps, with the scores beside CAS, results written as the flow writes them."""
    config, store, dataset, chains = run_steps(config_path)
    real = chains[config.baseline.name].classifiers[0]
    outcomes = [steps.outcome(model, chains[model.name], None,
                              steps.score_samples(config, store, chains[model.name].samples, real, dataset, "cpu"))
                for model in config.all_models]
    recipe = config.classifier.resolved
    when = START + timedelta(days=night)
    run = RunInfo(f"{when:%Y%m%dT%H%M%SZ}-night{night}", when, None, dataset.name, dataset.fingerprint, dataset.class_names,
                  recipe.name, recipe.fingerprint, config.seed, config.classifier_seeds)
    return steps.write_results(store, run, outcomes, config.baseline.name)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    train, held_out = digits_splits(0.2, 0)
    per_class = lambda labels, counts: np.sort(np.concatenate(  # noqa: E731  the first `counts[c]` images of each class
        [np.flatnonzero(labels == c)[:n] for c, n in enumerate(counts)]))
    keep_train = per_class(train.labels, [40 if c != TINY else 2 for c in range(10)])
    keep_eval = per_class(held_out.labels, [12 if c not in (TINY, EMPTY) else (1 if c == TINY else 0) for c in range(10)])
    images, labels = train.images[keep_train], train.labels[keep_train]
    dataset = {"kind": "hf-parquet", "name": "digits-gaps", "train": _hf_parquet(root / "train.parquet", images, labels),
               "eval": _hf_parquet(root / "eval.parquet", held_out.images[keep_eval], held_out.labels[keep_eval])}
    worse = images.copy()  # night 2: its 3s are 8s
    worse[labels == 3] = images[labels == 8][np.arange((labels == 3).sum()) % (labels == 8).sum()]
    for name, data in (("good", images), ("worse", worse)):
        np.savez(root / f"{name}.npz", arr_0=data, arr_1=labels)
    configs = [write_config(root, [{"name": "copy", "generator": {"kind": "npz", "path": str(root / f"{name}.npz")}}],
                            name=f"night{n}.yaml", dataset=dataset) for n, name in ((1, "good"), (2, "worse"))]
    return root, _night(configs[0], 1), _night(configs[1], 2)


def _per_class(root: Path) -> list[dict]:
    return results.read_all(steps.open_store(steps.read_config(str(root / "night2.yaml")).store), "per_class").to_pylist()


def test_a_class_without_eval_images_has_null_scores_not_zero(nights):
    root, first, second = nights
    rows = [r for r in _per_class(root) if r["class_index"] == EMPTY]
    assert len(rows) == 4  # two models, two nights
    for row in rows:
        assert row["n_eval"] == 0 and row["n_train"] > 0
        assert row["top1"] is None and row["top5"] is None and row["top1_ci_low"] is None and row["top1_ci_high"] is None
    # the README's query ranks the worst classes: the empty one is not among them
    worst = duckdb.sql(f"SELECT class_index FROM read_parquet('{root}/store/results/per_class/**/*.parquet', "
                       "hive_partitioning=true) ORDER BY top1 LIMIT 4").fetchall()
    assert EMPTY not in [c for (c,) in worst]
    for row in first.summary + second.summary:
        assert row["worst_class"] != str(EMPTY) and row["worst_class_top1"] is not None


def test_the_changes_of_a_class_without_eval_images_are_null(nights):
    _, _, second = nights
    (empty,) = [r for r in second.changes if r["class_index"] == EMPTY]
    assert empty["n_eval"] == 0 and empty["direction"] == "same" and not empty["significant"]
    for column in ("top1_before", "top1_after", "delta", "delta_ci_low", "delta_ci_high"):
        assert empty[column] is None, column
    store_rows = results.read_run(steps.open_store(steps.read_config(str(nights[0] / "night2.yaml")).store), "changes",
                                  second.run_id).to_pylist()
    assert [r for r in store_rows if r["class_index"] == EMPTY][0]["delta"] is None


def test_tiny_classes_have_null_knn_scores(nights):
    root, _, _ = nights
    tiny = [r for r in _per_class(root) if r["class_index"] == TINY and r["model"] == "copy"]
    assert len(tiny) == 2 and all(r["n_eval"] == 1 and r["n_train"] == 2 for r in tiny)
    assert all(r["precision"] is None and r["recall"] is None and r["fd"] is None for r in tiny)
    others = [r for r in _per_class(root) if r["class_index"] == 0 and r["model"] == "copy"]
    assert all(r["precision"] is not None for r in others)


def test_the_commands_show_empty_and_tiny_classes_without_crashing(nights, capsys, tmp_path):
    root, first, second = nights
    store = str(root / "store")
    assert main(["results", "--store", store, "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    table = out.split("\n\n")[0]
    assert f"{EMPTY} (" not in table  # not the worst class of any model
    per_class = out.split("\n\n")[-1].splitlines()
    columns = per_class[0].split()
    empty_rows = [line.split() for line in per_class[2:] if line.split()[1] == str(EMPTY)]
    assert len(empty_rows) == 2  # real and copy: n_eval 0, no top-1
    for cells in empty_rows:
        assert cells[columns.index("n_eval")] == "0" and cells[columns.index("top-1")] == "-", cells
    assert main(["compare", "--store", store, "--per-class", first.run_id, second.run_id]) in (0, 3)
    out = capsys.readouterr().out
    assert "nan" not in out and "copy" in out
    assert main(["report", "--store", store, "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    words = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()  # base64 can spell anything
    assert "copy" in page and "nan" not in words.replace("nanoseconds", "")


def test_per_class_rows_with_scores_then_without_print():
    """`cas results --per-class`: a later row without the scores beside CAS (too few images of its class for
    them, or a model scored without them) after one with them."""
    base = {"model": "m", "class_index": 0, "class_name": "0", "n_train": 10, "n_eval": 4, "top1": 0.5, "top5": 1.0,
            "top1_ci_low": 0.15, "top1_ci_high": 0.85}
    scored = base | {"gan_test_top1": 0.9, "precision": 0.7, "recall": 0.6, "memorized_fraction": 0.0}
    bare = base | {"class_index": 1, "class_name": "1", "gan_test_top1": None, "precision": None, "recall": None,
                   "memorized_fraction": None}
    empty = bare | {"class_index": 2, "class_name": "2", "n_eval": 0, "top1": None, "top5": None, "top1_ci_low": None,
                    "top1_ci_high": None}
    text = render_per_class([scored, bare, empty])
    lines = text.splitlines()
    assert "precision" in lines[0] and len(lines) == 5
    assert "0.700" in lines[2] and "nan" not in text
    assert render_per_class([bare, scored]).splitlines()[0] == lines[0]  # the same columns either way
    assert "precision" not in render_per_class([bare, empty]).splitlines()[0]  # a column only where a row has it


def test_io_of_a_per_class_row_without_eval_images(tmp_path):
    """The per-class schema holds a class without eval images (null scores), and so does the changes schema."""
    from casflow.storage.store import Store

    store = Store(str(tmp_path))
    keys = {"run_id": "r", "run_time": START, "flow_run_id": None, "dataset": "d", "dataset_fingerprint": "d",
            "model": "m", "generator_kind": "npz", "recipe": "fast", "seed": 0, "samples_fingerprint": "s",
            "classifier_fingerprint": "c"}
    results.write_table(store, "per_class", [keys | {"class_index": 0, "class_name": "0", "n_train": 3, "n_eval": 0,
                                                     "top1": None, "top5": None, "top1_ci_low": None, "top1_ci_high": None,
                                                     "cached": False}], "r", START)
    data = io.BytesIO(store.read_bytes(next(p for p in store.find("results/per_class"))))
    assert pq.read_table(data).column("top1").to_pylist() == [None]
