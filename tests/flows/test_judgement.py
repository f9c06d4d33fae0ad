"""Night-to-night judgement through the steps: per-image predictions, the comparison with
each model's previous run, the `cas compare` and `cas report` commands, and bad input.

Runs go through `flows.steps` (no Prefect): two "nights" are two calls of `run_night`
on one store, each ending in `steps.write_results` as the flow's last step does."""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casflow.flows import records, steps
from casflow.flows.cli import main
from casflow.storage import artifacts, results
from casflow.storage.shards import iter_shard_set
from casflow.tasks.compare import compare
from casflow.tasks.datasets import digits_splits
from helpers import NO_SCORES, TINY_CLASSIFIER, run_night, write_config

START = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def npz_model(directory: Path, name: str, images: np.ndarray, labels: np.ndarray) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"{name}.npz", arr_0=images, arr_1=labels)
    return {"kind": "npz", "path": str(directory / f"{name}.npz")}


def by_model(rows: list[dict]) -> dict[str, dict]:
    return {row["model"]: row for row in rows}


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory):
    """Night 1: three models. Night 2: `candidate` lost its class 3 (its 3s are 8s now), `redrawn`
    is the same generator under a new seed, `steady` did not change. With one classifier seed the
    redraw of this tiny recipe is flagged about one time in twenty (see the simulation below); with
    three, the seed noise is measured and a redraw stays within it."""
    root = tmp_path_factory.mktemp("nights")
    train, _ = digits_splits(0.2, 0)
    eights = train.images[train.labels == 8]
    broken = train.images.copy()
    threes = np.flatnonzero(train.labels == 3)
    broken[threes] = eights[np.arange(len(threes)) % len(eights)]
    steady = {"name": "steady", "generator": {"kind": "gaussian", "components": 8}}
    night1 = [{"name": "candidate", "generator": npz_model(root / "in", "good", train.images, train.labels)},
              {"name": "redrawn", "generator": {"kind": "gaussian", "components": 32}}, steady]
    night2 = [{"name": "candidate", "generator": npz_model(root / "in", "broken", broken, train.labels)},
              {"name": "redrawn", "seed": 1, "generator": {"kind": "gaussian", "components": 32}}, steady]
    classifier = TINY_CLASSIFIER | {"seeds": [0, 1, 2]}  # three seeds: retraining noise is measured, and judged
    first = run_night(write_config(root, night1, name="night1.yaml", classifier=classifier), 1, START)
    second = run_night(write_config(root, night2, name="night2.yaml", classifier=classifier), 2, START)
    return root, first, second


def test_predictions_are_stored_with_each_evaluation(two_nights):
    root, first, _ = two_nights
    store = steps.open_store(steps.read_config(str(root / "night1.yaml")).store)
    row = by_model(first.summary)["candidate"]
    predictions = artifacts.read_predictions(store, row["evaluation_fingerprint"])
    assert predictions.column_names == ["key", "label", "top5", "p_true", "p_top1"] and predictions.num_rows == 359
    keys = predictions.column("key").to_pylist()
    assert keys == sorted(keys) and keys[0] == "000000000"
    dataset = steps.prepare_dataset(steps.read_config(str(root / "night1.yaml")), store)
    eval_labels = [int(parts["cls"]) for _, parts in iter_shard_set(store, dataset.eval)]
    assert predictions.column("label").to_pylist() == eval_labels  # keyed as the eval shards are
    top5 = np.array(predictions.column("top5").to_pylist())
    assert top5.shape == (359, 5) and all(len(set(r)) == 5 for r in top5)
    correct = int((top5[:, 0] == np.array(eval_labels)).sum())
    assert correct == round(row["cas_top1"] * 359) or len(row["classifier_seeds"]) > 1  # agrees with the stored counts
    metrics = artifacts.read_evaluation(store, row["evaluation_fingerprint"])
    assert correct == sum(metrics["counts"]["top1_correct"])
    p_true = predictions.column("p_true").to_numpy()
    assert ((p_true > 0) & (p_true <= 1)).all() and p_true[top5[:, 0] == eval_labels].min() > 0.1
    p_top1, right = predictions.column("p_top1").to_numpy(), top5[:, 0] == eval_labels
    assert (p_top1 >= p_true).all() and (p_top1[right] == p_true[right]).all() and (p_top1[~right] > p_true[~right]).all()


