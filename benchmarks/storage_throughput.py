"""Shard write and read throughput: a local folder (the anchor) against a
SeaweedFS S3 server on loopback, side by side in one run.

    python benchmarks/storage_throughput.py [--images 10000] [--runs 3] [--shard-size 2000]

Write = PNG-encode + tar + atomic put of every shard, then the manifest
(what the sampling step does). Read = stream every shard back through fsspec
with its sha256 checked, then decode the PNGs (what the decode cache does).
Images: the real CIFAR-10 test split when ../shared/datasets/cifar10 is
there, else the embedded digits repeated. Prints one table and writes it,
with the raw numbers, to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from provenance import git_commit  # noqa: E402  (benchmarks/, beside this script)

from casflow.storage.local_s3 import LocalS3  # noqa: E402
from casflow.storage.shards import iter_shard_set, write_shard_set  # noqa: E402
from casflow.storage.sources import Files  # noqa: E402
from casflow.storage.store import Store, s3_options  # noqa: E402
from casflow.tasks.datasets.digits import digits  # noqa: E402
from casflow.tasks.datasets.hf_parquet import read_hf_parquet  # noqa: E402
from casflow.tasks.images import decode_stack  # noqa: E402
from casflow.tasks.limits import Limits  # noqa: E402
from casflow.tasks.samples import encode_samples  # noqa: E402


def load_images(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    cifar = REPO.parent / "shared" / "datasets" / "cifar10" / "test.parquet"
    if cifar.exists():
        limits = Limits()
        data = read_hf_parquet(Files(max_file_bytes=limits.max_file_bytes, max_files=limits.max_files), str(cifar),
                               limits).decoded()
        name = "CIFAR-10 test (32x32x3)"
    else:
        data = digits()
        name = "digits (8x8x1)"
    reps = -(-count // len(data.labels))
    return np.concatenate([data.images] * reps)[:count], np.concatenate([data.labels] * reps)[:count], name


def one_run(store: Store, location: str, images: np.ndarray, labels: np.ndarray, shard_size: int) -> dict:
    started = time.perf_counter()
    shard_set = write_shard_set(store, location, encode_samples(images, labels), shard_size=shard_size,
                                fingerprint="0" * 64, fingerprint_inputs={}, class_names=tuple(map(str, range(10))),
                                image_shape=tuple(images.shape[1:]))
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    blobs = [parts["png"] for _, parts in iter_shard_set(store, shard_set)]
    read_s = time.perf_counter() - started
    limits = Limits()
    decoded = decode_stack(blobs, [str(i) for i in range(len(blobs))], max_pixels=limits.max_image_pixels,
                           max_decoded_bytes=limits.max_decoded_bytes, what=location)
    read_decode_s = time.perf_counter() - started
    assert len(decoded) == len(images) and np.array_equal(decoded[-1], images[-1])
    store.remove(location)
    megabytes = sum(s.size for s in shard_set.shards) / 1e6
    return {"write_s": write_s, "read_s": read_s, "read_decode_s": read_decode_s, "megabytes": megabytes}


def summarize(runs: list[dict], n: int) -> dict:
    out = {}
    for key in ("write_s", "read_s", "read_decode_s"):
        rates = [n / r[key] for r in runs]
        out[key.replace("_s", "")] = {"images_per_s": statistics.mean(rates), "min": min(rates), "max": max(rates),
                                      "mb_per_s": statistics.mean(r["megabytes"] / r[key] for r in runs)}
    out["megabytes"] = runs[0]["megabytes"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    images, labels, source = load_images(args.images)
    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "seaweedfs", buckets=("bench",)) as s3:
        stores = {
            "local folder": Store(str(Path(tmp) / "local")),
            "SeaweedFS S3": Store("s3://bench/run", s3=s3_options(s3.endpoint_url, key=s3.access_key, secret=s3.secret_key)),
        }
        for store in stores.values():  # warm-up: imports, connections, the S3 client
            one_run(store, "warmup", images[:500], labels[:500], args.shard_size)
        raw = {name: [] for name in stores}
        for run in range(args.runs):
            for name, store in stores.items():  # interleaved, so drift hits both alike
                raw[name].append(one_run(store, f"run{run}", images, labels, args.shard_size))
    results = {name: summarize(runs, len(images)) for name, runs in raw.items()}

    anchor = results["local folder"]
    commit = git_commit()
    header = (f"# Shard throughput, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
              f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores; "
              f"Python {platform.python_version()}; commit {commit}.\n"
              f"Data: {len(images)} images of {source}, shards of {args.shard_size}, "
              f"{anchor['megabytes']:.1f} MB per set; {args.runs} runs each, after a warm-up; mean (min-max).\n"
              "Client and server share the machine's cores.\n")
    rows = ["| store | write img/s | write MB/s | read img/s | read MB/s | read+decode img/s | write ratio | read ratio |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['write']['images_per_s']:,.0f} ({r['write']['min']:,.0f}-{r['write']['max']:,.0f}) "
                    f"| {r['write']['mb_per_s']:.1f} | {r['read']['images_per_s']:,.0f} ({r['read']['min']:,.0f}-{r['read']['max']:,.0f}) "
                    f"| {r['read']['mb_per_s']:.1f} | {r['read_decode']['images_per_s']:,.0f} "
                    f"| {r['write']['images_per_s'] / anchor['write']['images_per_s']:.2f} "
                    f"| {r['read']['images_per_s'] / anchor['read']['images_per_s']:.2f} |")
    table = header + "\n" + "\n".join(rows) + "\n\nRatios are against the local folder measured in the same run.\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"storage_throughput-{datetime.now(timezone.utc):%Y-%m-%d}"
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps({"args": vars(args), "source": source, "commit": commit,
                                                  "results": results, "raw": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
