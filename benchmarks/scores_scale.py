"""How do the scores beside CAS scale? The score step's computations
(tasks/scores.py, as flows/steps.score_samples calls them) on seeded
synthetic sets of N samples and as many train images: 32x32x3 uint8 pixels,
64-d features of a 10-class Gaussian mixture, logits for GAN-test. Prints one
table and writes it, with the raw numbers, to benchmarks/results/.

    python benchmarks/scores_scale.py [--sizes 10000 50000 200000] [--device cpu]

Per N: each score's seconds and their sum (the score step without decoding
and the classifier's forward passes, which are linear and measured
elsewhere); the growth exponent log(t_b / t_a) / log(N_b / N_a) between the
two largest N; a projection to 1.28M samples on one H100 from published
throughput and the constants measured here. A near-copy search of more
than `--pixel-queries` (pixels) or `--feature-queries` (features) points is
timed on that many seeded queries against the whole train split and scaled
by the queries it stands for (each query's exact search is the same work, so
the time is linear in the queries at a fixed train split): the table marks
those with *.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)

from casflow.tasks import scores
from casflow.tasks.fingerprint import code_version

REPO = Path(__file__).resolve().parent.parent
CLASSES, FEATURE_DIM, PIXELS = 10, 64, 32 * 32 * 3
PROJECTED_N = 1_281_167  # ImageNet-1k's train split: one sample per train image, as CAS draws
H100_FP32_FLOPS = 60e12  # H100 SXM dense FP32 (not TF32): 67 TFLOPS peak per NVIDIA's datasheet, taken as ~60 sustained
H100_BYTES_PER_S = 3.35e12  # H100 SXM HBM3 bandwidth per NVIDIA's datasheet
BYTES_PER_DISTANCE = 16  # a float32 tile written by the matmul, then read and written by the clamp, read by the min
SCORES = ("gan_test", "fd", "precision_recall_density_coverage", "per_class", "near_copies_pixels", "near_copies_features")


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    """n labelled points: pixels (uint8), features (float32, a Gaussian per class), logits (float32)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    means = np.random.default_rng(12345).normal(0, 2.0, (CLASSES, FEATURE_DIM)).astype(np.float32)
    features = means[labels] + rng.standard_normal((n, FEATURE_DIM), dtype=np.float32)
    logits = features[:, :CLASSES] + rng.standard_normal((n, CLASSES), dtype=np.float32)
    pixels = rng.integers(0, 256, (n, PIXELS), dtype=np.uint8)
    return {"labels": labels, "features": features, "logits": logits, "pixels": pixels}


