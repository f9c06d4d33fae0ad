"""The pipeline's steps as plain functions.

Each step computes its fingerprint, asks the store whether that output is
already committed (a cache hit), and otherwise computes it with tasks/ and
commits it with storage/. No Prefect here: `flows/pipeline.py` wraps each
step once as a Prefect task, and tests call these directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from storage import decoded_cache, results, sources
from storage.shards import ShardFormatError, ShardSet, iter_shard_set, load_shard_set, write_shard_set
from storage.store import Store, s3_options
from tasks import classifiers, datasets, training
from tasks.config import Config, ModelConfig, StoreConfig, location_fields, parse_config
from tasks.errors import InputError
from tasks.fingerprint import derive_seed, fingerprint, sha256_bytes
from tasks.generators import builtin, files, python_entry
from tasks.images import decode_many, stack_images
from tasks.metrics import EVALUATION_CODE_VERSION, ClassCounts, count_correct
from tasks.progress import Progress
from tasks.report import ModelOutcome, RunInfo, per_class_rows, summary_row
from tasks.samples import (
    SAMPLES_CODE_VERSION,
    check_class_count,
    check_labels,
    class_interleaved,
    conform_images,
    encode_samples,
    label_schedule,
    select_for_budget,
)

log = logging.getLogger("casflow.steps")

DATASET_CODE_VERSION = 2
TRAIN_CODE_VERSION = 1
LIMIT_PER_CLASS_SEED = 0  # the seeded per-class subset of `limit_per_class` datasets


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
    """Load and validate a YAML config file; `store_url` overrides `store.url`."""
    with open(path, encoding="utf-8") as f:
        config = parse_config(f.read(), source=path)
    if store_url:
        config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    return config


def open_store(config: StoreConfig) -> Store:
    secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
    options = s3_options(config.endpoint_url, config.region, secret(config.access_key_id), secret(config.secret_access_key))
    return Store(config.url, s3=options)


# ---------------------------------------------------------------- decoding shard sets

def load_decoded(store: Store, shard_set: ShardSet, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A shard set as uint8 images and labels, decoded once per manifest and cached locally."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        progress = Progress(f"{what}: decoding {shard_set.location}", shard_set.num_samples)
        for chunk_images, chunk_labels in _decoded_chunks(store, shard_set, shard_set.shards):
            images.append(chunk_images)
            labels.append(chunk_labels)
            progress.update(len(chunk_labels))
        return np.concatenate(images), np.concatenate(labels)

    return decoded_cache.load_or_build(shard_set.manifest_sha256, build)


def _decoded_chunks(store: Store, shard_set: ShardSet, shards) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per shard, streamed from the store with sha256 checks."""
    for shard in shards:
        one = dataclasses.replace(shard_set, shards=(shard,))
        blobs, labels, keys = [], [], []
        for key, parts in iter_shard_set(store, one):
            blobs.append(parts["png"])
            labels.append(int(parts["cls"]))
            keys.append(f"{store.uri(shard_set.location)}/{shard.name} key {key}")
        yield stack_images(decode_many(blobs, keys), keys), np.array(labels, dtype=np.int64)


def _streamed_chunks(store: Store, shard_set: ShardSet, seed: int):
    """For data too large for the device: shards in a seeded order per epoch."""

    def chunks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng(derive_seed(seed, "shard-order", epoch)).permutation(len(shard_set.shards))
        return _decoded_chunks(store, shard_set, [shard_set.shards[i] for i in order])

    return chunks


# ---------------------------------------------------------------- step 1: the real dataset as shards

def _dataset_inputs(config: Config, store: Store) -> dict:
    spec = config.dataset
    fields = spec.model_dump(exclude={"name", *location_fields(spec)})
    if spec.kind == "digits":
        train, held_out = datasets.digits_splits(spec.eval_fraction, spec.split_seed)
        content = {"train": datasets.content_digest(train), "eval": datasets.content_digest(held_out)}
    else:
        content = {f: store.digest(getattr(spec, f)) for f in location_fields(spec)}
    return {"dataset": fields, "content": content, "shard_size": config.store.shard_size}


