"""The pipeline's steps as plain functions, in the order a run calls them.

  prepare_dataset      the real train and eval splits -> shards
  draw_samples         a model's samples -> shards (the source its kind registers)
  train_classifier     the recipe on those shards -> weights
  evaluate_classifier  per-class counts on the real eval split
  write_results        per-class and summary Parquet

Each step computes its fingerprint, asks the store whether that output is
already committed (a cache hit), and otherwise computes it with tasks/ and
commits it with storage/. No Prefect here: `flows/pipeline.py` wraps each
step once as a Prefect task, and tests call these directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np

from casflow.storage import artifacts, decoded_cache, results
from casflow.storage.shards import ShardInfo, ShardSet, iter_shard_set, load_shard_set, write_shard_set
from casflow.storage.sources import Files, FileTooLarge, NotRegularFile, read_local_file
from casflow.storage.store import Store, s3_options, store_url_problem
from casflow.tasks import datasets, devices, generators
from casflow.tasks.classifiers import training
from casflow.tasks.config import MAX_CONFIG_BYTES, Config, ConfigError, ModelConfig, StoreConfig, parse_config
from casflow.tasks.errors import InputError
from casflow.tasks.fingerprint import derive_seed, fingerprint
from casflow.tasks.images import decode_stack
from casflow.tasks.metrics import EVALUATION_CODE_VERSION, ClassCounts, count_correct
from casflow.tasks.progress import Progress
from casflow.tasks.results import ModelOutcome, RunInfo, per_class_rows, summary_row
from casflow.tasks.samples import SAMPLES_CODE_VERSION, class_interleaved, encode_samples

log = logging.getLogger("casflow.steps")

DATASET_CODE_VERSION = 2
TRAIN_CODE_VERSION = 1


# ---------------------------------------------------------------- records passed between steps

@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    name: str
    fingerprint: str
    train: ShardSet
    eval: ShardSet
    cached: bool

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names


@dataclasses.dataclass(frozen=True)
class SamplesRecord:
    model: str
    shard_set: ShardSet
    cached: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class ClassifierRecord:
    model: str
    fingerprint: str
    samples: SamplesRecord
    cached: bool
    train_seconds: float
    device: str


@dataclasses.dataclass(frozen=True)
class EvaluationRecord:
    model: str
    fingerprint: str
    classifier: ClassifierRecord
    counts: ClassCounts
    cached: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class ResultsRecord:
    run_id: str
    per_class_uri: str
    summary_uri: str
    summary: list[dict]


# ---------------------------------------------------------------- config and store

def read_config(path: str, store_url: str | None = None) -> Config:
    """Load and validate a YAML config file; `store_url` overrides `store.url`.

    ConfigError for anything that stops the run before it starts: a file that is not a regular file or
    is larger than MAX_CONFIG_BYTES, not UTF-8, not valid, or a store that cannot keep the results."""
    try:
        text = read_local_file(path, path, MAX_CONFIG_BYTES, "a config may have")
    except (NotRegularFile, FileTooLarge) as exc:
        raise ConfigError(str(exc)) from None
    config = parse_config(text, source=path)
    if store_url:
        config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    problem = store_url_problem(config.store.url)
    if problem:
        raise ConfigError(f"{path}: store.url {config.store.url}: {problem}")
    return config


def open_store(config: StoreConfig) -> Store:
    return Store(config.url, s3=_s3_options(config))


def open_files(config: Config) -> Files:
    """User files named in the config, read with the store's credentials, within the config's limits."""
    return Files(_s3_options(config.store), max_file_bytes=config.limits.max_file_bytes,
                 max_files=config.limits.max_files)


def _s3_options(config: StoreConfig) -> dict:
    secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
    return s3_options(config.endpoint_url, config.region, secret(config.access_key_id), secret(config.secret_access_key))


# ---------------------------------------------------------------- step 1: the real dataset as shards

def prepare_dataset(config: Config, store: Store) -> DatasetRecord:
    """Shard the real train and eval splits once per dataset fingerprint."""
    spec, files = config.dataset, open_files(config)
    inputs = datasets.fingerprint_inputs(spec, files) | {"shard_size": config.store.shard_size}
    fp = fingerprint("dataset", DATASET_CODE_VERSION, inputs)
    locations = {split: store.location("real", fp, split) for split in ("train", "eval")}
    committed = {split: load_shard_set(store, loc) for split, loc in locations.items()}
    if all(committed.values()):
        log.info("dataset %s: cached (%s)", spec.name, fp[:12])
        return DatasetRecord(spec.name, fp, committed["train"], committed["eval"], cached=True)
    train, held_out = datasets.load(spec, files, config.limits)
    for split, data in (("train", train), ("eval", held_out)):
        data = data.take(class_interleaved(data.labels))  # sources often come grouped by class
        if committed[split] is None:
            committed[split] = write_shard_set(
                store, locations[split], encode_samples(data.images, data.labels),
                shard_size=config.store.shard_size, fingerprint=fp, fingerprint_inputs=inputs | {"split": split},
                class_names=data.class_names, image_shape=data.image_shape, what=f"{spec.name} {split}")
    return DatasetRecord(spec.name, fp, committed["train"], committed["eval"], cached=False)


# ---------------------------------------------------------------- step 2: a model's samples as shards

def draw_samples(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord, device: str) -> SamplesRecord:
    """Draw (or find) a model's samples as a committed shard set."""
    started = time.perf_counter()
    source = generators.SOURCES[model.generator.kind]
    if source.draw is None:  # `real`: its samples are the real train split's shards
        return SamplesRecord(model.name, dataset.train, cached=dataset.cached, seconds=0.0)
    files = open_files(config)
    inputs = samples_inputs(config, files, model, dataset)
    fp = fingerprint("samples", SAMPLES_CODE_VERSION, inputs)
    location = store.location("samples", fp)
    committed = load_shard_set(store, location)
    if committed is not None:
        log.info("model %s: samples cached (%s)", model.name, fp[:12])
        return SamplesRecord(model.name, committed, cached=True, seconds=0.0)
    request = generators.DrawRequest(
        model=model.name, seed=config.seed, budget=dataset.train.count_per_class, class_names=dataset.class_names,
        image_shape=dataset.train.image_shape, device=device, files=files, real_train=lambda: real_train(store, dataset),
        limits=config.limits)
    try:
        shard_set = write_shard_set(
            store, location, source.draw(model.generator, request), shard_size=config.store.shard_size,
            fingerprint=fp, fingerprint_inputs=inputs, class_names=dataset.class_names,
            image_shape=dataset.train.image_shape, what=f"model {model.name}")
    except InputError:
        if load_shard_set(store, location) is None:
            store.remove(location)  # bad input fails the same way every time: leave no debris
        raise
    return SamplesRecord(model.name, shard_set, cached=False, seconds=round(time.perf_counter() - started, 3))