def test_the_first_night_has_nothing_to_compare(two_nights):
    _, first, _ = two_nights
    assert first.changes == [] and all(r["change"] is None and r["previous_run_id"] is None for r in first.summary)


def test_a_class_that_broke_is_flagged_and_a_redraw_is_not(two_nights):
    _, first, second = two_nights
    summary = by_model(second.summary)
    candidate, redrawn = summary["candidate"], summary["redrawn"]
    assert candidate["previous_run_id"] == first.run_id and candidate["change"] == "worse" and candidate["delta_top1"] < 0
    assert redrawn["previous_run_id"] == first.run_id and redrawn["change"] == "same"
    assert summary["steady"]["change"] is None  # the same samples both nights: nothing to judge
    changes = [r for r in second.changes if r["model"] == "candidate"]
    assert [r["class_index"] for r in changes] == [None, *range(10)]
    flagged = {r["class_name"] for r in changes if r["direction"] == "worse"}
    assert "3" in flagged and None in {r["class_index"] for r in changes if r["direction"] == "worse"}
    three = next(r for r in changes if r["class_name"] == "3")
    assert three["top1_before"] > 0.85 and three["top1_after"] < 0.3 and three["p_adjusted"] < 0.05
    assert three["delta_ci_high"] < 0 and three["n_worse"] > three["n_better"]
    assert not any(r["significant"] for r in second.changes if r["model"] == "redrawn")


def test_the_changes_table_is_written_and_read_back(two_nights):
    root, _, second = two_nights
    store = steps.open_store(steps.read_config(str(root / "night2.yaml")).store)
    table = results.read_run(store, "changes", second.run_id)
    assert table.num_rows == len(second.changes) == 22  # candidate and redrawn: overall + 10 classes each
    assert all(r["seed_noise"] is not None and r["seed_spread"] is not None for r in table.to_pylist() if r["class_index"] is None)
    assert table.schema.field("class_index").nullable and set(table.column("direction").to_pylist()) <= {"better", "worse", "same"}


def test_cas_compare_and_its_exit_codes(two_nights, capsys):
    root, first, second = two_nights
    store = str(root / "store")
    assert main(["compare", "--store", store]) == 0  # the latest two runs
    out = capsys.readouterr().out
    assert f"{first.run_id} -> {second.run_id}" in out
    assert "candidate  all" in out and "worse" in out and "redrawn    all" in out
    assert main(["compare", "--store", store, "--fail-on-regression"]) == 3
    assert main(["compare", first.run_id, second.run_id, "--store", store, "--model", "redrawn",
                 "--fail-on-regression"]) == 0
    capsys.readouterr()
    assert main(["compare", second.run_id, first.run_id, "--store", store, "--model", "candidate", "--per-class"]) == 0
    backwards = capsys.readouterr().out
    assert "better" in backwards and len([line for line in backwards.splitlines() if line.startswith("candidate")]) == 11


@pytest.mark.parametrize("argv, words", [
    (["compare", "20990101T000000Z-nope"], "no run 20990101T000000Z-nope"),
    (["compare", "a", "b", "c"], "at most two runs"),
    (["compare", "--model", "no-such-model"], "no model 'no-such-model' finished in both"),
])
def test_cas_compare_bad_command_lines(two_nights, argv, words, capsys):
    root, _, _ = two_nights
    with pytest.raises(SystemExit) if "at most" in words else _nothing():
        code = main([*argv, "--store", str(root / "store")])
        assert code == 2
    assert words in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _old_style_copy(store_dir: Path, run_id: str, edit) -> None:
    """Rewrite a run's summary file as `edit` says (an older or another run's rows)."""
    (path,) = store_dir.glob(f"results/summary/*/run={run_id}/part-0.parquet")
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


