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

import dataclasses
import functools
import inspect
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from prefect import allow_failure, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run, task_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from casflow.flows import artifacts, lifecycle, placement, plan, reporting, steps
from casflow.flows.records import ModelChain
from casflow.storage.store import is_transient
from casflow.tasks import devices, race
from casflow.tasks.config import Config, with_checkpoints, without_credentials
from casflow.tasks.errors import InputError
from casflow.tasks.results import RunInfo, regressions, unknowns

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
    """fn(*args, **kwargs), given up after `seconds` (`lifecycle.in_thread`: user code such as a sample()
    that never returns cannot be interrupted, so it is abandoned at the limit)."""
    try:
        return lifecycle.in_thread(functools.partial(fn, *args, **kwargs), f"casflow-{step}", seconds)
    except lifecycle.DeadlinePassed:
        raise StepTimeLimit(f"{step} did not finish within limits.step_seconds = {seconds:g} s; "
                            "it was given up and its device went on with the next model") from None


def _step(fn, name: str, retries: int = 3, run_name: str | None = None):
    """A step as a Prefect task, tagged `step:<name>`: a fanned-out model's task runs are told apart by it."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)  # keeps the signature: Prefect binds parameters by name
    def body(*args: Any, **kwargs: Any) -> Any:
        config = signature.bind(*args, **kwargs).arguments["config"]
        record = _within_time_limit(config.limits.step_seconds, name, fn, *args, **kwargs)
        _log_memory(name if run_name is None else task_run.name)  # Prefect's default run names end in a random tag
        return _cached_state(record)

    return task(name=name, task_run_name=run_name, retries=retries, retry_delay_seconds=RETRY_DELAYS,
                retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE, tags=[f"step:{name}"])(body)


def _log_memory(step: str) -> None:
    """The process's peak and current resident memory after a step (which step raised the peak shows in the
    log), before and after handing back what the step freed."""
    before = lifecycle.memory_mb()
    lifecycle.release_freed_memory()
    after = lifecycle.memory_mb()
    if before is not None and after is not None:
        log.info("%s: done; process memory peak %.0f MB, now %.0f MB (%.0f MB after handing back freed memory)",
                 step, before[0], before[1], after[1])


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
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)(reporting.write_report)


def _plan(config: Config, store: Any, config_path: str) -> plan.Plan | None:
    """The run's plan, logged as its one-line total, for the estimated-against-measured lines at the end;
    None when it cannot be made (a plan never fails a run)."""
    try:
        run_plan = plan.make_plan(config, store, config_path)
    except Exception as exc:  # noqa: BLE001 (an estimate, never a reason to stop)
        log.warning(f"no plan for this run: {exc}")
        return None
    log.info(plan.one_line_total(run_plan))
    return run_plan


def _cuda_count(spec: str) -> int:
    """The GPUs this process sees, when `spec` may use one; torch is imported only where one may be."""
    if devices.parse(spec) == ["cpu"] or not devices.may_have_gpus():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


Settled = tuple[ModelChain | None, str | None]  # a model's records (None where a step did not finish), its error


def _score(config: Config, store: Any, dataset: Any, lanes: dict[str, str], settled: dict[str, Settled]) -> dict:
    """Scores beside CAS for every model that finished, in the real baseline's classifier (its first seed).
    Without that classifier there is nothing to score with: said once, the columns stay empty, the run goes on."""
    spec = config.scores
    if not (spec.gan_test or spec.features or spec.memorization):
        return {}
    real_chain, real_error = settled[config.baseline.name]
    if real_error is not None:
        log.warning("no scores beside CAS in this run: the real baseline '%s' failed, and GAN-test and the feature "
                    "scores need its classifier", config.baseline.name)
        return {}
    futures, lane_tail = {}, {}
    for name, (chain, error) in settled.items():  # within a lane one model at a time, as the other steps
        if error is None:
            after = [allow_failure(lane_tail[lanes[name]])] if lanes[name] in lane_tail else []
            futures[name] = lane_tail[lanes[name]] = score_samples.submit(
                config, store, chain.samples, real_chain.classifiers[0], dataset, lanes[name], wait_for=after)
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
                   verify: Literal["off", "quick", "full"] = "off", model_deployment: str | None = None,
                   checkpoints: dict[str, str] | None = None) -> Any:
    """Evaluate every model of a config by CAS and append the results to the store.

    `verify` quick or full first checks every committed object on the store (`cas verify`) and
    removes what this run can rebuild; the nightly deployment runs it full.

    `model_deployment` ("cas-model/<deployment>") fans the models out: each model's chain runs as a
    flow run of that deployment, picked up by the workers of its work pool (one per GPU machine, or
    one per GPU), all side by side. What they compute is committed on the shared store; this flow then
    reads it from there (every step a cache hit), scores the models and writes the results. Without it
    every model runs in this process, one lane per visible GPU.

    `checkpoints` (model name -> checkpoint path or store URL) evaluates those `python` models of the
    config with these checkpoints instead of their configured ones, under the same names, so each is
    judged against its previous run (`casflow.submit_checkpoint` sends it from a training script)."""
    lifecycle.map_large_blocks()  # the scores step's tiles, in this process
    config_text = with_checkpoints(steps.read_config_text(config_path), checkpoints or {}, config_path)
    config = steps.config_from_text(config_text, config_path, store_url)
    store = steps.open_store(config.store)
    store.probe()  # a store that never answers fails here, in about 30 s, naming its endpoint
    if verify != "off":
        verify_store(store, verify)
    started = datetime.now(timezone.utc)
    flow_run_id = flow_run.get_id()
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{(flow_run_id or uuid.uuid4().hex)[:8]}"

    try:
        dataset = prepare_dataset.submit(config, store).result()
    except InputError as exc:  # a dataset that cannot be used (a class without eval images, ...): its one line,
        return Failed(message=str(exc), data=exc)  # no traceback; `cas run` prints it (the state's result)
    run_plan = _plan(config, store, config_path)
    models = config.all_models
    remote, remote_errors = _fan_out(model_deployment, config_text, config_path, store_url, config) if model_deployment else ({}, {})
    spec = config.classifier.device
    lanes = placement.assign_lanes([m.name for m in models], devices.visible_devices(spec, _cuda_count(spec)))
    futures: dict[str, ModelChain[PrefectFuture]] = {}
    lane_tail: dict[str, PrefectFuture] = {}
    for model in models:  # within a lane, one step after another: each device works on one model at a time
        if model.name in remote_errors:
            continue
        device = lanes[model.name]
        after = [allow_failure(lane_tail[device])] if device in lane_tail else []
        futures[model.name] = _submit_chain(config, store, model, dataset, device, after)
        lane_tail[device] = futures[model.name].steps()[-1]

    recipe = config.classifier.resolved
    run = RunInfo(run_id, started, flow_run_id, dataset.name, dataset.fingerprint, dataset.class_names,
                  recipe.name, recipe.fingerprint, config.seed, config.classifier_seeds)
    remote_round = functools.partial(_fan_out_round, model_deployment, config_text, config_path, store_url,
                                     config) if model_deployment else None
    futures, seeds_stopped, round_errors = _rounds(config, store, dataset, run, lanes, lane_tail, futures, remote_round)
    settled = {name: _settle_chain(name, chain) for name, chain in futures.items()}
    settled |= {name: (settled[name][0], error) for name, error in round_errors.items()}
    settled |= {name: (None, error) for name, error in remote_errors.items()}
    scored = _score(config, store, dataset, lanes, settled)
    if run_plan is not None:
        for line in plan.compare_with_plan(run_plan, {name: chain for name, (chain, _) in settled.items()}, scored):
            log.info(line)
    outcomes = [steps.outcome(model, chain, error, sample_scores=scored.get(model.name),
                              seeds_stopped=seeds_stopped.get(model.name))
                for model in models for chain, error in [settled[model.name]]]
    # fanned-out models were computed by their flow runs: what they found cached and how long sampling took
    outcomes = [dataclasses.replace(o, **remote[o.model]) if o.model in remote else o for o in outcomes]
    races = {m.series_name: m.race_max_seeds for m in models if config.race_seeds(m)}
    seed_range = (config.seed_range.min, config.seed_range.max) if config.seed_range else None
    record = write_results(store, run, outcomes, config.baseline.name, races, seed_range)
    report_state = write_report(store, run_id, return_state=True)  # the results are whole without it
    report_uri = report_state.result()[0] if report_state.is_completed() else None
    artifacts.publish(record, outcomes, dataset.class_names, report_uri)
    report = {"run_id": run_id, "store": store.url, "summary": record.summary_uri, "per_class": record.per_class_uri,
              "changes": record.changes_uri, "best": record.best_uri, "report": report_uri,
              "models": {o.model: ("ok" if o.ok else o.error) for o in outcomes},
              "regressions": [f"{r['model']}" + ("" if r["class_index"] is None else f" class {r['class_name']}")
                              for r in regressions(record.changes)],
              "unknown": [r["model"] for r in unknowns(record.changes)]}
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return Failed(message=f"{len(failed)} of {len(outcomes)} models failed: "
                              + "; ".join(o.error for o in failed), data=report)
    return report


@flow(name="cas-model", task_runner=ThreadPoolTaskRunner(max_workers=4))
def cas_model(config_yaml: str, model_name: str, source: str = "config", store_url: str | None = None,
              seeds: list[int] | None = None) -> Any:
    """One model's chain on the worker that picked this flow run up (the fan-out of `cas_evaluation`):
    its samples, a classifier and an evaluation per classifier seed, and the Naive Augmentation Score's
    classifiers, each committed on the shared store. The config comes as YAML text: the worker needs the
    store, not the parent's files. It trains on the first device `classifier.device` names here: give
    each worker its own GPU (CUDA_VISIBLE_DEVICES) and a concurrency limit of 1. With `seeds`, only the
    classifiers and evaluations of those seeds: a later round's (adaptive seeds, a race)."""
    config = steps.config_from_text(config_yaml, source, store_url)
    store = steps.open_store(config.store)
    store.probe()
    model = next((m for m in config.all_models if m.name == model_name), None)
    if model is None:
        return Failed(message=f"model '{model_name}': not in the config {source}")
    dataset = prepare_dataset.submit(config, store).result()  # committed by the parent run: a cache hit
    spec = config.classifier.device
    device = devices.visible_devices(spec, _cuda_count(spec))[0]
    chain = _submit_chain(config, store, model, dataset, device, after=[], seeds=tuple(seeds) if seeds else None)
    _, error = _settle_chain(model.name, chain)
    if error is not None:
        return Failed(message=error)
    return {"model": model_name, "device": device, "steps": len(chain.steps())}


