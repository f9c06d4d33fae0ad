"""Results as Parquet, appended per run and partitioned hive-style:
  results/per_class/date=YYYY-MM-DD/run=<run_id>/part-0.parquet
  results/changes/date=YYYY-MM-DD/run=<run_id>/part-0.parquet
  results/best/date=YYYY-MM-DD/run=<run_id>/part-0.parquet      (runs with a series of checkpoints)
  results/summary/date=YYYY-MM-DD/run=<run_id>/part-0.parquet   (written last: a run with a summary is whole)
Long form: one row per (run, model, class), per (run, model, class or overall)
change since the model's previous run, and per (run, model). A comparison
that could not be made (the previous run's predictions or summary gone or
unreadable) is one overall changes row, direction `unknown`, with its
`reason` and null numbers. Accuracies are fractions in [0, 1]; durations are
seconds. Run ids start with the UTC time to the second; runs are ordered by
`run_time` (`run_ids`). Columns are only ever added (or made nullable): read
the tables with DuckDB's `union_by_name=true` so that older runs' files line up.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from casflow.storage.store import Store
from casflow.tasks.exits import CasError

_RUN_KEYS = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("flow_run_id", pa.string()),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("dataset_fingerprint", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("generator_kind", pa.string(), nullable=False),
    pa.field("recipe", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("samples_fingerprint", pa.string()),
    pa.field("classifier_fingerprint", pa.string()),
]

PER_CLASS_SCHEMA = pa.schema(_RUN_KEYS + [
    pa.field("class_index", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("n_train", pa.int64(), nullable=False),  # synthetic samples of this class trained on
    pa.field("n_eval", pa.int64(), nullable=False),  # real held-out images of this class
    pa.field("top1", pa.float64()),  # null for a class without eval images (no accuracy; not 0)
    pa.field("top5", pa.float64()),
    pa.field("top1_ci_low", pa.float64()),  # Wilson 95% interval; null without eval images
    pa.field("top1_ci_high", pa.float64()),
    pa.field("cached", pa.bool_(), nullable=False),  # every step of this model came from the store
    pa.field("top1_seed_std", pa.float64()),  # spread of top1 across classifier seeds; null with one seed
    # scores beside CAS (config `scores`), in the real baseline's classifier; null when not asked for or not computable
    pa.field("gan_test_top1", pa.float64()),  # that classifier's accuracy on this class's samples
    pa.field("fd", pa.float64()),  # Frechet distance to this class's real eval images (biased at few images per class)
    pa.field("precision", pa.float64()),
    pa.field("recall", pa.float64()),
    pa.field("density", pa.float64()),
    pa.field("coverage", pa.float64()),
    pa.field("memorized_fraction", pa.float64()),  # share of this class's samples that are near copies of train images
    pa.field("scores_n_samples", pa.int64()),  # this class's samples GAN-test and the feature scores used (a seeded subset)
    pa.field("scores_n_real", pa.int64()),  # this class's real eval images the feature scores used
    # a checkpoint of a series (config `series`): the series' name and the checkpoint's step; null for a plain model
    pa.field("series", pa.string()),
    pa.field("step", pa.int64()),
])

SUMMARY_SCHEMA = pa.schema(_RUN_KEYS + [
    pa.field("evaluation_fingerprint", pa.string()),
    pa.field("status", pa.string(), nullable=False),  # ok | failed
    pa.field("error", pa.string()),
    pa.field("n_samples", pa.int64()),
    pa.field("n_eval", pa.int64()),
    pa.field("cas_top1", pa.float64()),
    pa.field("cas_top5", pa.float64()),
    pa.field("cas_top1_ci_low", pa.float64()),
    pa.field("cas_top1_ci_high", pa.float64()),
    pa.field("real_top1", pa.float64()),  # the baseline: the same recipe trained on the real train split
    pa.field("real_top5", pa.float64()),
    pa.field("cas_ratio_top1", pa.float64()),  # cas_top1 / real_top1
    pa.field("cas_ratio_top5", pa.float64()),
    pa.field("worst_class", pa.string()),  # lowest top1 among the classes with eval images
    pa.field("worst_class_top1", pa.float64()),
    pa.field("sample_seconds", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    pa.field("eval_seconds", pa.float64()),
    pa.field("device", pa.string()),
    pa.field("samples_cached", pa.bool_()),
    pa.field("classifier_cached", pa.bool_()),
    pa.field("evaluation_cached", pa.bool_()),
    pa.field("cached", pa.bool_(), nullable=False),
    pa.field("recipe_fingerprint", pa.string()),  # recipe and hyperparameters: runs compare only under the same one
    pa.field("classifier_seeds", pa.list_(pa.int64())),  # one classifier per seed; cas_* are means over them
    pa.field("classifier_fingerprints", pa.list_(pa.string())),  # per seed; classifier_fingerprint is the first
    pa.field("evaluation_fingerprints", pa.list_(pa.string())),
    pa.field("cas_top1_seed_std", pa.float64()),  # spread of cas_top1 across seeds; null with one seed
    pa.field("classifier_seeds_used", pa.int64()),  # classifiers trained (and evaluated), one per seed
    # adaptive seeds (classifier.seeds: {min, max}): why the model took no more (tasks/seeds.py); null for a list
    pa.field("seeds_stopped", pa.string()),
    pa.field("previous_run_id", pa.string()),  # the run this model was compared with (results/changes)
    # better | worse | same | unknown (a previous run that could not be read: results/changes says why);
    # null without a previous run to compare with
    pa.field("change", pa.string()),
    pa.field("delta_top1", pa.float64()),  # cas_top1 minus the previous run's, on the same eval images
    pa.field("change_p_value", pa.float64()),  # exact McNemar (sign) test of that change
    # scores beside CAS (config `scores`; tasks/scores.py), in the real baseline's classifier (first seed)
    pa.field("scores_classifier_fingerprint", pa.string()),  # the classifier GAN-test and the features come from
    pa.field("gan_test_top1", pa.float64()),  # its accuracy on the samples (Shmelkov et al. 2018)
    pa.field("fd", pa.float64()),  # Frechet distance to the real eval split, in its penultimate features
    pa.field("precision", pa.float64()),  # k-NN precision and recall, k = 3 (Kynkaanniemi et al. 2019)
    pa.field("recall", pa.float64()),
    pa.field("density", pa.float64()),  # density and coverage, k = 5 (Naeem et al. 2020)
    pa.field("coverage", pa.float64()),
    pa.field("memorized_fraction", pa.float64()),  # share of samples that are near copies of train images, in pixels
    pa.field("memorized_fraction_features", pa.float64()),  # the same in the features
    pa.field("scores_n_samples", pa.int64()),  # samples GAN-test and the feature scores used: a seeded subset, at most 10k
    pa.field("scores_n_real", pa.int64()),  # real eval images the feature scores used (FD's bias and the k-NN radii depend on both)
    pa.field("nas_ratios", pa.list_(pa.float64())),  # Naive Augmentation Score: synthetic share of the real train count
    pa.field("nas_top1", pa.list_(pa.float64())),  # top-1 of the classifier trained on real + that share of samples
    pa.field("nas_delta_top1", pa.list_(pa.float64())),  # nas_top1 minus real_top1 of the same classifier seed
    # a checkpoint of a series (config `series`): the series' name and the checkpoint's step; null for a plain model
    pa.field("series", pa.string()),
    pa.field("step", pa.int64()),
])

CHANGES_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_time", pa.timestamp("us", tz="UTC"), nullable=False),
    # The run compared with; null only in an `unknown` row whose previous run could not be found (its summary
    # file unreadable). The numbers below are null in `unknown` rows: the comparison was not made (`reason`).
    pa.field("previous_run_id", pa.string()),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("dataset_fingerprint", pa.string(), nullable=False),
    pa.field("recipe", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("samples_fingerprint_before", pa.string()),
    pa.field("samples_fingerprint_after", pa.string(), nullable=False),
    pa.field("class_index", pa.int32()),  # null: the model overall
    pa.field("class_name", pa.string()),
    pa.field("n_eval", pa.int64()),
    pa.field("top1_before", pa.float64()),  # these five are null for a class without eval images, and in `unknown` rows
    pa.field("top1_after", pa.float64()),
    pa.field("delta", pa.float64()),  # top1_after - top1_before
    pa.field("delta_ci_low", pa.float64()),  # 95%, paired on the same images
    pa.field("delta_ci_high", pa.float64()),
    pa.field("n_better", pa.int64()),  # images now scored better (seed-averaged)
    pa.field("n_worse", pa.int64()),
    pa.field("p_value", pa.float64()),  # exact McNemar (sign) test
    pa.field("p_adjusted", pa.float64()),  # Holm across the classes; overall: p_value
    pa.field("seed_spread", pa.float64()),  # std of top1 across seeds (the larger run's); null with one seed
    pa.field("seed_noise", pa.float64()),  # the change that retraining alone makes likely; null unless both runs have seeds
    pa.field("significant", pa.bool_(), nullable=False),
    pa.field("direction", pa.string(), nullable=False),  # better | worse | same | unknown (not compared: `reason`)
    pa.field("reason", pa.string()),  # why an `unknown` row was not compared (names the unreadable file); else null
])

BEST_SCHEMA = pa.schema([  # one row per checkpoint of each series in the run (tasks/compare.best_set)
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("dataset_fingerprint", pa.string(), nullable=False),
    pa.field("recipe", pa.string(), nullable=False),
    pa.field("series", pa.string(), nullable=False),
    pa.field("step", pa.int64(), nullable=False),
    pa.field("model", pa.string(), nullable=False),  # <series>@<step>
    pa.field("samples_fingerprint", pa.string(), nullable=False),
    pa.field("n_eval", pa.int64(), nullable=False),
    pa.field("cas_top1", pa.float64(), nullable=False),  # mean over classifier seeds
    pa.field("cas_top1_ci_low", pa.float64()),  # Wilson 95% on the eval images
    pa.field("cas_top1_ci_high", pa.float64()),
    pa.field("is_leader", pa.bool_(), nullable=False),  # the highest cas_top1 of the series
    pa.field("delta", pa.float64()),  # cas_top1 minus the leader's, paired on the same images; null for the leader
    pa.field("n_better", pa.int64()),  # images this checkpoint scores better than the leader (seed-averaged)
    pa.field("n_worse", pa.int64()),
    pa.field("p_value", pa.float64()),  # exact McNemar (sign) test against the leader
    pa.field("p_adjusted", pa.float64()),  # Holm across the series' checkpoints
    pa.field("seed_noise", pa.float64()),  # the change retraining alone makes likely; null with one seed
    # the leader, or not significantly worse than it; null when the series' best set is unknown (`reason`)
    pa.field("in_best_set", pa.bool_()),
    # on the newest checkpoint's row (highest step) only: it against the best of the earlier steps
    pa.field("vs_best_so_far", pa.string()),  # better | worse | same | unknown; null on other rows and in a series of one
    pa.field("best_so_far_model", pa.string()),
    pa.field("seeds", pa.int64()),  # classifier seeds this checkpoint got (null in tables written before races)
    pa.field("selection", pa.string()),  # all | race (the series' selection)
    pa.field("max_seeds", pa.int64()),  # a race's seeds per checkpoint at most; null unless it raced
    pa.field("race_round", pa.int64()),  # the round of the race that dropped this checkpoint; null if it was not
    # why the series' best set is unknown (a checkpoint's predictions missing or unreadable: model, object,
    # problem), on each of its rows; null in a judged series
    pa.field("reason", pa.string()),
])

TABLES = {"per_class": PER_CLASS_SCHEMA, "changes": CHANGES_SCHEMA, "summary": SUMMARY_SCHEMA, "best": BEST_SCHEMA}
_RUN_DIR = re.compile(r"^run=(.+)$")
PART = "part-0.parquet"


def write_table(store: Store, table: str, rows: list[dict[str, Any]], run_id: str, run_time: datetime) -> str:
    """Write one run's rows as one Parquet file (atomically); returns its URI."""
    data = pa.Table.from_pylist(rows, schema=TABLES[table])
    buffer = io.BytesIO()
    pq.write_table(data, buffer, compression="zstd")
    location = store.results_location(table, run_time.strftime("%Y-%m-%d"), run_id)
    store.write_bytes(location, buffer.getvalue())
    return store.uri(location)


