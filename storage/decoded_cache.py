"""A local cache of shard sets decoded to uint8 arrays, keyed by the sha256 of
their manifest (which pins every shard's sha256): decode once, train many
times. Lives in $CASFLOW_CACHE_DIR, else ~/.cache/casflow; safe to delete, and optional: when it
cannot be written, shard sets are decoded in memory each time instead."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from casflow.storage.atomic import atomic_file

log = logging.getLogger("casflow.storage")


def cache_dir() -> Path:
    return Path(os.environ.get("CASFLOW_CACHE_DIR") or Path.home() / ".cache" / "casflow")


_unwritable: set[str] = set()  # cache folders already reported as unwritable (one warning each per process)
_unwritable_lock = threading.Lock()


def load_or_build(key: str, build: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from the cache, or from `build()` and then cached.

    The cache is optional: when it cannot be written (a full disk, a read-only folder) the arrays
    built in memory are returned, and one warning per process names the cache folder."""
    folder = cache_dir()
    path = folder / "decoded" / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as arrays:
                return arrays["images"], arrays["labels"]
        except (OSError, ValueError, KeyError) as exc:  # a truncated file from a full disk, say
            log.warning("decoded cache %s unreadable (%s); rebuilding", path, exc)
    images, labels = build()
    try:
        with atomic_file(path) as f:
            np.savez(f, images=images, labels=labels)
    except OSError as exc:
        with _unwritable_lock:
            first = str(folder) not in _unwritable
            _unwritable.add(str(folder))
        if first:
            log.warning("decoded cache %s cannot be written (%s): decoding shards in memory instead, every time "
                        "they are read (set CASFLOW_CACHE_DIR to a folder with space to cache them)",
                        folder, exc.strerror or exc)
    return images, labels
