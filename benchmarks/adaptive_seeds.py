"""Adaptive classifier seeds (`classifier.seeds: {min: 1, max: 5}`, tasks/seeds.py) against three fixed seeds
on the night-to-night judgement: false alarms on redraws of one generator, detection of real regressions of
several sizes, and the classifier trainings each night costs.

The pool: the demo's data and recipe (flows/demo.yaml), its `gaussian-pca32` generator drawn --redraws times
(sample seeds 0..redraws-1: the same model, new samples, as a nightly redraw), and --draws draws of each
regression (the same generator at a lower temperature, or with fewer PCA dimensions); every draw gets --pool
classifier seeds through the pipeline's own steps. That pool is trained once (a rerun with the same --work
finds it on the store); the rules only read its per-image correctness.

A night is replayed as a chain: nights of redraws in a random order, each judged against the night before
with the seeds that night used, then a last night that is either one more redraw (a false alarm if flagged)
or a regression (a detection if flagged `worse`). Fixed: every night trains seeds 0-2 (compare.compare, as
`classifier.seeds: [0, 1, 2]`). Adaptive: tasks/seeds.decide after each seed, the previous night's seeds and
the spreads of the earlier nights in the chain as its seed-noise estimate, as the flow gives it from the
store. The seeds of a draw come from its pool in a random order.

The redraws are split in two halves: --futility values are compared on chains over the first half (tuning),
and the table reports the chosen value on chains over the second half only (validation; the regressions'
draws are split the same way).

    python benchmarks/adaptive_seeds.py [--work W] [--redraws 10] [--draws 2] [--pool 5] [--chains 400]
    python benchmarks/adaptive_seeds.py --smoke      # the plumbing in a minute: tiny classifier, tiny pool
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)
from workspace import working_folder  # noqa: E402

from casflow.flows import steps  # noqa: E402
from casflow.flows.pipeline import DEMO_CONFIG  # noqa: E402
from casflow.tasks import seeds  # noqa: E402
from casflow.tasks.compare import compare, seed_spread  # noqa: E402
from casflow.tasks.config import Config, ModelConfig  # noqa: E402
from casflow.tasks.metrics import wilson_interval  # noqa: E402

BASE = {"kind": "gaussian", "components": 32}  # the demo's gaussian-pca32
REGRESSIONS = {  # what a night's change could be, smallest first
    "t0.7": {"kind": "gaussian", "components": 32, "temperature": 0.7},
    "t0.5": {"kind": "gaussian", "components": 32, "temperature": 0.5},
    "t0.3": {"kind": "gaussian", "components": 32, "temperature": 0.3},
    "pca6": {"kind": "gaussian", "components": 6},
}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--redraws", type=int, default=10, help="draws of the unchanged generator (sample seeds 0..N-1)")
parser.add_argument("--draws", type=int, default=2, help="draws of each regression")
parser.add_argument("--pool", type=int, default=5, help="classifier seeds per draw, trained once")
parser.add_argument("--chains", type=int, default=400, help="replayed chains per scenario and half")
parser.add_argument("--nights", type=int, default=4, help="redraw nights before the judged night in a chain")
parser.add_argument("--work", type=Path, help="store and caches (default: a temporary folder, removed at the end)")
parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared 2-core machine)")
parser.add_argument("--pool-only", action="store_true", help="train (or find) the pool and stop")
parser.add_argument("--smoke", action="store_true", help="plumbing check: tiny classifier, 4 redraws, 2 draws")
args = parser.parse_args()
torch.set_num_threads(args.threads)
FIXED = 3  # classifier.seeds: [0, 1, 2]
MIN, MAX = 1, 5  # classifier.seeds: {min: 1, max: 5}
FUTILITY_GRID = (0.05, 0.1, 0.2, 0.3, 0.5)
if args.pool < MAX:
    parser.error(f"--pool ({args.pool}) must give every draw the range's max seeds ({MAX})")
if args.smoke:
    args.redraws, args.draws, args.pool, args.chains, args.nights = 4, 2, MAX, 20, 1


def pool_config(work: Path) -> Config:
    config = steps.read_config(DEMO_CONFIG, str(work / "store"))
    classifier = config.classifier
    if args.smoke:
        classifier = classifier.model_copy(update={"options": classifier.options | {"epochs": 1, "widths": [8, 8, 8]}})
    return config.model_copy(update={"classifier": classifier, "scores": config.scores.model_copy(update={"augmentation": []})})


def train_pool(config: Config) -> tuple[dict[str, list[np.ndarray]], dict]:
    """name -> per draw, pool seeds x eval images top-1 correctness; and the eval labels and training seconds."""
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    kinds = {"redraw": (BASE, args.redraws)} | {name: (spec, args.draws) for name, spec in REGRESSIONS.items()}
    pool, seconds = {}, []
    for name, (spec, draws) in kinds.items():
        pool[name] = []
        for draw in range(draws):
            model = ModelConfig.model_validate({"name": f"{name}-draw{draw}", "generator": spec, "seed": draw})
            samples = steps.draw_samples(config, store, model, dataset, "cpu")
            evaluations = []
            for seed in range(args.pool):
                classifier = steps.train_classifier(config, store, samples, dataset, "cpu", seed)
                evaluations.append(steps.evaluate_classifier(config, store, classifier, dataset, "cpu"))
                seconds.append(classifier.train_seconds)
            correct, labels = steps.correctness(store, {"model": model.name, "run_id": "benchmark",
                                                        "evaluation_fingerprints": [e.fingerprint for e in evaluations]})
            pool[name].append(correct)
            top1 = 100 * correct.mean(axis=1)
            print(f"{name} draw {draw}: top-1 per seed {' '.join(f'{t:.2f}' for t in top1)}", flush=True)
    return pool, {"train_seconds": seconds, "labels": labels}


# ---------------------------------------------------------------- replaying the rules on the pool

def adaptive_night(previous: np.ndarray, tonight: np.ndarray, history: list, futility: float) -> seeds.Decision:
    """Tonight's seeds one at a time, as the flow gives them, until a look stops."""
    for k in range(1, MAX + 1):
        decision = seeds.decide(previous, tonight[:k], MIN, MAX, history, futility)
        if decision.stop:
            return decision
    raise AssertionError("decide never stopped at max")


