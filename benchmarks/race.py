"""Does racing a checkpoint series (tasks/race.py) pick a checkpoint of the full protocol's best set, and for
how many classifier trainings? On a real training run: examples/cfg_flow_series.py's checkpoints.

Every checkpoint goes through the pipeline's own steps (draw_samples, train_classifier, evaluate_classifier)
with the demo's classifier recipe (flows/demo.yaml), once per seed of a pool (--pool seeds, 0..pool-1), on
the same samples (the run's seed 0), as `classifier.seeds` does. That pool is trained once; the protocols
below only read its per-image correctness:

  full protocol   every checkpoint x --seeds seeds, then compare.best_set; the reference is seeds 0..seeds-1,
                  and each repetition also reruns it on the race's own seeds
  race            --repetitions races, each with --seeds seeds drawn from the pool in a random order (the
                  repetition's number seeds the draw), max = --seeds

Per repetition: the race's pick, its best set, its trainings against the full protocol's (checkpoints x seeds),
and whether the pick lies in the full best set (the reference one, the one on the race's seeds, and the
pool's: every checkpoint x every pooled seed, the best estimate of the truth here).

    python -m examples.cfg_flow_series --out cfg-series     # the checkpoints (about 5-10 minutes)
    python benchmarks/race.py --series cfg-series [--pool 12] [--seeds 5] [--repetitions 20] [--work W]
    python benchmarks/race.py --smoke                        # the plumbing in a minute: a tiny model and classifier
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # examples/

import numpy as np  # noqa: E402
import torch  # noqa: E402
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)
from workspace import working_folder  # noqa: E402

from casflow.flows import steps  # noqa: E402
from casflow.tasks import compare  # noqa: E402
from casflow.tasks.config import Config  # noqa: E402
from casflow.tasks.race import race  # noqa: E402
from examples import cfg_flow, cfg_flow_series  # noqa: E402

SMOKE_MODEL = cfg_flow.Hyper(steps=60, batch_size=64, warmup=5, hidden=32, depth=1)
SMOKE_EVERY = 20
SMOKE_CLASSIFIER = {"epochs": 2}  # on top of the demo's options

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--series", type=Path, help="the folder examples/cfg_flow_series.py wrote (ckpt-{step}.pt)")
parser.add_argument("--pool", type=int, default=12, help="classifier seeds trained per checkpoint, once")
parser.add_argument("--seeds", type=int, default=5, help="the full protocol's seeds per checkpoint, and the race's max")
parser.add_argument("--repetitions", type=int, default=20)
parser.add_argument("--work", type=Path, help="store and caches (default: a temporary folder, removed at the end)")
parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared 2-core machine)")
parser.add_argument("--smoke", action="store_true", help="plumbing check: tiny model (3 checkpoints) and classifier")
args = parser.parse_args()
torch.set_num_threads(args.threads)
if args.smoke:
    args.pool, args.seeds, args.repetitions = 3, 2, 3
if args.seeds > args.pool:
    parser.error(f"--seeds ({args.seeds}) cannot exceed --pool ({args.pool})")


def smoke_series(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg_flow.train_digits(SMOKE_MODEL, 0, log_every=0, save_every=SMOKE_EVERY,
                          save=lambda step, checkpoint: torch.save(checkpoint, folder / cfg_flow_series.PATTERN.format(step=step)))
    return folder


def make_config(series: Path, work: Path) -> Config:
    raw = cfg_flow_series.series_config(series)
    raw["store"] = {"url": str(work / "store")}
    if args.smoke:
        raw["classifier"] = raw["classifier"] | {"options": raw["classifier"]["options"] | SMOKE_CLASSIFIER}
        raw["models"][0]["generator"]["options"]["steps"] = 4
    return steps.with_checkpoints(Config.model_validate(raw), str(series))


def train_pool(config: Config) -> tuple[dict[int, np.ndarray], dict[int, list[float]]]:
    """Per checkpoint step: pool seeds x eval images top-1 correctness, and each classifier's training seconds."""
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    correct, seconds = {}, {}
    for model in config.models:
        samples = steps.draw_samples(config, store, model, dataset, "cpu")
        evaluations = []
        for seed in range(args.pool):
            classifier = steps.train_classifier(config, store, samples, dataset, "cpu", seed)
            evaluations.append(steps.evaluate_classifier(config, store, classifier, dataset, "cpu"))
            seconds.setdefault(model.step, []).append(classifier.train_seconds)
        correct[model.step], _ = steps.correctness(store, {"model": model.name, "run_id": "benchmark",
                                                           "evaluation_fingerprints": [e.fingerprint for e in evaluations]})
        top1 = correct[model.step].mean(axis=1)
        print(f"step {model.step}: top-1 over {args.pool} seeds {100 * top1.mean():.2f}% "
              f"(sd {100 * top1.std(ddof=1):.2f}), {sum(seconds[model.step]):.0f} s of training", flush=True)
    return correct, seconds


