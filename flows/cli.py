"""The `cas` command: one function per subcommand, each taking the parsed arguments and returning the
exit status.

  cas demo [--store URL]                    five generators on the embedded digits
  cas run CONFIG [--store URL] [--fail-on-regression [--allow-unknown]]
                                            evaluate the models of a config
  cas results [--config CONFIG | --store URL] [--run ID] [--per-class] [--model NAME] [--list]
  cas compare [RUN_A] [RUN_B] [--model NAME] [--per-class] [--fail-on-regression]
                                            paired comparison of two runs (default: the latest two)
  cas best [--run ID] [--series S] [--json] each series' best checkpoints (default: the latest run with one)
  cas report [--run ID] [--out FILE]        the run's HTML report (default: the latest run)
  cas verify [--quick] [--fix]              every committed object against its commit marker

Exit status: 0 when everything finished; 1 when a model failed (the others
are still written), results could not be read, a store did not answer or
refused, or `verify` found problems (left after --fix); 2 for a bad config or
command line, unknown run ids, runs that cannot be compared, or a store path
that holds no store (`verify`); 3 with --fail-on-regression when a model got
significantly worse (overall or in a class), and nothing failed; 4 with
--fail-on-regression when a model could not be compared with its previous run
(verdict unknown), no model got worse and nothing failed, unless
--allow-unknown; 5 when the Prefect server stopped answering after the results
were committed (the table is printed; lost before that is 1); 130 and 143
when Ctrl-C or SIGTERM stopped it; 141 when its output's reader went away
(`cas results | head -1`). An error of the input, the store or the server is
one line (`cas: ...`), not a traceback: each error class carries its status
(`casflow.tasks.exits`). Everything printed goes through `flows.terminal`,
which escapes control characters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from casflow.flows import lifecycle, server
from casflow.flows.terminal import problem, say, table
from casflow.tasks.exits import FAILED, REGRESSED, SERVER_LOST, UNJUDGED, USAGE, CasError

server.prefect_environment()  # before Prefect is imported

STORE_CHECK_SECONDS = 25.0  # a reading command's first contact with its store, imports and all within 30 s


class CommandError(CasError):
    """A bad command line: unknown runs, runs that cannot be compared, a path that holds no store."""

    exit_code = USAGE


# ---------------------------------------------------------------- rendering

def render_summary(rows: list[dict[str, Any]], best: list[dict[str, Any]] = ()) -> str:
    """The summary table; with a run's best rows, each series' newest-vs-best verdict beside `vs last`."""
    from casflow.tasks.results import adaptive_seeds, best_so_far_verdicts, summary_cells

    errors = [f"  {r['model']}: {r['error']}" for r in rows if r["status"] != "ok"]
    verdicts, seeds = best_so_far_verdicts(list(best)), adaptive_seeds(rows)
    return table([summary_cells(r, verdicts, seeds) for r in rows]) + ("\n\nfailed:\n" + "\n".join(errors) if errors else "")


def render_per_class(rows: list[dict[str, Any]]) -> str:
    from casflow.tasks.results import per_class_table

    return table(per_class_table(rows))


def render_changes(rows: list[dict[str, Any]]) -> str:
    from casflow.tasks.results import change_cells

    return table([change_cells(r) for r in rows])


def show_results(store, run_id: str | None, per_class: bool, model: str | None) -> int:
    from casflow.storage import results
    from casflow.tasks.results import has_scores, scores_cells

    runs = results.run_ids(store)
    if run_id and run_id not in runs:
        raise CommandError(f"no run {run_id} in {store.url} (`cas results --list` lists them)")
    if not runs:
        problem(f"no results in {store.url}")
        return FAILED
    run_id = run_id or runs[-1]
    summary = results.read_run(store, "summary", run_id).to_pylist()
    if model:
        summary = [r for r in summary if r["model"] == model]
    say(f"run {run_id}  dataset {summary[0]['dataset'] if summary else '?'}  recipe {summary[0]['recipe'] if summary else '?'}"
        f"  store {store.url}")
    say(render_summary(summary, _read_best(store, run_id)))
    scored = [r for r in summary if has_scores(r)]
    if scored:
        say("\nscores beside CAS (in the real baseline's classifier; NAS: points of top-1 against real alone):")
        say(table([scores_cells(r) for r in scored]))
    if per_class:
        rows = results.read_run(store, "per_class", run_id).to_pylist()
        say()
        say(render_per_class([r for r in rows if model is None or r["model"] == model]))
    return 0


def render_series(rows: list[dict[str, Any]]) -> str:
    """CAS against step for each series, its leader and best set marked (rows of the best table)."""
    from casflow.tasks.results import best_cells

    blocks = []
    for series in dict.fromkeys(r["series"] for r in rows):
        checkpoints = sorted((r for r in rows if r["series"] == series), key=lambda r: r["step"])
        best = "steps " + ", ".join(str(r["step"]) for r in checkpoints if r["in_best_set"])
        if checkpoints[0].get("reason"):  # a checkpoint's predictions unreadable: nothing was judged
            best = f"unknown: {checkpoints[0]['reason']}"
        raced = ""
        if checkpoints[0].get("selection") == "race":
            every = len(checkpoints) * checkpoints[0]["max_seeds"]
            raced = (f" (race: {sum(r['seeds'] for r in checkpoints)} classifier trainings, against {every} for every "
                     f"checkpoint with {checkpoints[0]['max_seeds']} seeds)")
        blocks.append(f"series {series}: best set {best}{raced}\n" + table([best_cells(r) for r in checkpoints]))
    return "\n\n".join(blocks)


def _read_best(store, run_id: str) -> list[dict[str, Any]]:
    """A run's best table rows; none for a run without a series."""
    from casflow.storage import results

    try:
        return results.read_run(store, "best", run_id).to_pylist()
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- cas demo, cas run

