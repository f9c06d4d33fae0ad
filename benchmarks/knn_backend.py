"""Exact nearest-neighbour search: casflow's torch tiles (tasks/scores.py) or faiss-cpu's IndexFlatL2? The
question behind the near-copy search's backend. Seeded Gaussian queries and references, 64-d (features) and
3072-d (32x32x3 pixels); k = 1, each timed after a warm-up, best of `--repeats`. Prints one table and writes it,
with the raw numbers, to benchmarks/results/.

    pip install faiss-cpu   # not a casflow dependency: only this comparison needs it
    python benchmarks/knn_backend.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)

from casflow.tasks import scores

REPO = Path(__file__).resolve().parent.parent
CASES = [(64, 10_000, 50_000), (3072, 2_000, 10_000)]  # (dimensions, queries, references)


def faiss_nearest(faiss, queries: np.ndarray, references: np.ndarray):
    index = faiss.IndexFlatL2(references.shape[1])
    index.add(references)
    return index.search(queries, 1)


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = []
    for d, m, n in CASES:
        rng = np.random.default_rng(d)
        queries, references = rng.standard_normal((m, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
        ours = functools.partial(scores.nearest_neighbours, queries, references)
        theirs = functools.partial(faiss_nearest, faiss, queries, references)

        agree = float(np.mean(ours()[1] == theirs()[1][:, 0]))
        t_ours, t_theirs = best_of(ours, args.repeats), best_of(theirs, args.repeats)
        rows.append({"d": d, "queries": m, "references": n, "torch_s": t_ours, "faiss_s": t_theirs,
                     "same_nearest": agree, "torch_gflops": 2 * m * n * d / t_ours / 1e9})
        print(rows[-1], flush=True)
    date = datetime.now(timezone.utc)
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
              f"threads), faiss {faiss.__version__}; {date:%Y-%m-%d}; commit {git_commit()}; best of {args.repeats}")
    lines = ["| D | queries x references | torch tiles (s) | faiss IndexFlatL2 (s) | same nearest |",
             "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['d']} | {r['queries']:,} x {r['references']:,} | {r['torch_s']:.2f} | {r['faiss_s']:.2f} | "
              f"{100 * r['same_nearest']:.2f}% |" for r in rows]
    text = f"# Exact 1-NN on the CPU: torch tiles vs faiss-cpu\n\n{header}\n\n" + "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"knn_backend-{date:%Y-%m-%d}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "cases": CASES, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