def chain(redraws: list[np.ndarray], judged: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
          futility: float) -> dict:
    """Nights of redraws (the first with three fixed seeds, as the store has them when a model switches to a
    range), then the judged night; each night's seeds in a random order of its pool."""
    nights = [rows[rng.permutation(rows.shape[0])] for rows in [*redraws, judged]]
    used, decision = [FIXED], None
    for i in range(1, len(nights)):
        history = [(seed_spread(nights[j][:used[j]]), used[j]) for j in range(i - 2, -1, -1)]
        decision = adaptive_night(nights[i - 1][:used[i - 1]], nights[i], history, futility)
        used.append(decision.seeds)
    fixed = compare(nights[-2][:FIXED], nights[-1][:FIXED], labels, int(labels.max()) + 1)[0]
    return {"fixed": fixed.direction, "adaptive": decision.verdict, "seeds": decision.seeds, "stop": decision.stop,
            "nights_seeds": used[1:]}


def scenario(pool: dict[str, list[np.ndarray]], half: int, name: str, labels: np.ndarray, futility: float) -> list[dict]:
    """--chains chains on one half of the draws (0: tuning, 1: validation): the judged night a redraw
    (`redraw`) or a regression of that name."""
    redraws = _half(pool["redraw"], half)
    judged_pool = redraws if name == "redraw" else _half(pool[name], half)
    out = []
    for number in range(args.chains):
        rng = np.random.default_rng([half, number, list(pool).index(name)])
        order = rng.permutation(len(redraws))
        history = [redraws[i] for i in order[:args.nights]]
        judged = redraws[order[args.nights]] if name == "redraw" else judged_pool[rng.integers(len(judged_pool))]
        out.append(chain(history, judged, labels, rng, futility))
    return out


def _half(draws: list, half: int) -> list:
    middle = (len(draws) + 1) // 2
    return draws[:middle] if half == 0 else draws[middle:]


