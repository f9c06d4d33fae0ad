"""User files named in a config (datasets, checkpoints, samples), local or
on a store, seen as bytes, streams and file trees."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

import braceexpand

from storage.shards import iter_tar
from storage.store import Store


class FolderTree:
    """A folder (local or an object-store prefix) as relative paths -> bytes."""

    def __init__(self, store: Store, url: str):
        self.fs, self.root = store.filesystem(url)
        self.root = self.root.rstrip("/")
        self.name = url.rstrip("/")

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


def open_tree(store: Store, url: str) -> FolderTree | ZipTree:
    fs, path = store.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such file or folder")
    if fs.isdir(path):
        return FolderTree(store, url)
    return ZipTree(fs.cat_file(path), url)


def read_bytes(store: Store, url: str) -> bytes:
    fs, path = store.filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such file") from None


def open_file(store: Store, url: str) -> IO[bytes]:
    fs, path = store.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such file")
    return fs.open(path, "rb", block_size=8 * 2**20)


def tar_urls(store: Store, url: str) -> list[str]:
    """Shard URLs from a brace pattern (shard-{000000..000009}.tar) or a folder of .tar files."""
    if "{" in url:
        return list(braceexpand.braceexpand(url))
    fs, path = store.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such folder or file")
    if not fs.isdir(path):
        return [url]
    base, root = url.rstrip("/"), path.rstrip("/")
    names = sorted(p[len(root) + 1 :] for p in fs.find(path) if p.endswith(".tar"))  # relative: subfolders too
    return [f"{base}/{n}" for n in names]


def iter_webdataset(store: Store, urls: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of shards written by any WebDataset writer, streamed; keys must be unique across shards."""
    seen: set[str] = set()
    for url in urls:
        with open_file(store, url) as stream:
            for key, parts in iter_tar(stream, url, seen):
                yield f"{url.rsplit('/', 1)[-1]}:{key}", parts