def timed(fn, device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, out


def near_copy_seconds(train: np.ndarray, samples: np.ndarray, max_queries: int, device, seed: int) -> tuple[float, str | None]:
    """Seconds of scores.near_copies(train, samples): run as is when it searches at most `max_queries` points per
    part, else its two exact searches (the threshold's train subset, then every sample, each against the whole
    train split) timed on `max_queries` seeded queries each and scaled by the queries they stand for."""
    n, threshold_points = len(samples), min(len(train), scores.SUBSET_LIMIT)
    if max(n, threshold_points) <= max_queries:
        return timed(lambda: scores.near_copies(train, samples, device=device), device)[0], None
    queries = scores.subset(len(train), min(threshold_points, max_queries), seed, "benchmark threshold queries")
    t_threshold, _ = timed(lambda: scores.nearest_neighbours(train[queries], train, exclude=queries, device=device), device)
    rows = scores.subset(n, min(n, max_queries), seed, "benchmark sample queries")
    t_samples, _ = timed(lambda: scores.nearest_neighbours(samples[rows], train, device=device), device)
    note = (f"timed on {len(queries)} of {threshold_points} threshold queries and {len(rows)} of {n} samples against "
            f"all {len(train)} train images, scaled")
    return t_threshold * threshold_points / len(queries) + t_samples * n / len(rows), note


def measure(n: int, pixel_queries: int, feature_queries: int, device, seed: int) -> dict:
    train, samples, real = synthetic(n, seed), synthetic(n, seed + 1), synthetic(n, seed + 2)  # real: the eval split
    sets = scores.set_subsets(samples["labels"], CLASSES, "samples")
    real_sets = scores.set_subsets(real["labels"], CLASSES, "real")
    r, f = real["features"][real_sets.overall], samples["features"][sets.overall]
    seconds, notes = {}, {}
    seconds["gan_test"] = min(timed(lambda: scores.gan_test(samples["logits"][sets.overall], samples["labels"][sets.overall],
                                                            CLASSES), device)[0] for _ in range(5))  # milliseconds: best of 5
    seconds["fd"] = min(timed(lambda: scores.frechet_distance(r, f), device)[0] for _ in range(3))  # best of 3
    seconds["precision_recall_density_coverage"], _ = timed(lambda: scores.manifold_scores(r, f, device=device), device)
    inner: dict[str, float] = {}
    timed(lambda: scores.set_scores(real["features"], real["labels"], samples["features"], samples["labels"], CLASSES,
                                    device=device, seconds=inner), device)
    seconds["per_class"] = inner["set_scores_per_class"]  # set_scores' overall part is the two rows above
    for space, queries in (("pixels", pixel_queries), ("features", feature_queries)):
        seconds[f"near_copies_{space}"], notes[f"near_copies_{space}"] = near_copy_seconds(
            train[space], samples[space], queries, device, seed)
    return {"n": n, "seconds": seconds, "notes": notes, "subset_samples": len(sets.overall), "subset_real": len(real_sets.overall),
            "threshold_points": min(n, scores.SUBSET_LIMIT)}


def projection(largest: dict) -> dict:
    """Near-copy search as t = Q N (a D + b), Q queries (the samples and the threshold's train subset) against N
    train images: a per multiply-add (the matmul), b per distance (the passes over each tile), fitted to the two
    searches at the largest N (D = 3072 and 64). On an H100: a = 2 / FP32 rate, b = bytes per distance /
    bandwidth. Everything else is capped by the subsets or linear: its seconds here are scaled by N, an upper bound."""
    n = largest["n"]
    pairs = (n + largest["threshold_points"]) * n
    per_pixel_pair, per_feature_pair = (largest["seconds"][f"near_copies_{s}"] / pairs for s in ("pixels", "features"))
    a = (per_pixel_pair - per_feature_pair) / (PIXELS - FEATURE_DIM)
    b = max(per_feature_pair - a * FEATURE_DIM, 0.0)
    rest = sum(largest["seconds"][s] for s in SCORES if not s.startswith("near_copies"))
    m = PROJECTED_N
    big_pairs = (m + scores.SUBSET_LIMIT) * m
    h100 = {f"near_copies_{space}": big_pairs * (2 * d / H100_FP32_FLOPS + BYTES_PER_DISTANCE / H100_BYTES_PER_S)
            for space, d in (("pixels", PIXELS), ("features", FEATURE_DIM))}
    return {"fitted_cpu_seconds_per_multiply_add": a, "fitted_cpu_gflops": 2 / a / 1e9 if a > 0 else None,
            "fitted_cpu_seconds_per_distance": b, "cpu_projected_seconds": {
                "near_copies_pixels": big_pairs * (a * PIXELS + b), "near_copies_features": big_pairs * (a * FEATURE_DIM + b),
                "others_upper_bound": rest * m / n},
            "h100_projected_seconds": h100 | {"others_upper_bound_cpu_measured": rest * m / n},
            "h100_assumptions": {"fp32_flops": H100_FP32_FLOPS, "bytes_per_s": H100_BYTES_PER_S,
                                 "bytes_per_distance": BYTES_PER_DISTANCE, "n": m}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--pixel-queries", type=int, default=1000,
                        help="near copies in pixels: at most this many queries timed per search (the rest scaled linearly)")
    parser.add_argument("--feature-queries", type=int, default=20_000, help="the same for near copies in features")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    device = torch.device(args.device)

    load_before = os.getloadavg()
    measure(1000, 1000, 1000, device, args.seed + 99)  # warm-up: torch's kernels and thread pool, left out
    results = []
    for n in args.sizes:
        results.append(measure(n, args.pixel_queries, args.feature_queries, device, args.seed))
        print(f"N = {n}: " + ", ".join(f"{k} {v:.2f} s" for k, v in results[-1]["seconds"].items()), flush=True)

    load = f"load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1 min)"
    date = datetime.now(timezone.utc)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {gpu or 'CPU'}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads); {date:%Y-%m-%d}; commit {git_commit()}; scores code version "
              f"{code_version('scores')}; subsets of at most {scores.SUBSET_LIMIT}; N = {args.sizes}; one seed ({args.seed}); "
              f"{load}")
    a, b = results[-2:] if len(results) > 1 else (None, None)
    lines = ["| score | " + " | ".join(f"N = {r['n']:,} (s)" for r in results) + " | growth exponent |",
             "| --- | " + " | ".join("---:" for _ in results) + " | ---: |"]
    exponents = {}
    for score in SCORES + ("total",):
        values = [sum(r["seconds"].values()) if score == "total" else r["seconds"][score] for r in results]
        if a is not None:
            ta, tb = values[-2], values[-1]
            exponents[score] = math.log(tb / ta) / math.log(b["n"] / a["n"]) if ta > 0 and tb > 0 else None
        marks = ["*" if r["notes"].get(score) else "" for r in results]
        lines.append(f"| {score} | " + " | ".join(f"{v:.3f}{m}" for v, m in zip(values, marks)) + " | "
                     + ("-" if exponents.get(score) is None else f"{exponents[score]:.2f}") + " |")
    table = "\n".join(lines)
    projected = projection(results[-1])
    h100 = projected["h100_projected_seconds"]
    notes = [f"* N = {r['n']:,}, {score}: {note}" for r in results for score, note in r["notes"].items() if note]
    text = (f"# Scores beside CAS: time against N\n\n{header}\n\n"
            f"Seconds of each score as the scores step computes it, on {args.device}: N samples (10 classes) against N "
            "real eval images and N train images; synthetic 32x32x3 uint8 pixels and 64-d features. Growth exponent "
            f"between N = {a['n'] if a else '-'} and {b['n'] if b else '-'}.\n\n{table}\n\n" + "\n".join(notes) + "\n\n"
            f"Fitted near-copy constants here: {projected['fitted_cpu_seconds_per_multiply_add']:.3g} s per multiply-add "
            f"({projected['fitted_cpu_gflops'] or 0:.1f} GFLOPS) plus {projected['fitted_cpu_seconds_per_distance']:.3g} s "
            f"per distance.\n\nProjection to {PROJECTED_N:,} samples and train images on one H100 (FP32 "
            f"{H100_FP32_FLOPS / 1e12:.0f} TFLOPS, {H100_BYTES_PER_S / 1e12:.2f} TB/s, {BYTES_PER_DISTANCE} bytes moved "
            f"per distance): near copies in pixels {h100['near_copies_pixels']:.0f} s, in features "
            f"{h100['near_copies_features']:.0f} s; everything else at most "
            f"{h100['others_upper_bound_cpu_measured']:.0f} s even at this CPU's speed (subsets capped, the rest linear). "
            f"On this CPU: near copies in pixels {projected['cpu_projected_seconds']['near_copies_pixels'] / 3600:.0f} h.\n")
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"scores_scale-{date:%Y-%m-%d}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "config": vars(args) | {"out": str(args.out)},
                                                     "raw": results, "exponents": exponents, "projection": projected},
                                                    indent=1, default=str))


if __name__ == "__main__":
    main()
