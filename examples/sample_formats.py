"""Write samples in every format casflow reads, and a config that uses them all.

    python -m examples.sample_formats --out formats-demo
    cas run formats-demo/all-kinds.yaml        # exits 1: one model is broken on purpose

The samples come from a class-conditional Gaussian fitted on the digits train
split (the same model as the built-in `gaussian` generator), saved as:
  adm.npz             ADM / guided-diffusion layout (arr_0 NHWC uint8, arr_1 labels)
  imagefolder/<c>/    one folder per class
  edm.zip             StyleGAN2-ADA / EDM layout with dataset.json
  shards/*.tar        WebDataset shards (.png + .cls)
  class_means.pt      a checkpoint for the python entry point examples.class_means
  broken.npz          labels outside the 10 classes: the model that fails
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
import webdataset
import yaml

from casflow.tasks.datasets import digits_splits
from casflow.tasks.generators.builtin import GaussianPCA
from casflow.tasks.images import encode_png
from casflow.tasks.samples import label_schedule
from examples.class_means import fit_digits


def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    train, _ = digits_splits(0.2, 0)
    labels = label_schedule(train.counts())
    return GaussianPCA.fit(train, components=24).sample(labels, seed, temperature=1.0), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="formats-demo")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = draw(seed=1)
    np.savez(out / "adm.npz", images, labels)
    np.savez(out / "broken.npz", images, labels + 3)

    for i, (image, label) in enumerate(zip(*draw(seed=2))):
        folder = out / "imagefolder" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(encode_png(image))

    with zipfile.ZipFile(out / "edm.zip", "w") as archive:
        entries = []
        for i, (image, label) in enumerate(zip(*draw(seed=3))):
            name = f"{i // 1000:05d}/img{i:08d}.png"
            archive.writestr(name, encode_png(image))
            entries.append([name, int(label)])
        archive.writestr("dataset.json", json.dumps({"labels": entries}))

    (out / "shards").mkdir(exist_ok=True)
    with webdataset.ShardWriter(str(out / "shards" / "shard-%06d.tar"), maxcount=500, verbose=0) as sink:
        for i, (image, label) in enumerate(zip(*draw(seed=4))):
            sink.write({"__key__": f"sample{i:06d}", "png": encode_png(image), "cls": str(int(label))})

    buffer = io.BytesIO()
    torch.save(fit_digits(), buffer)
    (out / "class_means.pt").write_bytes(buffer.getvalue())

    config = {
        "store": {"url": str(out / "store")},
        "dataset": {"kind": "digits"},
        "classifier": {"recipe": "fast", "options": {"widths": [32, 64, 64], "epochs": 16, "batch_size": 128,
                                                      "flip": False, "translate": 1}},
        "seed": 0,
        "models": [
            {"name": "real", "generator": {"kind": "real"}},
            {"name": "from-npz", "generator": {"kind": "npz", "path": str(out / "adm.npz")}},
            {"name": "from-folders", "generator": {"kind": "imagefolder", "path": str(out / "imagefolder")}},
            {"name": "from-dataset-json", "generator": {"kind": "dataset-json", "path": str(out / "edm.zip")}},
            {"name": "from-shards", "generator": {"kind": "webdataset", "url": str(out / "shards")}},
            {"name": "from-python", "generator": {
                "kind": "python", "entry_point": f"{Path(__file__).with_name('class_means.py')}:make_sampler",
                "checkpoint": str(out / "class_means.pt"), "output_range": "-1..1", "layout": "NCHW",
                "options": {"noise": 0.5}}},
            {"name": "broken", "generator": {"kind": "npz", "path": str(out / "broken.npz")}},
        ],
    }
    (out / "all-kinds.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out}/: adm.npz, imagefolder/, edm.zip, shards/, class_means.pt, broken.npz and all-kinds.yaml\n"
          f"run it with: cas run {out}/all-kinds.yaml")


if __name__ == "__main__":
    main()
