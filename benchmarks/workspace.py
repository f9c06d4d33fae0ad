"""A benchmark's working folder: the one given with --work (kept), else a temporary one (removed after)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def working_folder(work: Path | None, prefix: str) -> Iterator[Path]:
    """Yields the folder; casflow's decoded-sample cache goes under it, so runs never share a cache."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(work) if work else Path(tmp)
        os.environ["CASFLOW_CACHE_DIR"] = str(folder / "cache")
        yield folder
