"""`cas plan CONFIG`: what a run of a config would compute, how long it would take and what it would write,
from fingerprints and store lookups alone (nothing is drawn, trained or evaluated).

Per model it lists the steps a run calls (`pipeline._submit_chain`, then the scores): its samples; a
classifier and its evaluation per classifier seed; the same per Naive Augmentation Score ratio; its
scores beside CAS. A step is `cached` when its output is committed under its fingerprint, else it
will `compute`; a fingerprint that depends on an earlier step's output (a classifier's on its samples'
manifest) is known only once that step has run, so such a step computes "after samples".

Estimates: each computing step's units of work (`tasks/throughput.py`) over the rate earlier runs on
this store measured (their commit markers; sampling from the results' summary rows), else a default.
Bytes: the samples' shards (bytes per sample of the real train split's shards), the weights and the
predictions (as earlier ones of the same recipe, else estimated).

Planning ahead (a dataset not sharded yet, perhaps not on this machine; GPUs this machine lacks):
`DatasetAssumption` (`--assume-dataset train=N,eval=N,classes=N,size=HxWxC`) stands in for the real
splits' sizes, and `gpus` (`--gpus N`) for the lanes; the plan lists what it assumed.

For the CLI: `plan_command` (`cas plan CONFIG [--json]`) and `one_line_total` (the line `cas run`
prints before it starts); for the flow: `compare_with_plan` (a line per step, estimated against measured).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import sys
from collections.abc import Mapping
from typing import Any

from casflow.flows import placement, steps
from casflow.flows.records import DatasetRecord, ModelChain
from casflow.storage import artifacts, results
from casflow.storage.shards import load_shard_set
from casflow.storage.store import Store, StoreUnreachable
from casflow.tasks import devices, generators, throughput
from casflow.tasks.config import Config, ConfigError, ModelConfig
from casflow.tasks.errors import InputError
from casflow.tasks.exits import USAGE, CasError
from casflow.tasks.fingerprint import fingerprint

log = logging.getLogger("casflow.plan")

JSON_SHAPE = 1  # `cas plan --json`'s "version": raised when a key changes meaning (keys are only ever added)


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    model: str
    step: str  # samples | train | evaluate | scores
    seed: int | None  # the classifier seed (train, evaluate)
    ratio: float | None  # the NAS ratio (train, evaluate of an augmented classifier)
    status: str  # cached | compute
    fingerprint: str | None  # None: known only after `after` has computed
    after: str | None  # the earlier step whose output this step's fingerprint needs: "dataset", "samples", "train"
    device: str  # as throughput is matched: "cpu" or the GPU's name
    units: float | None  # the step's work (tasks/throughput.py); None when the dataset is not sharded yet
    seconds: float | None  # estimated; 0 for a cached step
    rate_source: str | None  # "history (n)" or "default (...)"
    bytes: int | None  # estimated bytes it writes; 0 for a cached step
    assumed: bool = False  # its units, rate or bytes rest on an assumption (`Plan.assumptions`)
    # a seed trained only as the run decides: "race", a racing checkpoint's further seed (only while it is still a
    # contender); "seeds", a further seed of classifier.seeds' range (only while its comparison is not settled)
    further: str | None = None

    @property
    def share(self) -> float:
        """The share of this step's seconds that runs are expected to spend (the measured share of further seeds)."""
        return 1.0 if self.further is None else throughput.FURTHER_SHARE[self.further]

    @property
    def label(self) -> str:
        """samples, train seed 0, evaluate seed 0, train NAS 0.5, evaluate NAS 0.5, scores."""
        if self.ratio is not None:
            return f"{self.step} NAS {self.ratio:g}"
        return self.step if self.seed is None else f"{self.step} seed {self.seed}"


