"""WebDataset shard sets: plain tar shards, then `manifest.json` as the commit marker.

Each sample is `<key>.png` (lossless) and `<key>.cls` (class index as text),
keys zero-padded to 9 digits. Tar members carry mtime 0 and fixed
owner/mode, so identical samples give byte-identical shards that any
WebDataset reader (`webdataset`, `wids`, `tar -tf`) reads.

A folder without a manifest is debris from a crash and is rebuilt; a shard
whose size or sha256 disagrees with the manifest is an error naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import posixpath
import tarfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from casflow.storage.store import REBUILD, IntegrityError, Store
from casflow.tasks.exits import CasError

log = logging.getLogger("casflow.storage")

FORMAT = "casflow-shards/1"
MANIFEST = "manifest.json"
KEY_DIGITS = 9


class ShardFormatError(CasError, ValueError):
    """A tar stream that is not a valid WebDataset shard (duplicate keys, truncation)."""


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    name: str
    size: int
    sha256: str
    num_samples: int


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """A small reference to a committed shard set, passed between steps."""

    location: str  # store-relative folder
    fingerprint: str
    num_samples: int
    count_per_class: tuple[int, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    shards: tuple[ShardInfo, ...]
    manifest_sha256: str


def sample_key(index: int) -> str:
    return f"{index:0{KEY_DIGITS}d}"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


# ---------------------------------------------------------------- writing

def _tar_bytes(samples: list[dict[str, Any]]) -> bytes:
    import webdataset  # here, not at the top: it imports torch, which a cached run never needs

    buffer = io.BytesIO()
    writer = webdataset.TarWriter(buffer, encoder=False, mtime=0, user="casflow", group="casflow", mode=0o444)
    for sample in samples:
        writer.write(sample)
    writer.close()  # closes the tar stream, not our buffer
    return buffer.getvalue()


def write_shard_set(store: Store, location: str, samples: Iterable[tuple[int, bytes]], *, shard_size: int,
                    fingerprint: str, fingerprint_inputs: dict[str, Any], class_names: tuple[str, ...],
                    image_shape: tuple[int, int, int], what: str = "samples") -> ShardSet:
    """Write (label, PNG bytes) samples as shards with keys 000000000, 000000001, ..., then the manifest.

    Shards are built in memory one at a time and written atomically, so a
    crash leaves complete shards and no manifest: never a committed partial set."""
    store.remove_debris(location)
    counts = [0] * len(class_names)
    shards: list[ShardInfo] = []
    pending: list[dict[str, Any]] = []
    started = time.perf_counter()
    uploads = ThreadPoolExecutor(1)  # puts one shard while the next is encoded
    in_flight: list[Future] = []

    def flush() -> None:
        data = _tar_bytes(pending)
        name = shard_name(len(shards))
        shards.append(ShardInfo(name, len(data), hashlib.sha256(data).hexdigest(), len(pending)))
        while len(in_flight) >= 2:  # bounds memory to a few shards
            in_flight.pop(0).result()
        in_flight.append(uploads.submit(store.write_bytes, f"{location}/{name}", data))
        written = sum(s.num_samples for s in shards)
        log.info("%s: %s (%d samples, %.1f MB); %d samples so far, %.0f samples/s", what, name, len(pending),
                 len(data) / 1e6, written, written / max(time.perf_counter() - started, 1e-9))
        pending.clear()

    try:
        for index, (label, png) in enumerate(samples):
            counts[label] += 1
            pending.append({"__key__": sample_key(index), "cls": str(label).encode(), "png": png})
            if len(pending) == shard_size:
                flush()
        if pending or not shards:
            flush()
        for future in in_flight:
            future.result()  # every shard is in place before the manifest
    finally:
        uploads.shutdown(wait=True)

    manifest = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "fingerprint_inputs": fingerprint_inputs,
        "num_samples": sum(counts),
        "count_per_class": counts,
        "class_names": list(class_names),
        "image_shape": list(image_shape),
        "shards": [dataclasses.asdict(s) for s in shards],
    }
    data = (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode()
    store.write_bytes(f"{location}/{MANIFEST}", data)
    return _shard_set(location, manifest, data)


def _shard_set(location: str, manifest: dict[str, Any], data: bytes) -> ShardSet:
    return ShardSet(
        location=location,
        fingerprint=manifest["fingerprint"],
        num_samples=manifest["num_samples"],
        count_per_class=tuple(manifest["count_per_class"]),
        class_names=tuple(manifest["class_names"]),
        image_shape=tuple(manifest["image_shape"]),
        shards=tuple(ShardInfo(**s) for s in manifest["shards"]),
        manifest_sha256=hashlib.sha256(data).hexdigest(),
    )


# ---------------------------------------------------------------- reading

def load_shard_set(store: Store, location: str) -> ShardSet | None:
    """The committed shard set at `location`, or None when there is no manifest (not committed).

    Checks that every shard is there with its recorded size (one listing);
    the sha256 of each shard is checked as it is read."""
    try:
        data = store.read_bytes(f"{location}/{MANIFEST}")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(data)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        shard_set = _shard_set(location, manifest, data)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{store.uri(location)}/{MANIFEST}: unreadable manifest ({exc}); {REBUILD}") from None
    present = set(store.listdir(location))
    for shard in shard_set.shards:
        if shard.name not in present:
            raise IntegrityError(f"{store.uri(location)}/{shard.name}: listed in the manifest but missing; {REBUILD}")
        actual = store.size(f"{location}/{shard.name}")
        if actual != shard.size:
            raise IntegrityError(f"{store.uri(location)}/{shard.name}: {actual} bytes, manifest says {shard.size}; "
                                 f"{REBUILD}")
    return shard_set


class _Tap(io.RawIOBase):
    """Passes reads through, counting the bytes and, when asked, hashing them."""

    def __init__(self, raw: IO[bytes], sha256: bool = False):
        self.raw = raw
        self.size = 0
        self.sha256 = hashlib.sha256() if sha256 else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.size += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        return len(data)

    def drain(self) -> None:
        while self.read(2**20):
            pass


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the file name; the rest is the extension."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def iter_tar(stream: IO[bytes], source: str, seen_keys: set[str] | None = None, *,
             max_member_bytes: int | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of a tar stream, in order.

    Members of one sample must be consecutive (as every WebDataset writer
    makes them); a key seen twice is an error naming the shard and the key.
    A member whose header declares more than max_member_bytes is an error
    before it is read."""
    seen = seen_keys if seen_keys is not None else set()
    key, parts = None, {}
    counted = _Tap(stream)
    try:
        with tarfile.open(fileobj=counted, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = split_member_name(member.name)
                if member_key.startswith("__") or not ext:
                    continue
                if member_key != key:
                    if key is not None:
                        yield key, parts
                    if member_key in seen:
                        raise ShardFormatError(f"{source}: duplicate key {member_key}")
                    seen.add(member_key)
                    key, parts = member_key, {}
                if ext in parts:
                    raise ShardFormatError(f"{source}: duplicate file {member.name}")
                if max_member_bytes is not None and member.size > max_member_bytes:
                    raise ShardFormatError(f"{source}: member {member.name} is {member.size} bytes, more than "
                                           f"limits.max_file_bytes ({max_member_bytes})")
                parts[ext] = tar.extractfile(member).read()
            end = tar.offset  # where tarfile looked for the next header: the end-of-archive block in a whole tar
        counted.drain()
    except tarfile.TarError as exc:
        raise ShardFormatError(f"{source}: not a readable tar file ({exc})") from None
    if counted.size < end + tarfile.BLOCKSIZE:  # tarfile ends quietly when a file stops at or inside a header
        raise ShardFormatError(f"{source}: truncated tar file ({counted.size} bytes, cut at or inside the header "
                               f"at byte {end}; samples after it are missing)")
    if key is not None:
        yield key, parts


def iter_shard_set(store: Store, shard_set: ShardSet) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream every sample of a committed set, verifying each shard's sha256 as it goes.

    A mismatch raises after the shard's samples were yielded: consumers
    commit nothing derived from a set until its iteration has finished."""
    seen: set[str] = set()
    for shard in shard_set.shards:
        source = f"{store.uri(shard_set.location)}/{shard.name}"
        with store.open(f"{shard_set.location}/{shard.name}") as raw:
            reader = _Tap(raw, sha256=True)
            yield from iter_tar(io.BufferedReader(reader, 2**20), source, seen)  # reads the stream to its end
        if reader.size != shard.size or reader.sha256.hexdigest() != shard.sha256:
            raise IntegrityError(f"{source}: sha256 {reader.sha256.hexdigest()[:16]}... ({reader.size} bytes) "
                                 f"disagrees with the manifest's {shard.sha256[:16]}... ({shard.size} bytes); {REBUILD}")