def test_runs_of_other_recipes_and_runs_without_predictions_are_refused(two_nights, tmp_path, capsys):
    import shutil

    root, first, second = two_nights
    copy = tmp_path / "store"
    shutil.copytree(root / "store", copy)

    def other_recipe(table: pa.Table) -> pa.Table:
        return table.set_column(table.schema.get_field_index("recipe_fingerprint"), "recipe_fingerprint",
                                pa.array(["0" * 64] * table.num_rows))

    _old_style_copy(copy, first.run_id, other_recipe)
    assert main(["compare", "--store", str(copy)]) == 2
    assert "used different classifier recipes" in capsys.readouterr().err

    shutil.rmtree(copy)
    shutil.copytree(root / "store", copy)
    for fp in by_model(first.summary)["candidate"]["evaluation_fingerprints"]:
        (copy / "evaluations" / fp / "predictions.parquet").unlink()  # as if written before predictions were kept
    assert main(["compare", "--store", str(copy), "--model", "candidate"]) == 2
    err = capsys.readouterr().err
    assert f"model 'candidate' in run {first.run_id}: no per-image predictions stored" in err and "rerun" in err


def test_an_old_store_keeps_working(two_nights, tmp_path, capsys):
    """A store written before changes, seeds and recipe fingerprints existed: only the old columns."""
    import shutil

    root, first, _ = two_nights
    copy = tmp_path / "store"
    shutil.copytree(root / "store", copy)
    old_columns = ["run_id", "run_time", "flow_run_id", "dataset", "dataset_fingerprint", "model", "generator_kind", "recipe",
                   "seed", "samples_fingerprint", "classifier_fingerprint", "evaluation_fingerprint", "status", "error",
                   "n_samples", "n_eval", "cas_top1", "cas_top5", "cas_top1_ci_low", "cas_top1_ci_high", "real_top1",
                   "real_top5", "cas_ratio_top1", "cas_ratio_top5", "worst_class", "worst_class_top1", "sample_seconds",
                   "train_seconds", "eval_seconds", "device", "samples_cached", "classifier_cached", "evaluation_cached",
                   "cached"]
    for path in copy.glob("results/summary/*/*/part-0.parquet"):
        pq.write_table(pq.read_table(path).select(old_columns), path)
    for path in copy.glob("results/changes/*/*/part-0.parquet"):
        path.unlink()
    assert main(["results", "--store", str(copy)]) == 0
    assert "candidate" in capsys.readouterr().out
    assert main(["compare", "--store", str(copy)]) == 2
    assert "no per-image predictions stored" in capsys.readouterr().err
    assert main(["report", "--store", str(copy), "--out", str(tmp_path / "r.html")]) == 0
    assert "Changes since" in (tmp_path / "r.html").read_text()
    # a new night on the old store: nothing to compare with (old rows lack the recipe fingerprint), nothing fails
    config = write_config(tmp_path, [{"name": "steady", "generator": {"kind": "gaussian", "components": 8}}],
                          store_url=str(copy), name="new.yaml")
    record = run_night(config, 3, START)
    assert record.changes == [] and {r["status"] for r in record.summary} == {"ok"}


# ---------------------------------------------------------------- a damaged or missing past

