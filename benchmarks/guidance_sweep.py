"""Classifier-free guidance against CAS and the feature-space scores, on the
embedded digits, with a real trained model: one table, one plot.

The reference model (examples/cfg_flow.py, flow matching with label
dropout) is trained on the digits train split, or loaded with
--checkpoint. For each guidance scale it is one casflow Python model
(`options: {guidance: g}`), run through the pipeline's own steps
(prepare_dataset, draw_samples, train_classifier, evaluate_classifier) with
the demo's classifier recipe (flows/demo.yaml), beside the `real` baseline,
which is the anchor measured in the same run. Per model and seed:

  CAS top-1        a classifier trained on the samples only, on the real eval split
  GAN-test         the real-trained classifier's accuracy on the samples (Shmelkov et al. 2018)
  precision/recall k = 3 (Kynkaenniemi et al. 2019), density/coverage k = 5 (Naeem et al. 2020)
  FD               Frechet distance (Heusel et al. 2017)
  near copies      share of samples closer to a train image than the 1% quantile of
                   train-to-train nearest-neighbour distances, in pixels and in features

Features are the real-trained classifier's penultimate activations (one view
per image, float32); the real set the samples are scored against is the eval
split (359 images), so the `real` row (the train split as samples) measures
what these scores give data from the true distribution. Every number is a
mean over --seeds (each seed draws new samples and trains new classifiers;
the generative model is trained once), with the min-max spread.

    python benchmarks/guidance_sweep.py [--checkpoint cfg_flow.pt] [--seeds 0 1 2] [--guidance 0 0.5 1 2 4 8]
    python benchmarks/guidance_sweep.py --smoke   # the plumbing in seconds: a tiny model, 2 scales, 1 seed
"""

from __future__ import annotations

import argparse
import dataclasses
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

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)
from workspace import working_folder  # noqa: E402

from casflow.flows import shard_data, steps  # noqa: E402
from casflow.storage import artifacts  # noqa: E402
from casflow.tasks import devices, scores  # noqa: E402
from casflow.tasks.classifiers import training  # noqa: E402
from casflow.tasks.config import Config  # noqa: E402
from examples import cfg_flow  # noqa: E402

SAMPLER_STEPS = 32  # Euler steps of the reference model's sampler
SAMPLE_BATCH = 512  # labels per sample() call (fingerprinted: it changes the seeds)
SMOKE_MODEL = cfg_flow.Hyper(steps=40, batch_size=64, warmup=5, hidden=32, depth=1)
SMOKE_CLASSIFIER = {"epochs": 2}  # on top of the demo's options
METRICS = {  # key: (column title, format, percent?)
    "cas_top1": ("CAS top-1 %", "{:.1f}", True),
    "cas_ratio": ("CAS / real", "{:.3f}", False),
    "gan_test": ("GAN-test %", "{:.1f}", True),
    "precision": ("precision", "{:.3f}", False),
    "recall": ("recall", "{:.3f}", False),
    "density": ("density", "{:.3f}", False),
    "coverage": ("coverage", "{:.3f}", False),
    "fd": ("FD", "{:.2f}", False),
    "near_copies_pixels": ("near copies, pixels %", "{:.1f}", True),
    "near_copies_features": ("near copies, features %", "{:.1f}", True),
}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--checkpoint", type=Path, help="the reference model: loaded if it exists, else trained and saved there")
parser.add_argument("--train-steps", type=int, default=cfg_flow.Hyper.steps, help="optimiser steps when training it")
parser.add_argument("--model-seed", type=int, default=0, help="seed of the reference model's training")
parser.add_argument("--guidance", type=float, nargs="+", default=[0, 0.5, 1, 2, 4, 8])
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="run seeds: samples and classifiers")
parser.add_argument("--work", type=Path, help="store and caches (default: a temporary folder, removed at the end)")
parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
parser.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core machine two OpenMP threads stall whenever another "
                         "process takes a core; one thread ran the model's training at a steady 28 ms a step where two "
                         "swung between 12 and 200)")
parser.add_argument("--smoke", action="store_true", help="plumbing check: tiny model and classifier, 2 scales, 1 seed")
args = parser.parse_args()
torch.set_num_threads(args.threads)
if args.smoke:
    args.guidance, args.seeds = args.guidance[:1] + [4.0], args.seeds[:1]


# ---------------------------------------------------------------- the reference model

def reference_model(work: Path) -> tuple[Path, dict]:
    """The checkpoint's path and how it came to be (trained now, or loaded)."""
    path = args.checkpoint or work / "cfg_flow.pt"
    if path.exists():
        return path, {"trained": False}
    hp = SMOKE_MODEL if args.smoke else cfg_flow.Hyper(steps=args.train_steps)
    started = time.perf_counter()
    checkpoint = cfg_flow.train_digits(hp, args.model_seed, log_every=0 if args.smoke else 1000)
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    print(f"trained the reference model in {seconds:.0f} s: {path}")
    return path, {"trained": True, "train_seconds": round(seconds, 1), "hyper": dataclasses.asdict(hp), "seed": args.model_seed}


