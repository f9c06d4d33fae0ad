"""Does memory stay flat as sample sets grow, and does codec work use every core?

    python benchmarks/scale.py                                  # N = 20k, 100k, 300k; every file kind
    python benchmarks/scale.py --sizes 20000,100000 --kinds npz,webdataset --workers 1,2
    python benchmarks/scale.py --work /tmp/scale --resume       # go on where a run in /tmp/scale stopped

Builds synthetic 64x64 RGB sample sets (smooth colour fields plus noise, about
as compressible as photos: ~8.6 KB per PNG) of each size in each file kind
(npz, imagefolder, dataset-json zip, webdataset shards) and runs each through
the pipeline's own steps, one stage per fresh subprocess:

  draw     `steps.draw_samples`: the input read in two passes, checked, its
           images decoded and re-encoded on every core, sharded on a local store
  decode   `shard_data.decoded_set`: the shards decoded into the local cache (the
           training data path; cold cache)
  evaluate `steps.evaluate_classifier` with the shards as the eval split (warm
           cache): window-by-window prediction, per-image predictions written;
           the network's forward pass is replaced by a fixed linear read-out of
           10 pixels, since on a CPU a 64x64 convolution would be all there is
           to measure (see docs/imagenet.md for GPU figures)

For each it prints seconds, images/s, and the peak resident memory (VmHWM)
of the stage's process and of its worker processes (forked: the parent's
pages count in each). The anchor is N = 20k measured in the same run: the
goal is peak RSS at the largest N within 1.2x of it and images/s flat in N.
A second table gives PNG decode and encode images/s against the number of
worker processes, and against threads (does PIL release the GIL?), on 20k
images. Writes the tables and the raw numbers to benchmarks/results/.

Disk: about 3 x N x 12 KB per kind at once (input, shards, decoded cache,
spool), removed after each kind and size; `--work` says where.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from provenance import git_commit  # benchmarks/provenance.py, beside this script

REPO = Path(__file__).resolve().parent.parent
KINDS = ("npz", "imagefolder", "dataset-json", "webdataset")
SHAPE = (64, 64, 3)
CLASSES = 10
GEN_CHUNK = 2000


# ---------------------------------------------------------------- synthetic images and their inputs

def synthetic(start: int, count: int) -> np.ndarray:
    """Images start..start+count: an 8x8 random colour field upsampled bicubically, plus noise (sigma 4).
    Each image depends on its index only."""
    from PIL import Image

    out = np.empty((count, *SHAPE), np.uint8)
    for i in range(count):
        rng = np.random.default_rng(start + i)
        field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC)
        out[i] = np.clip(np.asarray(field, np.int16) + rng.normal(0, 4, SHAPE).round().astype(np.int16), 0, 255)
    return out


def labels_for(n: int) -> np.ndarray:
    """n / CLASSES of each class, shuffled (seeded): the budget takes every sample, in interleaved order."""
    return np.random.default_rng(n).permutation(np.repeat(np.arange(CLASSES), n // CLASSES))


class PngPool:
    """PNGs of the largest N, encoded once on every core; inputs of smaller N use a prefix."""

    def __init__(self, folder: Path, n: int):
        self.data, self.offsets = folder / "pngs.bin", folder / "pngs.offsets.npy"
        if not (self.offsets.exists() and len(np.load(self.offsets)) >= n + 1):
            from casflow.tasks.images import encode_many

            started = time.perf_counter()
            offsets = [0]
            with open(self.data, "wb") as f:
                for start in range(0, n, GEN_CHUNK):
                    for png in encode_many(synthetic(start, min(GEN_CHUNK, n - start))):
                        f.write(png)
                        offsets.append(offsets[-1] + len(png))
            np.save(self.offsets, np.array(offsets, np.int64))
            print(f"encoded {n} synthetic PNGs in {time.perf_counter() - started:.0f} s", flush=True)
        self._offsets = np.load(self.offsets)
        self._file = open(self.data, "rb")

    def __getitem__(self, i: int) -> bytes:
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        return os.pread(self._file.fileno(), stop - start, start)

    def mean_bytes(self, n: int) -> float:
        return float(self._offsets[n] / n)


def write_input(kind: str, n: int, pool: PngPool, root: Path) -> dict:
    """The generator config of a sample set of n images in `kind`, written bounded in memory."""
    labels = labels_for(n)
    root.mkdir(parents=True, exist_ok=True)
    if kind == "npz":  # np.savez's layout, written a chunk at a time (a stored zip of two .npy members)
        path = root / "samples.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, *SHAPE)})
                for start in range(0, n, GEN_CHUNK):
                    f.write(synthetic(start, min(GEN_CHUNK, n - start)).tobytes())
            buffer = io.BytesIO()
            np.save(buffer, labels)
            archive.writestr("arr_1.npy", buffer.getvalue())
        return {"kind": "npz", "path": str(path)}
    if kind == "imagefolder":
        for c in range(CLASSES):
            (root / "folders" / str(c)).mkdir(parents=True)
        for i in range(n):
            (root / "folders" / str(labels[i]) / f"{i:07d}.png").write_bytes(pool[i])
        return {"kind": "imagefolder", "path": str(root / "folders")}
    if kind == "dataset-json":
        path, entries = root / "samples.zip", []
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for i in range(n):
                name = f"{i // 1000:05d}/img{i:08d}.png"
                archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), pool[i])
                entries.append([name, int(labels[i])])
            archive.writestr("dataset.json", json.dumps({"labels": entries}))
        return {"kind": "dataset-json", "path": str(path)}
    assert kind == "webdataset"
    (root / "shards").mkdir()
    for shard, start in enumerate(range(0, n, 10_000)):
        with tarfile.open(root / "shards" / f"shard-{shard:06d}.tar", "w") as tar:
            for i in range(start, min(start + 10_000, n)):
                for ext, data in (("cls", str(int(labels[i])).encode()), ("png", pool[i])):
                    info = tarfile.TarInfo(f"s{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {"kind": "webdataset", "url": str(root / "shards")}


# ---------------------------------------------------------------- one stage, in its own process

def stage_main(args: argparse.Namespace) -> None:
    """Runs one stage and prints one JSON line: seconds, images, peak RSS of this process and of its workers."""
    import yaml

    from casflow.flows import records, shard_data, steps
    from casflow.storage import artifacts
    from casflow.storage.shards import ShardSet, load_shard_set
    from casflow.tasks import parallel
    from casflow.tasks.classifiers import training
    from casflow.tasks.fingerprint import fingerprint

    work = Path(args.work)
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "store": {"url": str(work / "store"), "shard_size": 5000},
        "dataset": {"kind": "digits"},
        "classifier": {"recipe": "fast", "options": {"widths": [4, 4, 4], "tta_level": 0}, "device": "cpu"},
        "models": [{"name": "m", "generator": json.loads(args.generator)}],
    }))
    config = steps.read_config(str(config_path))
    store = steps.open_store(config.store)
    n = args.n
    fake = ShardSet("real/x/train", "f" * 64, n, (n // CLASSES,) * CLASSES, tuple(str(c) for c in range(CLASSES)), SHAPE, (),
                    "e" * 64)
    dataset = records.DatasetRecord("synthetic", "d" * 64, fake, fake, cached=True)
    started_cpu = os.times()
    started = time.perf_counter()
    if args.stage == "draw":
        samples = steps.draw_samples(config, store, config.models[0], dataset, "cpu")
        assert samples.shard_set.num_samples == n and not samples.cached
        (work / "samples.json").write_text(json.dumps({"location": samples.shard_set.location}))
    else:
        shard_set = load_shard_set(store, json.loads((work / "samples.json").read_text())["location"])
        if args.stage == "decode":
            decoded = shard_data.decoded_set(store, shard_set, "samples")
            assert len(decoded) == n
        else:  # evaluate, the cache warm from the decode stage
            # the network's forward pass replaced by a fixed linear read-out of 10 pixels: on this CPU a 64x64
            # convolution would take the whole measurement, and the question here is the data path's memory
            training.predict = lambda recipe, net, images, device: images.reshape(len(images), -1)[:, ::1229][:, :CLASSES].astype(
                np.float32)
            recipe = config.classifier.resolved
            net = recipe.module.build(recipe.hp, SHAPE, CLASSES)
            fp = fingerprint("classifier", {"benchmark": n})
            artifacts.write_classifier(store, fp, training.weights_bytes(net), {"train_seconds": 0.0, "device": "cpu"})
            classifier = records.ClassifierRecord("m", fp, 0, None, False, 0.0, "cpu")
            held_out = records.DatasetRecord("synthetic", "d" * 64, fake, shard_set, cached=True)
            evaluation = steps.evaluate_classifier(config, store, classifier, held_out, "cpu")
            assert sum(evaluation.counts.n_eval) == n
    seconds = time.perf_counter() - started
    parallel.shutdown()  # the workers joined: their peak RSS and CPU time count as the children's
    cpu = os.times()
    print(json.dumps({
        "seconds": seconds, "images": n,
        "cpu_seconds": (cpu.user - started_cpu.user) + (cpu.system - started_cpu.system)
                       + (cpu.children_user - started_cpu.children_user) + (cpu.children_system - started_cpu.children_system),
        "peak_rss_mb": _vm_hwm_mb(),
        "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }), flush=True)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, n: int, generator: dict, work: Path, workers: int) -> dict:
    env = os.environ | {"CASFLOW_WORKERS": str(workers), "CASFLOW_CACHE_DIR": str(work / "cache"), "TMPDIR": str(work / "tmp")}
    (work / "tmp").mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, __file__, "--stage", stage, "--n", str(n), "--generator", json.dumps(generator),
                           "--work", str(work)], env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} n={n} {generator['kind']} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- codec work against workers and threads

def codec_main(args: argparse.Namespace) -> None:
    """PNG decode and encode of the pool's first images with `--codec-workers` processes and with as many threads."""
    from casflow.tasks.images import CHUNK, decode_image, decode_stack, encode_many, encode_png

    pool = PngPool(Path(args.work), args.n)
    blobs = [pool[i] for i in range(args.n)]
    images = synthetic(0, args.n)
    workers = args.codec_workers
    sources = [str(i) for i in range(args.n)]
    decode_stack(blobs[: 4 * CHUNK], sources[: 4 * CHUNK], max_pixels=4096, max_decoded_bytes=2**40, what="warm-up",
                 workers=workers)  # starts the pool outside the timing
    results = {}
    for name, fn in (
        ("decode, processes", lambda: decode_stack(blobs, sources, max_pixels=4096, max_decoded_bytes=2**40, what="b",
                                                   workers=workers)),
        ("encode, processes", lambda: encode_many(images, workers=workers)),
        ("decode, threads", lambda: _threads(lambda b: decode_image(b, "b", max_pixels=4096), blobs, workers)),
        ("encode, threads", lambda: _threads(encode_png, images, workers)),
    ):
        times, busy = [], []
        for _ in range(args.repeats):
            before = _cpu_seconds()
            started = time.perf_counter()
            fn()
            wall = time.perf_counter() - started
            cpu = _cpu_seconds() - before
            times.append(wall)
            busy.append(cpu / wall)
        results[name] = args.n / statistics.median(times)
        results[name.replace(",", ": cores busy,")] = statistics.median(busy)
    if workers == 1:
        results |= gil_released_share(blobs[:2000], images[:2000])
    print(json.dumps(results), flush=True)