def night2_again(two_nights, tmp_path: Path, damage) -> tuple[Path, records.ResultsRecord]:
    """Night 2 once more, on a copy of the store with night 2's results removed and `damage(copy)` done
    to night 1's files: every step a cache hit, only write_results works."""
    import shutil

    import yaml

    root, _, second = two_nights
    copy = tmp_path / "store"
    shutil.copytree(root / "store", copy)
    for folder in copy.glob(f"results/*/*/run={second.run_id}"):
        shutil.rmtree(folder)
    damage(copy)
    config = yaml.safe_load((root / "night2.yaml").read_text())
    config["store"]["url"] = str(copy)
    (tmp_path / "night2.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copy, run_night(tmp_path / "night2.yaml", 2, START)


def flip(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_past_predictions_is_unknown_and_tonight_is_written(two_nights, tmp_path, capsys):
    """Issue 19 item 2: one damaged file of a past run failed write-results, and no model's results were written."""
    from casflow.flows.cli import render_changes
    from casflow.storage.store import Store

    _, first, second = two_nights
    candidate_fps = by_model(first.summary)["candidate"]["evaluation_fingerprints"]
    copy, record = night2_again(two_nights, tmp_path, lambda s: flip(s / "evaluations" / candidate_fps[1] / "predictions.parquet"))
    damaged = copy / "evaluations" / candidate_fps[1] / "predictions.parquet"
    summary = by_model(results.read_run(Store(str(copy)), "summary", second.run_id).to_pylist())
    assert set(summary) == {"real", "candidate", "redrawn", "steady"} and {r["status"] for r in summary.values()} == {"ok"}
    assert summary["candidate"]["change"] == "unknown" and summary["candidate"]["previous_run_id"] == first.run_id
    assert summary["candidate"]["delta_top1"] is None
    assert summary["redrawn"]["change"] == "same" and summary["steady"]["change"] is None  # the others judged as before
    changes = results.read_run(Store(str(copy)), "changes", second.run_id).to_pylist()
    assert [r["model"] for r in changes] == [r["model"] for r in record.changes]
    assert len(changes) == 1 + 11  # candidate: one unknown row; redrawn: overall + 10 classes
    (unknown,) = [r for r in changes if r["model"] == "candidate"]
    assert unknown["direction"] == "unknown" and unknown["class_index"] is None and not unknown["significant"]
    assert unknown["previous_run_id"] == first.run_id and unknown["delta"] is None and unknown["p_value"] is None
    assert f"not compared with run {first.run_id}: model 'candidate' in run {first.run_id}: {damaged}: sha256" in unknown["reason"]
    assert all(r["reason"] is None for r in changes if r["model"] == "redrawn")
    printed = render_changes(changes)  # as `cas run` prints it
    (line,) = [line for line in printed.splitlines() if line.startswith("candidate")]
    assert f"unknown: not compared with run {first.run_id}: model 'candidate' in run {first.run_id}: {damaged}" in line
    assert main(["results", "--store", str(copy)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("candidate")]
    assert " unknown " in line
    assert main(["verify", "--store", str(copy)]) == 1  # and `cas verify` names the file
    out = capsys.readouterr().out
    assert f"{damaged}: sha256" in out or (str(damaged) in out and "sha256" in out), out


def test_a_truncated_past_summary_is_unknown_for_the_models_it_may_hold(two_nights, tmp_path, capsys):
    """Issue 19 item 2: a truncated results part of an old run failed write-results for every model."""
    from casflow.flows import reporting
    from casflow.storage.store import Store

    _, first, second = two_nights

    def truncate(store: Path) -> None:
        (part,) = store.glob(f"results/summary/*/run={first.run_id}/part-0.parquet")
        part.write_bytes(part.read_bytes()[:50])

    copy, record = night2_again(two_nights, tmp_path, truncate)
    (part,) = copy.glob(f"results/summary/*/run={first.run_id}/part-0.parquet")
    store = Store(str(copy))
    summary = by_model(results.read_run(store, "summary", second.run_id).to_pylist())
    assert {r["status"] for r in summary.values()} == {"ok"} and len(summary) == 4  # real too
    # night 1 may hold any model's previous run: none is judged, none passes unseen
    assert {name: r["change"] for name, r in summary.items()} == dict.fromkeys(summary, "unknown")
    changes = results.read_run(store, "changes", second.run_id).to_pylist()
    assert sorted(r["model"] for r in changes) == sorted(summary) and {r["direction"] for r in changes} == {"unknown"}
    assert all(r["previous_run_id"] is None and str(part) in r["reason"] and first.run_id in r["reason"] for r in changes)
    assert "unknown" in reporting.build_report(store, second.run_id)  # the report reads the history it can
    assert main(["verify", "--store", str(copy), "--quick"]) == 1
    assert str(part) in capsys.readouterr().out


def test_a_deleted_past_is_unknown_not_skipped(two_nights, tmp_path):
    """Issue 19 item 3: deleted predictions of the previous run were a log warning and `-`, and the gate passed."""
    from casflow.tasks.results import summary_cells, unknowns

    _, first, _ = two_nights
    fingerprints = by_model(first.summary)["candidate"]["evaluation_fingerprints"]

    def delete(store: Path) -> None:
        for fp in fingerprints:
            (store / "evaluations" / fp / "predictions.parquet").unlink()

    copy, record = night2_again(two_nights, tmp_path, delete)
    candidate = by_model(record.summary)["candidate"]
    assert candidate["change"] == "unknown" and summary_cells(candidate)["vs last"] == "unknown"
    (row,) = unknowns(record.changes)
    assert row["model"] == "candidate" and row["previous_run_id"] == first.run_id
    assert f"model 'candidate' in run {first.run_id}: no per-image predictions stored at {copy}/evaluations/" in row["reason"]
    assert by_model(record.summary)["redrawn"]["change"] == "same"


@pytest.mark.parametrize("digest", ["kept", "absent"])
def test_truncated_past_predictions_are_unknown_naming_model_object_and_problem(two_nights, tmp_path, digest):
    """With the marker's digest the truncation is a sha256 mismatch; without one (a marker written before digests
    were kept) it reaches the Parquet reader. Either way: `unknown`, and tonight's results for every model."""
    _, first, second = two_nights
    fp = by_model(first.summary)["candidate"]["evaluation_fingerprints"][0]

    def truncate(store: Path) -> None:
        predictions = store / "evaluations" / fp / "predictions.parquet"
        predictions.write_bytes(predictions.read_bytes()[:100])
        if digest == "absent":
            marker = json.loads((store / "evaluations" / fp / "metrics.json").read_text())
            del marker["predictions_sha256"]
            (store / "evaluations" / fp / "metrics.json").write_text(json.dumps(marker))

    copy, record = night2_again(two_nights, tmp_path, truncate)
    summary = by_model(record.summary)
    assert {r["status"] for r in summary.values()} == {"ok"} and len(summary) == 4
    assert summary["candidate"]["change"] == "unknown" and summary["redrawn"]["change"] == "same"
    (row,) = [r for r in record.changes if r["model"] == "candidate"]
    problem = "sha256" if digest == "kept" else "unreadable predictions"
    assert f"model 'candidate' in run {first.run_id}: {copy}/evaluations/{fp}/predictions.parquet: {problem}" in row["reason"]
    stored = results.read_run(steps.open_store(steps.read_config(str(tmp_path / "night2.yaml")).store), "summary",
                              second.run_id)
    assert stored.num_rows == 4


# ---------------------------------------------------------------- the false-alarm rate, simulated

@pytest.mark.slow
def test_the_same_generator_redrawn_is_flagged_at_about_the_nominal_rate(tmp_path):
    """20 redraws of one generator under 20 sample seeds, all 190 pairs compared: with this
    classifier (the tests' digits recipe) retraining moves top-1 by well under a point, and
    McNemar's test flags about 5% of pairs (measured 2026-11-29: 5 of 190, 2.6%)."""
    models = [{"name": f"gauss-{s}", "seed": s, "generator": {"kind": "gaussian", "components": 16}} for s in range(20)]
    config = steps.read_config(str(write_config(tmp_path, models)))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    scored = []
    for model in config.models:
        samples = steps.draw_samples(config, store, model, dataset, "cpu")
        classifier = steps.train_classifier(config, store, samples, dataset, "cpu", config.seed)
        evaluation = steps.evaluate_classifier(config, store, classifier, dataset, "cpu")
        scored.append(steps.correctness(store, {"model": model.name, "run_id": "-", "evaluation_fingerprints": [evaluation.fingerprint]}))
    labels = scored[0][1]
    verdicts = [compare(scored[i][0], scored[j][0], labels, 10) for i, j in itertools.combinations(range(20), 2)]
    overall = np.mean([v[0].significant for v in verdicts])
    worse = np.mean([v[0].direction == "worse" for v in verdicts])
    class_worse = np.mean([any(c.direction == "worse" for c in v[1:]) for v in verdicts])
    print(f"significant {overall:.3f}, overall worse {worse:.3f}, a class worse {class_worse:.3f}")
    assert overall <= 0.10, overall  # nominal 5%; 0.10 leaves room for 190 dependent pairs
    assert worse <= 0.05, worse  # a regression flagged: nominal 2.5% (one side of the two-sided 5%)
    assert class_worse <= 0.08, class_worse  # a class flagged worse: Holm keeps the 10 class tests near 2.5%


def test_dataclass_rows_round_trip_through_the_schema():
    """Every field of a Change has a column in the changes table."""
    from casflow.tasks.compare import Change

    assert {f.name for f in dataclasses.fields(Change)} <= set(results.CHANGES_SCHEMA.names)


# ---------------------------------------------------------------- the report in a real browser

CHECK = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.target.src || e)), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const gallery = [...document.querySelectorAll("table.gallery img")];
  const shown = gallery.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().height >= 50).length;
  const series = images.filter(i => i.alt.endsWith(": CAS top-1 per step")).map(i => i.getBoundingClientRect().width);
  const best = [...document.querySelectorAll("table")].filter(t => [...t.rows[0].cells].some(c => c.innerText === "best set"))
    .map(t => [...t.rows].slice(1).map(r => r.cells[1].innerText + (r.className === "better" ? " in best set" : "")));
  document.body.setAttribute("data-check", JSON.stringify({images: images.length, broken, errors: window.__errors,
                                                           gallery: gallery.length, shown, series, best}));
});
</script>"""


def _chromium() -> str:
    import shutil

    found = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    if found is None:
        pytest.skip("no Chromium here: install Debian's `chromium` package (.ci/run does, as root)")
    return found


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,2400"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_report_renders_in_chromium(two_nights, tmp_path):
    browser = _chromium()
    root, _, second = two_nights
    page = tmp_path / "report.html"
    assert main(["report", "--store", str(root / "store"), "--out", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing fetched
    for section in ("Summary", "Changes since", "Per-class accuracy", "Trend over runs", "Confusion matrices", "Samples beside"):
        assert section in text
    assert text.count("data:image/svg+xml;base64,") >= 3 * 2  # per-class bars and a confusion matrix per model
    assert text.count("data:image/png;base64,") >= 3 + 1  # samples per model, the real grid
    assert (root / "store" / "reports" / second.run_id / "index.html").exists()

    check = _checked_in(browser, tmp_path, text)
    assert check["images"] >= 10 and check["broken"] == 0 and check["errors"] == [], check

    pixels = _screenshot(browser, tmp_path, page).mean(axis=2)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20  # not a blank page


def _checked_in(browser: str, tmp_path: Path, text: str) -> dict:
    """The page loaded in Chromium with CHECK: its images, the broken ones, script errors, the gallery's images
    and how many were drawn at least 50 px high, the series charts' widths, the best tables' rows."""
    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("<body>", "<body>" + CHECK, 1))
    done = _headless(browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr
    match = re.search(r'data-check="([^"]*)"', done.stdout)
    assert match, done.stdout[-2000:]
    return json.loads(html.unescape(match.group(1)))


def _screenshot(browser: str, tmp_path: Path, page: Path) -> np.ndarray:
    from PIL import Image

    shot = tmp_path / f"{page.stem}.png"
    done = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)


def _section_page(tmp_path: Path, text: str, heading: str) -> Path:
    """One section of the report (its <h2> to the next) as a page of its own, with the report's style."""
    start = text.index(f"<h2>{heading}")
    end = text.find("<h2>", start + 4)
    page = tmp_path / f"section-{heading.split()[0].lower()}.html"
    page.write_text(text[: text.index("<body>") + len("<body>")] + text[start : end if end > 0 else None])
    return page