def demo_command(args: argparse.Namespace) -> int:
    from casflow.flows.pipeline import DEMO_CONFIG

    return run(DEMO_CONFIG, args.store, temporary_server=args.temporary_server)


def run_command(args: argparse.Namespace) -> int:
    return run(args.config, args.store, args.fail_on_regression, args.model_deployment, args.temporary_server,
               args.allow_unknown)


def plan_command(args: argparse.Namespace) -> int:
    from casflow.flows import plan

    return plan.plan_command(args.config, args.store, args.json, args.assume_dataset, args.gpus)


def run(config_path: str, store_url: str | None, fail_on_regression: bool = False, model_deployment: str | None = None,
        temporary_server: bool = False, allow_unknown: bool = False) -> int:
    """Evaluate a config's models in a Prefect flow, on a running Prefect server or a temporary one (`flows.server`).

    SIGTERM and SIGINT (Ctrl-C) end the run within seconds (`lifecycle.stop`): the flow runs in a thread of
    its own and this, the main thread, waits for it where signals arrive."""
    from casflow.flows import steps

    with lifecycle.signals_stop_the_run():
        live = lifecycle.Live()
        try:
            try:
                config = steps.read_config(config_path, store_url)  # fail before Prefect starts on a bad config
                if model_deployment and (not os.environ.get("PREFECT_API_URL") or temporary_server
                                         or os.environ.get("CASFLOW_PREFECT_SERVER") == "temporary"):
                    raise CommandError("--model-deployment needs the Prefect server where that deployment and its workers "
                                       "are: set PREFECT_API_URL, and no temporary server (README: Many machines)")
                return _evaluate(live, config, config_path, store_url, fail_on_regression, model_deployment, temporary_server,
                                allow_unknown)
            finally:
                if not isinstance(sys.exc_info()[1], lifecycle.Stopped):  # `stop` still has to tell the server
                    live.close()
        except lifecycle.Stopped as stopped:
            lifecycle.stop(stopped.signum, live)


