"""What tasks need from user files (datasets, checkpoints, samples), without
knowing where they live. `casflow.storage.sources.Files` implements it for
local paths and object-store URLs; to tasks a name is only a name.

Besides FileNotFoundError, every method raises ValueError, naming the file,
for what it refuses to read: not a regular file (a pipe, a device), larger
than the configured limit, an archive or pattern naming too many files, a
corrupt zip or tar."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Protocol


class FileTree(Protocol):
    name: str  # shown in error messages

    def paths(self) -> list[str]:
        """Relative POSIX paths of every file, sorted."""
        ...

    def read(self, path: str) -> bytes:
        ...


class SourceFiles(Protocol):
    def digest(self, name: str) -> str:
        """Content identity of a file or folder (sha256, or the store's ETags); FileNotFoundError if absent."""
        ...

    def open(self, name: str) -> IO[bytes]:
        """A streaming read; FileNotFoundError if absent."""
        ...

    def read_bytes(self, name: str) -> bytes:
        ...

    def tree(self, name: str) -> FileTree:
        """A folder or a zip archive as relative paths -> bytes."""
        ...

    def tar_names(self, name: str) -> list[str]:
        """The .tar shards a folder, prefix or brace pattern names, sorted."""
        ...

    def iter_webdataset(self, names: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(shard:key, {extension: bytes}) per sample of those shards, keys unique across them."""
        ...

    def local_path(self, name: str) -> str:
        """A local file with the content of `name` (a copy, for remote files)."""
        ...