def _has_dark_square(pixels: np.ndarray, side: int = 24) -> bool:
    """Whether some side x side square is all dark: an upscaled digit's black background, which no text makes."""
    dark = (pixels.mean(axis=2) < 60).astype(np.int64).cumsum(0).cumsum(1)
    full = dark[side:, side:] - dark[:-side, side:] - dark[side:, :-side] + dark[:-side, :-side]
    return bool((full == side * side).any())


def test_the_failure_gallery_shows_the_most_confident_misses_beside_the_nearest_samples(two_nights):
    """Night 2's `candidate` draws eights for its 3s: a real image it takes for a 3 finds those eights beside it."""
    from casflow.flows import reporting
    from casflow.storage.store import Store

    root, _, second = two_nights
    store = Store(str(root / "store"))
    summary = results.read_run(store, "summary", second.run_id).to_pylist()
    changes = results.read_run(store, "changes", second.run_id).to_pylist()
    found = reporting.galleries(store, summary, changes, [], tuple(map(str, range(10))))
    assert list(found) == ["real", "candidate", "redrawn", "steady"]  # all plain models
    for model, gallery in found.items():
        row = by_model(summary)[model]
        predictions = artifacts.read_predictions(store, row["evaluation_fingerprints"][0])
        top1 = np.array([t[0] for t in predictions.column("top5").to_pylist()])
        missed = predictions.column("p_top1").to_numpy()[top1 != predictions.column("label").to_numpy()]
        assert [m.confidence for m in gallery.misses] == sorted(missed, reverse=True)[:8]  # the most confident misses
        assert all(m.true_class != m.predicted_class and len(m.true_neighbours) == len(m.predicted_neighbours) == 3
                   for m in gallery.misses)
    train, _ = digits_splits(0.2, 0)
    eights = {image.tobytes() for image in train.images[train.labels == 8]}
    taken_for_three = [m for m in found["candidate"].misses if m.predicted_class == 3]
    assert taken_for_three and all(sample.tobytes() in eights for m in taken_for_three for sample in m.predicted_neighbours)
    real_threes = {image.tobytes() for image in train.images[train.labels == 3]}
    assert all(sample.tobytes() in real_threes for m in found["real"].misses if m.true_class == 3
               for sample in m.true_neighbours)  # the baseline's samples are the real train split