@dataclasses.dataclass(frozen=True)
class Plan:
    config: str
    store: str
    dataset: str
    dataset_fingerprint: str | None  # None: the dataset's files are not readable here (planned with assumed sizes)
    dataset_cached: bool
    recipe: str
    lanes: dict[str, str]  # model -> lane device ("cpu", "cuda:0")
    steps: tuple[PlannedStep, ...]
    dataset_assumed: DatasetAssumption | None = None  # the sizes planned with, when the dataset is not sharded
    gpus_assumed: int | None = None  # lanes of this many GPUs instead of this machine's devices
    sample_bytes_assumed: int | None = None  # bytes per sample in a shard, estimated (no shards to measure)
    races: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # racing series -> (max_seeds, checkpoints)

    def assumptions(self) -> list[str]:
        """What the plan assumed, one line each (none: every figure is from the store or a default rate)."""
        lines = []
        if self.dataset_assumed is not None:
            a = self.dataset_assumed
            lines.append(f"dataset sizes (--assume-dataset): train {a.train:,}, eval {a.eval:,}, {a.classes:,} classes, "
                         f"{a.size_text} images")
        if self.sample_bytes_assumed is not None:
            lines.append(f"{self.sample_bytes_assumed:,} bytes per sample in a shard: {throughput.SHARD_BYTES_SOURCE}")
        for series, (max_seeds, checkpoints) in self.races.items():
            further = [s for s in self.computing() if s.further == "race" and s.step == "train"
                       and s.model.startswith(f"{series}@")]
            lines.append(f"series {series} races (up to {max_seeds} seeds, classifier.seeds' max; {checkpoints} checkpoints): "
                         f"counted at its worst "
                         f"case, every checkpoint with {max_seeds} seeds; {len(further)} of its trainings to compute are "
                         f"further seeds that only contenders get. Expected: {RACE_SHARE_TEXT} of those "
                         f"({throughput.RACE_SOURCE})")
        adaptive = [s for s in self.computing() if s.further == "seeds" and s.step == "train"]
        if adaptive:
            lines.append(f"classifier.seeds is a range: counted at its worst case, every model but the real baseline "
                         f"(never judged) with max seeds; {len(adaptive)} of the trainings to compute are further seeds "
                         f"that only unsettled comparisons get. Expected: {SEEDS_SHARE_TEXT} of those "
                         f"({throughput.SEEDS_SOURCE})")
        if self.gpus_assumed is not None:
            lines.append(f"{self.gpus_assumed} GPU lane(s) (--gpus), not this machine's devices: rates are the GPU "
                         f"defaults of tasks/throughput.py")
        return lines

    @property
    def models(self) -> list[str]:
        return list(self.lanes)

    def computing(self) -> list[PlannedStep]:
        return [s for s in self.steps if s.status == "compute"]

    def models_computing(self) -> list[str]:
        return list(dict.fromkeys(s.model for s in self.computing()))

    def total_seconds(self) -> float | None:
        """Device seconds of every computing step; None when one of them has no estimate."""
        values = [s.seconds for s in self.computing()]
        return None if any(v is None for v in values) else sum(values)

    def expected_seconds(self) -> float | None:
        """total_seconds with further seeds (races, adaptive seeds) counted at the share runs used
        (throughput.FURTHER_SHARE)."""
        if self.total_seconds() is None:
            return None
        return sum(s.seconds * s.share for s in self.computing())

    def further_computing(self) -> bool:
        return any(s.further for s in self.computing())

    def wall_seconds(self, expected: bool = False) -> float | None:
        """The longest lane's seconds: lanes run side by side, a lane's models one after another; further seeds at
        their worst case, or with `expected` at the share runs used."""
        if self.total_seconds() is None:
            return None
        per_lane: dict[str, float] = {}
        for s in self.computing():
            share = s.share if expected else 1.0
            per_lane[self.lanes[s.model]] = per_lane.get(self.lanes[s.model], 0.0) + s.seconds * share
        return max(per_lane.values(), default=0.0)

    def total_bytes(self) -> int | None:
        values = [s.bytes for s in self.computing()]
        return None if any(v is None for v in values) else sum(values)

    def to_json(self) -> dict[str, Any]:
        """The documented shape (README, `cas plan --json`); keys are only ever added."""
        total, wall = self.total_seconds(), self.wall_seconds()
        models = []
        for name in self.models:
            mine = [s for s in self.steps if s.model == name]
            models.append({"name": name, "lane": self.lanes[name], "computes": any(s.status == "compute" for s in mine),
                           "steps": [{"step": s.step, "seed": s.seed, "ratio": s.ratio, "status": s.status,
                                      "fingerprint": s.fingerprint, "after": s.after, "device": s.device,
                                      "units": s.units, "seconds": _round(s.seconds), "rate_source": s.rate_source,
                                      "bytes": s.bytes, "assumed": s.assumed, "further": s.further} for s in mine]})
        assumed = self.dataset_assumed
        return {
            "version": JSON_SHAPE, "config": self.config, "store": self.store,
            "dataset": {"name": self.dataset, "fingerprint": self.dataset_fingerprint,
                        "status": "cached" if self.dataset_cached else "compute"},
            "recipe": self.recipe, "models": models,
            "assumed": {"dataset": None if assumed is None else {"train": assumed.train, "eval": assumed.eval,
                                                                  "classes": assumed.classes, "size": list(assumed.size)},
                        "sample_bytes": self.sample_bytes_assumed, "gpus": self.gpus_assumed,
                        "notes": self.assumptions()},
            "total": {"models": len(self.models), "models_computing": len(self.models_computing()),
                      "steps": len(self.steps), "steps_computing": len(self.computing()),
                      "seconds": _round(total), "device_hours": None if total is None else round(total / 3600, 4),
                      "wall_seconds": _round(wall), "bytes": self.total_bytes(),
                      "devices": sorted(set(self.lanes.values())),
                      # `seconds` counts further seeds at their worst case; this, at the share runs used
                      "seconds_expected": _round(self.expected_seconds())},
            "further_seeds": {kind: {"share": share, "source": throughput.RACE_SOURCE if kind == "race" else
                                     throughput.SEEDS_SOURCE} for kind, share in throughput.FURTHER_SHARE.items()},
            "races": {series: {"max_seeds": m, "checkpoints": n, "further_seeds_share": throughput.RACE_FURTHER_SEEDS_SHARE,
                               "source": throughput.RACE_SOURCE} for series, (m, n) in self.races.items()},
        }