def samples_inputs(config: Config, files: Files, model: ModelConfig, dataset: DatasetRecord) -> dict:
    """Everything that changes a model's samples: never its name or where its files live."""
    content = generators.SOURCES[model.generator.kind].content(model.generator, files, model.name)
    return content | {
        "dataset": dataset.fingerprint,
        "budget": list(dataset.train.count_per_class),
        "seed": config.seed,
        "shard_size": config.store.shard_size,
    }


def real_train(store: Store, dataset: DatasetRecord) -> datasets.LabeledImages:
    """The real train split, decoded (the built-in generators fit on it)."""
    images, labels = load_decoded(store, dataset.train, f"{dataset.name} train split")
    return datasets.LabeledImages(images, labels, dataset.class_names)


# ---------------------------------------------------------------- step 3: a classifier per model

def train_classifier(config: Config, store: Store, samples: SamplesRecord, dataset: DatasetRecord,
                     device: str) -> ClassifierRecord:
    """Train (or find) the classifier for one model's samples."""
    inputs = classifier_inputs(config, samples.shard_set, len(dataset.class_names))
    fp = fingerprint("classifier", TRAIN_CODE_VERSION, inputs)
    train_log = artifacts.read_train_log(store, fp)
    if train_log is not None:
        log.info("model %s: classifier cached (%s)", samples.model, fp[:12])
        return ClassifierRecord(samples.model, fp, samples, True, train_log["train_seconds"], train_log["device"])

    recipe, torch_device = config.classifier.resolved, devices.torch_device(device)
    log.info("model %s: training %s classifier on %d samples on %s", samples.model, recipe.name,
             samples.shard_set.num_samples, torch_device)
    net, train_log = training.train(
        recipe, StoredSamples(store, samples.shard_set, f"model {samples.model}", config.seed),
        num_classes=len(dataset.class_names), device=torch_device, seed=config.seed,
        resident_limit_gb=config.classifier.resident_limit_gb)
    train_log["fingerprint_inputs"] = inputs
    artifacts.write_classifier(store, fp, training.weights_bytes(net), train_log)
    return ClassifierRecord(samples.model, fp, samples, False, train_log["train_seconds"], train_log["device"])