def _submit_chain(config: Config, store: Any, model: Any, dataset: Any, device: str, after: list,
                  seeds: tuple[int, ...] | None = None) -> ModelChain[PrefectFuture]:
    """One model's steps on one device, one after another: samples; a classifier and an evaluation per
    seed of its first round (config.first_seeds); the same per Naive Augmentation Score ratio (not for the
    real baseline). With `seeds`: samples and those seeds' pairs only (a later round on a model flow run)."""
    samples = draw_samples.submit(config, store, model, dataset, device, wait_for=after)
    last = samples

    def train_and_evaluate(seed: int, ratio: float | None = None) -> tuple[PrefectFuture, PrefectFuture]:
        nonlocal last
        classifier = train_classifier.submit(config, store, samples, dataset, device, seed, ratio, wait_for=[last])
        last = evaluate_classifier.submit(config, store, classifier, dataset, device)
        return classifier, last

    pairs = tuple(train_and_evaluate(seed) for seed in (seeds or config.first_seeds(model)))  # _rounds gives more
    return ModelChain(samples, pairs, () if seeds else tuple(train_and_evaluate(config.classifier_seeds[0], ratio)
                                                             for ratio in config.augmentation_ratios(model)))


def _rounds(config: Config, store: Any, dataset: Any, run: RunInfo, lanes: dict[str, str],
            lane_tail: dict[str, PrefectFuture], futures: dict[str, ModelChain[PrefectFuture]],
            remote: Any) -> tuple[dict[str, ModelChain[PrefectFuture]], dict[str, str], dict[str, str]]:
    """The later rounds of classifier seeds, with `classifier.seeds: {min, max}`. A racing series (selection:
    race): after each round the checkpoints significantly worse than the leader leave (tasks/race.judge),
    and the contenders get their next seed. Any other model: after each seed, tasks/seeds.decide judges it
    against its previous run, and a model whose comparison is not settled gets its next seed. Each round's
    seeds train where the first round's did: on the model deployment (`remote`: the (model, seed) pairs ->
    the errors of those that failed there, then found on the store here), else on the models' lanes.
    A model whose steps failed leaves its rounds. Returns the chains with the seeds they got, why each
    adaptive model stopped, and the errors of the models whose later seeds failed on the deployment."""
    if config.seed_range is None:
        return futures, {}, {}
    bounds = (config.seed_range.min, config.seed_range.max)
    racing: dict[str, list[Any]] = {}
    adaptive = []
    for model in config.all_models:
        if model.name in futures:
            (racing.setdefault(model.series_name, []) if config.race_seeds(model) else adaptive).append(model)
    contenders = {series: list(models) for series, models in racing.items()}
    history = steps.summary_history(store) if adaptive else []
    stopped: dict[str, str] = {}
    errors: dict[str, str] = {}
    while True:
        wanted: list[tuple[Any, int]] = []
        for series, models in list(contenders.items()):
            judged = {m.step: _correctness(store, futures[m.name]) for m in models}
            judged = {step: correct for step, correct in judged.items() if correct is not None}
            if not judged:
                del contenders[series]
                continue
            judgement = race.judge(judged, models[0].race_max_seeds)
            log.info("series %s, round %d: leader step %s, dropped %s, contenders %s%s", series,
                     max(c.shape[0] for c in judged.values()), judgement.leader, list(judgement.dropped) or "none",
                     list(judgement.contenders), f"; stop: {judgement.stop}" if judgement.stop else "")
            if judgement.stop:
                del contenders[series]
                continue
            contenders[series] = [m for m in models if m.step in judgement.contenders]
            wanted += [(m, config.race_seeds(m)[len(futures[m.name].seeds)]) for m in contenders[series]]
        for model in list(adaptive):
            correct = _correctness(store, futures[model.name])
            if correct is None:
                adaptive.remove(model)
                continue
            current = {"model": model.name, "dataset_fingerprint": run.dataset_fingerprint,
                       "recipe_fingerprint": run.recipe_fingerprint, "run_time": run.run_time, "run_id": run.run_id,
                       "samples_fingerprint": futures[model.name].samples.result().shard_set.fingerprint}
            decision = steps.decide_seeds(store, history, current, correct, bounds)
            log.info("model %s: %d classifier seed%s, change %s%s", model.name, decision.seeds,
                     "" if decision.seeds == 1 else "s", "-" if decision.delta is None else f"{100 * decision.delta:+.2f}",
                     f"; {decision.verdict}, stopped: {decision.stop}" if decision.stop else "; one more seed")
            if decision.stop:
                stopped[model.name] = decision.stop
                adaptive.remove(model)
            else:
                wanted.append((model, config.classifier_seeds[decision.seeds]))
        if not wanted:
            return futures, stopped, errors
        failed = remote([(model.name, seed) for model, seed in wanted]) if remote else {}
        for model, seed in wanted:
            if model.name in failed:  # not trained here instead: the deployment is where the GPUs are
                errors[model.name] = failed[model.name]
                adaptive = [m for m in adaptive if m.name != model.name]
                contenders = {series: [m for m in ms if m.name != model.name] for series, ms in contenders.items()}
                continue
            chain, device = futures[model.name], lanes[model.name]
            after = [allow_failure(lane_tail[device])] if device in lane_tail else []
            classifier = train_classifier.submit(config, store, chain.samples, dataset, device, seed, wait_for=after)
            evaluation = evaluate_classifier.submit(config, store, classifier, dataset, device)
            futures[model.name] = dataclasses.replace(chain, seeds=chain.seeds + ((classifier, evaluation),))
            lane_tail[device] = evaluation