def run_ids(store: Store) -> list[str]:
    """Every committed run (one with a summary file; a run killed while writing has none), oldest first: by
    start time (`run_time`). A run id starts with that time to the second, then a random tail, so the ids
    order runs only between seconds; the summaries of runs that started in the same second are read for
    their exact times."""
    found = sorted(_run_files(store, "summary"))
    by_second: dict[str, list[tuple[str, str]]] = {}
    for run_id, location in found:
        by_second.setdefault(run_id.split("-", 1)[0], []).append((run_id, location))
    ordered = []
    for runs in by_second.values():
        if len(runs) > 1:
            locations = [location for _, location in runs]
            times = [_read(store, "summary", location, data).column("run_time")[0].as_py()
                     for location, data in zip(locations, store.read_many(locations))]
            runs = [run for _, run in sorted(zip(times, runs))]
        ordered += [run_id for run_id, _ in runs]
    return ordered


def read_run(store: Store, table: str, run_id: str) -> pa.Table:
    """One run's rows of a table."""
    for found, location in _run_files(store, table):
        if found == run_id:
            return _read(store, table, location, store.read_bytes(location))
    raise FileNotFoundError(f"no {table} results for run {run_id} in {store.uri(store.results_root(table))}")


def read_all(store: Store, table: str) -> pa.Table:
    """Every run's rows of a table, oldest run (by run time) first (columns a run's file lacks read as null)."""
    locations = [location for _, location in _run_files(store, table)]
    tables = [_read(store, table, location, data) for location, data in zip(locations, store.read_many(locations))]
    order = [("run_time", "ascending"), ("run_id", "ascending")]  # run ids alone order runs only to the second
    return pa.concat_tables(tables).sort_by(order) if tables else TABLES[table].empty_table()