RACE_SHARE_TEXT = f"{100 * throughput.RACE_FURTHER_SEEDS_SHARE:.0f}%"
SEEDS_SHARE_TEXT = f"{100 * throughput.SEEDS_FURTHER_SHARE:.0f}%"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------- planning ahead

class AssumptionError(CasError, ValueError):
    """A `--assume-dataset` or `--gpus` value that cannot be planned with."""

    exit_code = USAGE


ASSUME_FORM = "train=N,eval=N,classes=N,size=HxWxC (e.g. train=1281167,eval=50000,classes=1000,size=64x64x3)"


@dataclasses.dataclass(frozen=True)
class DatasetAssumption:
    """The real splits' sizes to plan with while they are not sharded on the store."""

    train: int
    eval: int
    classes: int
    size: tuple[int, int, int]  # height, width, channels

    @property
    def size_text(self) -> str:
        return "x".join(str(n) for n in self.size)

    @classmethod
    def parse(cls, text: str) -> DatasetAssumption:
        """`train=1281167,eval=50000,classes=1000,size=64x64x3`; AssumptionError naming the bad part."""
        def bad(problem: str) -> AssumptionError:
            return AssumptionError(f"--assume-dataset {text!r}: {problem}; expected {ASSUME_FORM}")

        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in ("train", "eval", "classes", "size"):
                raise bad(f"{part.strip()!r} is not one of train=, eval=, classes=, size=")
            if key in fields:
                raise bad(f"{key} given twice")
            fields[key] = value
        missing = [k for k in ("train", "eval", "classes", "size") if k not in fields]
        if missing:
            raise bad(f"missing {', '.join(missing)}")
        counts = {}
        for key in ("train", "eval", "classes"):
            if not fields[key].isdecimal() or int(fields[key]) == 0:
                raise bad(f"{key} must be a positive whole number, got {fields[key]!r}")
            counts[key] = int(fields[key])
        size = fields["size"].lower().split("x")
        if len(size) != 3 or not all(n.isdecimal() and int(n) > 0 for n in size):
            raise bad(f"size must be height x width x channels, got {fields['size']!r}")
        if int(size[2]) not in (1, 3):
            raise bad(f"size's channels must be 1 or 3, got {size[2]}")
        if counts["classes"] > min(counts["train"], counts["eval"]):
            raise bad(f"{counts['classes']} classes need at least as many train and eval images")
        return cls(counts["train"], counts["eval"], counts["classes"], (int(size[0]), int(size[1]), int(size[2])))


