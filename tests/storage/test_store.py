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
    store = Files()
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
