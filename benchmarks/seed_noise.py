"""How much does the classifier's seed move CAS? The demo's five generators
(flows/demo.yaml, the embedded digits), each scored by classifiers trained
with N seeds on the same samples. Prints one table and writes it, with the
raw numbers, to benchmarks/results/.

    python benchmarks/seed_noise.py [--seeds 5] [--out benchmarks/results]

The anchor is the `real` baseline of the same run: how much a seed moves
a classifier trained on real data. A change between two nights smaller
than these spreads is noise, not a model change (tasks/compare.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)

from casflow.flows import steps
from casflow.flows.pipeline import DEMO_CONFIG

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="classifier seeds per model (0..N-1)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as store_dir:
        config = steps.read_config(DEMO_CONFIG, store_dir)
        config = config.model_copy(update={"classifier": config.classifier.model_copy(update={"seeds": list(range(args.seeds))})})
        store = steps.open_store(config.store)
        dataset = steps.prepare_dataset(config, store)
        started, rows = time.perf_counter(), []
        for model in config.all_models:
            samples = steps.draw_samples(config, store, model, dataset, "cpu")
            top1 = []
            for seed in config.classifier_seeds:
                classifier = steps.train_classifier(config, store, samples, dataset, "cpu", seed)
                top1.append(100 * steps.evaluate_classifier(config, store, classifier, dataset, "cpu").counts.top1)
            rows.append({"model": model.name, "top1": top1, "second_seed_moves": abs(top1[1] - top1[0]) if len(top1) > 1 else None,
                         "mean": statistics.mean(top1), "std": statistics.stdev(top1) if len(top1) > 1 else None,
                         "range": max(top1) - min(top1)})
            print(f"{model.name}: " + " ".join(f"{t:.2f}" for t in top1), flush=True)
        seconds = time.perf_counter() - started

    date = datetime.now(timezone.utc)
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} on the CPU; "
              f"{date:%Y-%m-%d}; commit {git_commit()}; {args.seeds} seeds; {seconds:.0f} s")
    lines = ["| model | top-1 % per seed | second seed moves it | mean | std across seeds | range |",
             "| --- | --- | --- | --- | --- | --- |"]
    number = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    for r in rows:
        per_seed = " ".join(number(t) for t in r["top1"])
        lines.append(f"| {r['model']} | {per_seed} | {number(r['second_seed_moves'])} | {number(r['mean'])} | "
                     f"{number(r['std'])} | {number(r['range'])} |")
    table = "\n".join(lines)
    text = (f"# Seed noise of CAS on the demo data\n\n{header}\n\nOne classifier per seed on the same samples "
            "(flows/demo.yaml's recipe); points of top-1 on the 359 real eval images. The `real` row is the anchor.\n\n"
            f"{table}\n")
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"seed_noise-{date:%Y-%m-%d}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "config": json.loads(config.model_dump_json()),
                                                     "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
