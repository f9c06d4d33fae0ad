"""Does a whole `cas run` stay within its memory and time bound as the data grows ten times?

    python benchmarks/whole_run.py                         # N = 5k (the anchor) and 50k
    python benchmarks/whole_run.py --sizes 1000,10000 --work /tmp/whole

One complete `cas run` per N, as a user runs it (a fresh process, a temporary
Prefect server): an imagefolder dataset of N train images (and N/5 eval) in
32x32 RGB PNGs, one npz model of N samples, the `fast` recipe shrunk to one
epoch and forced to stream (`resident_limit_gb` below the set's size), the
scores at their defaults (GAN-test, FD, precision/recall, density/coverage,
near copies, one NAS ratio). Everything is seeded: each N builds the same
inputs on any machine.

For each N it prints the wall time of the `cas run` process and its peak
resident memory (VmHWM, polled from /proc; the temporary Prefect server is a
separate process and not counted), against the anchor (the smallest N,
measured in the same run), and the process's peak after each step as the
run's log gives it (`<task run>: done; process memory peak ...`), which says
where the peak was reached. Goal (issue 18): at 10x the data, peak RSS within
+100 MB of the anchor's and wall time at most 15x. Writes the table and the
raw numbers to benchmarks/results/whole_run-<date>.{md,json}.

Disk: about N x 5 KB of inputs plus the store, under `--work`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml
from provenance import git_commit  # benchmarks/provenance.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SHAPE = (32, 32, 3)
CLASSES = 10
TIME_FACTOR, RSS_MARGIN_MB = 15.0, 100.0  # the bound at 10x the data (issue 18)


def class_images(seed: int, labels: np.ndarray) -> np.ndarray:
    """One image per label: the class's colour field (a 4x4 grid, upsampled) plus per-image noise, so a
    classifier has something to learn and no two images are equal."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    fields = [np.asarray(Image.fromarray(np.random.default_rng(1000 + c).integers(0, 256, (4, 4, 3), dtype=np.uint8))
                         .resize(SHAPE[:2], Image.Resampling.BICUBIC), np.int16) for c in range(CLASSES)]
    out = np.empty((len(labels), *SHAPE), np.uint8)
    for i, label in enumerate(labels):
        out[i] = np.clip(fields[label] + rng.normal(0, 24, SHAPE).round().astype(np.int16), 0, 255)
    return out


def balanced_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(CLASSES), n // CLASSES))


def write_imagefolder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / f"class{label}" / f"{i:07d}.png", compress_level=1)


