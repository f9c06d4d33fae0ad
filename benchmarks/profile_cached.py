"""Where a fully cached `cas demo` spends its seconds: imports, digests, store round trips, artifact
publishing, Prefect's task state round trips, the flow's own steps.

    python benchmarks/profile_cached.py STORE        # STORE: a store `cas demo --store STORE` filled before

Runs `cas demo --store STORE` once in this process under cProfile, in every thread (the flow runs in a
thread of its own, its tasks in a pool), against PREFECT_API_URL or the server `cas` finds. Prints the
wall time and, per part, the seconds summed over threads (cumulative time of the part's entry points,
outermost calls only, so a part is not counted twice within itself; parts can overlap each other, and a
thread waiting on the server counts). cProfile slows Python code down, so read the shares, not the seconds.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time

PARTS = {  # part: (file fragment, function name) pairs of its entry points
    "imports (casflow, Prefect, numpy, pyarrow...)": [("<frozen importlib._bootstrap>", "_find_and_load")],
    "digests (fingerprints, manifests' sha256)": [("tasks/fingerprint.py", "fingerprint"), ("tasks/fingerprint.py", "sha256_bytes"),
                                                  ("datasets/common.py", "content_digest")],
    "store round trips (read, list, write)": [("storage/store.py", name) for name in
                                              ("exists", "read_bytes", "read_many", "listdir", "find", "write_bytes", "probe")],
    "artifact publishing (Prefect artifacts)": [("flows/artifacts.py", "publish")],
    "results and report (parquet, HTML)": [("flows/steps.py", "write_results"), ("flows/steps.py", "write_report")],
    "task state round trips (Prefect client)": [("prefect/client/orchestration", "set_task_run_state"),
                                               ("prefect/client/orchestration", "create_task_run"),
                                               ("prefect/client/orchestration", "set_flow_run_state"),
                                               ("prefect/client/orchestration", "create_flow_run")],
}


def main() -> None:
    store = sys.argv[1]
    profiles: list[cProfile.Profile] = []
    start = threading.Thread.run

    def profiled(self) -> None:  # every thread under a profile of its own
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.runcall(start, self)

    threading.Thread.run = profiled
    main_profile = cProfile.Profile()
    profiles.append(main_profile)
    started = time.perf_counter()
    main_profile.enable()
    from casflow.flows.cli import main as cas

    code = cas(["demo", "--store", store])
    main_profile.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    print(f"\ncas demo (cached): exit {code}, {wall:.2f} s wall in this process, {len(profiles)} threads profiled")
    print(f"{'part':48} {'thread-seconds':>14}")
    for part, points in PARTS.items():
        seconds = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
                      if any(fragment in file and name == wanted for fragment, wanted in points))
        print(f"{part:48} {seconds:14.2f}")


if __name__ == "__main__":
    main()
