"""A local cache of shard sets decoded to uint8 arrays, keyed by the sha256 of
their manifest (which pins every shard's sha256): decode once, train many
times. Lives in $CASFLOW_CACHE_DIR, else ~/.cache/casflow; safe to delete."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from casflow.storage.atomic import atomic_file

log = logging.getLogger("casflow.storage")


def cache_dir() -> Path:
    return Path(os.environ.get("CASFLOW_CACHE_DIR") or Path.home() / ".cache" / "casflow")


def load_or_build(key: str, build: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from the cache, or from `build()` and then cached."""
    path = cache_dir() / "decoded" / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as arrays:
                return arrays["images"], arrays["labels"]
        except (OSError, ValueError, KeyError) as exc:  # a truncated file from a full disk, say
            log.warning("decoded cache %s unreadable (%s); rebuilding", path, exc)
    images, labels = build()
    with atomic_file(path) as f:
        np.savez(f, images=images, labels=labels)
    return images, labels
