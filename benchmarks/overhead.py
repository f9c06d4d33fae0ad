"""What does casflow add to Prefect's own cost? `cas demo` (flows/demo.yaml: five models; 31 tasks with its one NAS ratio),
fully cached and uncached, on a running Prefect server and on a temporary one, beside a bare Prefect flow
of as many no-op tasks in the same shape (the anchor, `bare_flow`), measured in the same run. Prints one
table and writes it, with the raw numbers, to benchmarks/results/.

    python benchmarks/overhead.py [--repeats 3] [--out benchmarks/results]

Each row is the wall time of one command as a user runs it (interpreter start to exit), median and
spread (min-max) of --repeats; the bare flow's process imports Prefect and nothing else. Against the
running server every process gets PREFECT_API_URL; the temporary-server rows get none (the bare flow then
gets Prefect's own temporary server, `cas` its own, CASFLOW_PREFECT_SERVER=temporary; each with a PREFECT_HOME of its
own). Uncached runs start from an empty store and an empty decoded-image cache, on the running server
only; their compute share is the part of the flow run in which a step that computes ran (read back from
the server: `compute_share`).
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

from provenance import git_commit  # benchmarks/provenance.py, beside this script

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the anchor: a bare flow of the demo's shape

def demo_shape() -> tuple[list[int], int]:
    """The demo's task graph, from flows/demo.yaml as `cas_evaluation` builds it: per model the length of
    its chain (samples; a classifier and an evaluation per seed; the same per Naive Augmentation Score
    ratio, not for the real baseline), and how many models are scored beside CAS."""
    from casflow.flows.pipeline import DEMO_CONFIG
    from casflow.flows.steps import read_config

    config = read_config(DEMO_CONFIG, None)
    seeds, ratios = len(config.classifier_seeds), len(config.scores.augmentation)
    chains = [1 + 2 * seeds + (0 if m.generator.kind == "real" else 2 * ratios) for m in config.all_models]
    scored = len(chains) if (config.scores.gan_test or config.scores.features or config.scores.memorization) else 0
    return chains, scored


def bare_flow(chains: list[int], scored: int) -> None:
    """No-op tasks wired as the demo's: one (the dataset), then per model its chain, each step after the one
    before and each chain after the one before (one device lane on a CPU), then one per scored model side
    by side, then two (results, report); the same task runner."""
    from prefect import allow_failure, flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE)
    def noop(*upstream):
        return 1

    @flow(name="bare", task_runner=ThreadPoolTaskRunner(max_workers=8))
    def bare():
        first = noop.submit().result()
        tails, tail = [], None
        for length in chains:
            step = noop.submit(first, wait_for=[allow_failure(tail)] if tail else [])
            for _ in range(length - 1):
                step = noop.submit(first, wait_for=[step])
            tail = step
            tails.append(tail)
        for future in tails:
            future.wait()
        for future in [noop.submit(first) for _ in range(scored)]:
            future.wait()
        noop(1)
        noop(2)

    bare()


# ---------------------------------------------------------------- measuring

FAILURES: list[str] = []  # commands that failed once (retried once; reported with the table)


def timed(command: list[str], env: dict, cwd: Path, retry: bool = True) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        FAILURES.append(f"`{' '.join(Path(c).name for c in command[:2])}` exited {done.returncode} ({tail[0][:200]})")
        print(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}", flush=True)
        if retry:
            return timed(command, env, cwd, retry=False)
        raise SystemExit(1)
    return seconds, done.stdout + done.stderr


STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| (Flow run|Task run|casflow)", re.M)


def flow_seconds(log: str) -> float:
    """From the flow's first log line to its last (Prefect's timestamps, to the millisecond)."""
    stamps = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s, _ in STAMP.findall(log)]
    return stamps[-1] - stamps[0]


COMPUTE_TASKS = ("prepare-dataset", "samples-", "train-", "evaluate-", "scores-")  # task run names of the steps that compute


def compute_share(api_url: str) -> tuple[float, float]:
    """The latest cas-evaluation flow run on the server at `api_url`: its seconds (start to end, the server's
    timestamps), and the share of them in which at least one step that computes ran (the union of those
    task runs' intervals: dataset, samples, classifiers, evaluations, scores)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["cas-evaluation"])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])), limit=200)
    spans = sorted((t.start_time, t.end_time) for t in tasks if t.name.startswith(COMPUTE_TASKS) and t.start_time and t.end_time)
    busy, until = 0.0, None
    for start, end in spans:
        start = max(start, until) if until else start
        if end > start:
            busy += (end - start).total_seconds()
            until = end
    flow = (run.end_time - run.start_time).total_seconds()
    return flow, busy / flow


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
    parser.add_argument("--work", type=Path, help="a work folder of an earlier run to reuse (its filled cached store), kept")
    parser.add_argument("--bare", help=argparse.SUPPRESS)  # "3,9,9,9,9/5": run the anchor flow once, in this process
    args = parser.parse_args()
    if args.bare:
        chains, scored = args.bare.split("/")
        bare_flow([int(n) for n in chains.split(",")], int(scored))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="casflow-overhead-"))
    home, port = work / "prefect", free_port()
    base = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                PREFECT_SERVER_UI_ENABLED="false", CASFLOW_CACHE_DIR=str(work / "cache"))
    for key in ("PREFECT_API_URL", "CASFLOW_PREFECT_SERVER"):
        base.pop(key, None)
    running = dict(base, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    temporary = dict(base, CASFLOW_PREFECT_SERVER="temporary", PREFECT_HOME=str(work / "prefect-temporary"))
    cas = [str(Path(sys.executable).with_name("cas")), "demo", "--store"]
    chains, scored = demo_shape()
    args.tasks = 1 + sum(chains) + scored + 2
    bare = [sys.executable, str(Path(__file__).resolve()), "--bare", f"{','.join(map(str, chains))}/{scored}"]
    server = start_server(home, port)
    results: dict[str, dict] = {}
    try:
        cached = work / "cached-store"
        if not list(cached.glob("results/summary/*/*/*.parquet")):
            timed(cas + [str(cached)], running, work)  # fills the store; warms the database and the file cache
        timed(bare, running, work)
        timed(bare, temporary, work)  # Prefect's own temporary server: its database, in its PREFECT_HOME, made once
        timed(cas + [str(cached)], temporary, work)
        for where, env in (("running server", running), ("temporary server", temporary)):
            samples: dict[str, list] = {"bare": [], "cached": [], "cached flow": [], "uncached": [], "uncached flow": [],
                                        "compute share": []}
            for repeat in range(args.repeats):  # interleaved, so that the machine's load falls on every row alike
                samples["bare"].append(timed(bare, env, work)[0])
                seconds, log = timed(cas + [str(cached)], env, work)
                samples["cached"].append(seconds)
                samples["cached flow"].append(flow_seconds(log))
                line = f"{where} {repeat + 1}/{args.repeats}: bare {samples['bare'][-1]:.2f} s, cached demo {samples['cached'][-1]:.2f} s"
                if env is running:  # uncached: on the running server only, where its flow run can be read back
                    for emptied in (work / "cache", work / f"uncached-{repeat}"):
                        shutil.rmtree(emptied, ignore_errors=True)
                    seconds, log = timed(cas + [str(work / f"uncached-{repeat}")], env, work)
                    samples["uncached"].append(seconds)
                    line += f", uncached demo {seconds:.2f} s"
                    try:
                        flow, share = compute_share(env["PREFECT_API_URL"])
                    except Exception as exc:  # noqa: BLE001 (the timings stand without it)
                        line += f" (its flow run could not be read back: {exc})"
                    else:
                        samples["uncached flow"].append(flow)
                        samples["compute share"].append(share)
                        line += f" (flow {flow:.2f} s, compute {100 * share:.0f}%)"
                print(line, flush=True)
            results[where] = {key: summarise(values) for key, values in samples.items() if values}
    finally:
        server.terminate()
        server.wait(30)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    write(results, args)


def write(results: dict, args: argparse.Namespace) -> None:
    from importlib.metadata import version

    date = datetime.now(timezone.utc)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    header = {"machine": f"{cpu}, {os.cpu_count()} cores", "date": f"{date:%Y-%m-%d}", "commit": git_commit(),
              "python": platform.python_version(), "prefect": version("prefect"), "torch": version("torch"),
              "repeats": args.repeats, "load": f"{os.getloadavg()[0]:.1f} (1-minute load average at the end)"}
    spread = lambda s, unit="s": f"{s['median']:.2f} {unit} ({s['min']:.2f}-{s['max']:.2f})"  # noqa: E731
    ratio = lambda a, b: f"{a['median'] / b['median']:.2f}x"  # noqa: E731
    lines = [f"| server | bare flow, {args.tasks} no-op tasks (anchor) | cached `cas demo` | cached / bare | its flow alone | "
             "uncached `cas demo` | compute share of its flow |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for where, r in results.items():
        uncached, share = r.get("uncached"), r.get("compute share")
        lines.append(f"| {where} | {spread(r['bare'])} | {spread(r['cached'])} | {ratio(r['cached'], r['bare'])} | "
                     f"{spread(r['cached flow'])} | {spread(uncached) if uncached else 'not measured'} | "
                     + (f"{100 * share['median']:.0f}% ({100 * share['min']:.0f}-{100 * share['max']:.0f}%) |" if share else "- |"))
    table = "\n".join(lines)
    text = (f"# casflow's overhead over Prefect's own\n\n{header['machine']}; {header['date']}; commit {header['commit']}; "
            f"Python {header['python']}, Prefect {header['prefect']}, torch {header['torch']}; median (min-max) of "
            f"{args.repeats}; load {header['load']}.\n\nWall time of each command, interpreter start to exit. The anchor is "
            f"a bare Prefect flow of {args.tasks} no-op tasks in the demo's shape, measured in the same run: on the running server with "
            "the same PREFECT_API_URL, on the temporary-server row with Prefect's own temporary server (cas: its own, "
            "CASFLOW_PREFECT_SERVER=temporary). Its flow alone: the cached flow's first to last log line. Uncached: an empty "
            "store and an empty decoded-image cache, on the running server only (a temporary server adds what the cached rows "
            "show). Compute share: the part of the uncached flow run (the server's start and end) in which a step that "
            "computes ran (dataset, samples, classifiers, evaluations, scores: the union of their task runs).\n\n" + table + "\n"
            + ("".join(f"\nFailed once and rerun: {f}." for f in FAILURES) + "\n" if FAILURES else ""))
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"overhead-{date:%Y-%m-%d}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "results": results, "failures": FAILURES}, indent=1))


if __name__ == "__main__":
    main()
