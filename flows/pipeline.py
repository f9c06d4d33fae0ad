"""The CAS evaluation flow: real shards, then per model samples -> classifier
-> evaluation, then results. Thin wiring over `flows.steps`.

Caching: each step's output is committed on the store under its content
fingerprint and a step whose output is committed returns at once (its task
run ends in a state named `Cached`). The store is the only cache: it works
across processes, machines and Prefect databases, and it cannot disagree
with the artifacts. Prefect's own result cache is off (NO_CACHE), since its
default policy keys on the run id and would be a second, stale copy.

Retries: store I/O failures that look transient (connection refused,
timeouts) are retried at 2, 5 and 15 s; bad input and a full disk never are.
Training is retried only for such store failures, never for its own errors.
A store that does not answer the first request of a run (`Store.probe`)
fails the run at once instead: long retries are for a store that answered.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from prefect import allow_failure, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from casflow.flows import artifacts, placement, steps
from casflow.storage.store import is_transient
from casflow.tasks import devices
from casflow.tasks.config import Config
from casflow.tasks.results import RunInfo, regressions

# casflow's loggers reach Prefect's handlers through PREFECT_LOGGING_EXTRA_LOGGERS=casflow
# (set by the `cas` command and in prefect.yaml); their level is ours to set.
logging.getLogger("casflow").setLevel(logging.INFO)

DEMO_CONFIG = str(Path(__file__).with_name("demo.yaml"))
RETRY_DELAYS = [2, 5, 15]


def _retry_if_transient(task: Any, task_run: Any, state: State) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def _cached_state(record: Any) -> Any:
    """Mark cache hits in Prefect's UI and logs, with the record as the result."""
    return Completed(data=record, name="Cached", message="committed on the store") if record.cached else record


def _step(fn, name: str, retries: int = 3, run_name: str | None = None):
    @functools.wraps(fn)  # keeps the signature: Prefect binds parameters by name
    def body(*args: Any, **kwargs: Any) -> Any:
        return _cached_state(fn(*args, **kwargs))

    return task(name=name, task_run_name=run_name, retries=retries, retry_delay_seconds=RETRY_DELAYS,
                retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(body)


verify_store = task(name="verify-store", retries=3, retry_delay_seconds=RETRY_DELAYS,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.verify_store)
prepare_dataset = _step(steps.prepare_dataset, "prepare-dataset")
draw_samples = _step(steps.draw_samples, "draw-samples", run_name="samples-{model.name}")
train_classifier = _step(steps.train_classifier, "train-classifier", run_name="train-{samples.model}-seed{seed}")
evaluate_classifier = _step(steps.evaluate_classifier, "evaluate", run_name="evaluate-{classifier.model}-seed{classifier.seed}")
write_results = task(name="write-results", retries=3, retry_delay_seconds=RETRY_DELAYS,
                     retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.write_results)
write_report = task(name="write-report", retries=3, retry_delay_seconds=RETRY_DELAYS,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.write_report)


def _cuda_count(spec: str) -> int:
    """The GPUs this process sees, when `spec` may use one; torch is imported only where one may be."""
    if devices.parse(spec) == ["cpu"] or not devices.may_have_gpus():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _settle(config: Config, futures: dict[str, list[PrefectFuture]]) -> list:
    """Each model's outcome: its records (samples, then a classifier and an evaluation per seed),
    or the first step's error, named."""
    outcomes = []
    for model in config.all_models:
        records, error = [], None
        for future in futures[model.name]:
            future.wait()
            if future.state.is_completed():
                records.append(future.result())
                continue
            if future.state.is_failed() or future.state.is_crashed():
                exc = future.result(raise_on_failure=False)
                error = steps.describe_failure(model.name, exc if isinstance(exc, BaseException) else RuntimeError(str(exc)))
            break  # a step that did not run because an earlier one failed
        if error is None and len(records) < len(futures[model.name]):
            error = f"model '{model.name}': did not finish"
        samples = records[0] if records else None
        outcomes.append(steps.outcome(model, samples, records[1::2], records[2::2], error=error))
    return outcomes


@flow(name="cas-evaluation", task_runner=ThreadPoolTaskRunner(max_workers=8))
def cas_evaluation(config_path: str = DEMO_CONFIG, store_url: str | None = None,
                   verify: Literal["off", "quick", "full"] = "off") -> Any:
    """Evaluate every model of a config by CAS and append the results to the store.

    `verify` quick or full first checks every committed object on the store (`cas verify`) and
    removes what this run can rebuild; the nightly deployment runs it full."""
    config = steps.read_config(config_path, store_url)
    store = steps.open_store(config.store)
    store.probe()  # a store that never answers fails here, in about 30 s, naming its endpoint
    if verify != "off":
        verify_store(store, verify)
    started = datetime.now(timezone.utc)
    flow_run_id = flow_run.get_id()
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{(flow_run_id or uuid.uuid4().hex)[:8]}"

    dataset = prepare_dataset.submit(config, store).result()
    models = config.all_models
    spec = config.classifier.device
    lanes = placement.assign_lanes([m.name for m in models], devices.visible_devices(spec, _cuda_count(spec)))
    futures: dict[str, list[PrefectFuture]] = {}
    lane_tail: dict[str, PrefectFuture] = {}
    for model in models:  # within a lane, one step after another: each device works on one model at a time
        device = lanes[model.name]
        after = [allow_failure(lane_tail[device])] if device in lane_tail else []
        chain = [draw_samples.submit(config, store, model, dataset, device, wait_for=after)]
        for seed in config.classifier_seeds:
            classifier = train_classifier.submit(config, store, chain[0], dataset, device, seed, wait_for=chain[-1:])
            chain += [classifier, evaluate_classifier.submit(config, store, classifier, dataset, device)]
        futures[model.name] = chain
        lane_tail[device] = chain[-1]

    outcomes = _settle(config, futures)
    recipe = config.classifier.resolved
    run = RunInfo(run_id, started, flow_run_id, dataset.name, dataset.fingerprint, dataset.class_names,
                  recipe.name, recipe.fingerprint, config.seed, config.classifier_seeds)
    record = write_results(store, run, outcomes, config.baseline.name)
    report_state = write_report(store, run_id, return_state=True)  # the results are whole without it
    report_uri = report_state.result()[0] if report_state.is_completed() else None
    artifacts.publish(record, outcomes, dataset.class_names, report_uri)
    report = {"run_id": run_id, "store": store.url, "summary": record.summary_uri, "per_class": record.per_class_uri,
              "changes": record.changes_uri, "report": report_uri,
              "models": {o.model: ("ok" if o.ok else o.error) for o in outcomes},
              "regressions": [f"{r['model']}" + ("" if r["class_index"] is None else f" class {r['class_name']}")
                              for r in regressions(record.changes)]}
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return Failed(message=f"{len(failed)} of {len(outcomes)} models failed: "
                              + "; ".join(o.error for o in failed), data=report)
    return report
