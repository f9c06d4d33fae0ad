"""casflow in a notebook: `evaluate(config)` runs the flow `cas run` runs and returns its tables as pandas
DataFrames; `results(store, run)` reads a stored run the same way.

Nothing heavy is imported at module level: `import casflow` stays cheap for the `cas` command, which
imports this package first.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casflow.tasks.exits import FAILED, USAGE, CasError

if TYPE_CHECKING:
    import pandas as pd

    from casflow.storage.store import Store
    from casflow.tasks.config import Config

# The best-checkpoint table's columns on a store that has none yet (the `best` table is written by runs of
# a casflow that has it; older stores lack it): an empty DataFrame with these columns.
BEST_KEYS = ("run_id", "run_time", "dataset", "recipe", "model")


class UnknownRun(CasError, LookupError):
    """A run id the store does not hold; the message names the store and the nearest runs it does hold."""

    exit_code = USAGE


class NoResults(CasError, LookupError):
    """A store without a committed run."""

    exit_code = FAILED


@dataclass(frozen=True, eq=False)  # DataFrames have no truth value: compare the tables, not the objects
class Results:
    """One run's results: `summary` (one row per model), `per_class` (per model and class), `changes`
    (against each model's previous run, overall and per class) and `best` (the best checkpoint per model;
    empty with the columns BEST_KEYS where the store has no such table), with the columns of the
    README's "Results for data engineering"; `report` is the URI of the run's HTML report (None when the
    run wrote none)."""

    run_id: str
    store: str
    summary: pd.DataFrame
    per_class: pd.DataFrame
    changes: pd.DataFrame
    best: pd.DataFrame
    report: str | None

    def __repr__(self) -> str:  # the tables are the attributes to look at; a repr of all four would fill a notebook
        return (f"Results(run_id={self.run_id!r}, store={self.store!r}, models={list(self.summary['model'])}, "
                f"report={self.report!r})")


def evaluate(config: str | os.PathLike | dict | Config, *, store: str | None = None, temporary_server: bool = False) -> Results:
    """Evaluate every model of a config by CAS, as `cas run` does: the same flow, the same store, the same
    cache (a second call with the same config recomputes nothing), on the same Prefect server (a running
    one, else a temporary one for this call; `temporary_server` forces one). `config` is a YAML file's
    path, a dict of the same shape, or a `Config`; `store` overrides `store.url`.

    A config that cannot run raises ConfigError before anything starts; a run that stops before its results
    (a dataset that cannot be used) raises its error. A model that fails does not: its summary row says
    `failed` with the error, the others are scored, and a warning names it."""
    from casflow.flows import server, steps

    server.prefect_environment()
    with _config_file(config) as config_path:
        parsed = steps.read_config(config_path, store)  # a bad config fails here, before Prefect starts
        report = _run_flow(config_path, store, temporary_server)
    failed = {model: status for model, status in report["models"].items() if status != "ok"}
    if failed:
        warnings.warn(f"{len(failed)} of {len(report['models'])} models failed: " + "; ".join(failed.values()), stacklevel=2)
    return _read_run(steps.open_store(parsed.store), report["run_id"], report["report"])


def results(store: str | os.PathLike, run: str | None = None) -> Results:
    """A stored run's results (`run` None: the latest run), as `evaluate` returns them. `store` is a local
    folder or an s3:// URL (credentials and endpoint from the AWS_* environment). An unknown run raises
    UnknownRun naming the nearest runs the store holds; a store without runs, NoResults."""
    from casflow.storage.store import Store, s3_options

    return _read_run(Store(os.fspath(store), s3=s3_options()), run)


# ---------------------------------------------------------------- helpers

@contextlib.contextmanager
def _config_file(config: Any) -> Iterator[str]:
    """The path of a config file: the path given, or a dict or Config written to a temporary YAML file
    for the flow (which reads a config from a file, as a deployment does), removed afterwards. A dict
    that is no valid config fails here, its errors naming `evaluate(config)`."""
    from casflow.tasks.config import parse_config

    if isinstance(config, (str, os.PathLike)):
        yield os.fspath(config)
        return
    text = _yaml(config)
    parse_config(text, source="evaluate(config)")
    with tempfile.TemporaryDirectory(prefix="casflow-evaluate-") as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        yield str(path)


def _yaml(config: dict | Config) -> str:
    """A dict or Config as the YAML text of a config file (a Config's credentials written out: the file is
    this process's own and removed after the run)."""
    import yaml

    from casflow.tasks.config import Config

    if isinstance(config, Config):
        raw = config.model_dump(mode="json", exclude_unset=True)
        for key in ("access_key_id", "secret_access_key"):
            secret = getattr(config.store, key)
            if secret is not None:
                raw["store"][key] = secret.get_secret_value()
        config = raw
    if not isinstance(config, dict):
        raise TypeError(f"evaluate(config): expected a config file's path, a dict or a Config, got {type(config).__name__}")
    return yaml.safe_dump(config, sort_keys=False)


def _run_flow(config_path: str, store_url: str | None, temporary_server: bool) -> dict:
    """The `cas-evaluation` flow on a Prefect server (`flows.server.RunServer`); its report."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from casflow.flows import lifecycle
    from casflow.flows.pipeline import cas_evaluation
    from casflow.flows.server import RunServer

    run_server = RunServer(temporary_server)
    try:
        with temporary_settings({PREFECT_API_URL: run_server.api_url()}):
            state = cas_evaluation(config_path, store_url, return_state=True)
            lifecycle.drain_prefect()  # the run's last logs reach the server before a temporary one stops
    finally:
        run_server.close()
    report = state.result(raise_on_failure=False)
    if isinstance(report, BaseException):
        raise report
    if not isinstance(report, dict):
        raise RuntimeError(f"the run failed before writing results: {report}")
    return report


def _read_run(store: Store, run_id: str | None, report: str | None = None) -> Results:
    from casflow.storage import results as tables

    runs = tables.run_ids(store)
    if run_id is not None and run_id not in runs:
        nearest = difflib.get_close_matches(run_id, runs, n=3, cutoff=0) or runs[-3:]
        raise UnknownRun(f"no run {run_id} in {store.url}; nearest: {', '.join(nearest) or 'none (no runs)'}")
    if not runs:
        why = store.not_a_store()
        raise NoResults(f"no results in {store.url}" + (f" ({why})" if why else ""))
    run_id = run_id or runs[-1]
    if report is None and store.exists(store.report_location(run_id)):
        report = store.uri(store.report_location(run_id))
    return Results(run_id=run_id, store=store.url, summary=_table(store, "summary", run_id),
                   per_class=_table(store, "per_class", run_id), changes=_table(store, "changes", run_id),
                   best=_table(store, "best", run_id), report=report)


def _table(store: Store, table: str, run_id: str) -> pd.DataFrame:
    """One run's rows of a results table; a table the run did not write (a run before the `best` table
    existed, a store of a casflow without it) is empty, with the table's columns."""
    import pandas as pd

    from casflow.storage import results as tables

    if table not in tables.TABLES:
        return pd.DataFrame(columns=list(BEST_KEYS))
    try:
        return tables.read_run(store, table, run_id).to_pandas()
    except FileNotFoundError:
        return tables.TABLES[table].empty_table().to_pandas()