def _correctness(store: Any, chain: ModelChain[PrefectFuture]) -> Any:
    """A checkpoint's seeds x eval images top-1 correctness so far, from its stored predictions; None when
    one of its steps failed or its predictions cannot be read (the best table then says why: `judge_series`)."""
    for future in chain.steps():
        future.wait()
        if not future.state.is_completed():
            return None
    fingerprints = [evaluation.result().fingerprint for evaluation in chain.evaluations]
    try:
        return steps.correctness(store, {"model": chain.samples.result().model, "run_id": "this run",
                                         "evaluation_fingerprints": fingerprints})[0]
    except steps.PredictionsUnavailable as exc:
        log.warning("%s; it gets no further classifier seeds", exc)
        return None


def _fan_out(deployment: str, config_text: str, source: str, store_url: str | None,
             config: Config) -> tuple[dict[str, dict], dict[str, str]]:
    """Each model's chain as a flow run of `deployment`, all at once. Returns, per model that finished
    there, what its flow run found cached and how long its sampling took (the parent's own pass over the
    store finds everything cached), and, per model that did not, its error. A flow run that has not
    finished after the time its steps may take (limits.step_seconds each) counts as failed: its worker
    may have died; a rerun recomputes only it."""
    steps_per_model = 1 + 2 * (len(config.classifier_seeds) + len(config.scores.augmentation))
    names = [m.name for m in config.all_models]
    answers = _model_flow_runs(deployment, config_text, source, store_url, config.limits.step_seconds * steps_per_model,
                               [(name, None) for name in names])
    return ({name: a for name, a in answers.items() if isinstance(a, dict)},
            {name: a for name, a in answers.items() if isinstance(a, str)})


