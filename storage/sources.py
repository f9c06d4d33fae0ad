"""User files named in a config (datasets, checkpoints, samples), local or on
an object store, seen as bytes, streams and file trees: `Files` implements
`casflow.tasks.files.SourceFiles`.

Every size is checked before anything is read: a file's (from the file
system or the object store), an archive member's (from its header), and the
number of files a folder, zip or brace pattern names. Only regular files are
read: a pipe or a device (/dev/zero) would never end. What breaks a limit
raises a ValueError that names the file and the limit (`limits:` in the
config): FileTooLarge, TooManyFiles, NotRegularFile.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import braceexpand
import fsspec
from fsspec.implementations.local import LocalFileSystem

from casflow.storage import decoded_cache
from casflow.storage.atomic import atomic_file
from casflow.storage.shards import iter_tar
from casflow.storage.store import filesystem, s3_options
from casflow.tasks.exits import USAGE, CasError


class NotRegularFile(CasError, ValueError):
    """A device, pipe, socket or folder where a file was expected: reading it may never end."""

    exit_code = USAGE


class FileTooLarge(CasError, ValueError):
    """A file (or archive member) larger than a configured limit."""

    exit_code = USAGE


class TooManyFiles(CasError, ValueError):
    """A folder, archive or brace pattern that names more files than a configured limit."""

    exit_code = USAGE


def regular_file_size(path: str, name: str) -> int:
    """The size of a local regular file (links followed); NotRegularFile for anything else, without opening it
    (opening a pipe waits for a writer; /dev/zero never ends)."""
    info = os.stat(path)  # FileNotFoundError when absent
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(f"{name}: not a regular file ({_kind(info.st_mode)}); casflow reads regular files only")
    return info.st_size


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")


def read_local_file(path: str, name: str, max_bytes: int, limit: str) -> bytes:
    """A local regular file's bytes, at most max_bytes (checked before reading, and while reading);
    `limit` names the limit in the error ("limits.max_file_bytes")."""
    size = regular_file_size(path, name)
    if size > max_bytes:
        raise FileTooLarge(f"{name}: {size} bytes, more than {limit} ({max_bytes})")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"{name}: grew while being read, past {limit} ({max_bytes})")
    return data


class Files:
    """Files by name: a local path, or a URL (s3:// with the store's options, or any fsspec URL).

    max_file_bytes bounds one file or archive member; max_files the files one folder, zip or brace
    pattern may name (the config's `limits.max_file_bytes` and `limits.max_files`)."""

    def __init__(self, s3: dict[str, Any] | None = None, *, max_file_bytes: int, max_files: int):
        self._s3 = s3 if s3 is not None else s3_options()
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files

    def _fs(self, name: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(name, self._s3)

    def _checked_size(self, fs: fsspec.AbstractFileSystem, path: str, name: str) -> int:
        """A file's size, after checking that it is a regular file within max_file_bytes."""
        size = regular_file_size(path, name) if isinstance(fs, LocalFileSystem) else int(fs.info(path)["size"])
        if size > self.max_file_bytes:
            raise FileTooLarge(f"{name}: {size} bytes, more than limits.max_file_bytes ({self.max_file_bytes})")
        return size

    def _read(self, fs: fsspec.AbstractFileSystem, path: str, name: str) -> bytes:
        if isinstance(fs, LocalFileSystem):
            return read_local_file(path, name, self.max_file_bytes, "limits.max_file_bytes")
        self._checked_size(fs, path, name)
        return fs.cat_file(path)

    def _files_below(self, fs: fsspec.AbstractFileSystem, path: str, name: str) -> list[str]:
        """Relative paths of every file below a folder, sorted; each a regular file, at most max_files of them."""
        root = path.rstrip("/")
        entries = fs.find(root, detail=True)
        if len(entries) > self.max_files:
            raise TooManyFiles(f"{name}: {len(entries)} files, more than limits.max_files ({self.max_files})")
        relative = []
        for full, info in entries.items():
            rel = full[len(root) + 1 :]
            if info.get("type", "file") != "file":
                kind = _kind(os.stat(full).st_mode) if isinstance(fs, LocalFileSystem) else info.get("type")  # links followed
                raise NotRegularFile(f"{name.rstrip('/')}/{rel}: not a regular file ({kind}); casflow reads regular files only")
            relative.append(rel)
        return sorted(relative)

    def digest(self, name: str) -> str:
        """Content identity of a file or folder, for fingerprints.

        Local: sha256 of the bytes (of every file, for a folder). Remote: the
        ETag and size of each object, which the store computes for us."""
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(name)
        if fs.isdir(path):
            files = self._files_below(fs, path, name)
            h = hashlib.sha256()
            for rel in files:
                full = f"{path.rstrip('/')}/{rel}"
                self._checked_size(fs, full, f"{name.rstrip('/')}/{rel}")
                h.update(f"{rel}\0{_file_identity(fs, full)}\n".encode())
            return f"tree:{len(files)}:{h.hexdigest()}"
        self._checked_size(fs, path, name)
        return _file_identity(fs, path)

    def open(self, name: str) -> IO[bytes]:
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such file")
        self._checked_size(fs, path, name)
        return fs.open(path, "rb", block_size=8 * 2**20)

    def read_bytes(self, name: str) -> bytes:
        fs, path = self._fs(name)
        try:
            return self._read(fs, path, name)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: no such file") from None

    def tree(self, name: str) -> FolderTree | ZipTree:
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such file or folder")
        if fs.isdir(path):
            root = path.rstrip("/")
            return FolderTree(name, self._files_below(fs, path, name),
                              lambda rel: self._read(fs, f"{root}/{rel}", f"{name.rstrip('/')}/{rel}"))
        return ZipTree(self.open(name), name, max_member_bytes=self.max_file_bytes, max_files=self.max_files)

    def _brace_alternatives(self, pattern: str, what: str) -> list[str]:
        """The names a brace pattern expands to, counted before expanding so a huge range fails at once."""
        try:
            count = brace_count(pattern)
        except braceexpand.UnbalancedBracesError as exc:
            raise ValueError(f"{pattern}: {exc}") from None
        if count > self.max_files:
            raise TooManyFiles(f"{pattern}: the pattern names {count} {what}, more than limits.max_files ({self.max_files})")
        return list(braceexpand.braceexpand(pattern))

    def tar_names(self, name: str) -> list[str]:
        """Shards from a brace pattern (shard-{000000..000009}.tar) or a folder of .tar files (subfolders too)."""
        if "{" in name:
            return self._brace_alternatives(name, "shards")
        fs, path = self._fs(name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{name}: no such folder or file")
        if not fs.isdir(path):
            return [name]
        base = name.rstrip("/")
        return [f"{base}/{rel}" for rel in self._files_below(fs, path, name) if rel.endswith(".tar")]

    def matching(self, pattern: str) -> list[str]:
        """Files a glob (`*`, `?`, `[...]`) with brace alternatives ({a,b}, {1..3}) names, sorted, in the
        pattern's form (a relative path stays relative, a URL keeps its scheme); at most max_files of them."""
        names: set[str] = set()
        for alternative in self._brace_alternatives(pattern, "patterns"):
            fs, path = self._fs(alternative)
            if isinstance(fs, LocalFileSystem):
                scheme = "file://" if alternative.startswith("file://") else ""
                names.update(scheme + name for name in glob.glob(alternative.removeprefix("file://")) if os.path.isfile(name))
            else:
                scheme = alternative.split("://", 1)[0]
                names.update(f"{scheme}://{found}" for found, info in fs.glob(path, detail=True).items()
                             if info.get("type", "file") == "file")
            if len(names) > self.max_files:
                raise TooManyFiles(f"{pattern}: more than limits.max_files ({self.max_files}) files match")
        return sorted(names)

    def iter_webdataset(self, names: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Samples of shards written by any WebDataset writer, streamed; keys must be unique across shards,
        and no member may be larger than max_file_bytes."""
        seen: set[str] = set()
        for name in names:
            with self.open(name) as stream:
                for key, parts in iter_tar(stream, name, seen, max_member_bytes=self.max_file_bytes):
                    yield f"{name.rsplit('/', 1)[-1]}:{key}", parts

    def local_path(self, name: str) -> str:
        """The file itself when local, else a copy in the local cache named by its sha256."""
        fs, path = self._fs(name)
        if isinstance(fs, LocalFileSystem):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{name}: no such file")
            self._checked_size(fs, path, name)
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
    """A folder (local or an object-store prefix) as relative paths -> bytes; its files listed and checked once."""

    def __init__(self, name: str, paths: list[str], read: Callable[[str], bytes]):
        self.name = name.rstrip("/")
        self._paths, self._read = paths, read

    def paths(self) -> list[str]:
        return list(self._paths)

    def read(self, path: str) -> bytes:
        return self._read(path)


class ZipTree:
    """A zip archive as relative paths -> bytes (StyleGAN2-ADA and EDM datasets), read from a seekable stream.

    The entry count (from the end-of-central-directory record) and every member's declared size are
    checked before any member is read; zipfile stops a member at its declared size."""

    def __init__(self, stream: IO[bytes], name: str, *, max_member_bytes: int, max_files: int):
        self.name = name
        try:
            entries = _zip_entry_count(stream)
            if entries is not None and entries > max_files:
                raise TooManyFiles(f"{name}: {entries} archive members, more than limits.max_files ({max_files})")
            self.zip = zipfile.ZipFile(stream)
            for info in self.zip.infolist():
                if info.file_size > max_member_bytes:
                    raise FileTooLarge(f"{name}: member {info.filename} is {info.file_size} bytes once extracted, "
                                       f"more than limits.max_file_bytes ({max_member_bytes})")
            bad = self.zip.testzip()  # reads every member: CRC errors show here, not later
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise ValueError(f"{name}: truncated or corrupt zip ({exc})") from None
        if bad is not None:
            raise ValueError(f"{name}: corrupt zip (member {bad} fails its CRC check)")

    def paths(self) -> list[str]:
        return sorted(i.filename for i in self.zip.infolist() if not i.is_dir())

    def read(self, path: str) -> bytes:
        return self.zip.read(path)


def _zip_entry_count(stream: IO[bytes]) -> int | None:
    """Members a zip declares in its end-of-central-directory record, read before zipfile parses them all."""
    end_record = getattr(zipfile, "_EndRecData", None)  # zipfile's own reader of that record
    if end_record is None:
        return None
    record = end_record(stream)
    stream.seek(0)
    if record is None:
        raise zipfile.BadZipFile("no end-of-central-directory record")
    return int(record[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)])


# ---------------------------------------------------------------- brace patterns, counted before expanding

_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")


def brace_count(pattern: str) -> int:
    """How many names `braceexpand.braceexpand(pattern)` gives, without expanding it (braceexpand builds
    every range in memory: shard-{000000..999999999}.tar is a billion strings). Mirrors its grammar:
    integer and letter ranges with steps, comma sequences, nesting, backslash escapes."""
    return _pattern_count(pattern)


def _pattern_count(pattern: str) -> int:
    total, start, pos, depth = 1, 0, 0, 0
    while pos < len(pattern):
        if pattern[pos] == "\\":
            pos += 2
            continue
        if pattern[pos] == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif pattern[pos] == "}":
            depth -= 1
            if depth == 0:
                total *= _expression_count(pattern[start + 1 : pos])
                start = pos + 1
        pos += 1
    if depth != 0:
        raise braceexpand.UnbalancedBracesError(f"Unbalanced braces: '{pattern}'")
    return total


def _expression_count(expr: str) -> int:
    found = _INT_RANGE.match(expr)
    if found:
        first, last, step = found.groups()
        step_size = (int(step) or 1) if step else 1
        first_i, last_i = int(first), int(last)
        return len(range(first_i, last_i + 1, step_size) if first_i < last_i else range(first_i, last_i - 1, -step_size))
    if _CHAR_RANGE.match(expr):
        return len(braceexpand.make_char_range(*_CHAR_RANGE.match(expr).groups()))  # at most 52 letters
    items, start, pos, depth = [], 0, 0, 0
    while pos < len(expr):
        if expr[pos] == "\\":
            pos += 2
            continue
        if expr[pos] == "{":
            depth += 1
        elif expr[pos] == "}":
            depth -= 1
        elif expr[pos] == "," and depth == 0:
            items.append(expr[start:pos])
            start = pos + 1
        pos += 1
    if depth != 0 or not items:  # not a sequence: braces kept literally around the pattern inside
        return _pattern_count(expr)
    return sum(_pattern_count(item) for item in [*items, expr[start:]])