ASSUMED_GPU = "gpu (assumed)"  # the device name of --gpus lanes: no measured GPU matches it, so GPU defaults apply


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """What the estimates need of the real splits: from their shards on the store, else assumed."""

    train: int
    eval: int
    classes: int
    shape: tuple[int, int, int]
    bytes_per_sample: float  # in a samples shard
    assumed: bool


# ---------------------------------------------------------------- making a plan

def make_plan(config: Config, store: Store, config_path: str = "config", device_names: Mapping[str, str] | None = None,
              assume_dataset: DatasetAssumption | None = None, gpus: int | None = None) -> Plan:
    """The plan of a run of `config` on `store`: fingerprints and store lookups only.

    `device_names` maps a lane ("cpu", "cuda:0") to the name throughput is matched on ("cpu", the GPU's
    name); by default it is asked of torch, which is imported only where a GPU may be visible.
    `assume_dataset` gives the real splits' sizes while they are not sharded on the store (their files need
    not be on this machine); the store's shards win when they are there. `gpus` plans lanes cuda:0..N-1
    at the GPU default rates instead of this machine's devices."""
    files = steps.open_files(config)
    try:
        dataset_fp = fingerprint("dataset", steps.dataset_inputs(config, files))
    except ConnectionError:  # a store or endpoint that does not answer is not a missing dataset
        raise
    except (InputError, OSError, ValueError) as exc:  # its files are not here: only assumed sizes can plan it
        if assume_dataset is None:
            raise InputError(f"{_problem(exc)}; to plan without its files, give its sizes with --assume-dataset "
                             f"{ASSUME_FORM}", source=f"dataset {config.dataset.name}") from None
        log.info("dataset %s unreadable here (%s): planned with assumed sizes", config.dataset.name, exc)
        dataset_fp = None
    dataset = None
    if dataset_fp is not None:
        train, eval_ = (load_shard_set(store, store.location("real", dataset_fp, split)) for split in ("train", "eval"))
        dataset = DatasetRecord(config.dataset.name, dataset_fp, train, eval_, cached=True) if train and eval_ else None
    if dataset is not None:
        sizes = _Sizes(dataset.train.num_samples, dataset.eval.num_samples, len(dataset.class_names),
                       tuple(dataset.train.image_shape),
                       sum(s.size for s in dataset.train.shards) / max(dataset.train.num_samples, 1), assumed=False)
        assume_dataset = None  # measured beats assumed
    elif assume_dataset is not None:
        a = assume_dataset
        sizes = _Sizes(a.train, a.eval, a.classes, a.size, throughput.shard_bytes_per_sample(a.size), assumed=True)
    else:
        sizes = None

    if gpus is not None:
        if gpus < 1:
            raise AssumptionError(f"--gpus {gpus}: plan at least one GPU")
        lane_devices = [f"cuda:{i}" for i in range(gpus)]
        names = {d: ASSUMED_GPU for d in lane_devices}
    else:
        spec = config.classifier.device
        lane_devices = devices.visible_devices(spec, _cuda_count(spec))
        names = dict(device_names) if device_names is not None else {d: _device_name(d) for d in lane_devices}
    lanes = placement.assign_lanes([m.name for m in config.all_models], lane_devices)
    estimator = _Estimator(config, store, dataset, sizes, assumed=assume_dataset is not None or gpus is not None)
    planned: list[PlannedStep] = []
    real_classifier = None
    for model in config.all_models:
        chain = _model_steps(config, store, files, model, dataset, sizes, names[lanes[model.name]], estimator)
        if model.name == config.baseline.name:
            real_classifier = chain["first_classifier"]
        planned += chain["steps"]
    if config.scores.gan_test or config.scores.features or config.scores.memorization:
        for model in config.all_models:
            planned.append(_scores_step(config, store, model, dataset, sizes, names[lanes[model.name]], estimator,
                                        _samples_of(planned, model.name), real_classifier))
    order = {name: i for i, name in enumerate(lanes)}
    planned.sort(key=lambda s: order[s.model])  # stable: each model's steps together, in the order a run calls them
    races: dict[str, tuple[int, int]] = {}
    for model in config.all_models:
        if config.race_seeds(model):
            races[model.series_name] = (model.race_max_seeds, races.get(model.series_name, (0, 0))[1] + 1)
    return Plan(config_path, store.url, config.dataset.name, dataset_fp, dataset is not None, config.classifier.resolved.name,
                lanes, tuple(planned), assume_dataset, gpus,
                round(sizes.bytes_per_sample) if sizes is not None and sizes.assumed else None, races)


