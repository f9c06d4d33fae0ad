"""Every local file casflow writes appears whole or not at all: written to a
temporary file beside its final name, flushed to disk, then renamed over it.
(On an object store one PUT is atomic by itself.)

Temporary names say who writes them, `<name>.tmp-<host>-<pid>-<random>`, so
that a crash's leftovers can be told from another live writer's work (two
runs on one store, two workers on one NFS folder): a temporary file is
debris once its writer is gone (same host, process no longer running) or,
from another host, once it has not changed for STALE_SECONDS. Young
temporaries of live writers are never removed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import IO

TEMP_MARK = ".tmp-"
STALE_SECONDS = 6 * 3600  # no write of one file takes this long: an unchanged temporary this old is debris
_HOST = socket.gethostname().replace("-", "_").replace(".", "_")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write; on a clean exit it replaces `path`, on an error (a full disk, say) it is
    removed, and an OSError that names no file names `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp = f"{path}{TEMP_MARK}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
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


def is_debris(path: str, now: float | None = None) -> bool:
    """A temporary file whose writer is gone: a dead process on this host, or untouched for STALE_SECONDS."""
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except FileNotFoundError:
        return False  # renamed into place or removed meanwhile
    writer = os.path.basename(path).rsplit(TEMP_MARK, 1)[-1].split("-")
    if len(writer) == 3 and writer[0] == _HOST and writer[1].isdigit():
        return not _alive(int(writer[1])) or age > STALE_SECONDS
    return age > STALE_SECONDS  # another host's, or a name from before writers were named


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
