"""casflow's classifier training on CIFAR-10 on one GPU, against airbench (the
fastest known trainer) on the same images. One table.

The real `prepare_dataset` step shards the CIFAR-10 Parquet copy into a
temporary store. Then `fast` runs against airbench94 (airbench 0.1.8 from
PyPI, train94 with its defaults, TTA level 2) and `accurate` against
airbench96 (train96): N runs each after a one-epoch warm-up that is left
out; casflow's seed is the run number, airbench is unseeded as it ships.
casflow is timed over its whole path, shards in to results out
(flows.steps.train_classifier + evaluate_classifier on a fresh store each
pass), once with the decoded-shard cache empty (cold) and once filled
(warm); decoding alone is timed too. airbench gets the same images as
train.pt/test.pt (train in a seeded shuffle, as torchvision's copy comes)
and is timed with CUDA events around its training and its own evaluate,
and by the wall clock including loading train.pt to the GPU.

    python benchmarks/cifar10_gpu.py [--runs 3] [--data ../shared/datasets/cifar10] [--out benchmarks/results]
    python benchmarks/cifar10_gpu.py --smoke   # the plumbing on the CPU: 50 images a class, tiny nets, no airbench
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)

from casflow.flows import records, shard_data, steps  # noqa: E402
from casflow.storage.store import Store  # noqa: E402
from casflow.tasks import classifiers  # noqa: E402
from casflow.tasks.config import Config  # noqa: E402

PAIRS = {"fast": ("airbench94", "train94"), "accurate": ("airbench96", "train96")}
WARMUP_EPOCHS = 1  # enough for cuDNN's kernel choices and the caching allocator to settle
SMOKE_OPTIONS = {"widths": [8, 16, 16], "epochs": 1, "batch_size": 100}
SMOKE_LIMIT_PER_CLASS = 50  # 500 train and 500 test images
AIRBENCH_ORDER_SEED = 0  # the fixed shuffle of airbench's train.pt
CUDNN_DEFAULT = torch.backends.cudnn.benchmark  # the process default; importing airbench sets it True

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--runs", type=int, default=3, help="timed runs per trainer, after a warm-up")
parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "cifar10",
                    help="folder with train.parquet and test.parquet")
parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
parser.add_argument("--recipes", nargs="+", choices=list(PAIRS), default=list(PAIRS),
                    help="run only these pairs (to split the benchmark over shorter sessions)")
parser.add_argument("--smoke", action="store_true", help="CPU plumbing check: tiny subset and nets, 1 run, no airbench")
args = parser.parse_args()
data_dir, out_dir = args.data.resolve(), args.out.resolve()  # absolute: airbench needs a chdir


def refuse(problem: str) -> None:
    print(f"cifar10_gpu: {problem}")
    sys.exit(2)


if not args.smoke and not torch.cuda.is_available():
    refuse("CUDA is not available; this benchmark needs a GPU (--smoke checks its plumbing on the CPU)")
if not args.smoke and importlib.util.find_spec("airbench") is None:
    refuse("airbench is not installed (pip install 'airbench==0.1.8', the `bench` extra)")
if not (data_dir / "train.parquet").exists():
    refuse(f"no train.parquet in {data_dir} (give --data)")
runs = 1 if args.smoke else args.runs
device = "cpu" if args.smoke else "cuda:0"
cuda = not args.smoke


def sync_and_reset_peak() -> None:
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def make_config(recipe: str, options: dict, seed: int, store_url: str) -> Config:
    return Config.model_validate({
        "store": {"url": store_url},
        "dataset": {"kind": "hf-parquet", "name": "cifar10", "train": str(data_dir / "train.parquet"),
                    "eval": str(data_dir / "test.parquet"),
                    "limit_per_class": SMOKE_LIMIT_PER_CLASS if args.smoke else None},
        "classifier": {"recipe": recipe, "options": options, "device": device},
        "seed": seed,
        "models": [{"name": "real", "generator": {"kind": "real"}}],
    })


# ---------------------------------------------------------------- casflow: shards in, results out

def whole_path(config: Config, dataset: records.DatasetRecord, base: Path, cache: Path, work: Path) -> dict:
    """train_classifier + evaluate_classifier on a fresh store (the shards hard-linked in), so nothing is
    cached there; `cache` is the decoded-shard cache, empty for a cold pass."""
    fresh = Path(tempfile.mkdtemp(dir=work, prefix="store-"))
    shutil.copytree(base / "real", fresh / "real", copy_function=os.link)
    store = Store(str(fresh))
    os.environ["CASFLOW_CACHE_DIR"] = str(cache)
    sync_and_reset_peak()
    started = time.perf_counter()
    samples = steps.draw_samples(config, store, config.models[0], dataset, device)  # `real`: the train shards
    classifier = steps.train_classifier(config, store, samples, dataset, device, config.seed)
    evaluation = steps.evaluate_classifier(config, store, classifier, dataset, device)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    assert not (classifier.cached or evaluation.cached), "a timed pass hit a cache"
    shutil.rmtree(fresh)
    return {"top1": evaluation.counts.top1, "wall_s": wall, "train_s": classifier.train_seconds,
            "eval_s": evaluation.seconds, "peak_gib": peak_gib()}  # since training began: classifiers.training resets it


def decode_seconds(store: Store, dataset: records.DatasetRecord, cache: Path) -> float:
    os.environ["CASFLOW_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    for shard_set in (dataset.train, dataset.eval):
        shard_data.load_decoded(store, shard_set, "benchmark")
    return time.perf_counter() - started


def run_casflow(recipe: str, dataset: records.DatasetRecord, base: Path, work: Path) -> tuple[list[dict], dict]:
    torch.backends.cudnn.benchmark = CUDNN_DEFAULT  # undo airbench's setting: casflow's own choice is measured
    options = SMOKE_OPTIONS if args.smoke else {}
    rows = []
    for run in range(-1, runs):  # run -1: the warm-up, left out
        warmup = {"epochs": WARMUP_EPOCHS} if run < 0 else {}
        config = make_config(recipe, options | warmup, max(run, 0), str(base))
        cache = work / f"cache-{recipe}-{run}"
        cold = whole_path(config, dataset, base, cache, work)
        warm = whole_path(config, dataset, base, cache, work)
        decode_warm = decode_seconds(Store(str(base)), dataset, cache)
        shutil.rmtree(cache)
        decode_cold = decode_seconds(Store(str(base)), dataset, cache)
        shutil.rmtree(cache)
        if run >= 0:
            rows.append({"run": run, "seed": run, "cold": cold, "warm": warm,
                         "decode_cold_s": decode_cold, "decode_warm_s": decode_warm})
            print(f"  {recipe} run {run}: top-1 {warm['top1']:.4f}, "
                  f"{cold['wall_s']:.2f} s cold, {warm['wall_s']:.2f} s warm")
    hp = classifiers.resolve(recipe, options).hp
    return rows, {"options": options, "hyperparameters": dataclasses.asdict(hp),
                  "cudnn_benchmark": torch.backends.cudnn.benchmark}  # as casflow left it


# ---------------------------------------------------------------- airbench on the same images

def run_airbench(name: str, train_fn: str, train, held_out, class_names, work: Path) -> tuple[list[dict], dict]:
    import airbench  # its import sets torch.backends.cudnn.benchmark = True, as airbench always runs

    torch.backends.cudnn.benchmark = True
    hyp = getattr(airbench, f"lib_{name}").hyp
    home = work / "airbench"
    (home / "cifar10").mkdir(parents=True, exist_ok=True)
    # The shards keep the Parquet's class-grouped order; airbench fits its whitening layer on the first 5,000
    # images, so it gets a seeded shuffle, as torchvision's CIFAR-10 (which airbench normally reads) comes.
    order = np.random.default_rng(AIRBENCH_ORDER_SEED).permutation(len(train[1]))
    for split, (images, labels) in (("train", (train[0][order], train[1][order])), ("test", held_out)):
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                    "classes": list(class_names)}, home / "cifar10" / f"{split}.pt")
    previous = os.getcwd()
    os.chdir(home)  # airbench reads cifar10/{train,test}.pt relative to the working directory
    try:
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        rows = []
        for run in range(-1, runs):
            sync_and_reset_peak()
            wall_start = time.perf_counter()
            loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                          aug=hyp["aug"], altflip=True)  # what train94/96 build when given none
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            warmup = {"epochs": WARMUP_EPOCHS} if run < 0 else {}
            model = getattr(airbench, train_fn)(loader, run=run, verbose=False, **warmup)
            top1 = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            end.record()
            torch.cuda.synchronize()
            wall = time.perf_counter() - wall_start
            if run >= 0:
                rows.append({"run": run, "top1": top1, "gpu_s": start.elapsed_time(end) / 1e3, "wall_s": wall,
                             "peak_gib": peak_gib()})
                print(f"  {name} run {run}: top-1 {top1:.4f}, {rows[-1]['gpu_s']:.2f} s")
    finally:
        os.chdir(previous)
    return rows, {"hyp": hyp, "train_order": f"numpy default_rng({AIRBENCH_ORDER_SEED}).permutation",
                  "cudnn_benchmark": torch.backends.cudnn.benchmark}


# ---------------------------------------------------------------- the table

def row(name: str, accs: list[float], secs: list[float], against: list[float], peaks: list) -> dict:
    def spread(values: list[float]) -> list[str]:
        return [f"{statistics.mean(values):.2f}", f"{min(values):.2f}-{max(values):.2f}"] if values else ["", ""]

    peak = max((p for p in peaks if p is not None), default=None)
    return {"name": name, "runs": len(secs), "top1": spread([100 * a for a in accs]), "seconds": spread(secs),
            "ratio": f"{statistics.mean(secs) / statistics.mean(against):.2f}x" if against and secs else "",
            "peak_gib": f"{peak:.2f}" if peak is not None else ""}


def markdown(table: list[dict]) -> str:
    lines = ["| trainer | runs | top-1 % mean | top-1 % min-max | seconds mean | seconds min-max | / airbench "
             "| peak GPU GiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['name']} | {r['runs']} | {' | '.join(r['top1'])} | {' | '.join(r['seconds'])} | {r['ratio']} | "
              f"{r['peak_gib']} |" for r in table]
    return "\n".join(lines)


def main() -> None:
    gpu = torch.cuda.get_device_name(0) if cuda else "cpu (smoke)"
    when = datetime.now(timezone.utc)
    raw: dict = {}
    config: dict = {"recipes": {}, "airbench": {}}
    table: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="casflow-bench-") as tmp:
        work = Path(tmp)
        base = work / "store"
        os.environ["CASFLOW_CACHE_DIR"] = str(work / "cache-setup")
        started = time.perf_counter()
        dataset = steps.prepare_dataset(make_config("fast", {}, 0, str(base)), Store(str(base)))
        raw["prepare_dataset_s"] = time.perf_counter() - started
        print(f"store: {dataset.train.num_samples} train, {dataset.eval.num_samples} test images as shards "
              f"in {raw['prepare_dataset_s']:.1f} s (not timed below)")
        for recipe in args.recipes:
            ours, config["recipes"][recipe] = run_casflow(recipe, dataset, base, work)
            raw[recipe] = ours
            name, train_fn = PAIRS[recipe]
            theirs = []
            if cuda:
                os.environ["CASFLOW_CACHE_DIR"] = str(work / "cache-setup")
                train, held_out = (shard_data.load_decoded(Store(str(base)), s, "airbench")
                                   for s in (dataset.train, dataset.eval))
                theirs, config["airbench"][name] = run_airbench(name, train_fn, train, held_out, dataset.class_names,
                                                                work)
                raw[name] = theirs
            against = [r["gpu_s"] for r in theirs]
            for kind in ("cold", "warm"):
                passes = [r[kind] for r in ours]
                table.append(row(f"{recipe}: shards -> results, decode {kind}", [p["top1"] for p in passes],
                                 [p["wall_s"] for p in passes], against, [p["peak_gib"] for p in passes]))
            table += [row(f"{recipe}: recipe training loop only", [], [r["warm"]["train_s"] for r in ours], against,
                          []),
                      row(f"{recipe}: evaluate step (TTA)", [], [r["warm"]["eval_s"] for r in ours], [], [])]
            if theirs:
                table += [row(f"{name}: train + evaluate (CUDA events)", [r["top1"] for r in theirs], against, against,
                              [r["peak_gib"] for r in theirs]),
                          row(f"{name}: wall, with loading train.pt", [], [r["wall_s"] for r in theirs], against, [])]
        for kind, key in (("empty", "decode_cold_s"), ("filled", "decode_warm_s")):
            table.append(row(f"decode train+test shards to uint8, cache {kind}", [],
                             [r[key] for recipe in args.recipes for r in raw[recipe]], [], []))

    header = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
              "date": when.isoformat(timespec="seconds"), "runs": runs, "warmup_epochs": WARMUP_EPOCHS,
              "git_commit": git_commit(short=False),
              "images": {"train": dataset.train.num_samples, "test": dataset.eval.num_samples},
              "airbench": importlib.metadata.version("airbench") if cuda else "skipped (--smoke)"}
    text = (f"# CIFAR-10 training: casflow vs airbench\n\n"
            f"GPU {gpu} | torch {header['torch']} | CUDA {header['cuda']} | {header['date']} | "
            f"N = {runs} runs (seeds 0..{runs - 1}) after a {WARMUP_EPOCHS}-epoch warm-up | "
            f"{header['images']['train']} train / {header['images']['test']} test images | "
            f"casflow {header['git_commit']} | airbench {header['airbench']}\n\n{markdown(table)}\n\n"
            "casflow rows: wall clock, synchronised. `/ airbench`: mean seconds over the paired airbench row's mean, "
            "which is timed with CUDA events around train94/train96 and airbench.evaluate (that span also holds "
            "airbench's model construction and its loading of test.pt, which its own printed time leaves out). "
            "Peak GPU memory: torch.cuda.max_memory_allocated; for casflow from the start of training.\n")
    print("\n" + text)
    slug = "cpu-smoke" if args.smoke else re.sub(r"[^a-z0-9]+", "-", gpu.lower().replace("nvidia", "")).strip("-")
    suffix = "" if set(args.recipes) == set(PAIRS) else "-" + "-".join(args.recipes)
    stem = out_dir / f"cifar10_gpu-{when:%Y-%m-%d}-{slug}{suffix}"
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(
        {"header": header, "args": vars(args) | {"data": str(data_dir), "out": str(out_dir)}, "config": config,
         "table": table, "raw": raw}, indent=1, default=str) + "\n")
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
