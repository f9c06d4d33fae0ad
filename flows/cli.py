"""The `cas` command.

  cas demo [--store URL]             five generators on the embedded digits
  cas run CONFIG [--store URL]       evaluate the models of a config
  cas results [--config CONFIG | --store URL] [--run ID] [--per-class] [--model NAME] [--list]

Exit status: 0 when every model finished, 1 when any failed (the others are
still written), 2 for a bad config or command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

# Before Prefect is imported: show casflow's own progress lines in Prefect's
# logs, and keep Prefect from phoning home (it fails noisily offline).
_extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
if "casflow" not in _extra.split(","):
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [_extra, "casflow"]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _table(rows: list[dict[str, str]]) -> str:
    """Rows of cells (column -> text) as aligned plain text; percentages aligned right."""
    if not rows:
        return ""
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    align = lambda c, w: c.rjust(w) if c.endswith("%") else c.ljust(w)  # noqa: E731
    line = lambda cells: "  ".join(align(c, w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line([r[h] for h in headers]) for r in rows)])


def render_summary(rows: list[dict[str, Any]]) -> str:
    from casflow.tasks.results import summary_cells

    errors = [f"  {r['model']}: {r['error']}" for r in rows if r["status"] != "ok"]
    return _table([summary_cells(r) for r in rows]) + ("\n\nfailed:\n" + "\n".join(errors) if errors else "")


def render_per_class(rows: list[dict[str, Any]]) -> str:
    from casflow.tasks.results import per_class_cells

    return _table([per_class_cells(r) for r in rows])


def _open_store(args: argparse.Namespace):
    from casflow.flows import steps
    from casflow.storage.store import Store, s3_options

    if args.config:
        return steps.open_store(steps.read_config(args.config, args.store).store)
    return Store(args.store or "./casflow-store", s3=s3_options())


def show_results(store, run_id: str | None, per_class: bool, model: str | None) -> int:
    from casflow.storage import results

    runs = results.run_ids(store)
    if not runs:
        print(f"no results in {store.url}", file=sys.stderr)
        return 1
    run_id = run_id or runs[-1]
    summary = results.read_run(store, "summary", run_id).to_pylist()
    if model:
        summary = [r for r in summary if r["model"] == model]
    print(f"run {run_id}  dataset {summary[0]['dataset'] if summary else '?'}  recipe {summary[0]['recipe'] if summary else '?'}"
          f"  store {store.url}")
    print(render_summary(summary))
    if per_class:
        rows = results.read_run(store, "per_class", run_id).to_pylist()
        print()
        print(render_per_class([r for r in rows if model is None or r["model"] == model]))
    return 0


def run(config_path: str, store_url: str | None) -> int:
    from casflow.flows import steps
    from casflow.storage.store import StoreUnreachable
    from casflow.tasks.config import ConfigError

    try:
        config = steps.read_config(config_path, store_url)  # fail before Prefect starts on a bad config
    except (ConfigError, OSError) as exc:
        print(f"cas: {exc}", file=sys.stderr)
        return 2
    try:
        steps.open_store(config.store).probe()  # and on a store that never answers
    except StoreUnreachable as exc:
        print(f"cas: {exc}", file=sys.stderr)
        return 1
    from casflow.flows.pipeline import cas_evaluation

    state = cas_evaluation(config_path, store_url, return_state=True)
    report = state.result(raise_on_failure=False)
    if not isinstance(report, dict):
        print(f"cas: the run failed before writing results: {report}", file=sys.stderr)
        return 1
    print()
    show_results(steps.open_store(config.store), report["run_id"], per_class=False, model=None)
    print(f"\nresults: {report['summary']}\n         {report['per_class']}")
    return 0 if state.is_completed() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cas", description="Classification Accuracy Score for conditional generative models")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="evaluate five generators on the embedded digits data")
    demo.add_argument("--store", help="store URL (default ./casflow-store)")
    run_cmd = sub.add_parser("run", help="evaluate the models of a config file")
    run_cmd.add_argument("config")
    run_cmd.add_argument("--store", help="override store.url")
    res = sub.add_parser("results", help="print a run's results (default: the latest)")
    res.add_argument("--config", help="read the store URL and credentials from this config")
    res.add_argument("--store", help="store URL (default ./casflow-store)")
    res.add_argument("--run", help="run id (default: the latest)")
    res.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    res.add_argument("--model", help="only this model")
    res.add_argument("--list", action="store_true", help="list run ids, oldest first")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from casflow.flows.pipeline import DEMO_CONFIG

        return run(DEMO_CONFIG, args.store)
    if args.command == "run":
        return run(args.config, args.store)
    try:
        store = _open_store(args)
    except (ValueError, OSError) as exc:  # a bad config (ConfigError), or a store URL that keeps nothing
        print(f"cas: {exc}", file=sys.stderr)
        return 2
    if args.list:
        from casflow.storage import results

        print("\n".join(results.run_ids(store)))
        return 0
    try:
        return show_results(store, args.run, args.per_class, args.model)
    except FileNotFoundError as exc:
        print(f"cas: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
