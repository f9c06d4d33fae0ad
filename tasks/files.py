"""What tasks need from a folder or archive of files, without knowing where it lives."""

from __future__ import annotations

from typing import Protocol


class FileTree(Protocol):
    name: str  # shown in error messages

    def paths(self) -> list[str]:
        """Relative POSIX paths of every file, sorted."""
        ...

    def read(self, path: str) -> bytes:
        ...