def _fan_out_round(deployment: str, config_text: str, source: str, store_url: str | None, config: Config,
                   wanted: list[tuple[str, int]]) -> dict[str, str]:
    """A later round's seeds (model name, seed) as flow runs of `deployment`, as the first round's chains;
    the errors of those that did not finish there."""
    answers = _model_flow_runs(deployment, config_text, source, store_url, config.limits.step_seconds * 3,
                               [(name, [seed]) for name, seed in wanted])
    return {name: a for name, a in answers.items() if isinstance(a, str)}


def _model_flow_runs(deployment: str, config_text: str, source: str, store_url: str | None, timeout: float,
                     jobs: list[tuple[str, list[int] | None]]) -> dict[str, dict | str]:
    """A flow run of `deployment` per (model name, seeds or None for its first round), all at once: per model,
    what its flow run found cached (`_remote_steps`), or its error."""
    from prefect.deployments import run_deployment

    shared_text = without_credentials(config_text, source)
    if shared_text != config_text:
        log.warning("the config's store credentials are not sent to the model flow runs (Prefect keeps every "
                    "flow-run parameter): their workers need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")

    def one(job: tuple[str, list[int] | None]) -> dict | str:
        model_name, seeds = job
        parameters = {"config_yaml": shared_text, "model_name": model_name, "source": source, "store_url": store_url}
        child = run_deployment(deployment, parameters=parameters | ({"seeds": seeds} if seeds else {}),
                               timeout=timeout, as_subflow=True)
        if child.state is not None and child.state.is_completed():
            return _remote_steps(child.id)
        if child.state is None or not child.state.is_final():
            _cancel(child.id, f"the run that started it gave up after {timeout:.0f} s")
        state = child.state.name if child.state else "no state"
        detail = (child.state.message or "") if child.state else ""
        if detail.startswith(f"model '{model_name}'"):
            return detail
        return f"model '{model_name}': its flow run {child.name} ({deployment}) ended {state}" + (f": {detail}" if detail else "")

    with ThreadPoolExecutor(len(jobs)) as pool:
        return dict(zip([name for name, _ in jobs], pool.map(one, jobs)))