def _problem(exc: BaseException) -> str:
    return exc.problem if isinstance(exc, InputError) else str(exc)


def _model_steps(config: Config, store: Store, files: Any, model: ModelConfig, dataset: DatasetRecord | None,
                 sizes: _Sizes | None, device: str, estimator: _Estimator) -> dict[str, Any]:
    """A model's samples, then a classifier and an evaluation per seed and per NAS ratio; a racing checkpoint's
    seeds are every seed its race may give it (its worst case), the further ones marked `race`."""
    kind = model.generator.kind
    shard_set, samples_status, samples_fp = None, "compute", None
    if dataset is not None:
        if generators.SOURCES[kind].draw is None:  # `real`: the real train split's shards
            shard_set, samples_status, samples_fp = dataset.train, "cached", dataset.train.fingerprint
        else:
            try:
                samples_fp = fingerprint("samples", steps.samples_inputs(config, files, model, dataset))
            except (InputError, OSError, ValueError) as exc:  # its files unreadable: the run would fail it
                log.warning("model %s: samples fingerprint unknown (%s); planned as computing", model.name, exc)
            if samples_fp is not None:
                shard_set = load_shard_set(store, store.location("samples", samples_fp))
                samples_status = "cached" if shard_set is not None else "compute"
    num = sizes.train if sizes is not None else None
    out = [estimator.step(model.name, "samples", None, None, samples_status, samples_fp,
                          None if dataset is not None else "dataset", device, kind, num)]

    def train_and_evaluate(seed: int, ratio: float | None, further: str | None = None) -> str | None:
        classifier_fp = None
        if shard_set is not None:
            inputs = steps.classifier_inputs(config, shard_set, len(dataset.class_names), seed, ratio, dataset.train)
            classifier_fp = fingerprint("classifier", inputs)
        after = "dataset" if dataset is None else "samples" if shard_set is None else None
        classifier_cached = classifier_fp is not None and artifacts.read_train_log(store, classifier_fp) is not None
        images = None if num is None else num if ratio is None else num + round(ratio * num)
        out.append(estimator.step(model.name, "train", seed, ratio, "cached" if classifier_cached else "compute",
                                  classifier_fp, after, device, None, images, further))
        evaluation_fp = None if classifier_fp is None else fingerprint(
            "evaluation", steps.evaluation_inputs(classifier_fp, dataset.eval))
        evaluation_cached = evaluation_fp is not None and artifacts.read_evaluation(store, evaluation_fp) is not None
        eval_images = sizes.eval if sizes is not None else None
        out.append(estimator.step(model.name, "evaluate", seed, ratio, "cached" if evaluation_cached else "compute",
                                  evaluation_fp, after or (None if classifier_fp else "train"), device, None, eval_images,
                                  further))
        return classifier_fp

    # a range's later rounds depend on the results: planned is the worst case, every seed a race or the range may
    # give, those after the first seeds marked `further`; the real baseline is never judged, so it stops at `min`
    first_seeds, further = config.first_seeds(model), None
    if config.race_seeds(model):
        further = "race"
    elif config.seed_range is not None and model.generator.kind != "real":
        further = "seeds"
    seeds = config.classifier_seeds if further else first_seeds
    first = [train_and_evaluate(seed, None, further if seed not in first_seeds else None) for seed in seeds][0]
    for ratio in config.augmentation_ratios(model):
        train_and_evaluate(config.classifier_seeds[0], ratio)
    return {"steps": out, "first_classifier": first}


def _samples_of(planned: list[PlannedStep], model: str) -> PlannedStep:
    return next(s for s in planned if s.model == model and s.step == "samples")