def classifier_inputs(config: Config, samples: ShardSet, num_classes: int) -> dict:
    spec = config.classifier
    return spec.resolved.fingerprint_inputs() | {
        "samples": samples.manifest_sha256,
        "num_classes": num_classes,
        "seed": config.seed,
        "data_path": training.data_path(samples.num_samples, samples.image_shape, spec.resident_limit_gb),
    }


@dataclasses.dataclass(frozen=True)
class StoredSamples:
    """A committed shard set as training reads it (`training.TrainingSamples`): decoded whole
    through the local cache, or streamed shard by shard in a seeded order per epoch."""

    store: Store
    shard_set: ShardSet
    what: str  # for progress lines
    seed: int

    @property
    def num_samples(self) -> int:
        return self.shard_set.num_samples

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shard_set.image_shape

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        return load_decoded(self.store, self.shard_set, self.what)

    def chunks(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        shards = self.shard_set.shards
        order = np.random.default_rng(derive_seed(self.seed, "shard-order", epoch)).permutation(len(shards))
        return decoded_chunks(self.store, self.shard_set, [shards[i] for i in order])


# ---------------------------------------------------------------- step 4: per-class evaluation on the real eval split

def evaluate_classifier(config: Config, store: Store, classifier: ClassifierRecord, dataset: DatasetRecord,
                        device: str) -> EvaluationRecord:
    started = time.perf_counter()
    inputs = {"classifier": classifier.fingerprint, "eval": dataset.eval.manifest_sha256}
    fp = fingerprint("evaluation", EVALUATION_CODE_VERSION, inputs)
    stored = artifacts.read_evaluation(store, fp)
    if stored is not None:
        return EvaluationRecord(classifier.model, fp, classifier, ClassCounts.from_dict(stored["counts"]), cached=True,
                                seconds=0.0)

    recipe, torch_device = config.classifier.resolved, devices.torch_device(device)
    net = training.load_weights(recipe, artifacts.read_weights(store, classifier.fingerprint),
                                image_shape=dataset.eval.image_shape, num_classes=len(dataset.class_names),
                                device=torch_device)
    images, labels = load_decoded(store, dataset.eval, f"{dataset.name} eval split")
    counts = count_correct(training.predict(recipe, net, images, torch_device), labels, len(dataset.class_names))
    artifacts.write_evaluation(store, fp, {"fingerprint_inputs": inputs, "counts": dataclasses.asdict(counts)})
    log.info("model %s: top-1 %.4f, top-5 %.4f on %d real eval images", classifier.model, counts.top1, counts.top5,
             sum(counts.n_eval))
    return EvaluationRecord(classifier.model, fp, classifier, counts, cached=False,
                            seconds=round(time.perf_counter() - started, 3))


# ---------------------------------------------------------------- step 5: results

def write_results(store: Store, run: RunInfo, outcomes: list[ModelOutcome], baseline: str) -> ResultsRecord:
    """Append this run's per-class and summary tables (one Parquet file each)."""
    base = next((o for o in outcomes if o.model == baseline), None)
    per_class = list(itertools.chain.from_iterable(per_class_rows(run, o) for o in outcomes))
    summary = [summary_row(run, o, base) for o in outcomes]
    per_class_uri = results.write_table(store, "per_class", per_class, run.run_id, run.run_time)
    summary_uri = results.write_table(store, "summary", summary, run.run_id, run.run_time)  # last: a run with a summary is whole
    return ResultsRecord(run.run_id, per_class_uri, summary_uri, summary)


def outcome(model: ModelConfig, samples: SamplesRecord | None, classifier: ClassifierRecord | None,
            evaluation: EvaluationRecord | None, error: str | None) -> ModelOutcome:
    """What one model's steps produced, for the result rows."""
    return ModelOutcome(
        model=model.name,
        generator_kind=model.generator.kind,
        error=error,
        samples_fingerprint=samples.shard_set.fingerprint if samples else None,
        classifier_fingerprint=classifier.fingerprint if classifier else None,
        evaluation_fingerprint=evaluation.fingerprint if evaluation else None,
        n_train_per_class=samples.shard_set.count_per_class if samples else None,
        counts=evaluation.counts if evaluation and not error else None,
        sample_seconds=samples.seconds if samples else None,
        train_seconds=classifier.train_seconds if classifier else None,
        eval_seconds=evaluation.seconds if evaluation else None,
        device=classifier.device if classifier else None,
        samples_cached=samples.cached if samples else None,
        classifier_cached=classifier.cached if classifier else None,
        evaluation_cached=evaluation.cached if evaluation else None,
    )


def describe_failure(model: str, exc: BaseException) -> str:
    """One line naming the model and the problem."""
    if isinstance(exc, InputError):
        return str(exc.for_model(model))
    text = str(exc) if isinstance(exc, (ValueError, FileNotFoundError)) else f"{type(exc).__name__}: {exc}"
    return text if f"'{model}'" in text else f"model '{model}': {text}"


# ---------------------------------------------------------------- decoding shard sets

def load_decoded(store: Store, shard_set: ShardSet, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A shard set as uint8 images and labels, decoded once per manifest and cached locally."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        progress = Progress(f"{what}: decoding {shard_set.location}", shard_set.num_samples)
        for chunk_images, chunk_labels in decoded_chunks(store, shard_set, shard_set.shards):
            images.append(chunk_images)
            labels.append(chunk_labels)
            progress.update(len(chunk_labels))
        return np.concatenate(images), np.concatenate(labels)

    return decoded_cache.load_or_build(shard_set.manifest_sha256, build)


def decoded_chunks(store: Store, shard_set: ShardSet, shards: Sequence[ShardInfo]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per shard, streamed from the store with sha256 checks."""
    for shard in shards:
        one = dataclasses.replace(shard_set, shards=(shard,))
        blobs, labels, keys = [], [], []
        for key, parts in iter_shard_set(store, one):
            blobs.append(parts["png"])
            labels.append(int(parts["cls"]))
            keys.append(f"{store.uri(shard_set.location)}/{shard.name} key {key}")
        height, width, channels = shard_set.image_shape  # our own shards hold images of their manifest's shape
        images = decode_stack(blobs, keys, max_pixels=height * width, max_decoded_bytes=len(blobs) * height * width * channels,
                              what=f"{store.uri(shard_set.location)}/{shard.name}")
        yield images, np.array(labels, dtype=np.int64)
