"""The totals table of docs/imagenet.md ("The night's budget from `cas plan`"), recomputed from
`cas plan --json`: paste its output over the table when the default rates (tasks/throughput.py) change.

    .venv/bin/python docs/imagenet_budget.py

Each row is configs/imagenet64.yaml with one setting changed, planned with ImageNet-1k's sizes assumed
(--assume-dataset) on 1, 2 and 8 assumed GPUs (--gpus) against an empty temporary store: a first night,
nothing cached, no history, so every figure comes from the default rates. Hours are wall time
(`total.wall_seconds`; with one GPU also the device-hours), GB what the night writes (`total.bytes`).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from casflow.flows import cli

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "imagenet64.yaml"
IMAGENET = "train=1281167,eval=50000,classes=1000,size=64x64x3"
GPUS = (1, 2, 8)
NAS_OFF = {"scores": {"augmentation": []}}
THREE_SEEDS = {"classifier": {"seeds": [0, 1, 2]}}
# (the row's label in the doc, what it changes in the config)
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("defaults (`configs/imagenet64.yaml`)", {}),
    ("`scores: {gan_test: false, features: false, memorization: false}`",
     {"scores": {"gan_test": False, "features": False, "memorization": False}}),
    ("`scores: {augmentation: []}` (NAS off)", NAS_OFF),
    ("`classifier: {seeds: [0, 1, 2]}`", THREE_SEEDS),
    ("three seeds, NAS off", {**THREE_SEEDS, **NAS_OFF}),
    ("three seeds, NAS `[0.25, 0.5, 1.0]`", {**THREE_SEEDS, "scores": {"augmentation": [0.25, 0.5, 1.0]}}),
    ("`classifier: {recipe: accurate}`", {"classifier": {"recipe": "accurate"}}),
    ("`accurate`, NAS off", {"classifier": {"recipe": "accurate"}, **NAS_OFF}),
    ("`classifier: {recipe: paper}` (ResNet-18, 40 epochs)", {"classifier": {"recipe": "paper"}}),
    ("`paper`, NAS off", {"classifier": {"recipe": "paper"}, **NAS_OFF}),
]


def with_changes(config: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The config with each section's keys in `changes` replaced, the section's other keys kept."""
    changed = dict(config)
    for section, keys in changes.items():
        changed[section] = {**config.get(section, {}), **keys}
    return changed


def plan_json(config_path: Path, store: Path, gpus: int) -> dict[str, Any]:
    """`cas plan CONFIG --json` with ImageNet's sizes assumed on `gpus` GPUs, as the command prints it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["plan", str(config_path), "--store", str(store), "--json", "--assume-dataset", IMAGENET,
                           "--gpus", str(gpus)])
    if status != 0:
        raise SystemExit(f"cas plan {config_path} --gpus {gpus} exited {status}")
    return json.loads(out.getvalue())


def main() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, changes) in enumerate(SETTINGS):
            path = Path(tmp) / f"setting{i}.yaml"
            path.write_text(yaml.safe_dump(with_changes(config, changes), sort_keys=False))
            plans = [plan_json(path, Path(tmp) / "store", gpus) for gpus in GPUS]
            steps = plans[0]["total"]["steps_computing"]
            hours = [f"{p['total']['wall_seconds'] / 3600:.2f}" for p in plans]
            if i == 0:
                hours = [f"**{h}**" for h in hours]
            written = plans[0]["total"]["bytes"] / 1e9  # the lanes change when steps run, not what they write
            rows.append(f"| {label} | {steps} | " + " | ".join(hours) + f" | {written:.1f} |")
    print("| setting | steps | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in GPUS) + " | GB |")
    print("| --- | ---: | " + " | ".join("---:" for _ in GPUS) + " | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