def rates(chains: list[dict], name: str) -> dict:
    hit = (lambda v: v != "same") if name == "redraw" else (lambda v: v == "worse")
    n = len(chains)
    out = {"n": n}
    for rule in ("fixed", "adaptive"):
        k = sum(hit(c[rule]) for c in chains)
        low, high = wilson_interval(k, n)
        out[rule] = {"flagged": k, "rate": k / n, "wilson_low": low, "wilson_high": high}
    out["adaptive_seeds_mean"] = statistics.mean(c["seeds"] for c in chains)
    out["adaptive_seeds_hist"] = {str(k): sum(c["seeds"] == k for c in chains) for k in range(1, MAX + 1)}
    out["stops"] = {stop: sum(c["stop"] == stop for c in chains) for stop in sorted({c["stop"] for c in chains})}
    out["every_night_seeds_mean"] = statistics.mean(s for c in chains for s in c["nights_seeds"])
    return out


def choose_futility(pool: dict, labels: np.ndarray) -> tuple[float, dict]:
    """The largest futility value whose tuning-half rates stay inside the fixed rule's Wilson intervals
    (false alarms no higher than its upper bound, detection no lower than its lower bound, per size)."""
    tried = {}
    for futility in FUTILITY_GRID:
        tried[futility] = {name: rates(scenario(pool, 0, name, labels, futility), name) for name in pool}
        print(f"tuning futility {futility}: " + ", ".join(
            f"{name} {r['adaptive']['rate']:.3f} vs {r['fixed']['rate']:.3f} ({r['adaptive_seeds_mean']:.2f} seeds)"
            for name, r in tried[futility].items()), flush=True)
    fits = [f for f, by_name in tried.items() if all(
        (r["adaptive"]["rate"] <= r["fixed"]["wilson_high"]) if name == "redraw" else
        (r["adaptive"]["rate"] >= r["fixed"]["wilson_low"]) for name, r in by_name.items())]
    return (max(fits) if fits else min(FUTILITY_GRID)), {str(f): v for f, v in tried.items()}


def replay_and_write(pool: dict, timing: dict, config: Config, when: datetime, started: float) -> None:
    labels = timing["labels"]
    chosen, tuning = choose_futility(pool, labels)
    validation = {name: rates(scenario(pool, 1, name, labels, chosen), name) for name in pool}
    top1 = {name: 100 * float(np.mean([rows.mean() for rows in draws])) for name, draws in pool.items()}
    size = {name: top1[name] - top1["redraw"] for name in pool}
    load = os.getloadavg()
    header = {"date": when.isoformat(timespec="seconds"), "git_commit": git_commit(),
              "machine": f"{platform.machine()}, CPU, {os.cpu_count()} cores shared ({torch.get_num_threads()} torch "
                         f"thread); Python {platform.python_version()}, torch {torch.__version__}",
              "load_average_at_end": [round(x, 2) for x in load], "smoke": args.smoke,
              "pool_trainings": sum(len(d) for d in pool.values()) * args.pool,
              "seconds_per_training": round(statistics.mean(timing["train_seconds"]), 2),
              "wall_seconds": round(time.perf_counter() - started, 1), "futility_chosen": chosen,
              "futility_in_code": seeds.FUTILITY, "early_alpha": seeds.EARLY_ALPHA,
              "stated_false_alarm_bound": 0.05 + (MAX - MIN) * seeds.EARLY_ALPHA,
              "classifier": config.classifier.model_dump(mode="json"), "args": {k: str(v) for k, v in vars(args).items()}}
    text = markdown(header, validation, size, pool, tuning)
    print("\n" + text)
    stem = args.out / f"adaptive_seeds-{when:%Y-%m-%d}{'-smoke' if args.smoke else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(
        {"header": header, "size_points": size, "top1_per_draw": {n: [[float(100 * t) for t in rows.mean(axis=1)]
                                                                     for rows in d] for n, d in pool.items()},
         "tuning": tuning, "validation": validation,
         "correct": {n: [rows.astype(int).tolist() for rows in d] for n, d in pool.items()},
         "labels": labels.astype(int).tolist()}) + "\n")
    print(f"wrote {stem}.md and .json")