def gil_released_share(blobs: list[bytes], images: np.ndarray) -> dict[str, float]:
    """Share of one thread's decode_image / encode_png time spent inside PIL's C codec call, which releases
    the GIL (Pillow's decode.c and encode.c wrap it in ImagingSectionEnter/Leave): by Amdahl, threads
    can speed the codec up by at most 1 / (1 - share) on any number of cores. Measured under cProfile,
    whose per-call overhead inflates the Python share: a lower bound."""
    import cProfile
    import pstats

    from casflow.tasks.images import decode_image, encode_png

    shares = {}
    for name, fn, items, method in (("decode", lambda b: decode_image(b, "b", max_pixels=4096), blobs, "decode"),
                                    ("encode", encode_png, images, "encode")):
        profile = cProfile.Profile()
        profile.enable()
        for item in items:
            fn(item)
        profile.disable()
        stats = pstats.Stats(profile)
        inside = sum(v[2] for k, v in stats.stats.items() if k[2] == f"<method '{method}' of 'Imaging{method.title()}r' objects>")
        shares[f"{name}: share of time with the GIL released"] = inside / stats.total_tt
    return shares


def _cpu_seconds() -> float:
    """CPU time of this process and of its live worker processes (which os.times() does not count)."""
    from casflow.tasks import parallel

    total = sum(os.times()[:2])
    for pool in list(parallel._pools.values()):
        for pid in list(getattr(pool, "_processes", {}) or {}):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _threads(fn, items, count: int) -> None:
    if count == 1:
        list(map(fn, items))
        return
    with ThreadPoolExecutor(count) as threads:
        list(threads.map(fn, items, chunksize=64))