def read_readable(store: Store, table: str) -> tuple[pa.Table, dict[str, str]]:
    """Every run's rows of a table that can be read, oldest run first, and {run id: problem} for each
    run whose file cannot (a flipped byte, a truncated write): one damaged file of history must not
    keep a run from writing its own results. The caller decides what the unreadable runs cost it."""
    locations = [(run_id, location) for run_id, location in _run_files(store, table)]
    tables, unreadable = [], {}
    for (run_id, location), data in zip(locations, store.read_many([location for _, location in locations])):
        try:
            tables.append(_read(store, table, location, data))
        except ResultsError as exc:
            unreadable[run_id] = str(exc)
    order = [("run_time", "ascending"), ("run_id", "ascending")]
    return (pa.concat_tables(tables).sort_by(order) if tables else TABLES[table].empty_table()), unreadable


class ResultsError(CasError, ValueError):
    """A results file that cannot be read; the message names it."""


def _read(store: Store, table: str, location: str, data: bytes) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(data), schema=TABLES[table])
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ResultsError(f"{store.uri(location)}: unreadable {table} results ({type(exc).__name__}: {exc}); "
                           "`cas verify` lists every such file") from None


def _run_files(store: Store, table: str) -> list[tuple[str, str]]:
    """(run id, location) of each committed part-0.parquet of a table (one recursive listing); temporary
    files of an interrupted write are not runs."""
    root = store.results_root(table)
    found = []
    for location in store.find(root):
        date_dir, run_dir, name = (location.split("/")[-3:] + ["", "", ""])[:3]
        match = _RUN_DIR.match(run_dir)
        if name == PART and match and date_dir.startswith("date="):
            found.append((match.group(1), location))
    return found
