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
throughput and the constants measured here. Near copies in pixels above
`--pixel-samples` samples are timed on that many seeded samples against the
whole train split and scaled by M / measured (every sample's search is the
same work, so the time is linear in M at a fixed train split): the table
says so.
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
SCORES = ("gan_test", "fd", "precision_recall", "density_coverage", "per_class", "near_copies_pixels",
          "near_copies_features")


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


def measure(n: int, pixel_samples: int, device, seed: int) -> dict:
    train, samples, real = synthetic(n, seed), synthetic(n, seed + 1), synthetic(n, seed + 2)  # real: the eval split
    sets = scores.set_subsets(samples["labels"], CLASSES, "samples")
    real_sets = scores.set_subsets(real["labels"], CLASSES, "real")
    r, f = real["features"][real_sets.overall], samples["features"][sets.overall]
    seconds, notes = {}, {}
    seconds["gan_test"], _ = timed(lambda: scores.gan_test(samples["logits"][sets.overall], samples["labels"][sets.overall],
                                                           CLASSES), device)
    seconds["fd"], _ = timed(lambda: scores.frechet_distance(r, f), device)
    seconds["precision_recall"], _ = timed(lambda: scores.precision_recall(r, f, device=device), device)
    seconds["density_coverage"], _ = timed(lambda: scores.density_coverage(r, f, device=device), device)
    inner: dict[str, float] = {}
    seconds["per_class"], _ = timed(lambda: scores.set_scores(real["features"], real["labels"], samples["features"],
                                                              samples["labels"], CLASSES, device=device, seconds=inner), device)
    seconds["per_class"] = inner["set_scores_per_class"]  # set_scores' overall part is the three rows above
    measured_m = min(n, pixel_samples)
    rows = scores.subset(n, measured_m, seed, "benchmark pixel samples")
    t, result = timed(lambda: scores.near_copies(train["pixels"], samples["pixels"][rows], device=device), device)
    seconds["near_copies_pixels"] = t * n / measured_m
    notes["near_copies_pixels"] = None if measured_m == n else f"{measured_m} of {n} samples timed, scaled by {n / measured_m:g}"
    seconds["near_copies_features"], features_result = timed(
        lambda: scores.near_copies(train["features"], samples["features"], device=device), device)
    return {"n": n, "seconds": seconds, "notes": notes, "subset_samples": len(sets.overall), "subset_real": len(real_sets.overall),
            "pixel_samples_timed": measured_m, "near_copy_fraction_pixels": result.fraction,
            "near_copy_fraction_features": features_result.fraction, "threshold_points": result.threshold_points}


def exponent(a: dict, b: dict, score: str) -> float:
    ta, tb = a["seconds"][score], b["seconds"][score]
    return math.log(tb / ta) / math.log(b["n"] / a["n"])


def projection(largest: dict) -> dict:
    """Near-copy search as t = a M N D + b M N (matmul, then the per-distance passes), fitted to the two near-copy
    searches at the largest N (D = 3072 and 64); on an H100 a = 2 / FP32 rate, b = bytes per distance / bandwidth.
    Everything else is capped by the subsets or linear: its measured seconds are scaled by N (an upper bound)."""
    n = largest["n"]
    pixel_t, feature_t = largest["seconds"]["near_copies_pixels"], largest["seconds"]["near_copies_features"]
    a = (pixel_t - feature_t) / (n * n * (PIXELS - FEATURE_DIM))
    b = max(feature_t / (n * n) - a * FEATURE_DIM, 0.0)
    rest = sum(largest["seconds"][s] for s in SCORES if not s.startswith("near_copies"))
    m = PROJECTED_N
    h100 = {f"near_copies_{space}": m * m * (2 * d / H100_FP32_FLOPS + BYTES_PER_DISTANCE / H100_BYTES_PER_S)
            for space, d in (("pixels", PIXELS), ("features", FEATURE_DIM))}
    return {"fitted_cpu_seconds_per_multiply_add": a, "fitted_cpu_gflops": 2 / a / 1e9 if a > 0 else None,
            "fitted_cpu_seconds_per_distance": b, "cpu_projected_seconds": {
                "near_copies_pixels": a * m * m * PIXELS + b * m * m, "near_copies_features": a * m * m * FEATURE_DIM + b * m * m,
                "others_upper_bound": rest * m / n},
            "h100_projected_seconds": h100 | {"others_upper_bound_cpu_measured": rest * m / n},
            "h100_assumptions": {"fp32_flops": H100_FP32_FLOPS, "bytes_per_s": H100_BYTES_PER_S,
                                 "bytes_per_distance": BYTES_PER_DISTANCE, "n": m}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--pixel-samples", type=int, default=10_000,
                        help="near copies in pixels: samples timed per N (the rest scaled linearly)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    device = torch.device(args.device)

    measure(1000, 1000, device, args.seed + 99)  # warm-up: torch's kernels and thread pool, left out
    results = []
    for n in args.sizes:
        results.append(measure(n, args.pixel_samples, device, args.seed))
        print(f"N = {n}: " + ", ".join(f"{k} {v:.2f} s" for k, v in results[-1]["seconds"].items()), flush=True)

    date = datetime.now(timezone.utc)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {gpu or 'CPU'}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads); {date:%Y-%m-%d}; commit {git_commit()}; scores code version "
              f"{code_version('scores')}; subsets of at most {scores.SUBSET_LIMIT}; N = {args.sizes}; one seed ({args.seed})")
    a, b = results[-2:] if len(results) > 1 else (None, None)
    lines = ["| score | " + " | ".join(f"N = {r['n']:,} (s)" for r in results) + " | growth exponent |",
             "| --- | " + " | ".join("---:" for _ in results) + " | ---: |"]
    exponents = {}
    for score in SCORES + ("total",):
        values = [sum(r["seconds"].values()) if score == "total" else r["seconds"][score] for r in results]
        if a is not None:
            ta, tb = values[-2], values[-1]
            exponents[score] = math.log(tb / ta) / math.log(b["n"] / a["n"]) if ta > 0 and tb > 0 else None
        marks = ["*" if score == "near_copies_pixels" and r["notes"]["near_copies_pixels"] else "" for r in results]
        lines.append(f"| {score} | " + " | ".join(f"{v:.3f}{m}" for v, m in zip(values, marks)) + " | "
                     + ("-" if exponents.get(score) is None else f"{exponents[score]:.2f}") + " |")
    table = "\n".join(lines)
    projected = projection(results[-1])
    h100 = projected["h100_projected_seconds"]
    notes = [f"* {r['notes']['near_copies_pixels']}" for r in results if r["notes"]["near_copies_pixels"]]
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