def model_name(guidance: float) -> str:
    return f"cfg-w{guidance:g}"


def make_config(store_url: str, checkpoint: Path, seed: int) -> Config:
    demo = yaml.safe_load((REPO / "flows" / "demo.yaml").read_text())
    classifier = demo["classifier"] | ({"options": demo["classifier"]["options"] | SMOKE_CLASSIFIER} if args.smoke else {})
    models = [{"name": "real", "generator": {"kind": "real"}}] + [
        {"name": model_name(g), "generator": {
            "kind": "python", "entry_point": "examples.cfg_flow:make_sampler", "checkpoint": str(checkpoint),
            "output_range": "-1..1", "layout": "NCHW", "batch_size": SAMPLE_BATCH,
            "options": {"guidance": g, "steps": 4 if args.smoke else SAMPLER_STEPS}}}
        for g in args.guidance]
    return Config.model_validate({"store": {"url": store_url}, "dataset": demo["dataset"], "classifier": classifier,
                                  "seed": seed, "models": models})


# ---------------------------------------------------------------- one seed: every model through the steps, then the scores

def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64)


def run_seed(config: Config, device: str) -> tuple[dict[str, dict], dict[str, int]]:
    """Per model: the scores (and per class); and the sizes of the real splits."""
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    num_classes = len(dataset.class_names)
    recipe = config.classifier.resolved
    torch_device = devices.torch_device(device)
    records = {}
    for model in config.models:
        samples = steps.draw_samples(config, store, model, dataset, device)
        classifier = steps.train_classifier(config, store, samples, dataset, device, config.seed)
        records[model.name] = (samples, steps.evaluate_classifier(config, store, classifier, dataset, device))

    real_top1 = records["real"][1].counts.top1
    real = records["real"][1].classifier
    out = {}
    for name, (samples, evaluation) in records.items():
        scored = steps.score_samples(config, store, samples, real, dataset, device)  # what every run computes
        overall = scored.overall
        out[name] = {
            "cas_top1": evaluation.counts.top1, "cas_ratio": evaluation.counts.top1 / real_top1,
            "gan_test": overall["gan_test_top1"], "precision": overall["precision"], "recall": overall["recall"],
            "density": overall["density"], "coverage": overall["coverage"], "fd": overall["fd"],
            "near_copies_pixels": overall["memorized_fraction"], "near_copies_features": overall["memorized_fraction_features"],
            "per_class": {"cas_top1": evaluation.counts.per_class_top1()} | scored.per_class,
            "samples_fingerprint": samples.shard_set.fingerprint, "scores_fingerprint": scored.fingerprint,
        }
        print(f"seed {config.seed} {name}: " + ", ".join(f"{k} {out[name][k]:.4f}" for k in METRICS), flush=True)

    # fresh real images (the eval split) under the near-copy rule: its base rate, for the plot and the table
    real_net = training.load_weights(recipe, artifacts.read_weights(store, real.fingerprint),
                                     image_shape=dataset.train.image_shape, num_classes=num_classes, device=torch_device)
    train_images, _ = shard_data.load_decoded(store, dataset.train, "digits train")
    eval_images, _ = shard_data.load_decoded(store, dataset.eval, "digits eval")
    train_features = training.features(recipe, real_net, train_images, torch_device)
    eval_features = training.features(recipe, real_net, eval_images, torch_device)
    out["_controls"] = {
        "eval_near_copies_pixels": scores.near_copies(pixels(train_images), pixels(eval_images)).fraction,
        "eval_near_copies_features": scores.near_copies(train_features, eval_features).fraction,
    }
    return out, {"train": len(train_images), "eval": len(eval_images)}


# ---------------------------------------------------------------- the table and the plot

