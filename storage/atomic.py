"""Every local file casflow writes appears whole or not at all: written to a
temporary file beside its final name, flushed to disk, then renamed over it.
(On an object store one PUT is atomic by itself.)"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO

TEMP_MARK = ".tmp-"  # temporary files are `<name>.tmp-<uuid>`, renamed into place when complete


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write; on a clean exit it replaces `path`, on an error (a full disk, say) it is
    removed, and an OSError that names no file names `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp = f"{path}{TEMP_MARK}{uuid.uuid4().hex}"
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write's ENOSPC names no file: name it
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


def is_temporary(name: str) -> bool:
    return TEMP_MARK in name
