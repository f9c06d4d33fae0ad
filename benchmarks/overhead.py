"""What does casflow add to Prefect's own cost? `cas demo` (flows/demo.yaml: five models, 18 tasks), fully
cached and uncached, on a running Prefect server and on a temporary one, beside a bare Prefect flow of 18
no-op tasks in the same shape (the anchor), measured in the same run. Prints one table and writes it, with
the raw numbers, to benchmarks/results/.

    python benchmarks/overhead.py [--repeats 3] [--out benchmarks/results]

Each row is the wall time of one command as a user runs it (interpreter start to exit), median and
spread (min-max) of --repeats; the bare flow's process imports Prefect and nothing else. Against the
running server every process gets PREFECT_API_URL; the temporary-server rows get none (the bare flow then
gets Prefect's own temporary server, `cas` its own, CASFLOW_PREFECT_SERVER=temporary). Uncached runs start
from an empty store and an empty decoded-image cache; their compute share is the models' sample + train +
evaluate seconds (the summary table's) over the flow's time (its first to its last log line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = 5  # flows/demo.yaml: the real baseline and four others


# ---------------------------------------------------------------- the anchor: a bare flow of the demo's shape

def bare_flow() -> None:
    """18 no-op tasks wired as the demo's: one, then per model three in a chain (each model after the one
    before, as on one device lane), then two; the same task runner."""
    from prefect import allow_failure, flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE)
    def noop(*upstream):
        return 1

    @flow(name="bare", task_runner=ThreadPoolTaskRunner(max_workers=8))
    def bare():
        first = noop.submit().result()
        futures, tail = [], None
        for _ in range(MODELS):
            draw = noop.submit(first, wait_for=[allow_failure(tail)] if tail else [])
            train = noop.submit(draw, wait_for=[draw])
            tail = noop.submit(train)
            futures += [draw, train, tail]
        for future in futures:
            future.wait()
        noop(1)
        noop(2)

    bare()


# ---------------------------------------------------------------- measuring

def timed(command: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| (Flow run|Task run|casflow)", re.M)


def flow_seconds(log: str) -> float:
    """From the flow's first log line to its last (Prefect's timestamps, to the millisecond)."""
    stamps = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s, _ in STAMP.findall(log)]
    return stamps[-1] - stamps[0]


def compute_seconds(store: Path) -> float:
    """sample + train + evaluate seconds of every model of the store's latest run (its summary table)."""
    import pyarrow.parquet as pq

    (summary,) = sorted(store.glob("results/summary/*/*/part-0.parquet"))[-1:]
    rows = pq.read_table(summary).to_pylist()
    return sum((r["sample_seconds"] or 0) + (r["train_seconds"] or 0) + (r["eval_seconds"] or 0) for r in rows)


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_UI_ENABLED="false", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.read().strip() == b"true":
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the benchmark's Prefect server did not start in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # run the anchor flow once, in this process
    args = parser.parse_args()
    if args.bare:
        bare_flow()
        return

    work = Path(tempfile.mkdtemp(prefix="casflow-overhead-"))
    home, port = work / "prefect", free_port()
    base = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                PREFECT_SERVER_UI_ENABLED="false", CASFLOW_CACHE_DIR=str(work / "cache"))
    for key in ("PREFECT_API_URL", "CASFLOW_PREFECT_SERVER"):
        base.pop(key, None)
    running = dict(base, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    temporary = dict(base, CASFLOW_PREFECT_SERVER="temporary")
    cas = [str(Path(sys.executable).with_name("cas")), "demo", "--store"]
    bare = [sys.executable, str(Path(__file__).resolve()), "--bare"]
    server = start_server(home, port)
    results: dict[str, dict] = {}
    try:
        cached = work / "cached-store"
        timed(cas + [str(cached)], running, work)  # fills the store; warms the database and the file cache
        timed(bare, running, work)
        timed(bare, base, work)  # Prefect's temporary server migrates its database once
        for where, env in (("running server", running), ("temporary server", temporary)):
            samples: dict[str, list] = {"bare": [], "cached": [], "cached flow": [], "uncached": [], "uncached flow": [],
                                        "compute": []}
            for repeat in range(args.repeats):  # interleaved, so that the machine's load falls on every row alike
                samples["bare"].append(timed(bare, env if env is running else base, work)[0])
                seconds, log = timed(cas + [str(cached)], env, work)
                samples["cached"].append(seconds)
                samples["cached flow"].append(flow_seconds(log))
                store = work / f"uncached-{where.split()[0]}-{repeat}"
                shutil.rmtree(work / "cache", ignore_errors=True)
                seconds, log = timed(cas + [str(store)], env, work)
                samples["uncached"].append(seconds)
                samples["uncached flow"].append(flow_seconds(log))
                samples["compute"].append(compute_seconds(store))
                print(f"{where} {repeat + 1}/{args.repeats}: bare {samples['bare'][-1]:.2f} s, cached demo {samples['cached'][-1]:.2f} s, "
                      f"uncached demo {samples['uncached'][-1]:.2f} s", flush=True)
            results[where] = {key: summarise(values) for key, values in samples.items()}
            results[where]["compute share"] = summarise([c / f for c, f in zip(samples["compute"], samples["uncached flow"])])
    finally:
        server.terminate()
        server.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    write(results, args)


def write(results: dict, args: argparse.Namespace) -> None:
    from importlib.metadata import version

    date = datetime.now(timezone.utc)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    header = {"machine": f"{cpu}, {os.cpu_count()} cores", "date": f"{date:%Y-%m-%d}", "commit": _commit(),
              "python": platform.python_version(), "prefect": version("prefect"), "torch": version("torch"),
              "repeats": args.repeats, "load": f"{os.getloadavg()[0]:.1f} (1-minute load average at the end)"}
    spread = lambda s, unit="s": f"{s['median']:.2f} {unit} ({s['min']:.2f}-{s['max']:.2f})"  # noqa: E731
    ratio = lambda a, b: f"{a['median'] / b['median']:.2f}x"  # noqa: E731
    lines = ["| server | bare flow, 18 no-op tasks (anchor) | cached `cas demo` | cached / bare | its flow alone | "
             "uncached `cas demo` | compute share of its flow |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for where, r in results.items():
        share = r["compute share"]
        lines.append(f"| {where} | {spread(r['bare'])} | {spread(r['cached'])} | {ratio(r['cached'], r['bare'])} | "
                     f"{spread(r['cached flow'])} | {spread(r['uncached'])} | "
                     f"{100 * share['median']:.0f}% ({100 * share['min']:.0f}-{100 * share['max']:.0f}%) |")
    table = "\n".join(lines)
    text = (f"# casflow's overhead over Prefect's own\n\n{header['machine']}; {header['date']}; commit {header['commit']}; "
            f"Python {header['python']}, Prefect {header['prefect']}, torch {header['torch']}; median (min-max) of "
            f"{args.repeats}; load {header['load']}.\n\nWall time of each command, interpreter start to exit. The anchor is "
            "a bare Prefect flow of 18 no-op tasks in the demo's shape, measured in the same run: on the running server with "
            "the same PREFECT_API_URL, on the temporary-server row with Prefect's own temporary server. Compute share: the "
            "models' sample + train + evaluate seconds over the uncached flow's time.\n\n" + table + "\n")
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"overhead-{date:%Y-%m-%d}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "results": results}, indent=1))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