def _server_lost(why: str, config, live: lifecycle.Live) -> int:
    """The run's Prefect server is gone: stop computing and say what the store holds. Results committed
    (the run's id ends with its flow run's): its table, then one line, SERVER_LOST; else one line,
    FAILED: what finished is committed and a rerun takes it from the cache. Either way its flow run
    stays Running on that server (nothing could tell it otherwise)."""
    import logging

    from casflow.flows import steps
    from casflow.storage import results
    from casflow.tasks import stopping

    stopping.stop_all()
    logging.disable(logging.CRITICAL)  # Prefect's clients, still retrying in their threads, would print tracebacks
    store = steps.open_store(config.store)
    flow_run = str(live.flow_run[1]) if live.flow_run else None
    committed = [r for r in results.run_ids(store) if flow_run and r.endswith(f"-{flow_run[:8]}")]
    if not committed:
        problem(f"{why}; the run stopped before its results were committed: what finished is on the store, "
                "and a rerun takes it from the cache")
        return FAILED
    say()
    show_results(store, committed[-1], per_class=False, model=None)
    problem(f"{why} after the results were committed: run {committed[-1]} is whole on the store "
            f"({store.url}); its flow run stays Running on that server")
    return SERVER_LOST


def _evaluate(live: lifecycle.Live, config, config_path: str, store_url: str | None, fail_on_regression: bool,
              model_deployment: str | None, temporary_server: bool, allow_unknown: bool = False) -> int:
    from casflow.flows import steps
    from casflow.flows.server import RunServer

    live.server = RunServer(temporary_server)  # a temporary server starts now and comes up beside what follows
    steps.open_store(config.store).probe()  # a store that never answers fails here, before Prefect's flow
    from casflow.flows import plan

    line = plan.pre_run_line(config_path, store_url)  # what the night will cost, before it starts
    if line:
        say(line)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from casflow.flows.pipeline import cas_evaluation

    api_url = live.server.api_url()

    def note_flow_run_id(flow, flow_run, state) -> None:  # for `lifecycle.stop`, which marks the flow run Crashed
        live.flow_run = (api_url, flow_run.id)

    flow = cas_evaluation.with_options(on_running=[note_flow_run_id])
    with temporary_settings({PREFECT_API_URL: api_url}), _quiet_hook(note_flow_run_id.__name__):
        try:
            state = lifecycle.in_thread(lambda: flow(config_path, store_url, model_deployment=model_deployment,
                                                     return_state=True), "cas-flow", watch=lifecycle.ServerWatch(api_url))
        except lifecycle.WatchFailed as lost:
            return _server_lost(str(lost), config, live)
        except Exception:
            lifecycle.drain_prefect()
            raise
        lifecycle.drain_prefect()  # the run's last logs and events reach the server before it stops (not when Stopped)
    report = state.result(raise_on_failure=False)
    if not isinstance(report, dict):
        problem(f"the run failed before writing results: {report}")
        return FAILED
    store = steps.open_store(config.store)
    say()
    show_results(store, report["run_id"], per_class=False, model=None)
    changes = [r for r in _read_changes(store, report["run_id"]) if r["class_index"] is None or r["significant"]]
    if changes:
        say("\nchanges since each model's previous run (paired on the same eval images; points):")
        say(render_changes(changes))
    best = _read_best(store, report["run_id"])
    if best:
        say("\nCAS against step per series (vs leader: points, paired on the same eval images; best set: not "
            "significantly worse than the leader):")
        say(render_series(best))
    written = [report[table] for table in ("summary", "per_class", "changes", "best") if report.get(table)]
    say("\nresults: " + "\n         ".join(written))
    if report.get("report"):
        say(f"report:  {report['report']}")
    if not state.is_completed():
        return FAILED
    if fail_on_regression and report["regressions"]:
        problem(f"significantly worse: {', '.join(report['regressions'])}")
        return REGRESSED
    if fail_on_regression and report.get("unknown") and not allow_unknown:  # fail closed: unjudged is not passed
        problem(f"not judged (verdict unknown, the reason above): {', '.join(report['unknown'])}; "
                "--allow-unknown passes them")
        return UNJUDGED
    return 0


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


def _read_changes(store, run_id: str) -> list[dict[str, Any]]:
    from casflow.storage import results

    try:
        return results.read_run(store, "changes", run_id).to_pylist()
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- the commands that read a store