def test_an_evaluation_stored_before_the_confidence_was_kept_has_a_note_not_a_gallery(two_nights, tmp_path):
    import hashlib
    import shutil

    from casflow.flows import reporting
    from casflow.storage.store import Store

    root, _, second = two_nights
    shutil.copytree(root / "store", tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / "galleries")  # a store from before p_top1 has no stored galleries either
    store = Store(str(tmp_path / "store"))
    summary = results.read_run(store, "summary", second.run_id).to_pylist()
    folder = tmp_path / "store" / "evaluations" / by_model(summary)["candidate"]["evaluation_fingerprints"][0]
    pq.write_table(pq.read_table(folder / "predictions.parquet").drop_columns(["p_top1"]), folder / "predictions.parquet")
    marker = json.loads((folder / "metrics.json").read_text())
    marker["predictions_sha256"] = hashlib.sha256((folder / "predictions.parquet").read_bytes()).hexdigest()
    (folder / "metrics.json").write_text(json.dumps(marker))  # as casflow wrote it before p_top1
    found = reporting.galleries(store, summary, [], [], tuple(map(str, range(10))))
    assert found["candidate"].misses == () and "stored before casflow kept the predicted class's probability" in \
        found["candidate"].note
    assert len(found["steady"].misses) == 8  # the others are shown


