"""A series of checkpoints through the steps (no Prefect): expansion from files on disk, caching by content,
the series and step columns, the best table in Parquet (read by DuckDB) and `cas best`."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from casflow.flows import reporting, steps
from casflow.flows.cli import main
from casflow.storage.store import Store
from helpers import NO_SCORES, checkpoint, run_night, write_config

START = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


@pytest.mark.slow
def test_a_series_is_evaluated_per_checkpoint_cached_by_content_and_judged(tmp_path, train_calls, capsys):
    ckpts = tmp_path / "ckpts"
    checkpoint(ckpts, 100, broken_classes=5)
    checkpoint(ckpts, 200, broken_classes=0)
    checkpoint(ckpts, 300, broken_classes=1)
    (ckpts / "samples-last.npz").write_bytes((ckpts / "samples-300.npz").read_bytes())  # no step: not in the series
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"}, "series": {}}
    config = write_config(tmp_path, [series], scores=NO_SCORES)

    first = run_night(config, 1, START)
    assert [(r["model"], r["series"], r["step"]) for r in first.summary] == [
        ("real", None, None), ("ddpm@100", "ddpm", 100), ("ddpm@200", "ddpm", 200), ("ddpm@300", "ddpm", 300)]
    assert len(train_calls) == 4
    best = {r["step"]: r for r in first.best}
    assert best[200]["is_leader"] and best[200]["in_best_set"]
    assert not best[100]["in_best_set"] and best[100]["p_adjusted"] < 0.05  # half the classes missing
    assert best[300]["vs_best_so_far"] == "worse" and best[300]["best_so_far_model"] == "ddpm@200"

    # a new checkpoint: only it computes; the others are cache hits
    checkpoint(ckpts, 400, broken_classes=0, touched=1)
    second = run_night(config, 2, START)
    assert len(train_calls) == 5
    cached = {r["model"]: r["cached"] for r in second.summary}
    assert cached == {"real": True, "ddpm@100": True, "ddpm@200": True, "ddpm@300": True, "ddpm@400": False}
    newest = {r["step"]: r for r in second.best}[400]
    assert newest["in_best_set"] and newest["vs_best_so_far"] in ("better", "same")

    store = tmp_path / "store"
    rows = duckdb.sql(f"SELECT run_id, step, in_best_set, is_leader FROM read_parquet('{store}/results/best/**/*.parquet', "
                      "hive_partitioning=true, union_by_name=true) ORDER BY run_id, step").fetchall()
    assert [(r[1], r[2]) for r in rows] == [(100, False), (200, True), (300, best[300]["in_best_set"]),
                                            *((r["step"], r["in_best_set"]) for r in second.best)]
    steps_by_model = dict(duckdb.sql(
        f"SELECT DISTINCT model, step FROM read_parquet('{store}/results/per_class/**/*.parquet', hive_partitioning=true, "
        f"union_by_name=true) WHERE run_id = '{second.run_id}'").fetchall())
    assert steps_by_model == {"real": None, "ddpm@100": 100, "ddpm@200": 200, "ddpm@300": 300, "ddpm@400": 400}

    capsys.readouterr()
    assert main(["best", "--store", str(store), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["step"], r["in_best_set"]) for r in shown] == [
        (second.run_id, r["step"], r["in_best_set"]) for r in second.best]
    assert main(["best", "--store", str(store), "--run", first.run_id]) == 0
    out = capsys.readouterr().out
    assert "series ddpm: best set steps 200" in out and "leader" in out and "worse (vs step 200)" in out
    assert main(["results", "--store", str(store), "--run", first.run_id]) == 0
    summary = capsys.readouterr().out
    assert "vs last  vs best so far" in summary and "worse (vs ddpm@200)" in summary  # the verdicts side by side
    assert main(["best", "--store", str(store), "--series", "nope"]) == 1
    assert "no series 'nope'" in capsys.readouterr().err

    page = reporting.build_report(Store(str(store)), first.run_id)
    assert "Series: CAS against step and the best set" in page and "worse (vs step 200)" in page
    assert "<th>vs best so far</th>" in page
    chart = re.search(r"<img alt='ddpm: CAS top-1 per step' src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'>", page)
    svg = ET.fromstring(base64.b64decode(chart.group(1)))
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}circle"))) == 3  # one point per step


def test_a_series_pattern_that_matches_nothing_is_an_error_naming_the_model(tmp_path):
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{tmp_path}/none-{{step}}.npz"}, "series": {}}
    with pytest.raises(steps.ConfigError, match=r"model 'ddpm': series: no checkpoint matches .*none-\{step\}\.npz"):
        steps.read_config(str(write_config(tmp_path, [series])))


def test_the_example_writes_a_series_and_its_next_checkpoint(tmp_path, monkeypatch):
    from examples import checkpoint_series

    monkeypatch.setattr("sys.argv", ["checkpoint_series", "--out", str(tmp_path)])
    checkpoint_series.main()
    config = steps.read_config(str(tmp_path / "series.yaml"))
    assert [m.name for m in config.all_models] == ["real", "ddpm@1000", "ddpm@2000", "ddpm@3000", "ddpm@4000"]
    monkeypatch.setattr("sys.argv", ["checkpoint_series", "--out", str(tmp_path), "--next"])
    checkpoint_series.main()
    assert steps.read_config(str(tmp_path / "series.yaml")).models[-1].name == "ddpm@5000"


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_series_is_listed_from_disk_in_the_patterns_form(tmp_path, scheme):
    for name in ("a/ckpt-10.npz", "b/ckpt-2.npz", "a/ckpt-last.npz"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"not read while listing")
    series = {"name": "m", "generator": {"kind": "npz", "path": f"{scheme}{tmp_path}/{{a,b}}/ckpt-{{step}}.npz"}, "series": {}}
    config = steps.read_config(str(write_config(tmp_path, [series])))
    assert [(m.name, m.generator.path) for m in config.models] == [
        ("m@2", f"{scheme}{tmp_path}/b/ckpt-2.npz"), ("m@10", f"{scheme}{tmp_path}/a/ckpt-10.npz")]


@pytest.mark.slow
def test_a_race_that_cannot_be_replayed_still_gets_its_best_table(tmp_path, caplog):
    # one seed per checkpoint stored, where a race of three seeds would give the two good ones a second:
    # what a race looks like after a contender's second training failed
    ckpts = tmp_path / "ckpts"
    checkpoint(ckpts, 100, broken_classes=6)
    checkpoint(ckpts, 200, broken_classes=0)
    checkpoint(ckpts, 300, broken_classes=0, touched=1)
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"}, "series": {}}
    night = run_night(write_config(tmp_path, [series], scores=NO_SCORES), 1, START)
    rows = [r for r in night.summary if r["series"] == "ddpm"]
    raced = steps.judge_series(Store(str(tmp_path / "store")), rows, race_max_seeds=3)
    assert [(r["step"], r["in_best_set"], r["selection"]) for r in raced] == [
        (r["step"], r["in_best_set"], "all") for r in night.best]
    assert "series ddpm: its race cannot be replayed (step 200 has 1 classifier seeds" in caplog.text


@pytest.fixture(scope="module")
def judged_series(tmp_path_factory):
    """One night of a series of three checkpoints (step 200 the leader), on a store the tests copy and damage."""
    root = tmp_path_factory.mktemp("series")
    ckpts = root / "ckpts"
    checkpoint(ckpts, 100, broken_classes=5)
    checkpoint(ckpts, 200, broken_classes=0)
    checkpoint(ckpts, 300, broken_classes=1)
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{ckpts}/samples-{{step}}.npz"}, "series": {}}
    return root, run_night(write_config(root, [series], scores=NO_SCORES), 1, START)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.slow
@pytest.mark.parametrize("damage, problem", [(_truncate, ": sha256 "), (Path.unlink, "no per-image predictions stored at ")])
@pytest.mark.parametrize("step", [200, 300])  # the leader; the newest, judged against the best so far
def test_unreadable_predictions_of_a_checkpoint_make_its_series_unknown(judged_series, tmp_path, capsys, damage, problem, step):
    """A truncated or deleted predictions object of a checkpoint evaluated on an earlier night raised in
    write-results: no model's results were written. Now the series' best set and newest-vs-best verdict are
    `unknown`, naming the model, the object and the problem, and tonight's rows are written for every model."""
    import shutil

    import yaml

    root, first = judged_series
    shutil.copytree(root / "store", tmp_path / "store")
    config = yaml.safe_load((root / "config.yaml").read_text()) | {"store": {"url": str(tmp_path / "store")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (fp,) = next(r for r in first.summary if r["step"] == step)["evaluation_fingerprints"]
    damaged = tmp_path / "store" / "evaluations" / fp / "predictions.parquet"
    damage(damaged)

    second = run_night(tmp_path / "config.yaml", 2, START)  # every step a cache hit: only the judgement reads predictions
    assert [(r["model"], r["status"], r["cached"]) for r in second.summary] == [
        ("real", "ok", True), ("ddpm@100", "ok", True), ("ddpm@200", "ok", True), ("ddpm@300", "ok", True)]
    assert [r["step"] for r in second.best] == [100, 200, 300]
    assert all(r["in_best_set"] is None and not r["is_leader"] for r in second.best)
    assert [r["vs_best_so_far"] for r in second.best] == [None, None, "unknown"]
    reason = second.best[0]["reason"]
    assert reason.startswith(f"model 'ddpm@{step}' in run {second.run_id}: ") and f"{damaged}" in reason and problem in reason
    assert [r["cas_top1"] for r in second.best] == [r["cas_top1"] for r in first.best]  # CAS per step, from the counts

    store = tmp_path / "store"
    rows = duckdb.sql(f"SELECT run_id, step, in_best_set, reason FROM read_parquet('{store}/results/best/**/*.parquet', "
                      "hive_partitioning=true, union_by_name=true) ORDER BY run_id, step").fetchall()
    assert [(r[1], r[2], r[3] is None) for r in rows] == [(100, False, True), (200, True, True), (300, False, True),
                                                          (100, None, False), (200, None, False), (300, None, False)]
    capsys.readouterr()
    assert main(["best", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"series ddpm: best set unknown: model 'ddpm@{step}'" in out and str(damaged) in out
    assert main(["results", "--store", str(store)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ddpm@300")]
    assert " unknown " in line  # vs best so far
    page = reporting.build_report(Store(str(store)), second.run_id)
    assert "Best set unknown: model &#x27;ddpm@" in page or "Best set unknown: model 'ddpm@" in page