# ---------------------------------------------------------------- the whole benchmark

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000,300000", help="sample set sizes N, the first is the anchor")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--workers", default=None, help="worker counts for the codec table (default: 1 up to the cores)")
    parser.add_argument("--codec-images", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="codec table: median of this many timings")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--resume", action="store_true", help="keep the cases finished in --work's partial.json, run the rest")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    parser.add_argument("--codec-workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "codec":
        return codec_main(args)
    if args.stage:
        return stage_main(args)

    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    cores = len(os.sched_getaffinity(0))
    worker_counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, *range(2, cores + 1, 2), cores})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="casflow-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = PngPool(work, max(max(sizes), args.codec_images))
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {cores} cores "
        f"({platform.processor() or 'cpu'}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "python": platform.python_version(), "numpy": np.__version__, "sizes": sizes, "kinds": kinds,
        "stage_workers": cores, "codec_workers": worker_counts, "image": "64x64x3",
        "mean_png_bytes": round(pool.mean_bytes(max(sizes)), 1), "git_commit": git_commit(),
    }
    print(f"{header['machine']}; PNG {header['mean_png_bytes']:.0f} bytes on average; work in {work}", flush=True)

    rows = []
    if args.resume and (work / "partial.json").exists():
        earlier = json.loads((work / "partial.json").read_text())["raw"]
        finished = {(r["kind"], r["n"]) for r in earlier if r["stage"] == "evaluate"}
        rows = [r for r in earlier if (r["kind"], r["n"]) in finished]
        print(f"resuming: {len(finished)} cases already measured", flush=True)
    for n in sizes:  # every kind at the anchor first: a run cut short still compares kinds
        for kind in kinds:
            if any(r["kind"] == kind and r["n"] == n for r in rows):
                continue
            case = work / f"{kind}-{n}"
            shutil.rmtree(case, ignore_errors=True)  # what a run cut short left
            generator = write_input(kind, n, pool, case / "input")
            for stage in ("draw", "decode", "evaluate"):
                result = run_stage(stage, n, generator, case, cores) | {"kind": kind, "n": n, "stage": stage}
                rows.append(result)
                (work / "partial.json").write_text(json.dumps({"header": header, "raw": rows}, indent=1))
                print(f"{kind:>12} {n:>7} {stage:>8}: {result['seconds']:7.1f} s  {n / result['seconds']:7.0f} img/s  "
                      f"peak RSS {result['peak_rss_mb']:6.0f} MB (workers {result['workers_peak_rss_mb']:5.0f} MB)", flush=True)
            shutil.rmtree(case)

    codec = {}
    for workers in worker_counts:
        done = subprocess.run([sys.executable, __file__, "--stage", "codec", "--n", str(args.codec_images), "--work", str(work),
                               "--codec-workers", str(workers), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, cwd=REPO, env=os.environ | {"TMPDIR": str(work)})
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-4000:])
        codec[workers] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"codec, {workers} workers: " + ", ".join(f"{k} {v:.0f}/s" for k, v in codec[workers].items()), flush=True)
    if not args.work:
        shutil.rmtree(work)

    table = render(header, rows, codec, sizes)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"scale-{header['date']}"
    stem.with_suffix(".md").write_text(table)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "raw": rows, "codec": codec}, indent=1) + "\n")
    print(f"wrote {stem}.md and .json")