def _scores_step(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord | None, sizes: _Sizes | None,
                 device: str, estimator: _Estimator, samples: PlannedStep, real_classifier: str | None) -> PlannedStep:
    fp = None
    if dataset is not None and samples.status == "cached" and real_classifier is not None:
        shard_set = dataset.train if samples.fingerprint == dataset.train.fingerprint else \
            load_shard_set(store, store.location("samples", samples.fingerprint))
        fp = fingerprint("scores", steps.scores_inputs(config, shard_set, real_classifier, dataset))
    cached = fp is not None and artifacts.read_scores(store, fp) is not None
    after = "dataset" if dataset is None else "samples" if samples.status != "cached" else None if fp else "train"
    return estimator.step(model.name, "scores", None, None, "cached" if cached else "compute", fp, after, device, None,
                          None if sizes is None else sizes.train)


class _Estimator:
    """Seconds and bytes of a step from the store's history, read once per plan."""

    def __init__(self, config: Config, store: Store, dataset: DatasetRecord | None, sizes: _Sizes | None, assumed: bool):
        self.recipe = config.classifier.resolved
        self.dataset = dataset
        self.sizes = sizes
        self.assumed = assumed  # every computing step's figures rest on --assume-dataset or --gpus
        self.epochs = float(self.recipe.hp.epochs)
        self.shape = sizes.shape if sizes is not None else None
        self.num_classes = sizes.classes if sizes is not None else None
        self.history, self.weights, self.predictions = read_history(store)
        self._weights_estimate: int | None = None

    def step(self, model: str, step: str, seed: int | None, ratio: float | None, status: str, fp: str | None,
             after: str | None, device: str, kind: str | None, count: int | None, further: str | None = None) -> PlannedStep:
        if status == "cached":
            return PlannedStep(model, step, seed, ratio, status, fp, None, device, None, 0.0, None, 0, further=further)
        if step == "samples" and generators.SOURCES[kind].draw is None:  # real, not yet sharded: the dataset step,
            count = None if self.sizes is None else self.sizes.train + self.sizes.eval  # both splits to shards
        units = None if count is None else count * self.epochs if step == "train" else count
        if step == "samples":
            rate = throughput.rate(self.history, "samples", kind, self.dataset.fingerprint if self.dataset else None,
                                   device, None)
        else:
            rate = throughput.rate(self.history, step, self.recipe.name, self.recipe.fingerprint, device, self.shape)
        seconds = None if units is None else throughput.seconds(units, rate)
        return PlannedStep(model, step, seed, ratio, status, fp, after, device, units, seconds, rate.source,
                           self._bytes(step, count), self.assumed, further)

    def _bytes(self, step: str, count: int | None) -> int | None:
        if count is None or self.sizes is None:
            return None
        if step == "samples":
            return round(count * self.sizes.bytes_per_sample + 1000)  # and the manifest
        if step == "train":
            return self._weights() + 2000  # and train_log.json
        if step == "evaluate":
            return round(count * self._prediction_bytes()) + 2000
        return 4000  # scores.json

    def _weights(self) -> int:
        same = [w for fp, shape, w in self.weights if fp == self.recipe.fingerprint and shape == self.shape]
        if same:
            return round(statistics.median(same))
        if self._weights_estimate is None:
            from casflow.tasks.classifiers import training  # torch: only when no classifier of this recipe is stored

            self._weights_estimate = training.weights_size(self.recipe, self.shape, self.num_classes)
        return self._weights_estimate

    def _prediction_bytes(self) -> float:
        return statistics.median(self.predictions) if self.predictions else throughput.PREDICTION_BYTES_PER_IMAGE


def read_history(store: Store) -> tuple[list[throughput.Measurement], list[tuple], list[float]]:
    """Every measurement on the store (classifiers', evaluations' and scores' markers; sampling from the
    results' summary rows), the stored weights' sizes by (recipe fingerprint, image shape), and the
    predictions' bytes per eval image."""
    found: list[throughput.Measurement] = []
    weights, predictions = [], []
    shape = lambda m: tuple(m["image_shape"])  # noqa: E731
    for m in artifacts.measurements(store, "classifiers"):
        found.append(throughput.Measurement("train", m["recipe"], m["recipe_fingerprint"], m["device"], shape(m),
                                            m["images_seen"], m["train_seconds"]))
        weights.append((m["recipe_fingerprint"], shape(m), m["weights_size"]))
    for m in artifacts.measurements(store, "evaluations"):
        found.append(throughput.Measurement("evaluate", m["recipe"], m["recipe_fingerprint"], m["device"], shape(m),
                                            m["num_images"], m["seconds"]))
        predictions.append(m["predictions_size"] / max(m["num_images"], 1))
    for m in artifacts.measurements(store, "scores"):
        found.append(throughput.Measurement("scores", m["recipe"], m["recipe_fingerprint"], m["device"], shape(m),
                                            m["num_samples"], m["seconds"]))
    try:
        summary = results.read_all(store, "summary").to_pylist()
    except results.ResultsError as exc:  # a damaged results file: plan without sampling history
        log.warning("plan: no sampling history: %s", exc)
        summary = []
    for row in summary:
        if row.get("samples_cached") is False and (row.get("sample_seconds") or 0) > 0 and row.get("n_samples") \
                and row.get("device") and row.get("generator_kind"):
            found.append(throughput.Measurement("samples", row["generator_kind"], row["dataset_fingerprint"], row["device"],
                                                None, row["n_samples"], row["sample_seconds"]))
    return found, weights, predictions


