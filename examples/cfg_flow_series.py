"""Train the guided flow-matching model (examples/cfg_flow.py) on the digits once, keeping a checkpoint every
--every optimiser steps, and write a config that evaluates them as one series.

    python -m examples.cfg_flow_series --out cfg-series            # ckpt-750.pt ... ckpt-6000.pt, series.yaml
    cas run cfg-series/series.yaml                                 # CAS against step
    cas best --config cfg-series/series.yaml
    python -m examples.cfg_flow_series --out cfg-series --max-seeds 5 --config-only   # race them instead

The defaults are cfg_flow's own training (6000 steps, seed 0) with eight checkpoints, from under-trained
(step 750: the weights' moving average still leans on the initial ones) to converged (step 6000, the end
of the cosine schedule). Training runs on one CPU thread, so the same arguments write the same bytes on
one machine (several threads sum in an order the CPU's kernels choose). The config uses the demo's
classifier (flows/demo.yaml) without the Naive Augmentation Score's classifiers, and the model's sampler
at guidance 1, 32 Euler steps; with --max-seeds the series races (selection: race) with up to that many
classifier seeds per checkpoint (classifier.seeds: {min: 1, max: N}).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from examples import cfg_flow

REPO = Path(__file__).resolve().parent.parent
PATTERN = "ckpt-{step}.pt"


def series_config(out: Path, race_seeds: int | None = None) -> dict:
    """The casflow config of the series in `out`: the demo's dataset and classifier, one series model; with
    `race_seeds`, a racing series (selection: race) with up to that many classifier seeds per checkpoint."""
    demo = yaml.safe_load((REPO / "flows" / "demo.yaml").read_text())
    generator = {"kind": "python", "entry_point": "examples.cfg_flow:make_sampler",
                 "checkpoint": str(out.resolve() / PATTERN), "output_range": "-1..1", "layout": "NCHW",
                 "batch_size": 512, "options": {"guidance": 1.0, "steps": 32}}
    return {"store": {"url": str(out.resolve() / "store")}, "dataset": demo["dataset"],
            "classifier": demo["classifier"] | ({"seeds": {"min": 1, "max": race_seeds}} if race_seeds else {}),
            "scores": {"augmentation": []},
            "models": [{"name": "cfg", "generator": generator, "series": {"selection": "race"} if race_seeds else {}}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("cfg-series"))
    parser.add_argument("--steps", type=int, default=cfg_flow.Hyper.steps, help="optimiser steps of the whole training")
    parser.add_argument("--every", type=int, default=750, help="a checkpoint every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seeds", type=int, help="race the series with up to this many classifier seeds")
    parser.add_argument("--config-only", action="store_true", help="write series.yaml only, for checkpoints already there")
    args = parser.parse_args()
    if args.every < 1 or args.steps % args.every:
        parser.error(f"--every must divide --steps ({args.steps}), got {args.every}")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.config_only:
        (args.out / "series.yaml").write_text(yaml.safe_dump(series_config(args.out, args.max_seeds), sort_keys=False))
        print(f"wrote {args.out}/series.yaml")
        return

    def save(step: int, checkpoint: dict) -> None:
        torch.save(checkpoint, args.out / PATTERN.format(step=step))

    started = time.perf_counter()
    cfg_flow.train_digits(cfg_flow.Hyper(steps=args.steps), args.seed, log_every=args.every, save_every=args.every,
                          save=save)
    (args.out / "series.yaml").write_text(yaml.safe_dump(series_config(args.out, args.max_seeds), sort_keys=False))
    print(f"wrote {args.steps // args.every} checkpoints {args.out}/{PATTERN} and {args.out}/series.yaml "
          f"in {time.perf_counter() - started:.0f} s\nrun them with: cas run {args.out}/series.yaml")


if __name__ == "__main__":
    main()
