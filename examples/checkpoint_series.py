"""Write a series of "checkpoints" as npz samples, and a config that evaluates them as one series.

    python -m examples.checkpoint_series --out series-demo
    cas run series-demo/series.yaml
    python -m examples.checkpoint_series --out series-demo --next    # one more checkpoint, step 5000
    cas run series-demo/series.yaml                                  # computes only that one
    cas best --config series-demo/series.yaml

Each checkpoint stands for a model further into training: a class-conditional Gaussian fitted on the digits
train split (the built-in `gaussian` generator's model) keeping more PCA dimensions at each step, saved as
samples-<step>.npz (ADM layout). The config names them with one pattern, samples-{step}.npz, and uses
the demo's classifier (flows/demo.yaml).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from casflow.tasks.datasets import digits_splits
from casflow.tasks.generators.builtin import GaussianPCA
from casflow.tasks.samples import label_schedule

COMPONENTS_BY_STEP = {1000: 2, 2000: 6, 3000: 24, 4000: 32}  # PCA dimensions each checkpoint has learnt
NEXT = (5000, 40)  # the checkpoint --next adds
DEMO_CLASSIFIER = {"recipe": "fast", "options": {"widths": [32, 64, 64], "epochs": 16, "batch_size": 128, "flip": False,
                                                 "translate": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="series-demo")
    parser.add_argument("--next", action="store_true", help=f"write only the next checkpoint, step {NEXT[0]}")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = digits_splits(0.2, 0)
    labels = label_schedule(train.counts())
    for step, components in ([NEXT] if args.next else COMPONENTS_BY_STEP.items()):
        images = GaussianPCA.fit(train, components=components).sample(labels, seed=step, temperature=1.0)
        np.savez(out / f"samples-{step}.npz", arr_0=images, arr_1=labels)
    if args.next:
        print(f"wrote {out}/samples-{NEXT[0]}.npz")
        return
    config = {
        "store": {"url": str(out / "store")},
        "classifier": DEMO_CLASSIFIER,
        "models": [{"name": "ddpm", "generator": {"kind": "npz", "path": str(out / "samples-{step}.npz")}, "series": {}}],
    }
    (out / "series.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out}/: samples-{{{','.join(map(str, COMPONENTS_BY_STEP))}}}.npz and series.yaml\n"
          f"run it with: cas run {out}/series.yaml")


if __name__ == "__main__":
    main()