def build_inputs(work: Path, n: int) -> Path:
    """The dataset folders, the model's npz and the config for N; returns the config's path."""
    root = work / f"n{n}"
    if not (root / "config.yaml").exists():
        train_labels, eval_labels = balanced_labels(n, 1), balanced_labels(n // 5, 2)
        write_imagefolder(root / "data" / "train", class_images(1, train_labels), train_labels)
        write_imagefolder(root / "data" / "eval", class_images(2, eval_labels), eval_labels)
        sample_labels = balanced_labels(n, 3)
        np.savez(root / "model.npz", arr_0=class_images(3, sample_labels), arr_1=sample_labels)
        set_gb = float(n * np.prod(SHAPE) / 1e9)
        config = {
            "store": {"url": str(root / "store"), "shard_size": 5000},
            "dataset": {"kind": "imagefolder", "name": "synthetic32", "train": str(root / "data" / "train"),
                        "eval": str(root / "data" / "eval")},
            "classifier": {"recipe": "fast", "device": "cpu", "resident_limit_gb": set_gb / 4,  # streams
                           "options": {"widths": [16, 32, 32], "epochs": 1, "batch_size": 256}},
            "seed": 0,
            "models": [{"name": "npz-model", "generator": {"kind": "npz", "path": str(root / "model.npz")}}],
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "config.yaml"


def peak_rss_mb(pid: int, stop: threading.Event, seen: list[float]) -> None:
    """VmHWM of `pid` (monotonic: the last value read is the peak), polled until `stop` or the process ends."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    seen.append(int(line.split()[1]) / 1024)
        except OSError:
            return
        time.sleep(0.1)


STEP_MEMORY = re.compile(r"casflow\.pipeline - (\S+): done; process memory peak (\d+) MB, now (\d+) MB")


def step_memory(run_log: Path) -> list[dict]:
    """Each step's line of memory from a run's log, in log order: its task run, the process's peak so far, and its
    resident memory when the step ended."""
    return [{"step": m[1], "peak_mb": int(m[2]), "now_mb": int(m[3])}
            for m in STEP_MEMORY.finditer(run_log.read_text(errors="replace"))]


def measure(config: Path) -> dict:
    env = dict(os.environ, CASFLOW_PREFECT_SERVER="temporary", CASFLOW_CACHE_DIR=str(config.parent / "cache"))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "casflow.flows.cli", "run", str(config)], env=env, cwd=config.parent,
                               stdout=open(config.parent / "run.log", "w"), stderr=subprocess.STDOUT)
    stop, seen = threading.Event(), []
    poller = threading.Thread(target=peak_rss_mb, args=(process.pid, stop, seen), daemon=True)
    poller.start()
    code = process.wait()
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    if code != 0:
        sys.exit(f"cas run exited {code}: see {config.parent / 'run.log'}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(max(seen), 1), "steps": step_memory(config.parent / "run.log")}


def steps_table(rows: list[dict]) -> str:
    """The process's peak (MB) after each step, one column per N: the step that raised it most is the one to read."""
    def keyed(steps: list[dict]) -> dict[str, int]:  # a task run name seen again (a NAS training's) gets its count
        seen: dict[str, int] = {}
        out = {}
        for step in steps:
            seen[step["step"]] = seen.get(step["step"], 0) + 1
            out[step["step"] + (f" ({seen[step['step']]})" if seen[step["step"]] > 1 else "")] = step["peak_mb"]
        return out

    peaks = [keyed(row["steps"]) for row in rows]
    names = list(dict.fromkeys(name for p in peaks for name in p))
    lines = ["| step (in log order) | " + " | ".join(f"peak MB after it, N = {row['n']}" for row in rows) + " |",
             "| --- |" + " --- |" * len(rows)]
    lines += [f"| {name} | " + " | ".join(str(p.get(name, "-")) for p in peaks) + " |" for name in names]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000", help="N per run, comma-separated; the first is the anchor")
    parser.add_argument("--work", type=Path, default=None, help="where inputs and stores go (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="casflow-whole-run-"))
    rows = []
    for n in sizes:
        print(f"N = {n}: building inputs in {work} ...", flush=True)
        config = build_inputs(work, n)
        print(f"N = {n}: cas run ...", flush=True)
        rows.append({"n": n} | measure(config))
        print(f"N = {n}: {rows[-1]['seconds']} s, peak {rows[-1]['peak_rss_mb']} MB", flush=True)
    anchor = rows[0]
    lines = ["| N | seconds | x anchor | peak RSS MB | vs anchor MB | within bound |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        factor, extra = row["seconds"] / anchor["seconds"], row["peak_rss_mb"] - anchor["peak_rss_mb"]
        scale = row["n"] / anchor["n"]
        ok = row is anchor or (factor <= TIME_FACTOR * scale / 10 and extra <= RSS_MARGIN_MB)
        row |= {"time_factor": round(factor, 2), "rss_delta_mb": round(extra, 1), "within_bound": ok}
        lines.append(f"| {row['n']} | {row['seconds']} | {factor:.2f} | {row['peak_rss_mb']} | {extra:+.1f} | "
                     f"{'anchor' if row is anchor else 'yes' if ok else 'NO'} |")
    table = "\n".join(lines) + "\n\n" + steps_table(rows)
    print(table)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    out = REPO / "benchmarks" / "results" / f"whole_run-{date}"
    header = (f"# whole `cas run` against N ({date}, {machine}, commit {git_commit()})\n\n"
              f"Bound at 10x the data: wall time at most {TIME_FACTOR:g}x the anchor's, peak RSS within "
              f"+{RSS_MARGIN_MB:g} MB.\n\n")
    out.with_suffix(".md").write_text(header + table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"date": date, "machine": machine, "commit": git_commit(), "rows": rows}, indent=1))
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
    main()