def markdown(header: dict, validation: dict, size: dict, pool: dict, tuning: dict) -> str:
    pct = lambda r: f"{100 * r['rate']:.1f}% ({100 * r['wilson_low']:.1f}-{100 * r['wilson_high']:.1f})"  # noqa: E731
    halves = {name: (len(_half(d, 0)), len(_half(d, 1))) for name, d in pool.items()}
    lines = [f"# Adaptive classifier seeds against three fixed seeds, {header['date'][:10]}", "",
             f"Machine: {header['machine']}; commit {header['git_commit']}; load average at the end "
             f"{', '.join(map(str, header['load_average_at_end']))} (shared machine); {header['wall_seconds']:.0f} s in "
             f"all (the pool: {header['pool_trainings']} trainings of the demo recipe, {header['seconds_per_training']} s "
             "each when trained; a rerun finds them on the store).",
             f"Generator: the demo's gaussian-pca32 ({len(pool['redraw'])} redraws, sample seeds 0-{len(pool['redraw']) - 1}); "
             f"regressions: {', '.join(f'{n} ({len(d)} draws)' for n, d in pool.items() if n != 'redraw')}; "
             f"{args.pool} classifier seeds per draw.",
             f"Each row: {args.chains} chains of {args.nights} redraw nights (the first with three seeds) and a judged night, "
             "on the validation half of the draws (redraws and regressions), the judged night's verdict and seeds. "
             f"Futility {header['futility_chosen']} (chosen on the tuning half: the largest of "
             f"{', '.join(map(str, FUTILITY_GRID))} within the fixed rule's intervals; tasks/seeds.FUTILITY = "
             f"{header['futility_in_code']}). Stated false-alarm bound of the sequential rule: "
             f"{100 * header['stated_false_alarm_bound']:.1f}% (0.05 + {MAX - MIN} x {seeds.EARLY_ALPHA}).",
             "Intervals: Wilson 95% over the chains. The chains reuse few draws "
             f"(validation half: {halves['redraw'][1]} redraws, {halves[next(n for n in pool if n != 'redraw')][1]} "
             "per regression), so they understate the uncertainty between draws.", "",
             "| judged night | change (points, pool means) | fixed 3 seeds: flagged | adaptive {min 1, max 5}: flagged | "
             "adaptive seeds, mean (1/2/3/4/5) | of fixed's 3 | stops |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in validation.items():
        hist = "/".join(str(v) for v in r["adaptive_seeds_hist"].values())
        what = "redraw (false alarm)" if name == "redraw" else f"{name} (detected as worse)"
        lines.append(f"| {what} | {size[name]:+.2f} | {pct(r['fixed'])} | {pct(r['adaptive'])} | "
                     f"{r['adaptive_seeds_mean']:.2f} ({hist}) | {100 * r['adaptive_seeds_mean'] / FIXED:.0f}% | "
                     f"{', '.join(f'{k}: {v}' for k, v in r['stops'].items())} |")
    every = statistics.mean(r["every_night_seeds_mean"] for r in validation.values())
    names = list(pool)
    lines += ["", "Tuning half (flagged %, adaptive against fixed; adaptive seeds of the judged night):", "",
              "| futility | " + " | ".join(names) + " |", "| ---: | " + " | ".join("---" for _ in names) + " |"]
    for futility, by_name in tuning.items():
        lines.append(f"| {futility} | " + " | ".join(
            f"{100 * by_name[n]['adaptive']['rate']:.1f} vs {100 * by_name[n]['fixed']['rate']:.1f}; "
            f"{by_name[n]['adaptive_seeds_mean']:.2f} seeds" for n in names) + " |")
    lines += ["", f"Every adaptive night of the chains (the redraw nights before the judged one included): "
              f"{every:.2f} seeds on average, {100 * every / FIXED:.0f}% of three fixed seeds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    when = datetime.now(timezone.utc)
    started = time.perf_counter()
    with working_folder(args.work, "casflow-adaptive-") as work:
        config = pool_config(work)
        pool, timing = train_pool(config)
    if args.pool_only:
        return
    replay_and_write(pool, timing, config, when, started)


if __name__ == "__main__":
    main()