def _store(args: argparse.Namespace):
    """The store a reading command reads (--config's, else --store, else ./casflow-store), once it has
    answered: within STORE_CHECK_SECONDS, with access, else one line (StoreUnreachable, StoreRefused)."""
    from casflow.flows import steps
    from casflow.storage.store import Store, StoreUnreachable, s3_options

    store = steps.open_store(steps.read_config(args.config, args.store).store) if args.config else \
        Store(args.store or "./casflow-store", s3=s3_options())
    try:
        lifecycle.in_thread(lambda: store.probe(readable=True), "cas-store-check", STORE_CHECK_SECONDS)
    except lifecycle.DeadlinePassed:
        raise StoreUnreachable(f"store {store.url} at {store.endpoint} did not answer within {STORE_CHECK_SECONDS:g} s: "
                               "is the endpoint right and the server up?") from None
    return store


def results_command(args: argparse.Namespace) -> int:
    store = _store(args)
    if not args.list:
        return show_results(store, args.run, args.per_class, args.model)
    why = store.not_a_store()
    if why:
        problem(f"{store.url}: not a casflow store ({why}); no runs to list")
        return FAILED
    from casflow.storage import results

    say("\n".join(results.run_ids(store)))
    return 0


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


def compare_command(args: argparse.Namespace) -> int:
    from casflow.flows import steps
    from casflow.storage import results
    from casflow.tasks.compare import ComparisonError
    from casflow.tasks.results import change_rows, regressions

    store = _store(args)
    model = args.model
    before_id, after_id = _pick_runs(store, *(args.runs + [None, None])[:2])
    before = {r["model"]: r for r in results.read_run(store, "summary", before_id).to_pylist() if r["status"] == "ok"}
    after = {r["model"]: r for r in results.read_run(store, "summary", after_id).to_pylist() if r["status"] == "ok"}
    names = [m for m in after if m in before and (model is None or m == model)]
    if not names:
        raise CommandError(f"no model{' ' + repr(model) if model else ''} finished in both {before_id} and {after_id}")
    per_class_rows = results.read_run(store, "per_class", after_id).to_pylist()
    class_names = tuple(name for _, name in sorted({(r["class_index"], r["class_name"]) for r in per_class_rows}))
    rows, problems = [], []
    for name in names:
        try:
            rows += change_rows(class_names, before[name], after[name], steps.compare_runs(store, before[name], after[name], class_names))
        except ComparisonError as exc:
            problems.append(exc)
    say(f"{before_id} -> {after_id}  store {store.url}")
    if rows:
        say(render_changes([r for r in rows if args.per_class or r["class_index"] is None or r["significant"]]))
    for exc in problems:
        problem(str(exc))
    if problems:
        return max(exc.exit_code for exc in problems)
    return REGRESSED if args.fail_on_regression and regressions(rows) else 0


def best_command(args: argparse.Namespace) -> int:
    from casflow.storage import results

    store = _store(args)
    runs = results.run_ids(store)
    if args.run and args.run not in runs:
        raise CommandError(f"no run {args.run} in {store.url} (`cas results --list` lists them)")
    run_id = args.run or next((r for r in reversed(runs) if _read_best(store, r)), None)
    rows = _read_best(store, run_id) if run_id else []
    if args.series:
        rows = [r for r in rows if r["series"] == args.series]
    if not rows:
        series = f"series '{args.series}'" if args.series else "series"
        problem(f"no {series} in {'run ' + run_id if run_id else 'any run'} of {store.url}")
        return FAILED
    if args.json:
        say(json.dumps([r | {"run_time": r["run_time"].isoformat()} for r in rows], indent=1))
        return 0
    say(f"run {run_id}  store {store.url}")
    say(render_series(rows))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from casflow.flows import reporting
    from casflow.storage import results

    store = _store(args)
    runs = results.run_ids(store)
    if args.run and args.run not in runs:
        raise CommandError(f"no run {args.run} in {store.url} (`cas results --list` lists them)")
    if not runs:
        problem(f"no results in {store.url}")
        return FAILED
    uri, page = reporting.write_report(store, args.run or runs[-1])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page)
        say(args.out)
    say(uri)
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from casflow.storage import verify

    store = _store(args)
    why = store.not_a_store()
    if why:
        raise CommandError(f"{store.url}: not a casflow store ({why}); nothing to verify")
    findings = verify.verify(store, full=not args.quick)
    what = "sizes and commit markers" if args.quick else "sizes, commit markers and every sha256"
    if not findings:
        say(f"{store.url}: nothing wrong ({what} checked)")
        return 0
    say(verify.render(store, findings))
    if not args.fix:
        say(f"\n{len(findings)} problem(s); `cas verify --fix` removes what the next run rebuilds")
        return FAILED
    removed = verify.repair(store, findings)
    kept = [f for f in findings if not f.repair]
    say(f"\nremoved {len(removed)}; the next run rebuilds them" + (f"; {len(kept)} left to you" if kept else ""))
    return FAILED if kept else 0


