"""The run's HTML report: everything it shows read back from the store (results, evaluations,
a few samples per class), rendered by `tasks.report`, written next to the results."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from casflow.flows.shard_data import first_per_class
from casflow.storage import artifacts, results
from casflow.storage.shards import ShardSet, load_shard_set
from casflow.storage.store import Store
from casflow.tasks import report


def write_report(store: Store, run_id: str) -> tuple[str, str]:
    """The run's HTML report, written to the store; returns (its URI, the HTML)."""
    page = build_report(store, run_id)
    location = store.report_location(run_id)
    store.write_bytes(location, page.encode())
    return store.uri(location), page


def build_report(store: Store, run_id: str) -> str:
    """Everything the report shows, read from the store: results, evaluations, shards."""
    summary = results.read_run(store, "summary", run_id).to_pylist()
    per_class = results.read_run(store, "per_class", run_id).to_pylist()
    try:
        changes = results.read_run(store, "changes", run_id).to_pylist()
    except FileNotFoundError:  # a run from before changes were kept
        changes = []
    try:
        best = results.read_run(store, "best", run_id).to_pylist()
    except FileNotFoundError:  # a run without a series of checkpoints
        best = []
    class_names = tuple(name for _, name in sorted({(r["class_index"], r["class_name"]) for r in per_class}))
    confusion, samples = {}, {}
    for row in (r for r in summary if r["status"] == "ok"):
        metrics = [artifacts.read_evaluation(store, fp) for fp in row["evaluation_fingerprints"] or [row["evaluation_fingerprint"]]]
        if all(metrics):
            confusion[row["model"]] = np.sum([np.array(m["counts"]["confusion"]) for m in metrics], axis=0)
        if row["generator_kind"] == "real":  # its samples are the real train split, shown once below
            continue
        shard_set = load_shard_set(store, store.location("samples", row["samples_fingerprint"]))
        if shard_set is not None:
            samples[row["model"]] = grid(store, shard_set, len(class_names))
    real = load_shard_set(store, store.location("real", summary[0]["dataset_fingerprint"], "train")) if summary else None
    return report.render(report.ReportData(
        run_id=run_id, store_url=store.url, class_names=class_names, summary=summary, per_class=per_class,
        changes=changes, history=results.read_readable(store, "summary")[0].to_pylist(), confusion=confusion, samples=samples,
        real_samples=grid(store, real, len(class_names)) if real else None, generated=datetime.now(timezone.utc), best=best))


def grid(store: Store, shard_set: ShardSet, num_classes: int) -> report.SampleGrid:
    return report.sample_grid(*first_per_class(store, shard_set, report.GRID_PER_CLASS), num_classes)
