"""Content fingerprints: sha256 of a canonical JSON of everything that
changes a step's output.

Never a run id, a timestamp or a location: moving a file keeps its
fingerprint, changing one byte of it does not. Each step mixes in its own
code version (bump it when the step's output changes for the same inputs).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; tuples become lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def fingerprint(step: str, code_version: int, inputs: dict[str, Any]) -> str:
    """sha256 hex digest naming a step's output."""
    payload = canonical_json({"step": step, "code_version": code_version, "inputs": inputs})
    return hashlib.sha256(payload.encode()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_seed(seed: int, *salt: int | str) -> int:
    """A 32-bit seed derived from a base seed and a salt (a batch index, a name)."""
    digest = hashlib.sha256(canonical_json([seed, *salt]).encode()).digest()
    return int.from_bytes(digest[:4], "little")
