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

import contextvars
import functools
import inspect
import logging
import threading
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
from casflow.tasks.config import Config
from casflow.tasks.devices import visible_devices
from casflow.tasks.results import RunInfo, regressions

# casflow's loggers reach Prefect's handlers through PREFECT_LOGGING_EXTRA_LOGGERS=casflow
# (set by the `cas` command and in prefect.yaml); their level is ours to set.
logging.getLogger("casflow").setLevel(logging.INFO)
log = logging.getLogger("casflow.pipeline")

DEMO_CONFIG = str(Path(__file__).with_name("demo.yaml"))
RETRY_DELAYS = [2, 5, 15]


def _retry_if_transient(task: Any, task_run: Any, state: State) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def _cached_state(record: Any) -> Any:
    """Mark cache hits in Prefect's UI and logs, with the record as the result."""
    return Completed(data=record, name="Cached", message="committed on the store") if record.cached else record


class StepTimeLimit(RuntimeError):
    """A step ran past `limits.step_seconds` (not a TimeoutError: that would be retried as transient)."""


def _within_time_limit(seconds: float, step: str, fn, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), given up after `seconds`: user code (a sample() that never returns, a read that
    never ends) cannot be interrupted from outside, so it runs in a daemon thread that is abandoned at the
    limit. It commits nothing half-written if it ever finishes (every write is atomic, markers last), and
    it ends with the process."""
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()  # Prefect's run context: the step's logs stay with its task run

    def run() -> None:
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread as is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"casflow-{step}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise StepTimeLimit(f"{step} did not finish within limits.step_seconds = {seconds:g} s; "
                            "it was given up and its device went on with the next model")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _step(fn, name: str, retries: int = 3, run_name: str | None = None):
    signature = inspect.signature(fn)

    @functools.wraps(fn)  # keeps the signature: Prefect binds parameters by name
    def body(*args: Any, **kwargs: Any) -> Any:
        config = signature.bind(*args, **kwargs).arguments["config"]
        return _cached_state(_within_time_limit(config.limits.step_seconds, name, fn, *args, **kwargs))

    return task(name=name, task_run_name=run_name, retries=retries, retry_delay_seconds=RETRY_DELAYS,
                retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(body)


verify_store = task(name="verify-store", retries=3, retry_delay_seconds=RETRY_DELAYS,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.verify_store)
prepare_dataset = _step(steps.prepare_dataset, "prepare-dataset")
draw_samples = _step(steps.draw_samples, "draw-samples", run_name="samples-{model.name}")
train_classifier = _step(steps.train_classifier, "train-classifier", run_name="train-{samples.model}-seed{seed}")
score_samples = _step(steps.score_samples, "score-samples", run_name="scores-{samples.model}")
evaluate_classifier = _step(steps.evaluate_classifier, "evaluate", run_name="evaluate-{classifier.model}-seed{classifier.seed}")
write_results = task(name="write-results", retries=3, retry_delay_seconds=RETRY_DELAYS,
                     retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.write_results)
write_report = task(name="write-report", retries=3, retry_delay_seconds=RETRY_DELAYS,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(steps.write_report)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _settle(config: Config, futures: dict[str, list[PrefectFuture]]) -> dict[str, tuple[list, str | None]]:
    """Each model's records (samples; a classifier and an evaluation per seed; the same per NAS ratio),
    or the first step's error, named."""
    settled = {}
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
        settled[model.name] = records, error
    return settled


def _score(config: Config, store: Any, dataset: Any, lanes: dict[str, str], settled: dict[str, tuple[list, str | None]]) -> dict:
    """Scores beside CAS for every model that finished, in the real baseline's classifier (its first seed).
    Without that classifier there is nothing to score with: said once, the columns stay empty, the run goes on."""
    spec = config.scores
    if not (spec.gan_test or spec.features or spec.memorization):
        return {}
    real_records, real_error = settled[config.baseline.name]
    if real_error is not None:
        log.warning("no scores beside CAS in this run: the real baseline '%s' failed, and GAN-test and the feature "
                    "scores need its classifier", config.baseline.name)
        return {}
    futures = {name: score_samples.submit(config, store, records[0], real_records[1], dataset, lanes[name])
               for name, (records, error) in settled.items() if error is None}
    scored = {}
    for name, future in futures.items():
        future.wait()
        if future.state.is_completed():
            scored[name] = future.result()
        else:
            log.warning("model %s: no scores beside CAS: %s", name, future.result(raise_on_failure=False))
    return scored


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
    lanes = placement.assign_lanes([m.name for m in models], visible_devices(config.classifier.device, _cuda_count()))
    futures: dict[str, list[PrefectFuture]] = {}
    lane_tail: dict[str, PrefectFuture] = {}
    for model in models:  # within a lane, one step after another: each device works on one model at a time
        device = lanes[model.name]
        after = [allow_failure(lane_tail[device])] if device in lane_tail else []
        chain = [draw_samples.submit(config, store, model, dataset, device, wait_for=after)]
        for seed in config.classifier_seeds:
            classifier = train_classifier.submit(config, store, chain[0], dataset, device, seed, wait_for=chain[-1:])
            chain += [classifier, evaluate_classifier.submit(config, store, classifier, dataset, device)]
        for ratio in config.scores.augmentation if model.generator.kind != "real" else ():
            classifier = train_classifier.submit(config, store, chain[0], dataset, device, config.classifier_seeds[0], ratio,
                                                 wait_for=chain[-1:])
            chain += [classifier, evaluate_classifier.submit(config, store, classifier, dataset, device)]
        futures[model.name] = chain
        lane_tail[device] = chain[-1]

    settled = _settle(config, futures)
    scored = _score(config, store, dataset, lanes, settled)
    seeds = len(config.classifier_seeds)
    outcomes = [steps.outcome(model, records[0] if records else None, records[1 : 1 + 2 * seeds : 2],
                              records[2 : 2 + 2 * seeds : 2], error, augmented=records[2 + 2 * seeds :: 2],
                              sample_scores=scored.get(model.name))
                for model in models for records, error in [settled[model.name]]]
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