def _cuda_count(spec: str) -> int:
    """As the flow counts GPUs (pipeline._cuda_count), without importing Prefect."""
    if devices.parse(spec) == ["cpu"] or not devices.may_have_gpus():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device_name(lane: str) -> str:
    if lane == "cpu":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(torch.device(lane))


# ---------------------------------------------------------------- printing

def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def one_line_total(plan: Plan) -> str:
    """The line `cas run` prints before it starts, e.g. `plan: 3 of 5 models compute, ~4 min on cpu, 12.0 MB to write`."""
    computing = plan.models_computing()
    if not computing:
        return f"plan: all {len(plan.models)} models cached, nothing to compute"
    on = ", ".join(sorted(set(plan.lanes[m] for m in computing)))
    wall = plan.wall_seconds()
    time_part = "time unknown until the dataset is sharded" if wall is None else f"~{_duration(wall)} on {on}"
    if wall is not None and plan.further_computing():
        time_part += f" (further seeds at their worst case; expected ~{_duration(plan.wall_seconds(expected=True))})"
    size = plan.total_bytes()
    return (f"plan: {len(computing)} of {len(plan.models)} models compute, {time_part}, "
            f"{'?' if size is None else _size(size)} to write")


def render(plan: Plan) -> str:
    """The table `cas plan` prints."""
    lines = [f"plan  config {plan.config}  store {plan.store}  dataset {plan.dataset} "
             f"({'cached' if plan.dataset_cached else 'compute'})  recipe {plan.recipe}"]
    lines += [f"assumed: {line}" for line in plan.assumptions()]
    header = ("model", "step", "status", "estimate", "writes", "device", "rate from")
    rows = []
    for s in plan.steps:
        status = s.status if s.status == "cached" or s.after is None else f"compute after {s.after}"
        if s.further and s.status == "compute":
            status += " if a contender" if s.further == "race" else " if not settled"
        if s.status == "cached" and s.fingerprint:
            status += f" ({s.fingerprint[:12]})"
        rows.append((s.model, s.label, status, "-" if s.status == "cached" else _duration(s.seconds),
                     "-" if s.status == "cached" else _size(s.bytes), s.device, s.rate_source or "-"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = plan.total_seconds()
    hours = "?" if total is None else f"{total / 3600:.3f}"
    lines.append(f"total: {len(plan.computing())} of {len(plan.steps)} steps compute; {_duration(total)} of device time "
                 f"({hours} device-hours), ~{_duration(plan.wall_seconds())} on {len(set(plan.lanes.values()))} lane(s); "
                 f"{_size(plan.total_bytes())} to write")
    if plan.further_computing():
        shares = [f"{text} of a race's (as in {source.split(':')[0]})" if kind == "race" else
                  f"{text} of adaptive seeds' (as in {source.split(':')[0]})"
                  for kind, text, source in (("race", RACE_SHARE_TEXT, throughput.RACE_SOURCE),
                                             ("seeds", SEEDS_SHARE_TEXT, throughput.SEEDS_SOURCE))
                  if any(s.further == kind for s in plan.computing())]
        lines.append(f"further seeds: those totals are their worst case; with {' and '.join(shares)} further seeds, "
                     f"{_duration(plan.expected_seconds())} of device time")
    lines.append(one_line_total(plan))
    return "\n".join(lines)


def pre_run_line(config_path: str, store_url: str | None = None) -> str | None:
    """`one_line_total` of a config's plan, for `cas run` to print before it starts; None (and a warning
    in the log) when no plan can be made: a plan never stops a run (the run reports the problem itself)."""
    try:
        config = steps.read_config(config_path, store_url)
        return one_line_total(make_plan(config, steps.open_store(config.store), config_path))
    except Exception as exc:  # noqa: BLE001 - an estimate is optional; the run itself says what is wrong
        log.warning("no plan: %s", exc)
        return None


def plan_command(config_path: str, store_url: str | None, as_json: bool, assume_dataset: str | None = None,
                 gpus: int | None = None) -> int:
    """`cas plan CONFIG [--store URL] [--json] [--assume-dataset SIZES] [--gpus N]`: prints the plan (JSON
    with `as_json`); 0 when planned, 2 for a bad config, dataset or assumption, 1 when the store does not answer."""
    try:
        config = steps.read_config(config_path, store_url)
        assumption = None if assume_dataset is None else DatasetAssumption.parse(assume_dataset)
    except (ConfigError, AssumptionError) as exc:
        print(exc, file=sys.stderr)
        return 2
    store = steps.open_store(config.store)
    try:
        store.probe()
        plan = make_plan(config, store, config_path, assume_dataset=assumption, gpus=gpus)
    except StoreUnreachable as exc:
        print(exc, file=sys.stderr)
        return 1
    except CasError as exc:  # the dataset's files unreadable without --assume-dataset; a bad --gpus
        print(exc, file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # classifier.device names more GPUs than are visible
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_json(), indent=1) if as_json else render(plan))
    return 0


# ---------------------------------------------------------------- after the run

def measured_seconds(plan: Plan, chains: Mapping[str, ModelChain | None], scored: Mapping[str, Any]) -> dict[tuple, float | None]:
    """Per planned step (model, step, seed, ratio): the seconds the run measured (0 for a cache hit),
    None where it did not finish. `chains` maps each model to its chain of records (the flow's
    settled chains), `scored` each model to its ScoresRecord."""
    measured: dict[tuple, float | None] = {}
    for s in plan.steps:
        chain = chains.get(s.model)
        record = None
        if s.step == "scores":
            record = scored.get(s.model)
        elif chain is not None and s.step == "samples":
            record = chain.samples
        elif chain is not None:
            pairs = chain.augmented if s.ratio is not None else chain.seeds
            planned = [(t.seed, t.ratio) for t in plan.steps if t.model == s.model and t.step == s.step
                       and (t.ratio is None) == (s.ratio is None)]  # the chain's pairs, in the same order
            at = planned.index((s.seed, s.ratio))
            # further seeds come in the planned order, as many as the race or the range gave this model
            rounds = any(t.further for t in plan.steps if t.model == s.model)
            pair = pairs[at] if at < len(pairs) and (len(pairs) == len(planned) or rounds) else None
            record = None if pair is None else pair[0] if s.step == "train" else pair[1]
        if record is None:
            measured[(s.model, s.step, s.seed, s.ratio)] = None
        else:
            value = record.train_seconds if s.step == "train" else record.seconds
            measured[(s.model, s.step, s.seed, s.ratio)] = 0.0 if record.cached else float(value)
    return measured


def compare_with_plan(plan: Plan, chains: Mapping[str, ModelChain | None], scored: Mapping[str, Any]) -> list[str]:
    """One line per step the plan said would compute: estimated against measured seconds, for the
    flow's log at the end of a run."""
    measured = measured_seconds(plan, chains, scored)
    lines = []
    for s in plan.computing():
        got = measured[(s.model, s.step, s.seed, s.ratio)]
        what = f"model {s.model}: {s.label}: estimated {_duration(s.seconds)}"
        if got is None:
            not_run = {"race": "not run (its checkpoint left the race first, or failed)",
                       "seeds": "not run (its comparison was settled first, or failed)"}
            lines.append(f"{what}, " + not_run.get(s.further, "did not finish"))
        elif s.seconds is None or got == 0.0:
            lines.append(f"{what}, measured {_duration(got)}" + (" (cached after all)" if got == 0.0 else ""))
        else:
            lines.append(f"{what}, measured {_duration(got)} (x{got / s.seconds:.2f})")
    return lines