def _load_dataset(config: Config, store: Store) -> tuple[datasets.LabeledImages, datasets.LabeledImages]:
    spec = config.dataset
    if spec.kind == "digits":
        return datasets.digits_splits(spec.eval_fraction, spec.split_seed)
    if spec.kind == "hf-parquet":
        splits = []
        for url in (spec.train, spec.eval):
            with sources.open_file(store, url) as f:
                data = datasets.read_hf_parquet(f, url)
            if spec.limit_per_class:
                data = data.take(datasets.subset_per_class(data.labels, spec.limit_per_class, LIMIT_PER_CLASS_SEED))
            splits.append(data)
        train, held_out = splits
    else:
        train = datasets.read_imagefolder(sources.open_tree(store, spec.train))
        held_out = datasets.read_imagefolder(sources.open_tree(store, spec.eval))
    if train.class_names != held_out.class_names:
        raise InputError(f"train and eval splits have different classes: {train.class_names} vs {held_out.class_names}",
                         source=f"dataset {spec.name}")
    if train.image_shape != held_out.image_shape:
        raise InputError(f"train images are {train.image_shape}, eval images {held_out.image_shape}",
                         source=f"dataset {spec.name}")
    return train, held_out


def prepare_dataset(config: Config, store: Store) -> DatasetRecord:
    """Shard the real train and eval splits once per dataset fingerprint."""
    inputs = _dataset_inputs(config, store)
    fp = fingerprint("dataset", DATASET_CODE_VERSION, inputs)
    locations = {split: store.location("real", fp, split) for split in ("train", "eval")}
    committed = {split: load_shard_set(store, loc) for split, loc in locations.items()}
    if all(committed.values()):
        log.info("dataset %s: cached (%s)", config.dataset.name, fp[:12])
        return DatasetRecord(config.dataset.name, fp, committed["train"], committed["eval"], cached=True)
    train, held_out = _load_dataset(config, store)
    for split, data in (("train", train), ("eval", held_out)):
        data = data.take(class_interleaved(data.labels))  # sources often come grouped by class
        if committed[split] is None:
            committed[split] = write_shard_set(
                store, locations[split], encode_samples(data.images, data.labels),
                shard_size=config.store.shard_size, fingerprint=fp, fingerprint_inputs=inputs | {"split": split},
                class_names=data.class_names, image_shape=data.image_shape, what=f"{config.dataset.name} {split}")
    return DatasetRecord(config.dataset.name, fp, committed["train"], committed["eval"], cached=False)


# ---------------------------------------------------------------- step 2: samples per model

def _source_digests(store: Store, model: ModelConfig) -> dict[str, str]:
    generator = model.generator
    digests = {}
    for field in location_fields(generator):
        url = getattr(generator, field)
        if url is None:
            continue
        try:
            if generator.kind == "webdataset":
                shards = [_shard_digest(store, model, u) for u in sources.tar_urls(store, url)]
                digests[field] = sha256_bytes("\n".join(shards).encode())
            else:
                digests[field] = store.digest(url)
        except FileNotFoundError:
            raise InputError(f"{field} {url}: no such file or folder", model=model.name) from None
    return digests


def _shard_digest(store: Store, model: ModelConfig, url: str) -> str:
    """One shard of a webdataset source; a brace pattern can name a shard that is not there."""
    try:
        return store.digest(url)
    except FileNotFoundError:
        raise InputError("no such shard", model=model.name, source=url) from None


def samples_inputs(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord) -> dict:
    """Everything that changes a model's samples: never its name or where its files live."""
    generator = model.generator
    spec = generator.model_dump(exclude=set(location_fields(generator)))
    if generator.kind == "python":
        spec["code"] = python_entry.code_digest(generator.entry_point, model.name)
    return {
        "generator": spec,
        "sources": _source_digests(store, model),
        "dataset": dataset.fingerprint,
        "budget": list(dataset.train.count_per_class),
        "seed": config.seed,
        "shard_size": config.store.shard_size,
    }