# ---------------------------------------------------------------- the command line

class _AtMostTwo(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            parser.error("compare takes at most two runs")
        setattr(namespace, self.dest, values)


def parser() -> argparse.ArgumentParser:
    cas = argparse.ArgumentParser(prog="cas", description="Classification Accuracy Score for conditional generative models")
    sub = cas.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="evaluate five generators on the embedded digits data")
    demo.set_defaults(func=demo_command)
    demo.add_argument("--store", help="store URL (default ./casflow-store)")
    run_cmd = sub.add_parser("run", help="evaluate the models of a config file")
    run_cmd.set_defaults(func=run_command)
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

    plan_cmd = sub.add_parser("plan", help="what a run of a config would compute, how long it would take, what it would write")
    plan_cmd.set_defaults(func=plan_command)
    plan_cmd.add_argument("config")
    plan_cmd.add_argument("--store", help="override store.url")
    plan_cmd.add_argument("--json", action="store_true", help="print the plan as JSON (README: cas plan)")
    plan_cmd.add_argument("--assume-dataset", metavar="SIZES",
                          help="plan a dataset not sharded yet (its files need not be here) with these sizes: "
                               "train=N,eval=N,classes=N,size=HxWxC")
    plan_cmd.add_argument("--gpus", type=int, metavar="N",
                          help="plan lanes of N GPUs at the default GPU rates instead of this machine's devices")

    def reading(name: str, func, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help)
        command.set_defaults(func=func)
        command.add_argument("--config", help="read the store URL and credentials from this config")
        command.add_argument("--store", help="store URL (default ./casflow-store)")
        return command

    res = reading("results", results_command, "print a run's results (default: the latest)")
    res.add_argument("--run", help="run id (default: the latest)")
    res.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    res.add_argument("--model", help="only this model")
    res.add_argument("--list", action="store_true", help="list run ids, oldest first")
    cmp = reading("compare", compare_command, "paired comparison of two runs (default: the latest two)")
    cmp.add_argument("runs", nargs="*", metavar="RUN", action=_AtMostTwo,
                     help="RUN_A RUN_B (before, after); one: it against the latest")
    cmp.add_argument("--model", help="only this model")
    cmp.add_argument("--per-class", action="store_true", help="every class, not only those that changed significantly")
    cmp.add_argument("--fail-on-regression", action="store_true", help="exit 3 when a model got significantly worse")
    ver = reading("verify", verify_command, "check every committed object on the store against its commit marker")
    ver.add_argument("--quick", action="store_true", help="sizes and markers only, no sha256 of shards")
    ver.add_argument("--fix", action="store_true", help="remove what the next run can rebuild")
    best = reading("best", best_command, "each series' best checkpoints (default: the latest run with a series)")
    best.add_argument("--run", help="run id (default: the latest run with a series)")
    best.add_argument("--series", help="only this series")
    best.add_argument("--json", action="store_true", help="print the best table's rows as JSON")
    rep = reading("report", report_command, "write a run's HTML report to the store (and to --out)")
    rep.add_argument("--run", help="run id (default: the latest)")
    rep.add_argument("--out", help="also write the page to this file")
    return cas


def main(argv: list[str] | None = None) -> int:
    """The `cas` command (`argv` None: the process's arguments, and the process ends here, `lifecycle.end`);
    with `argv`, the exit status is returned."""
    args = parser().parse_args(argv)
    return lifecycle.end(lifecycle.guarded(lambda: _dispatch(args)), argv)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except CasError as exc:
        problem(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        raise  # stdout's reader went away: `lifecycle.guarded`'s to end quietly
    except OSError as exc:  # an I/O failure: a file or object that could not be read or written
        problem(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc) or type(exc).__name__)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