def test_the_failure_gallery_renders_in_chromium(two_nights, tmp_path):
    from casflow.flows import reporting
    from casflow.storage.store import Store

    browser = _chromium()
    root, _, second = two_nights
    text = reporting.build_report(Store(str(root / "store")), second.run_id)
    assert text.count("<table class=gallery>") == 4 and text.count("</b>, taken for <b>") == 4 * 8
    check = _checked_in(browser, tmp_path, text)
    assert check["broken"] == 0 and check["errors"] == [], check
    assert check["gallery"] == check["shown"] == 4 * 8 * 3, check  # per miss: the image and two strips of samples
    pixels = _screenshot(browser, tmp_path, _section_page(tmp_path, text, "Failure gallery"))
    assert pixels.std() > 20 and _has_dark_square(pixels)  # upscaled digits, drawn


@pytest.mark.slow
def test_a_series_report_renders_its_chart_and_best_set_in_chromium(tmp_path, monkeypatch):
    from casflow.flows import reporting
    from casflow.storage.store import Store
    from examples import checkpoint_series

    browser = _chromium()
    monkeypatch.setattr("sys.argv", ["checkpoint_series", "--out", str(tmp_path)])
    checkpoint_series.main()
    (tmp_path / "samples-4000.npz").unlink()  # three checkpoints: a leader and weaker ones
    series = {"name": "ddpm", "generator": {"kind": "npz", "path": f"{tmp_path}/samples-{{step}}.npz"}, "series": {}}
    record = run_night(write_config(tmp_path, [series], name="tiny-series.yaml", scores=NO_SCORES), 1, START)
    in_best_set = {r["step"] for r in record.best if r["in_best_set"]}
    assert in_best_set and 1000 not in in_best_set  # 2 PCA dimensions lose CAS
    text = reporting.build_report(Store(str(tmp_path / "store")), record.run_id)
    check = _checked_in(browser, tmp_path, text)
    assert check["broken"] == 0 and check["errors"] == [], check
    assert len(check["series"]) == 1 and check["series"][0] >= 300, check  # the chart, drawn at its width
    assert check["best"] == [[f"{step}" + (" in best set" if step in in_best_set else "")
                              for step in (1000, 2000, 3000)]], check
    leader = next(r["model"] for r in record.best if r["is_leader"])
    assert f"<h3>{leader}</h3>" in text[text.index("<h2>Failure gallery"):]  # the best checkpoint's gallery

    pixels = _screenshot(browser, tmp_path, _section_page(tmp_path, text, "Series"))
    blue = (np.abs(pixels - np.array([59, 111, 182])).max(axis=2) <= 8).sum()  # the chart's line and points
    green = (np.abs(pixels - np.array([225, 245, 225])).max(axis=2) <= 2).sum()  # best-set rows
    assert blue > 100 and green > 2000, (blue, green)  # measured: 167 and 18,556 with three points


def test_a_night_whose_every_model_failed_still_gets_its_report(tmp_path):
    """No model finished (a step time limit on a loaded machine, say): no per-class rows name the classes, and
    the report still renders the failures, without sample grids."""
    from casflow.flows import reporting
    from casflow.tasks.results import ModelOutcome, RunInfo

    config = steps.read_config(str(write_config(tmp_path, [{"name": "g", "generator": {"kind": "gaussian"}}])))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)  # the real train split's shards are there
    failed = [ModelOutcome(m.name, m.generator.kind, error=f"model '{m.name}': StepTimeLimit: train-classifier did not "
                                                           "finish within limits.step_seconds = 4 s") for m in config.all_models]
    run = RunInfo("20261205T020000Z-failed", START, None, dataset.name, dataset.fingerprint, dataset.class_names,
                  config.classifier.resolved.name, config.classifier.resolved.fingerprint, config.seed, config.classifier_seeds)
    record = steps.write_results(store, run, failed, config.baseline.name)
    text = reporting.build_report(store, record.run_id)
    assert "model &#x27;g&#x27;: StepTimeLimit" in text or "model 'g': StepTimeLimit" in text
    assert "(no samples found)" in text