def render(header: dict, rows: list[dict], codec: dict, sizes: list[int]) -> str:
    anchor = sizes[0]
    lines = [f"# benchmarks/scale.py, {header['date']}", "",
             f"{header['machine']}; Python {header['python']}; stages with {header['stage_workers']} worker processes; "
             f"synthetic {header['image']} images, {header['mean_png_bytes']:.0f} bytes per PNG on average; "
             f"commit {header['git_commit']}.", "",
             f"Peak RSS is VmHWM of the stage's process (workers: the largest of its forked worker processes). "
             f"x anchor: against N = {anchor:,} of the same kind and stage in this run.", "",
             "| kind | stage | N | seconds | images/s | x anchor | peak RSS MB | x anchor | workers' peak RSS MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by_key = {(r["kind"], r["stage"], r["n"]): r for r in rows}
    stages = ("draw", "decode", "evaluate")
    for r in sorted(rows, key=lambda r: (KINDS.index(r["kind"]), stages.index(r["stage"]), r["n"])):
        base = by_key.get((r["kind"], r["stage"], anchor), r)
        rate, base_rate = r["n"] / r["seconds"], base["n"] / base["seconds"]
        lines.append(f"| {r['kind']} | {r['stage']} | {r['n']:,} | {r['seconds']:.1f} | {rate:,.0f} | {rate / base_rate:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {r['workers_peak_rss_mb']:.0f} |")
    columns = [k for k in next(iter(codec.values())) if "GIL" not in k]
    lines += ["", "PNG codec images/s against worker processes and threads (median of the timings), and how many "
              "cores the work kept busy (CPU seconds of the process and its workers per wall second):", "",
              "| workers | " + " | ".join(columns) + " |", "| ---: |" + " ---: |" * len(columns)]
    for workers, result in codec.items():
        lines.append(f"| {workers} | " + " | ".join(f"{result[c]:,.2f}" if "busy" in c else f"{result[c]:,.0f}" for c in columns)
                     + " |")
    shares = {k: v for result in codec.values() for k, v in result.items() if "GIL" in k}
    lines += [""] + [f"- {k}, one thread, under cProfile (a lower bound): {v:.0%}; threads can speed it up "
                     f"{1 / (1 - v):.1f}x at most on any number of cores (Amdahl)" for k, v in shares.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
