"""Content fingerprints: sha256 of a canonical JSON of everything that
changes a step's output.

Never a run id, a timestamp or a location: moving a file keeps its
fingerprint, changing one byte of it does not. Each fingerprint mixes in its
code version from `CODE_VERSIONS`, the one table of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; tuples become lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# Every code version that goes into a cache key. Bump an entry when its code's output changes for the
# same inputs: a forgotten bump serves stale cached objects with no error. tests/tasks/test_fingerprint.py
# lists the table, so a bump is a visible change to both.
CODE_VERSIONS: dict[str, int] = {
    # steps (flows/steps.py): the fingerprint of each step's committed output
    "dataset": 2,  # the real train and eval splits as shards
    "samples": 2,  # a model's samples as shards (tasks/samples.py, tasks/generators/)
    "classifier": 1,  # a trained classifier (tasks/classifiers/training.py)
    "evaluation": 2,  # counts and per-image predictions on the real eval split (tasks/metrics.py); 2: predictions
    "scores": 2,  # the scores beside CAS (tasks/scores.py); 2: float32 tiles on the device, seeded subsets and their sizes
    "recipe": 1,  # how a recipe and its hyperparameters are named (runs compare only under one recipe)
    "gallery": 1,  # a model's failure gallery in the report (tasks/gallery.py, flows/reporting.py)
    # inside those fingerprints' inputs
    "recipe:fast": 2,  # tasks/classifiers/fast.py
    "recipe:accurate": 2,  # tasks/classifiers/accurate.py
    "recipe:paper": 1,  # tasks/classifiers/paper.py
    "generator:gaussian": 2,  # tasks/generators/builtin.py; 2: samples identical on every CPU
}


def code_version(name: str) -> int:
    """The table's entry; an unknown name is a programming error, raised at once."""
    try:
        return CODE_VERSIONS[name]
    except KeyError:
        raise KeyError(f"no code version for '{name}': add it to casflow.tasks.fingerprint.CODE_VERSIONS") from None


def fingerprint(step: str, inputs: dict[str, Any]) -> str:
    """sha256 hex digest naming a step's output, with the step's code version from the table."""
    payload = canonical_json({"step": step, "code_version": code_version(step), "inputs": inputs})
    return hashlib.sha256(payload.encode()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_seed(seed: int, *salt: int | str) -> int:
    """A 32-bit seed derived from a base seed and a salt (a batch index, a name)."""
    digest = hashlib.sha256(canonical_json([seed, *salt]).encode()).digest()
    return int.from_bytes(digest[:4], "little")