def summarise(raw: dict[int, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and metric: mean, min and max over the seeds."""
    names = [n for n in next(iter(raw.values())) if not n.startswith("_")]
    return {name: {key: {"mean": statistics.mean(values), "min": min(values), "max": max(values)}
                   for key in METRICS for values in [[raw[s][name][key] for s in raw]]} for name in names}


def cell(stats: dict[str, float], key: str) -> str:
    _, fmt, percent = METRICS[key]
    scale = 100 if percent else 1
    mean, low, high = (fmt.format(scale * stats[k]) for k in ("mean", "min", "max"))
    return mean if low == high else f"{mean} ({low}-{high})"


def markdown(summary: dict, guidance: dict[str, float | None]) -> str:
    lines = ["| model | guidance | " + " | ".join(title for title, _, _ in METRICS.values()) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    for name, stats in summary.items():
        g = guidance[name]
        lines.append(f"| {name} | {'' if g is None else f'{g:g}'} | " + " | ".join(cell(stats[k], k) for k in METRICS) + " |")
    return "\n".join(lines)


def plot(summary: dict, guidance: dict[str, float | None], controls: dict[str, float], path: Path, title: str) -> None:
    """One panel per kind of score against guidance; dashed lines: the real train split (for near
    copies, 100% by construction, so the dotted line is the fresh eval split's base rate instead)."""
    swept = [n for n in summary if guidance[n] is not None]
    x = [guidance[n] for n in swept]
    panels = [("accuracy (%)", ["cas_top1", "gan_test"]), ("k-NN scores", ["precision", "recall", "coverage"]),
              ("Frechet distance (features)", ["fd"]), ("near copies (%)", ["near_copies_pixels", "near_copies_features"])]
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, (label, keys) in zip(axes, panels):
        for i, key in enumerate(keys):
            scale = 100 if METRICS[key][2] else 1
            mean = np.array([summary[n][key]["mean"] for n in swept]) * scale
            low = mean - np.array([summary[n][key]["min"] for n in swept]) * scale
            high = np.array([summary[n][key]["max"] for n in swept]) * scale - mean
            ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=METRICS[key][0], color=f"C{i}")
            if key.startswith("near_copies"):
                ax.axhline(controls[f"eval_{key}"] * scale, color=f"C{i}", linestyle=":", linewidth=1)
            else:
                ax.axhline(summary["real"][key]["mean"] * scale, color=f"C{i}", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xticks(x, [f"{g:g}" for g in x])
        ax.set_xlabel("guidance w")
        ax.set_title(label)
        ax.legend(fontsize=8)
    figure.suptitle(f"{title}  (dashed: the real train split, same run; dotted: fresh real images; "
                    "bars: min-max over seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    when = datetime.now(timezone.utc)
    started = time.perf_counter()
    with working_folder(args.work, "casflow-guidance-") as work:
        checkpoint, model_info = reference_model(work)
        model_info["sha256"] = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        raw, configs = {}, {}
        for seed in args.seeds:
            config = make_config(str(work / "store"), checkpoint, seed)
            device = devices.visible_devices(config.classifier.device, torch.cuda.device_count())[0]
            raw[seed], sizes = run_seed(config, device)
            configs[seed] = config.model_dump(mode="json")
    controls = {k: statistics.mean(raw[s]["_controls"][k] for s in raw) for k in raw[args.seeds[0]]["_controls"]}
    summary = summarise(raw)
    guidance = {"real": None} | {model_name(g): g for g in args.guidance}
    machine = (f"{platform.machine()}, {device if device != 'cpu' else 'CPU'}, {os.cpu_count()} cores "
               f"({torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''}); "
               f"Python {platform.python_version()}, torch {torch.__version__}")
    demo_options = configs[args.seeds[0]]["classifier"]
    header = {"date": when.isoformat(timespec="seconds"), "machine": machine, "device": device,
              "torch": torch.__version__, "numpy": np.__version__, "git_commit": git_commit(), "seeds": args.seeds,
              "guidance": args.guidance, "sampler_steps": 4 if args.smoke else SAMPLER_STEPS, "smoke": args.smoke,
              "reference_model": model_info, "classifier": demo_options,
              "sizes": sizes | {"samples_per_model": sizes["train"]},
              "wall_seconds": round(time.perf_counter() - started, 1)}
    title = f"Guidance sweep on digits, {when:%Y-%m-%d}"
    text = (f"# {title}\n\n"
            f"Machine: {machine}; commit {header['git_commit']}; {header['wall_seconds']:.0f} s in all.\n"
            f"Model: examples/cfg_flow.py, {model_info.get('hyper', {}).get('steps', 'loaded')} training steps "
            f"(sha256 {model_info['sha256'][:12]}), {header['sampler_steps']} Euler steps per sample; "
            f"guidance w as in v = v_c + w (v_c - v_uncond), w = 0 the conditional model alone.\n"
            f"Classifier: the demo's `{demo_options['recipe']}` recipe, options {json.dumps(demo_options['options'])}.\n"
            f"Seeds {', '.join(map(str, args.seeds))}: each draws new samples and trains new classifiers; cells are the "
            f"mean (min-max) over them.\n"
            f"Scores against the real eval split ({sizes['eval']} images) in the real-trained classifier's penultimate "
            f"features; near copies against the train split ({sizes['train']:,}). "
            f"Fresh real images (the eval split) flagged as near copies: "
            f"{100 * controls['eval_near_copies_pixels']:.1f}% in pixels, {100 * controls['eval_near_copies_features']:.1f}% "
            f"in features (the rule's base rate).\n\n"
            f"{markdown(summary, guidance)}\n\n"
            "The `real` row is the anchor measured in the same run: the train split itself as samples (so it is "
            "100% near copies by construction). CAS / real divides by its CAS top-1 of the same seed.\n")
    print("\n" + text)
    stem = args.out / f"guidance_sweep-{when:%Y-%m-%d}{'-smoke' if args.smoke else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps(
        {"header": header, "controls": controls, "summary": summary, "raw": {str(s): r for s, r in raw.items()},
         "configs": {str(s): c for s, c in configs.items()}, "args": {k: str(v) for k, v in vars(args).items()}},
        indent=1) + "\n")
    plot(summary, guidance, controls, Path(f"{stem}.png"), title)
    print(f"wrote {stem}.md, .json and .png")


if __name__ == "__main__":
    main()