def best_steps(correct: dict[int, np.ndarray], seeds: list[int]) -> list[int]:
    return [s.step for s in compare.best_set({step: rows[seeds] for step, rows in correct.items()}) if s.in_best_set]


def repetition(correct: dict[int, np.ndarray], number: int, reference: list[int], pool_best: list[int]) -> dict:
    seeds = [int(s) for s in np.random.default_rng(number).permutation(args.pool)[:args.seeds]]
    result = race(sorted(correct), seeds, lambda step, seed: correct[step][seed])
    same_seeds = best_steps(correct, seeds)
    return {"repetition": number, "seeds": seeds, "pick": result.pick, "best_set": list(result.best_set),
            "seeds_per_step": {str(k): v for k, v in result.seeds.items()}, "trainings": result.trainings,
            "full_trainings": len(correct) * args.seeds, "stopped": result.stopped, "rounds": len(result.rounds),
            "full_best_set_same_seeds": same_seeds, "pick_in_reference": result.pick in reference,
            "pick_in_same_seeds": result.pick in same_seeds, "pick_in_pool": result.pick in pool_best}


def markdown(series_rows: list[dict], reps: list[dict], header: dict) -> str:
    full = len(series_rows) * args.seeds
    lines = [f"# Racing a checkpoint series, {header['date'][:10]}", "",
             f"Machine: {header['machine']}; commit {header['git_commit']}; {header['wall_seconds']:.0f} s in all "
             f"(the pool of {args.pool} classifier seeds x {len(series_rows)} checkpoints took "
             f"{header['pool_train_seconds']:.0f} s of training when it was trained, "
             f"{header['seconds_per_training']:.1f} s per training; a rerun finds it on the store).",
             f"Series: {header['series']}; classifier: the demo's `fast` recipe, options "
             f"{json.dumps(header['classifier']['options'])}; one set of samples per checkpoint (seed 0).", "",
             "CAS against step (top-1 %; the full protocol's best set from seeds "
             f"0-{args.seeds - 1}; the pool's from all {args.pool} seeds):", "",
             f"| step | top-1 % seeds 0-{args.seeds - 1} | top-1 % pool mean (sd) | full best set | pool best set |",
             "| ---: | ---: | ---: | :---: | :---: |"]
    for row in series_rows:
        lines.append(f"| {row['step']} | {100 * row['top1_reference']:.2f} | {100 * row['top1_pool']:.2f} "
                     f"({100 * row['sd_pool']:.2f}) | {'yes' if row['in_reference'] else 'no'} | "
                     f"{'yes' if row['in_pool'] else 'no'} |")
    lines += ["", f"{len(reps)} races (max {args.seeds} seeds; seeds drawn from the pool in a random order):", "",
              "| rep | seeds | pick | race best set | seeds per step | trainings | stop | pick in full best set "
              "(reference / same seeds / pool) |", "| ---: | --- | ---: | --- | --- | ---: | --- | --- |"]
    for r in reps:
        marks = "/".join("yes" if r[k] else "no" for k in ("pick_in_reference", "pick_in_same_seeds", "pick_in_pool"))
        lines.append(f"| {r['repetition']} | {' '.join(map(str, r['seeds']))} | {r['pick']} | "
                     f"{', '.join(map(str, r['best_set']))} | {' '.join(map(str, r['seeds_per_step'].values()))} | "
                     f"{r['trainings']} | {r['stopped']} | {marks} |")
    trainings = [r["trainings"] for r in reps]
    lines += ["", f"Pick in the full best set: {sum(r['pick_in_reference'] for r in reps)} of {len(reps)} (reference, "
              f"seeds 0-{args.seeds - 1}), {sum(r['pick_in_same_seeds'] for r in reps)} of {len(reps)} (the full protocol "
              f"on the race's seeds), {sum(r['pick_in_pool'] for r in reps)} of {len(reps)} (all {args.pool} seeds). "
              f"Trainings: mean {statistics.mean(trainings):.1f}, max {max(trainings)} of the full protocol's {full} "
              f"({100 * statistics.mean(trainings) / full:.0f}% and {100 * max(trainings) / full:.0f}%)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    when = datetime.now(timezone.utc)
    started = time.perf_counter()
    with working_folder(args.work, "casflow-race-") as work:
        series = smoke_series(work / "series") if args.smoke else args.series
        if series is None or not any(series.glob("ckpt-*.pt")):
            parser.error(f"--series {series}: no ckpt-<step>.pt there; write them with python -m examples.cfg_flow_series")
        config = make_config(series, work)
        correct, seconds = train_pool(config)
        checkpoints = {m.step: hashlib.sha256(Path(m.generator.checkpoint).read_bytes()).hexdigest()
                       for m in config.models}
    reference, pool_best = best_steps(correct, list(range(args.seeds))), best_steps(correct, list(range(args.pool)))
    series_rows = [{"step": step, "top1_reference": float(rows[:args.seeds].mean()), "top1_pool": float(rows.mean()),
                    "sd_pool": float(rows.mean(axis=1).std(ddof=1)), "in_reference": step in reference,
                    "in_pool": step in pool_best} for step, rows in sorted(correct.items())]
    reps = [repetition(correct, number, reference, pool_best) for number in range(args.repetitions)]
    machine = (f"{platform.machine()}, CPU, {os.cpu_count()} cores shared ({torch.get_num_threads()} torch "
               f"thread{'s' if torch.get_num_threads() > 1 else ''}); Python {platform.python_version()}, "
               f"torch {torch.__version__}")
    all_seconds = [s for per_step in seconds.values() for s in per_step]
    header = {"date": when.isoformat(timespec="seconds"), "machine": machine, "torch": torch.__version__,
              "numpy": np.__version__, "git_commit": git_commit(), "smoke": args.smoke,
              "series": "smoke model" if args.smoke else f"examples/cfg_flow_series.py defaults ({len(correct)} checkpoints)",
              "checkpoints_sha256": {str(k): v for k, v in checkpoints.items()}, "pool": args.pool, "seeds": args.seeds,
              "repetitions": args.repetitions, "classifier": config.classifier.model_dump(mode="json"),
              "pool_train_seconds": round(sum(all_seconds), 1),  # as the trainings logged them (cached or not)
              "seconds_per_training": round(statistics.mean(all_seconds), 2) if all_seconds else 0.0,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    text = markdown(series_rows, reps, header)
    print("\n" + text)
    stem = args.out / f"race-{when:%Y-%m-%d}{'-smoke' if args.smoke else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(
        {"header": header, "series": series_rows, "full_best_set": reference, "pool_best_set": pool_best,
         "repetitions": reps, "correct": {str(step): rows.astype(int).tolist() for step, rows in correct.items()},
         "train_seconds": {str(k): v for k, v in seconds.items()},
         "args": {k: str(v) for k, v in vars(args).items()}}) + "\n")
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
