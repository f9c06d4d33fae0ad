import os

import pytest

from casflow.storage.sources import Files
from casflow.storage.store import Store, is_transient


def test_layout_is_built_in_one_place(tmp_path):
    store = Store(str(tmp_path / "s"))
    fp = "ab" * 32
    assert store.location("samples", fp, "manifest.json") == f"samples/{fp}/manifest.json"
    assert store.results_location("summary", "2026-11-23", "r1") == "results/summary/date=2026-11-23/run=r1/part-0.parquet"
    with pytest.raises(ValueError):
        store.location("weights", fp)
    with pytest.raises(ValueError, match="not a fingerprint"):
        store.location("samples", "../../etc")


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    store = Store(str(tmp_path / "s"))
    store.write_bytes("a/b/c.bin", b"one")
    store.write_bytes("a/b/c.bin", b"two")
    assert store.read_bytes("a/b/c.bin") == b"two"
    assert os.listdir(tmp_path / "s" / "a" / "b") == ["c.bin"]
    assert store.uri("a/b/c.bin") == str(tmp_path / "s" / "a" / "b" / "c.bin")
    assert "s" in repr(store)


def test_debris_of_a_crashed_write_is_removed_and_a_live_writers_work_is_not(tmp_path):
    import subprocess
    import sys

    from casflow.storage import atomic

    store = Store(str(tmp_path / "s"))
    store.write_bytes("d/x.tar", b"x")
    folder = tmp_path / "s" / "d"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = atomic._HOST
    (folder / f"a.tar.tmp-{host}-{int(dead.stdout)}-0123456789ab").write_bytes(b"a crashed writer's half")
    (folder / f"b.tar.tmp-{host}-{os.getpid()}-0123456789ab").write_bytes(b"a live writer's half")
    (folder / "c.tar.tmp-otherhost-123-0123456789ab").write_bytes(b"another host's, young")
    old = folder / "d.tar.tmp-deadbeef"  # a name from before writers were named, untouched for a day
    old.write_bytes(b"half")
    os.utime(old, (0, os.path.getmtime(old) - atomic.STALE_SECONDS - 60))
    assert store.remove_debris("d") == 2
    assert store.listdir("d") == [f"b.tar.tmp-{host}-{os.getpid()}-0123456789ab", "c.tar.tmp-otherhost-123-0123456789ab", "x.tar"]


def test_a_failed_write_leaves_no_temporary(tmp_path):
    from casflow.storage.atomic import atomic_file

    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f.bin") as f:
        f.write(b"half")
        raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == []


def test_digest_follows_content_not_location(tmp_path):
    store = Files(max_file_bytes=2**20, max_files=100)
    (tmp_path / "a.bin").write_bytes(b"payload")
    (tmp_path / "b.bin").write_bytes(b"payload")
    assert store.digest(str(tmp_path / "a.bin")) == store.digest(str(tmp_path / "b.bin"))
    (tmp_path / "b.bin").write_bytes(b"payload!")
    assert store.digest(str(tmp_path / "a.bin")) != store.digest(str(tmp_path / "b.bin"))
    folder = tmp_path / "f"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "1.png").write_bytes(b"1")
    before = store.digest(str(folder))
    (folder / "x" / "2.png").write_bytes(b"2")
    assert store.digest(str(folder)) != before
    with pytest.raises(FileNotFoundError):
        store.digest(str(tmp_path / "missing"))


def test_transient_errors():
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert not is_transient(FileNotFoundError())
    assert not is_transient(PermissionError())
    assert not is_transient(ValueError("bad input"))


