"""User files named in a config (datasets, checkpoints, samples), local or on
an object store, seen as bytes, streams and file trees: `Files` implements
`casflow.tasks.files.SourceFiles`."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import braceexpand
import fsspec
from fsspec.implementations.local import LocalFileSystem

from casflow.storage import decoded_cache
from casflow.storage.atomic import atomic_file
from casflow.storage.shards import iter_tar
from casflow.storage.store import filesystem, s3_options


class NotRegularFile(ValueError):
    """A device, pipe, socket or folder where a file was expected: reading it may never end."""


def regular_file_size(path: str, name: str) -> int:
    """The size of a local regular file (links followed); NotRegularFile for anything else, without opening it
    (opening a pipe waits for a writer; /dev/zero never ends)."""
    mode = os.stat(path).st_mode  # FileNotFoundError when absent
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise NotRegularFile(f"{name}: not a regular file ({kind}); casflow reads regular files only")
    return os.stat(path).st_size


def read_local_file(path: str, name: str, max_bytes: int, what: str = "a file") -> bytes:
    """A local regular file's bytes, at most max_bytes (checked before reading, and while reading)."""
    size = regular_file_size(path, name)
    if size > max_bytes:
        raise FileTooLarge(f"{name}: {size} bytes, more than {what} may have ({max_bytes})")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"{name}: grew past {max_bytes} bytes while being read, more than {what} may have")
    return data


class FileTooLarge(ValueError):
    """A file (or archive member) larger than a configured limit."""


class Files:
    """Files by name: a local path, or a URL (s3:// with the store's options, or any fsspec URL)."""

    def __init__(self, s3: dict[str, Any] | None = None):
        self._s3 = s3 if s3 is not None else s3_options()

    def _fs(self, name: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(name, self._s3)

    def digest(self, name: str) -> str:
        """Content identity of a file or folder, for fingerprints.

        Local: sha256 of the bytes (of every file, for a folder). Remote: the
        ETag and size of each object, which the store computes for us."""
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(name)
        if fs.isdir(path):
            files = sorted(fs.find(path))
            h = hashlib.sha256()
            for file in files:
                rel = file[len(path.rstrip("/")) + 1 :]
                h.update(f"{rel}\0{_file_identity(fs, file)}\n".encode())
            return f"tree:{len(files)}:{h.hexdigest()}"
        return _file_identity(fs, path)

    def open(self, name: str) -> IO[bytes]:
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such file")
        return fs.open(path, "rb", block_size=8 * 2**20)

    def read_bytes(self, name: str) -> bytes:
        fs, path = self._fs(name)
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: no such file") from None

    def tree(self, name: str) -> FolderTree | ZipTree:
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such file or folder")
        if fs.isdir(path):
            return FolderTree(fs, path, name)
        return ZipTree(fs.cat_file(path), name)

    def tar_names(self, name: str) -> list[str]:
        """Shards from a brace pattern (shard-{000000..000009}.tar) or a folder of .tar files (subfolders too)."""
        if "{" in name:
            return list(braceexpand.braceexpand(name))
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such folder or file")
        if not fs.isdir(path):
            return [name]
        base, root = name.rstrip("/"), path.rstrip("/")
        relative = sorted(p[len(root) + 1 :] for p in fs.find(path) if p.endswith(".tar"))
        return [f"{base}/{r}" for r in relative]

    def iter_webdataset(self, names: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Samples of shards written by any WebDataset writer, streamed; keys must be unique across shards."""
        seen: set[str] = set()
        for name in names:
            with self.open(name) as stream:
                for key, parts in iter_tar(stream, name, seen):
                    yield f"{name.rsplit('/', 1)[-1]}:{key}", parts

    def local_path(self, name: str) -> str:
        """The file itself when local, else a copy in the local cache named by its sha256."""
        fs, path = self._fs(name)
        if isinstance(fs, LocalFileSystem):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{name}: no such file")
            return path
        data = self.read_bytes(name)
        copy = decoded_cache.cache_dir() / "checkpoints" / f"{hashlib.sha256(data).hexdigest()}{Path(path).suffix}"
        if not copy.exists():
            with atomic_file(copy) as f:
                f.write(data)
        return str(copy)


def _file_identity(fs: fsspec.AbstractFileSystem, path: str) -> str:
    if not isinstance(fs, LocalFileSystem):
        info = fs.info(path)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        return f"etag:{etag}:{info['size']}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


class FolderTree:
    """A folder (local or an object-store prefix) as relative paths -> bytes."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, name: str):
        self.fs, self.root = fs, path.rstrip("/")
        self.name = name.rstrip("/")

    def paths(self) -> list[str]:
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(self.root))

    def read(self, path: str) -> bytes:
        return self.fs.cat_file(f"{self.root}/{path}")


class ZipTree:
    """A zip archive as relative paths -> bytes (StyleGAN2-ADA and EDM datasets)."""

    def __init__(self, data: bytes, name: str):
        self.name = name
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            bad = self.zip.testzip()  # reads every member: CRC errors show here, not later
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ValueError(f"{name}: truncated or corrupt zip ({exc})") from None
        if bad is not None:
            raise ValueError(f"{name}: corrupt zip (member {bad} fails its CRC check)")

    def paths(self) -> list[str]:
        return sorted(i.filename for i in self.zip.infolist() if not i.is_dir())

    def read(self, path: str) -> bytes:
        return self.zip.read(path)
