"""The `cas` command.

  cas demo [--store URL]                    five generators on the embedded digits
  cas run CONFIG [--store URL] [--fail-on-regression [--allow-unknown]]
                                            evaluate the models of a config
  cas results [--config CONFIG | --store URL] [--run ID] [--per-class] [--model NAME] [--list]
  cas compare [RUN_A] [RUN_B] [--model NAME] [--per-class] [--fail-on-regression]
                                            paired comparison of two runs (default: the latest two)
  cas report [--run ID] [--out FILE]        the run's HTML report (default: the latest run)
  cas verify [--quick] [--fix]              every committed object against its commit marker

Exit status: 0 when everything finished; 1 when a model failed (the others
are still written), results could not be read, or `verify` found problems
(left after --fix); 2 for a bad
config or command line, unknown run ids, or runs that cannot be compared;
3 with --fail-on-regression when a model got significantly worse (overall or
in a class), and nothing failed; 4 with --fail-on-regression when a model
could not be compared with its previous run (verdict unknown), no model got
worse and nothing failed, unless --allow-unknown.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import glob
import os
import signal
import sys
import threading
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
    from casflow.tasks.results import has_scores, scores_cells

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
    scored = [r for r in summary if has_scores(r)]
    if scored:
        print("\nscores beside CAS (in the real baseline's classifier; NAS: points of top-1 against real alone):")
        print(_table([scores_cells(r) for r in scored]))
    if per_class:
        rows = results.read_run(store, "per_class", run_id).to_pylist()
        print()
        print(render_per_class([r for r in rows if model is None or r["model"] == model]))
    return 0


def run(config_path: str, store_url: str | None, fail_on_regression: bool = False, model_deployment: str | None = None,
        temporary_server: bool = False, allow_unknown: bool = False) -> int:
    """Evaluate a config's models in a Prefect flow, on a running Prefect server or a temporary one (`flows.server`).

    SIGTERM and SIGINT (Ctrl-C) end the run within seconds (`_stop`): the flow runs in a thread of its own
    and this, the main thread, waits for it where signals arrive."""
    from casflow.flows import steps
    from casflow.flows.server import ServerProblem
    from casflow.storage.store import StoreUnreachable
    from casflow.tasks.config import ConfigError

    with _signals_stop_the_run():
        live = _Live()
        try:
            try:
                config = steps.read_config(config_path, store_url)  # fail before Prefect starts on a bad config
            except (ConfigError, OSError) as exc:
                print(f"cas: {exc}", file=sys.stderr)
                return 2
            if model_deployment and (not os.environ.get("PREFECT_API_URL") or temporary_server
                                     or os.environ.get("CASFLOW_PREFECT_SERVER") == "temporary"):
                print("cas: --model-deployment needs the Prefect server where that deployment and its workers are: "
                      "set PREFECT_API_URL, and no temporary server (README: Many machines)", file=sys.stderr)
                return 2
            try:
                return _evaluate(live, config, config_path, store_url, fail_on_regression, model_deployment, temporary_server,
                                 allow_unknown)
            except (ServerProblem, StoreUnreachable) as exc:
                print(f"cas: {exc}", file=sys.stderr)
                return 1
            finally:
                if not isinstance(sys.exc_info()[1], Stopped):  # `_stop` still has to tell the server the run crashed
                    live.close()
        except Stopped as stop:
            _stop(stop.signum, live)


@dataclasses.dataclass
class _Live:
    """What a stopping run has to end: its temporary server, and its flow run (api URL, id) to mark Crashed."""

    server: Any = None
    flow_run: tuple[str, Any] | None = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _evaluate(live: _Live, config, config_path: str, store_url: str | None, fail_on_regression: bool,
              model_deployment: str | None, temporary_server: bool, allow_unknown: bool = False) -> int:
    from casflow.flows import steps
    from casflow.flows.server import RunServer

    live.server = RunServer(temporary_server)  # a temporary server starts now and comes up beside what follows
    steps.open_store(config.store).probe()  # a store that never answers fails here, before Prefect's flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from casflow.flows.pipeline import cas_evaluation

    api_url = live.server.api_url()

    def note_flow_run_id(flow, flow_run, state) -> None:  # for `_stop`, which marks the flow run Crashed
        live.flow_run = (api_url, flow_run.id)

    flow = cas_evaluation.with_options(on_running=[note_flow_run_id])
    with temporary_settings({PREFECT_API_URL: api_url}), _quiet_hook(note_flow_run_id.__name__):
        try:
            state = _in_thread(lambda: flow(config_path, store_url, model_deployment=model_deployment, return_state=True))
        except Exception:
            _drain_prefect()
            raise
        _drain_prefect()  # the run's last logs and events reach the server before it stops (not when Stopped)
    report = state.result(raise_on_failure=False)
    if not isinstance(report, dict):
        print(f"cas: the run failed before writing results: {report}", file=sys.stderr)
        return 1
    store = steps.open_store(config.store)
    print()
    show_results(store, report["run_id"], per_class=False, model=None)
    changes = [r for r in _read_changes(store, report["run_id"]) if r["class_index"] is None or r["significant"]]
    if changes:
        print("\nchanges since each model's previous run (paired on the same eval images; points):")
        print(render_changes(changes))
    print(f"\nresults: {report['summary']}\n         {report['per_class']}\n         {report['changes']}")
    if report.get("report"):
        print(f"report:  {report['report']}")
    if not state.is_completed():
        return 1
    if fail_on_regression and report["regressions"]:
        print(f"cas: significantly worse: {', '.join(report['regressions'])}", file=sys.stderr)
        return 3
    if fail_on_regression and report.get("unknown") and not allow_unknown:  # fail closed: unjudged is not passed
        print(f"cas: not judged (verdict unknown, the reason above): {', '.join(report['unknown'])}; "
              "--allow-unknown passes them", file=sys.stderr)
        return 4
    return 0


# ---------------------------------------------------------------- stopping a run: SIGTERM, Ctrl-C

STOP_MARK_SECONDS = 2.0  # what a stopping run spends telling the Prefect server that its flow run crashed


class Stopped(BaseException):
    """SIGTERM or SIGINT reached `cas run` (a BaseException, like KeyboardInterrupt: nothing may catch it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_stop_the_run():
    """SIGTERM and SIGINT raise Stopped in the main thread (where `run` waits) for the length of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _quiet_hook(name: str):
    """Without the two lines Prefect logs for every hook it runs (`Running hook ...`, `Hook ... finished`),
    for a hook that only takes note of something."""
    import logging

    chatter = logging.Filter()
    chatter.filter = lambda record: f"hook {name!r}" not in record.getMessage().lower()
    logger = logging.getLogger("prefect.engine")
    logger.addFilter(chatter)
    try:
        yield
    finally:
        logger.removeFilter(chatter)


def _in_thread(call):
    """call() in a daemon thread that sees this thread's context (Prefect's settings); its result or its
    exception, here. The main thread stays free for signals: Prefect's flow engine in the main thread would
    take SIGTERM itself and then wait for every running step before it let the process end."""
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # noqa: B036 (handed to the waiting thread as is)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="cas-flow", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _drain_prefect() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


def _stop(signum: int, live: _Live) -> None:
    """End the run now: the flow run marked Crashed on its server (if that takes under STOP_MARK_SECONDS),
    the temporary server stopped, this process's other children ended, exit 128 + the signal's number.

    Worker threads are not waited for: a step in the middle of a write leaves a temporary file (or, on S3,
    no object) and no commit marker, which the next run cleans and redoes; everything committed is whole."""
    for s in (signal.SIGTERM, signal.SIGINT):  # a second signal while stopping: stop at once
        signal.signal(s, lambda n, f: os._exit(128 + n))
    name = signal.Signals(signum).name
    print(f"\ncas: stopped by {name}; nothing half-written was committed, and the next run cleans what this one left",
          file=sys.stderr, flush=True)
    if live.flow_run is not None:
        marker = threading.Thread(target=_mark_crashed, args=(*live.flow_run, name), daemon=True)
        marker.start()
        marker.join(STOP_MARK_SECONDS)
    live.close()
    _end_children()
    sys.stdout.flush()
    os._exit(128 + signum)


def _mark_crashed(api_url: str, flow_run_id, name: str) -> None:
    with contextlib.suppress(Exception):
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from prefect.states import Crashed

        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=f"cas run stopped by {name}"), force=True)


def _end_children() -> None:
    """SIGKILL to this process's remaining children (a user's sampler may start some); Linux only (/proc)."""
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with contextlib.suppress(OSError):
            for pid in open(path).read().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)


def render_changes(rows: list[dict[str, Any]]) -> str:
    from casflow.tasks.results import change_cells

    return _table([change_cells(r) for r in rows])


def _read_changes(store, run_id: str) -> list[dict[str, Any]]:
    from casflow.storage import results

    try:
        return results.read_run(store, "changes", run_id).to_pylist()
    except FileNotFoundError:
        return []


class CommandError(Exception):
    """A bad command line: unknown runs, runs that cannot be compared (exit 2)."""


def _pick_runs(store, run_a: str | None, run_b: str | None) -> tuple[str, str]:
    """(before, after): the two given, one given and the latest, or the latest two."""
    from casflow.storage import results

    runs = results.run_ids(store)
    for run_id in (run_a, run_b):
        if run_id and run_id not in runs:
            raise CommandError(f"no run {run_id} in {store.url} (`cas results --list` lists them)")
    if run_a and run_b:
        return run_a, run_b
    if run_a:
        if run_a == runs[-1]:
            raise CommandError(f"{run_a} is the latest run; name the run to compare it with")
        return run_a, runs[-1]
    if len(runs) < 2:
        raise CommandError(f"{store.url} has {len(runs)} run(s); a comparison needs two")
    return runs[-2], runs[-1]


def compare_command(store, run_a: str | None, run_b: str | None, model: str | None, per_class: bool,
                    fail_on_regression: bool) -> int:
    from casflow.flows import steps
    from casflow.storage import results
    from casflow.tasks.compare import ComparisonError
    from casflow.tasks.results import change_rows, regressions

    try:
        before_id, after_id = _pick_runs(store, run_a, run_b)
    except CommandError as exc:
        print(f"cas: {exc}", file=sys.stderr)
        return 2
    before = {r["model"]: r for r in results.read_run(store, "summary", before_id).to_pylist() if r["status"] == "ok"}
    after = {r["model"]: r for r in results.read_run(store, "summary", after_id).to_pylist() if r["status"] == "ok"}
    names = [m for m in after if m in before and (model is None or m == model)]
    if not names:
        print(f"cas: no model{' ' + repr(model) if model else ''} finished in both {before_id} and {after_id}", file=sys.stderr)
        return 2
    per_class_rows = results.read_run(store, "per_class", after_id).to_pylist()
    class_names = tuple(name for _, name in sorted({(r["class_index"], r["class_name"]) for r in per_class_rows}))
    rows, problems = [], []
    for name in names:
        try:
            rows += change_rows(class_names, before[name], after[name], steps.compare_runs(store, before[name], after[name], class_names))
        except ComparisonError as exc:
            problems.append(str(exc))
    print(f"{before_id} -> {after_id}  store {store.url}")
    if rows:
        print(render_changes([r for r in rows if per_class or r["class_index"] is None or r["significant"]]))
    for problem in problems:
        print(f"cas: {problem}", file=sys.stderr)
    if problems:
        return 2
    return 3 if fail_on_regression and regressions(rows) else 0


def report_command(store, run_id: str | None, out: str | None) -> int:
    from casflow.flows import reporting
    from casflow.storage import results

    runs = results.run_ids(store)
    if run_id and run_id not in runs:
        print(f"cas: no run {run_id} in {store.url} (`cas results --list` lists them)", file=sys.stderr)
        return 2
    if not runs:
        print(f"cas: no results in {store.url}", file=sys.stderr)
        return 1
    uri, page = reporting.write_report(store, run_id or runs[-1])
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
        print(out)
    print(uri)
    return 0


def verify_command(store, quick: bool, fix: bool) -> int:
    from casflow.storage import verify

    findings = verify.verify(store, full=not quick)
    what = "sizes and commit markers" if quick else "sizes, commit markers and every sha256"
    if not findings:
        print(f"{store.url}: nothing wrong ({what} checked)")
        return 0
    print(verify.render(store, findings))
    if not fix:
        print(f"\n{len(findings)} problem(s); `cas verify --fix` removes what the next run rebuilds")
        return 1
    removed = verify.repair(store, findings)
    kept = [f for f in findings if not f.repair]
    print(f"\nremoved {len(removed)}; the next run rebuilds them" + (f"; {len(kept)} left to you" if kept else ""))
    return 1 if kept else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cas", description="Classification Accuracy Score for conditional generative models")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="evaluate five generators on the embedded digits data")
    demo.add_argument("--store", help="store URL (default ./casflow-store)")
    run_cmd = sub.add_parser("run", help="evaluate the models of a config file")
    run_cmd.add_argument("config")
    run_cmd.add_argument("--store", help="override store.url")
    run_cmd.add_argument("--fail-on-regression", action="store_true",
                         help="exit 3 when a model got significantly worse than its previous run, 4 when a model "
                              "could not be compared with it (verdict unknown)")
    run_cmd.add_argument("--allow-unknown", action="store_true",
                         help="with --fail-on-regression: pass models whose comparison could not be made")
    for command in (demo, run_cmd):
        command.add_argument("--temporary-server", action="store_true",
                             help="run on a temporary Prefect server of its own, even when one is running or configured "
                                  "(also CASFLOW_PREFECT_SERVER=temporary)")
    run_cmd.add_argument("--model-deployment", metavar="FLOW/DEPLOYMENT",
                         help="run each model as a flow run of this deployment (e.g. cas-model/casflow-model), on its workers")

    def where(command: argparse.ArgumentParser) -> None:
        command.add_argument("--config", help="read the store URL and credentials from this config")
        command.add_argument("--store", help="store URL (default ./casflow-store)")

    res = sub.add_parser("results", help="print a run's results (default: the latest)")
    where(res)
    res.add_argument("--run", help="run id (default: the latest)")
    res.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    res.add_argument("--model", help="only this model")
    res.add_argument("--list", action="store_true", help="list run ids, oldest first")
    cmp = sub.add_parser("compare", help="paired comparison of two runs (default: the latest two)")
    where(cmp)
    cmp.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B (before, after); one: it against the latest")
    cmp.add_argument("--model", help="only this model")
    cmp.add_argument("--per-class", action="store_true", help="every class, not only those that changed significantly")
    cmp.add_argument("--fail-on-regression", action="store_true", help="exit 3 when a model got significantly worse")
    ver = sub.add_parser("verify", help="check every committed object on the store against its commit marker")
    where(ver)
    ver.add_argument("--quick", action="store_true", help="sizes and markers only, no sha256 of shards")
    ver.add_argument("--fix", action="store_true", help="remove what the next run can rebuild")
    rep = sub.add_parser("report", help="write a run's HTML report to the store (and to --out)")
    where(rep)
    rep.add_argument("--run", help="run id (default: the latest)")
    rep.add_argument("--out", help="also write the page to this file")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from casflow.flows.pipeline import DEMO_CONFIG

        return _end(run(DEMO_CONFIG, args.store, temporary_server=args.temporary_server), argv)
    if args.command == "run":
        return _end(run(args.config, args.store, args.fail_on_regression, args.model_deployment, args.temporary_server,
                        args.allow_unknown), argv)
    from casflow.storage.results import ResultsError
    from casflow.storage.store import IntegrityError

    try:
        store = _open_store(args)
    except (ValueError, OSError) as exc:  # a bad config (ConfigError), or a store URL that keeps nothing
        print(f"cas: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "compare":
            if len(args.runs) > 2:
                parser.error("compare takes at most two runs")
            return compare_command(store, *(args.runs + [None, None])[:2], args.model, args.per_class, args.fail_on_regression)
        if args.command == "report":
            return report_command(store, args.run, args.out)
        if args.command == "verify":
            return verify_command(store, args.quick, args.fix)
        if args.list:
            from casflow.storage import results

            print("\n".join(results.run_ids(store)))
            return 0
        return show_results(store, args.run, args.per_class, args.model)
    except (FileNotFoundError, ResultsError, IntegrityError) as exc:  # the message names the file
        print(f"cas: {exc}", file=sys.stderr)
        return 1


def _end(code: int, argv: list[str] | None) -> int:
    """As the `cas` command (`argv` None), a run ends the process here: its output flushed, with no interpreter
    shutdown. Prefect's and the steps' daemon threads (a task runner's pool, Prefect's event loop) may still
    be inside native code then, and tearing the interpreter down under them once aborted a finished cached run
    ("terminate called without an active exception", exit -6). Its logs and events were sent (`_drain_prefect`)
    and its temporary server is stopped; called as a function (tests), it returns."""
    if argv is not None:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