def test_disk_full_is_not_transient_names_the_file_and_leaves_nothing(small_disk):
    import errno

    import numpy as np

    from casflow.storage.shards import load_shard_set, write_shard_set
    from casflow.tasks.samples import encode_samples

    disk = small_disk(256 * 1024)
    store = Store(str(disk / "store"))
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (600, 16, 16, 3), dtype=np.uint8), rng.integers(0, 3, 600)
    with pytest.raises(OSError) as info:  # noise PNGs: about 1 MB of shards, on 256 KB
        write_shard_set(store, "samples/x", encode_samples(images, labels), shard_size=100, fingerprint="0f" * 32,
                        fingerprint_inputs={}, class_names=("a", "b", "c"), image_shape=(16, 16, 3))
    assert info.value.errno == errno.ENOSPC and not is_transient(info.value)
    assert f"{disk}/store/samples/x/shard-0000" in str(info.value)  # names the file
    assert load_shard_set(store, "samples/x") is None  # nothing committed
    folder = disk / "store" / "samples" / "x"
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name == "manifest.json"]
    for shard in folder.iterdir():  # the shards that were written are whole
        assert shard.stat().st_size % 512 == 0 and shard.read_bytes()[-1024:] == b"\0" * 1024


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EROFS", "EFBIG"])
def test_a_full_or_read_only_disk_is_not_transient(code):
    import errno

    assert not is_transient(OSError(getattr(errno, code), "no"))
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = OSError(getattr(errno, code), "no")
    assert not is_transient(wrapped)
    assert is_transient(OSError(errno.ECONNRESET, "reset"))


@pytest.mark.parametrize("kind", ["silent", "unaccepted", "closed"])
def test_a_store_that_never_answers_fails_within_30_s_naming_the_endpoint(kind):
    import time

    from casflow.storage.store import StoreUnreachable, s3_options
    from helpers import Unanswering

    with Unanswering() as endpoints:
        store = Store("s3://casflow/nightly", s3=s3_options(endpoints.url(kind), "us-east-1", "key", "secret"))
        started = time.monotonic()
        with pytest.raises(StoreUnreachable) as info:
            store.probe()
        seconds = time.monotonic() - started
    message = str(info.value)
    assert seconds < 30, seconds
    assert message.startswith(f"store s3://casflow/nightly at {endpoints.url(kind)} did not answer ("), message
    assert "secret" not in message and not is_transient(info.value)


@pytest.mark.parametrize("pattern", [
    "shard-{000000..000009}.tar", "s-{0..20..3}.tar", "s-{9..1..2}.tar", "{a..e}{1,2,3}", "x{a,b{1..4},c}y",
    "{07..10}-{-2..2}", r"lit\{1,2}", "{1{2,3}x", "plain.tar", "{}", "{a}", "{,}", "p{1..3}{,.bak}{a..c..2}", "{Z..a}",
])
def test_brace_patterns_are_counted_as_braceexpand_expands_them(pattern):
    import braceexpand

    from casflow.storage.sources import brace_count

    try:
        expected = len(list(braceexpand.braceexpand(pattern)))
    except braceexpand.UnbalancedBracesError:
        with pytest.raises(braceexpand.UnbalancedBracesError):
            brace_count(pattern)
        return
    assert brace_count(pattern) == expected


def test_a_billion_shard_pattern_is_refused_before_it_is_expanded():
    import time

    from casflow.storage.sources import TooManyFiles

    files = Files(max_file_bytes=2**20, max_files=10_000_000)
    started = time.perf_counter()
    with pytest.raises(TooManyFiles, match=r"shard-\{000000000..999999999\}.tar: the pattern names 1000000000 shards, more "
                                           r"than limits.max_files \(10000000\)"):
        files.tar_names("s3://bucket/shard-{000000000..999999999}.tar")
    assert time.perf_counter() - started < 1
    assert len(files.tar_names("s3://bucket/shard-{000000..000099}.tar")) == 100


def test_only_regular_files_are_read_and_within_the_limit(tmp_path):
    import os

    from casflow.storage.sources import FileTooLarge, NotRegularFile

    files = Files(max_file_bytes=10, max_files=100)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 11)
    for name, kind in (("pipe", "a pipe"), ("zero", "a device")):
        for read in (files.digest, files.read_bytes, files.open, files.local_path):
            with pytest.raises(NotRegularFile, match=f"{name}: not a regular file \\({kind}\\)"):
                read(str(tmp_path / name))
    for read in (files.digest, files.read_bytes, files.open):
        with pytest.raises(FileTooLarge, match=r"big: 11 bytes, more than limits.max_file_bytes \(10\)"):
            read(str(tmp_path / "big"))
