"""The store on a real S3 server (SeaweedFS on loopback) behaves as on a local folder."""

import duckdb
import numpy as np
import pytest

from casflow.storage.shards import iter_shard_set, load_shard_set, write_shard_set
from casflow.storage.sources import Files
from casflow.storage.store import Store, s3_options
from casflow.tasks.samples import encode_samples

pytestmark = pytest.mark.s3
FP = "0f" * 32


def test_objects_round_trip(s3):
    store = Store(s3.store_url)
    assert store.is_remote and store.uri("a/b.bin") == f"{s3.store_url}/a/b.bin"
    store.write_bytes("a/b.bin", b"payload")
    assert store.read_bytes("a/b.bin") == b"payload" and store.exists("a/b.bin")
    assert store.listdir("a") == ["b.bin"] and store.listdir("missing") == []
    assert store.size("a/b.bin") == 7
    with store.open("a/b.bin") as f:
        assert f.read() == b"payload"
    assert Files(s3_options(), max_file_bytes=2**20, max_files=100).digest(f"{s3.store_url}/a/b.bin").startswith("etag:")


def test_shards_on_s3_are_byte_identical_to_local(s3, tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8), rng.integers(0, 3, 30)
    kwargs = dict(shard_size=8, fingerprint=FP, fingerprint_inputs={}, class_names=("a", "b", "c"), image_shape=(4, 4, 3))
    remote = write_shard_set(Store(s3.store_url), "samples/x", encode_samples(images, labels), **kwargs)
    local = write_shard_set(Store(str(tmp_path)), "samples/x", encode_samples(images, labels), **kwargs)
    assert remote == local
    loaded = load_shard_set(Store(s3.store_url), "samples/x")
    assert [int(p["cls"]) for _, p in iter_shard_set(Store(s3.store_url), loaded)] == list(labels)


def test_credentials_from_config_and_wrong_ones_refused(s3, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    store = Store(s3.store_url, s3=s3_options(s3.endpoint_url, key=s3.access_key, secret=s3.secret_key))
    store.write_bytes("x", b"1")
    wrong = Store(s3.store_url, s3=s3_options(s3.endpoint_url, key=s3.access_key, secret="not-the-secret"))
    with pytest.raises(PermissionError):
        wrong.read_bytes("x")
    assert "not-the-secret" not in repr(wrong)


def test_duckdb_reads_results_on_s3_through_fsspec(s3):
    from datetime import datetime, timezone

    from casflow.storage import results

    store = Store(s3.store_url)
    when = datetime(2026, 11, 23, tzinfo=timezone.utc)
    row = {"run_id": "r1", "run_time": when, "dataset": "digits", "dataset_fingerprint": "d", "model": "m",
           "generator_kind": "real", "recipe": "fast", "seed": 0, "status": "ok", "cached": True, "cas_top1": 0.9}
    results.write_table(store, "summary", [row], "r1", when)
    connection = duckdb.connect()
    connection.register_filesystem(store.fs)
    got = connection.sql(f"SELECT model, cas_top1, date FROM read_parquet('{s3.store_url}/results/summary/**/*.parquet', "
                         "hive_partitioning=true)").fetchall()
    assert got == [("m", 0.9, when.date())]


def test_probe_passes_on_a_store_that_answers(s3):
    import time

    started = time.monotonic()
    Store(s3.store_url).probe()
    Store("s3://no-such-bucket/x").probe()  # an answer, even an error, is the steps' to report
    Store(s3.store_url, s3=s3_options(s3.endpoint_url, key=s3.access_key, secret="not-the-secret")).probe()
    assert time.monotonic() - started < 5


def test_a_series_pattern_is_listed_on_s3(s3):
    store = Store(s3.store_url)
    for key in ("runs/a/ckpt-1.pt", "runs/a/ckpt-20.pt", "runs/b/ckpt-3.pt", "runs/c/ckpt-4.pt", "runs/a/notes.txt"):
        store.write_bytes(key, b"x")
    files = Files(s3_options(), max_file_bytes=2**20, max_files=100)
    assert files.matching(f"{s3.store_url}/runs/{{a,b}}/ckpt-*.pt") == [
        f"{s3.store_url}/runs/a/ckpt-1.pt", f"{s3.store_url}/runs/a/ckpt-20.pt", f"{s3.store_url}/runs/b/ckpt-3.pt"]
    assert files.matching(f"{s3.store_url}/runs/x/*.pt") == []