def _cancel(flow_run_id: uuid.UUID, reason: str) -> None:
    """A child flow run nobody waits for any more: one not started yet is Cancelled (it would start late,
    for nobody), a running one Cancelling (its worker stops it)."""
    from prefect import get_client
    from prefect.states import Cancelled, Cancelling

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        new = Cancelling if state is not None and (state.is_running() or state.is_pending()) else Cancelled
        client.set_flow_run_state(flow_run_id, new(message=reason), force=True)


def _remote_steps(flow_run_id: uuid.UUID) -> dict:
    """ModelOutcome fields as the model's own flow run saw them, from its task runs' states, told apart
    by their `step:` tags."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    by_step: dict[str, list] = {}
    for run in task_runs:
        for tag in run.tags:
            if tag.startswith("step:"):
                by_step.setdefault(tag.removeprefix("step:"), []).append(run)

    def cached(step: str) -> bool | None:
        return all(r.state_name == "Cached" for r in by_step[step]) if by_step.get(step) else None

    samples = by_step.get("draw-samples", [])
    return {"samples_cached": cached("draw-samples"), "classifier_cached": cached("train-classifier"),
            "evaluation_cached": cached("evaluate"),
            "sample_seconds": 0.0 if cached("draw-samples") or not samples else round(samples[0].total_run_time.total_seconds(), 3)}


def _settle_chain(model_name: str, chain: ModelChain[PrefectFuture]) -> Settled:
    """A model's records (None for a step that did not finish), or the first step's error, named."""
    error = None
    for future in chain.steps():
        future.wait()
        if future.state.is_completed():
            continue
        if future.state.is_failed() or future.state.is_crashed():
            exc = future.result(raise_on_failure=False)
            error = steps.describe_failure(model_name, exc if isinstance(exc, BaseException) else RuntimeError(str(exc)))
        else:
            error = f"model '{model_name}': did not finish"
        break  # the steps after it did not run because it failed
    return chain.map(lambda f: f.result() if f.state.is_completed() else None), error