def _real_train(store: Store, dataset: DatasetRecord) -> datasets.LabeledImages:
    images, labels = load_decoded(store, dataset.train, f"{dataset.name} train split")
    return datasets.LabeledImages(images, labels, dataset.class_names)


def _read_drawn(store: Store, model: ModelConfig, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """Samples a user drew elsewhere: (images, labels, where they came from)."""
    generator, name = model.generator, model.name
    if generator.kind == "npz":
        with sources.open_file(store, generator.path) as f:
            return (*files.read_npz(f, generator.path, name), generator.path)
    if generator.kind == "webdataset":
        urls = sources.tar_urls(store, generator.url)
        if not urls:
            raise InputError("no .tar shards found", model=name, source=generator.url)
        try:
            return (*files.read_webdataset(sources.iter_webdataset(store, urls), generator.url, name), generator.url)
        except ShardFormatError as exc:  # duplicate keys, a truncated tar: the message names the shard
            raise InputError(str(exc), model=name) from None
    try:
        tree = sources.open_tree(store, generator.path)
    except ValueError as exc:  # a corrupt zip
        raise InputError(str(exc), model=name) from None
    if generator.kind == "imagefolder":
        return (*files.read_class_folders(tree, class_names, name), generator.path)
    images, labels = files.read_dataset_json(tree, name)
    return images, labels, generator.path


def _python_samples(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord,
                    device: str) -> Iterator[tuple[int, bytes]]:
    """The entry point, checkpoint and factory are checked now, before anything is written;
    what sample() returns is checked batch by batch as the stream is consumed."""
    generator = model.generator
    factory = python_entry.load_factory(generator.entry_point, model.name)
    checkpoint = None
    if generator.checkpoint:
        try:
            data = sources.read_bytes(store, generator.checkpoint)
        except FileNotFoundError:
            raise InputError(f"checkpoint {generator.checkpoint}: no such file", model=model.name) from None
        if generator.load_checkpoint:
            checkpoint = python_entry.load_checkpoint(data, generator.checkpoint, allow_unsafe=generator.allow_unsafe_checkpoint,
                                                      device=device, model=model.name)
        else:
            checkpoint = _local_copy(data, generator.checkpoint)
    sampler = python_entry.make_sampler(factory, checkpoint, device, dict(generator.options),
                                        entry_point=generator.entry_point, model=model.name)
    declared = getattr(sampler, "num_classes", None)
    if declared is not None:
        check_class_count(int(declared), len(dataset.class_names), model=model.name, source=generator.entry_point)
    budget = dataset.train.count_per_class

    def stream() -> Iterator[tuple[int, bytes]]:
        progress = Progress(f"model {model.name}: sampling", sum(budget))
        for images, labels in python_entry.draw(
                sampler, budget, seed=config.seed, batch_size=generator.batch_size, output_range=generator.output_range,
                layout=generator.layout, image_shape=dataset.train.image_shape, resize_filter=generator.resize,
                model=model.name):
            yield from encode_samples(images, labels)
            progress.update(len(labels))

    return stream()


def _local_copy(data: bytes, url: str) -> str:
    """A checkpoint as a local file, for factories that load it themselves."""
    if os.path.exists(url):
        return os.path.abspath(url)
    path = decoded_cache.cache_dir() / "checkpoints" / f"{sha256_bytes(data)}{Path(url).suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
            f.write(data)
        os.replace(f.name, path)
    return str(path)


def _sample_stream(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord,
                   device: str) -> Iterator[tuple[int, bytes]]:
    """(label, PNG) for every sample of the model, validated; files are checked whole before anything is written."""
    generator, budget = model.generator, dataset.train.count_per_class
    if generator.kind == "real-shuffled":
        images, labels = builtin.shuffled_labels(_real_train(store, dataset), derive_seed(config.seed, "shuffle"))
        return encode_samples(images, labels)
    if generator.kind == "gaussian":
        gaussian = builtin.GaussianPCA.fit(_real_train(store, dataset), generator.components)
        labels = label_schedule(budget)
        images = gaussian.sample(labels, derive_seed(config.seed, "gaussian"), generator.temperature)
        return encode_samples(images, labels)
    if generator.kind == "python":
        return _python_samples(config, store, model, dataset, device)
    images, labels, where = _read_drawn(store, model, dataset.class_names)
    labels = check_labels(labels, len(dataset.class_names), model=model.name, source=where)
    chosen = select_for_budget(labels, budget, seed=derive_seed(config.seed, "subset"),
                               allow_shortfall=generator.allow_shortfall, model=model.name, source=where)
    images = conform_images(images[chosen], dataset.train.image_shape, resize_filter=generator.resize,
                            model=model.name, source=where)
    return encode_samples(images, labels[chosen])


def draw_samples(config: Config, store: Store, model: ModelConfig, dataset: DatasetRecord, device: str) -> SamplesRecord:
    """Draw (or find) a model's samples as a committed shard set."""
    started = time.perf_counter()
    if model.generator.kind == "real":
        return SamplesRecord(model.name, dataset.train, cached=dataset.cached, seconds=0.0)
    inputs = samples_inputs(config, store, model, dataset)
    fp = fingerprint("samples", SAMPLES_CODE_VERSION, inputs)
    location = store.location("samples", fp)
    committed = load_shard_set(store, location)
    if committed is not None:
        log.info("model %s: samples cached (%s)", model.name, fp[:12])
        return SamplesRecord(model.name, committed, cached=True, seconds=0.0)
    try:
        shard_set = write_shard_set(
            store, location, _sample_stream(config, store, model, dataset, device), shard_size=config.store.shard_size,
            fingerprint=fp, fingerprint_inputs=inputs, class_names=dataset.class_names,
            image_shape=dataset.train.image_shape, what=f"model {model.name}")
    except InputError:
        if load_shard_set(store, location) is None:
            store.remove(location)  # bad input fails the same way every time: leave no debris
        raise
    return SamplesRecord(model.name, shard_set, cached=False, seconds=round(time.perf_counter() - started, 3))


# ---------------------------------------------------------------- step 3: a classifier per model

def classifier_inputs(config: Config, samples: ShardSet, num_classes: int) -> dict:
    spec = config.classifier
    hp = classifiers.hyperparameters(spec.recipe, spec.options)
    streaming = samples.decoded_bytes > spec.resident_limit_gb * 1e9
    return {
        "recipe": spec.recipe,
        "recipe_version": classifiers.recipe(spec.recipe).VERSION,
        "hyperparameters": training.hyper_dict(hp),
        "samples": samples.manifest_sha256,
        "num_classes": num_classes,
        "seed": config.seed,
        "data_path": "streaming" if streaming else "resident",
    }


def train_classifier(config: Config, store: Store, samples: SamplesRecord, dataset: DatasetRecord,
                     device: str) -> ClassifierRecord:
    """Train (or find) the classifier for one model's samples."""
    inputs = classifier_inputs(config, samples.shard_set, len(dataset.class_names))
    fp = fingerprint("classifier", TRAIN_CODE_VERSION, inputs)
    weights_at, log_at = (store.location("classifiers", fp, name) for name in ("model.pt", "train_log.json"))
    if store.exists(log_at) and store.exists(weights_at):
        train_log = json.loads(store.read_bytes(log_at))
        log.info("model %s: classifier cached (%s)", samples.model, fp[:12])
        return ClassifierRecord(samples.model, fp, samples, True, train_log["train_seconds"], train_log["device"])

    spec = config.classifier
    hp = classifiers.hyperparameters(spec.recipe, spec.options)
    torch_device = training.select_device(device)
    shard_set, num_classes = samples.shard_set, len(dataset.class_names)
    log.info("model %s: training %s classifier on %d samples on %s", samples.model, spec.recipe,
             shard_set.num_samples, torch_device)
    if inputs["data_path"] == "streaming":
        net, train_log = training.train_streaming(
            spec.recipe, hp, _streamed_chunks(store, shard_set, config.seed), num_samples=shard_set.num_samples,
            image_shape=shard_set.image_shape, num_classes=num_classes, device=torch_device, seed=config.seed)
    else:
        images, labels = load_decoded(store, shard_set, f"model {samples.model}")
        net, train_log = training.train(spec.recipe, hp, images, labels, num_classes=num_classes,
                                        device=torch_device, seed=config.seed)
    store.write_bytes(weights_at, training.weights_bytes(net))
    train_log["fingerprint_inputs"] = inputs
    store.write_bytes(log_at, json.dumps(train_log, indent=1, sort_keys=True).encode())  # last: the commit marker
    return ClassifierRecord(samples.model, fp, samples, False, train_log["train_seconds"], train_log["device"])


# ---------------------------------------------------------------- step 4: per-class evaluation on the real eval split

def evaluate_classifier(config: Config, store: Store, classifier: ClassifierRecord, dataset: DatasetRecord,
                        device: str) -> EvaluationRecord:
    started = time.perf_counter()
    inputs = {"classifier": classifier.fingerprint, "eval": dataset.eval.manifest_sha256}
    fp = fingerprint("evaluation", EVALUATION_CODE_VERSION, inputs)
    metrics_at = store.location("evaluations", fp, "metrics.json")
    if store.exists(metrics_at):
        stored = json.loads(store.read_bytes(metrics_at))
        counts = ClassCounts.from_dict(stored["counts"])
        return EvaluationRecord(classifier.model, fp, classifier, counts, cached=True, seconds=0.0)

    spec = config.classifier
    hp = classifiers.hyperparameters(spec.recipe, spec.options)
    torch_device = training.select_device(device)
    net = training.load_weights(spec.recipe, hp, store.read_bytes(store.location("classifiers", classifier.fingerprint, "model.pt")),
                                image_shape=dataset.eval.image_shape, num_classes=len(dataset.class_names), device=torch_device)
    images, labels = load_decoded(store, dataset.eval, f"{dataset.name} eval split")
    counts = count_correct(training.predict(hp, net, images, torch_device), labels, len(dataset.class_names))
    payload = {"fingerprint_inputs": inputs, "counts": dataclasses.asdict(counts)}
    store.write_bytes(metrics_at, json.dumps(payload, sort_keys=True).encode())
    log.info("model %s: top-1 %.4f, top-5 %.4f on %d real eval images", classifier.model, counts.top1, counts.top5,
             sum(counts.n_eval))
    return EvaluationRecord(classifier.model, fp, classifier, counts, cached=False,
                            seconds=round(time.perf_counter() - started, 3))


# ---------------------------------------------------------------- step 5: results

def describe_failure(model: str, exc: BaseException) -> str:
    """One line naming the model and the problem."""
    if isinstance(exc, InputError):
        return str(exc.for_model(model))
    text = str(exc) if isinstance(exc, (ValueError, FileNotFoundError)) else f"{type(exc).__name__}: {exc}"
    return text if f"'{model}'" in text else f"model '{model}': {text}"


def outcome(model: ModelConfig, samples: SamplesRecord | None, classifier: ClassifierRecord | None,
            evaluation: EvaluationRecord | None, error: str | None) -> ModelOutcome:
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


def write_results(store: Store, run: RunInfo, outcomes: list[ModelOutcome], baseline: str) -> ResultsRecord:
    """Append this run's per-class and summary tables (one Parquet file each)."""
    base = next((o for o in outcomes if o.model == baseline), None)
    per_class = list(itertools.chain.from_iterable(per_class_rows(run, o) for o in outcomes))
    summary = [summary_row(run, o, base) for o in outcomes]
    per_class_uri = results.write_table(store, "per_class", per_class, run.run_id, run.run_time)
    summary_uri = results.write_table(store, "summary", summary, run.run_id, run.run_time)  # last: a run with a summary is whole
    return ResultsRecord(run.run_id, per_class_uri, summary_uri, summary)
