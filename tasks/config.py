"""The run configuration: one YAML file validated into frozen pydantic models.

Unknown keys are errors, never ignored; a bad config fails before any work
starts, with the key path in the message. Relative local paths are relative
to the working directory. The dataset and generator sections are the config
models of the kinds the registries list (`tasks.datasets`, `tasks.generators`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Discriminator, Field, SecretStr, Tag, ValidationError, field_validator, model_validator

from casflow.tasks import classifiers, datasets, devices, generators
from casflow.tasks.datasets.digits import DigitsDataset
from casflow.tasks.exits import USAGE, CasError
from casflow.tasks.fingerprint import canonical_json
from casflow.tasks.generators.builtin import RealGenerator
from casflow.tasks.limits import Limits
from casflow.tasks.schema import Frozen, location_fields


class ConfigError(CasError, ValueError):
    """A config that cannot run; the message lists every problem with its key path."""

    exit_code = USAGE


class StoreConfig(Frozen):
    url: str = "./casflow-store"  # local folder or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible endpoint; else AWS_ENDPOINT_URL
    region: str | None = None  # else AWS_DEFAULT_REGION
    access_key_id: SecretStr | None = None  # else AWS_ACCESS_KEY_ID (prefer the environment)
    secret_access_key: SecretStr | None = None  # else AWS_SECRET_ACCESS_KEY
    shard_size: int = Field(5000, gt=0)  # samples per tar shard; changes the shard bytes, so fingerprinted

    @model_validator(mode="after")
    def _both_or_neither_key(self) -> StoreConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self


# the config models of the kinds the registries list, told apart by `kind`
DatasetConfig = Annotated[Union[tuple(s.config for s in datasets.SOURCES.values())], Field(discriminator="kind")]  # noqa: UP007
GeneratorConfig = Annotated[Union[tuple(s.config for s in generators.SOURCES.values())], Field(discriminator="kind")]  # noqa: UP007


class SeedRange(Frozen):
    """Adaptive classifier seeds: `min` for every model, then one more at a time while its comparison with the
    previous run is not settled, up to `max` (tasks/seeds.py); a racing series' checkpoints race with up to
    `max` (tasks/race.py). The seeds are the run's seed and the integers after it."""

    min: int = Field(ge=1, le=100)
    max: int = Field(ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> SeedRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


def _seeds_form(value: Any) -> str:
    return "range" if isinstance(value, (dict, SeedRange)) else "list"


# a list of seeds, or a range told apart by its form, so that an error names the form meant
Seeds = Annotated[Union[Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]], Tag("list")],  # noqa: UP007
                        Annotated[SeedRange, Tag("range")]], Discriminator(_seeds_form)]


class ClassifierConfig(Frozen):
    recipe: Literal[classifiers.RECIPE_NAMES] = "fast"  # tasks/classifiers/<recipe>.py
    options: dict[str, Any] = {}  # overrides of the recipe's hyperparameters
    device: str = "auto"  # auto (every visible GPU, else cpu), cpu, cuda, or a list: cuda:0,cuda:1
    resident_limit_gb: float = Field(16.0, gt=0)  # sample sets up to this size (decoded uint8) train from device memory; larger ones stream
    # a list: one classifier per seed per model; {min, max}: as many as each model's comparison needs (SeedRange);
    # default: the run's seed. Results carry the mean and spread across seeds.
    seeds: Seeds | None = None

    @property
    def resolved(self) -> classifiers.Recipe:
        """The recipe module with the options applied, resolved once per distinct (recipe, options)."""
        return _resolve(self.recipe, canonical_json(self.options))

    @model_validator(mode="after")
    def _recipe_and_options_known(self) -> ClassifierConfig:
        _ = self.resolved  # resolving raises naming the unknown recipe, or the unknown or bad option
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, value: list[int] | SeedRange | None) -> list[int] | SeedRange | None:
        if isinstance(value, list) and not value:
            raise ValueError("seeds: give at least one seed, or {min, max}")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct, got {value}")
        return value

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        devices.parse(value)
        return value


class ScoresConfig(Frozen):
    """What casflow scores beside CAS (tasks/scores.py); each can be turned off."""

    gan_test: bool = True  # the real baseline's classifier on the samples (Shmelkov et al. 2018)
    features: bool = True  # Frechet distance, precision/recall, density/coverage in its penultimate features
    memorization: bool = True  # near copies of real train images, in pixels and in features
    # Naive Augmentation Score: real train split plus this share of it in samples; one classifier per ratio and
    # model, so the default adds one training per model (the README's cost table); [] turns it off
    augmentation: list[Annotated[float, Field(gt=0, le=1)]] = [0.5]

    @field_validator("augmentation")
    @classmethod
    def _ratios_distinct(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError(f"ratios must be distinct, got {value}")
        return sorted(value)


@functools.lru_cache(maxsize=64)
def _resolve(recipe: str, options_json: str) -> classifiers.Recipe:
    # keyed by value, not held on the config: a model_copy with other options must not see a stale recipe
    return classifiers.resolve(recipe, json.loads(options_json))


STEP_FIELD = "{step}"  # where a series' file pattern puts the checkpoint's step


class SeriesConfig(Frozen):
    """Checkpoints of one model: the generator's file field is a pattern with one `{step}` (a run of digits)."""

    steps: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)  # else every file the pattern matches
    # all: every checkpoint gets every classifier seed; race: seeds in rounds, only to the contenders (tasks/race.py),
    # up to classifier.seeds' max
    selection: Literal["all", "race"] = "all"

    @model_validator(mode="before")
    @classmethod
    def _no_max_seeds(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_seeds" in data:
            raise ValueError("max_seeds is gone: a race gives up to classifier.seeds' max, so write "
                             f"classifier: {{seeds: {{min: 1, max: {data['max_seeds']}}}}} instead")
        return data


class ModelConfig(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    generator: GeneratorConfig
    seed: int | None = Field(None, ge=0, lt=2**32)  # this model's samples only; default: the run's seed
    series: SeriesConfig | None = None  # one model per checkpoint, named <name>@<step> (expand_series)

    @model_validator(mode="after")
    def _series_pattern(self) -> ModelConfig:
        if self.series is not None:
            series_pattern(self)  # raises naming the model when its generator cannot name a series
        return self


class CheckpointConfig(ModelConfig):
    """One checkpoint of a series, evaluated like any model: its generator names that checkpoint's file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}@[0-9]+$")
    series_name: str
    step: int
    race_max_seeds: int | None = None  # the series races (selection: race) with up to this many seeds (SeedRange.max)


class Config(Frozen):
    store: StoreConfig = StoreConfig()
    dataset: DatasetConfig = DigitsDataset()
    classifier: ClassifierConfig = ClassifierConfig()
    limits: Limits = Limits()  # what one input may make casflow read (tasks/limits.py)
    scores: ScoresConfig = ScoresConfig()
    seed: int = Field(0, ge=0, lt=2**32)
    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [m.name for m in self.models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"model names must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _races_have_a_range(self) -> Config:
        racing = [m.name for m in self.models if m.series is not None and m.series.selection == "race"]
        seeds = self.classifier.seeds
        if racing and not (isinstance(seeds, SeedRange) and seeds.min == 1):
            raise ValueError(f"model '{racing[0]}': series: selection race gives each checkpoint one classifier seed, "
                             "then more to the contenders: it needs classifier: {seeds: {min: 1, max: N}} "
                             f"(got seeds {seeds if not isinstance(seeds, SeedRange) else seeds.model_dump()})")
        return self

    @property
    def seed_range(self) -> SeedRange | None:
        """`classifier.seeds` when it is a range (adaptive seeds, races); None for a list or the default."""
        return self.classifier.seeds if isinstance(self.classifier.seeds, SeedRange) else None

    @property
    def classifier_seeds(self) -> tuple[int, ...]:
        """The seeds each model's classifiers may train with, in order: `classifier.seeds` as listed; for a
        range, the run's seed and the integers after it, `max` in all; else the run's seed."""
        seeds = self.classifier.seeds
        if isinstance(seeds, SeedRange):
            return tuple(range(self.seed, self.seed + seeds.max))
        return tuple(seeds or [self.seed])

    def first_seeds(self, model: ModelConfig) -> tuple[int, ...]:
        """The seeds a model trains before anything is judged: one for a racing checkpoint, `min` with a
        range, every listed seed otherwise."""
        if self.race_seeds(model):
            return self.classifier_seeds[:1]
        if self.seed_range is not None:
            return self.classifier_seeds[:self.seed_range.min]
        return self.classifier_seeds

    def race_seeds(self, model: ModelConfig) -> tuple[int, ...] | None:
        """The seeds a checkpoint of a racing series may get, in the order it gets them (the range's seeds);
        None for any other model."""
        if getattr(model, "race_max_seeds", None) is None:
            return None
        return self.classifier_seeds

    def augmentation_ratios(self, model: ModelConfig) -> tuple[float, ...]:
        """The Naive Augmentation Score ratios a model's NAS classifiers train at; none for the real baseline
        (its samples are the real train split)."""
        return tuple(self.scores.augmentation) if model.generator.kind != "real" else ()

    def samples_seed(self, model: ModelConfig) -> int:
        return self.seed if model.seed is None else model.seed

    @property
    def baseline(self) -> ModelConfig:
        """The `real` model whose accuracy every CAS ratio divides by; added if the config lists none."""
        for model in self.models:
            if model.generator.kind == "real":
                return model
        return ModelConfig(name="real", generator=RealGenerator(kind="real"))

    @property
    def all_models(self) -> list[ModelConfig]:
        """The configured models, with the baseline first when it was added implicitly."""
        if any(m.generator.kind == "real" for m in self.models):
            return list(self.models)
        if any(m.name == "real" for m in self.models):
            raise ConfigError("models: the name 'real' is kept for the baseline; add {kind: real} or rename the model")
        return [self.baseline, *self.models]


def series_pattern(model: ModelConfig) -> tuple[str, str]:
    """(the generator's file field, its pattern with one `{step}`) of a series model; ValueError naming the
    model when the generator reads no file or the pattern lacks `{step}` or repeats it."""
    fields = location_fields(model.generator)
    if len(fields) != 1:
        raise ValueError(f"model '{model.name}': a series needs a generator that reads a file "
                         f"(kind {model.generator.kind} reads none)")
    field = fields[0]
    pattern = getattr(model.generator, field)
    if pattern is None or pattern.count(STEP_FIELD) != 1:
        raise ValueError(f"model '{model.name}': series: generator.{field} must contain {STEP_FIELD} once, "
                         f"where the checkpoint's step goes (got {pattern!r})")
    return field, pattern


def series_glob(model: ModelConfig) -> str | None:
    """The glob or brace pattern whose matches are a series model's checkpoints (`{step}` as `*`); None
    when the model is no series or lists its steps."""
    if model.series is None or model.series.steps is not None:
        return None
    return series_pattern(model)[1].replace(STEP_FIELD, "*")


def expand_series(config: Config, listed: Mapping[str, list[str]]) -> Config:
    """The config with each series model replaced by its checkpoints, in step order, as models named
    `<name>@<step>`. `listed` holds, per series model without `steps`, the file names its `series_glob`
    matched; names whose `{step}` is not a run of digits (ckpt-last.pt) are not checkpoints of the series.
    ConfigError naming the model for a series without checkpoints or two files of one step."""
    models: list[ModelConfig] = []
    for model in config.models:
        if model.series is None:
            models.append(model)
            continue
        field, pattern = series_pattern(model)
        if model.series.steps is not None:
            files = {step: pattern.replace(STEP_FIELD, str(step)) for step in model.series.steps}
        else:
            files = _files_by_step(model.name, pattern, listed.get(model.name, []))
        for step in sorted(files):
            models.append(CheckpointConfig(
                name=f"{model.name}@{step}", generator=model.generator.model_copy(update={field: files[step]}),
                seed=model.seed, series_name=model.name, step=step,
                race_max_seeds=config.seed_range.max if model.series.selection == "race" else None))
    return config.model_copy(update={"models": models})


def _files_by_step(model: str, pattern: str, names: list[str]) -> dict[int, str]:
    alternatives = _brace_alternatives(pattern)
    matchers = [re.compile(_glob_regex(a.split(STEP_FIELD)[0]) + r"([0-9]+)" + _glob_regex(a.split(STEP_FIELD)[1]))
                for a in alternatives]
    files: dict[int, str] = {}
    for name in names:
        found = next(filter(None, (m.fullmatch(name) for m in matchers)), None)
        if found is None:
            continue
        step = int(found.group(1))
        if step in files and files[step] != name:
            raise ConfigError(f"model '{model}': series: two checkpoints of step {step}: {files[step]} and {name}")
        files[step] = name
    if not files:
        raise ConfigError(f"model '{model}': series: no checkpoint matches {pattern} "
                          f"({STEP_FIELD} must be a run of digits)")
    return files


def _brace_alternatives(pattern: str) -> list[str]:
    """A brace pattern's alternatives ({a,b} and nesting; `{step}` kept), as braceexpand expands them."""
    import braceexpand  # pure string work, the grammar the storage layer expands for listing

    placeholder = "\x00"  # no brace syntax, so braceexpand passes it through
    return [a.replace(placeholder, STEP_FIELD) for a in braceexpand.braceexpand(pattern.replace(STEP_FIELD, placeholder))]


def _glob_regex(glob: str) -> str:
    """A glob (`*`, `?`, `[...]`) as a regular expression that matches within one path segment."""
    out, pos = [], 0
    while pos < len(glob):
        char = glob[pos]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in glob[pos + 1:]:
            end = glob.index("]", pos + 1)
            body = glob[pos + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            pos = end
        else:
            out.append(re.escape(char))
        pos += 1
    return "".join(out)


# Bounds on the config file itself (not in `limits:`: a config cannot be trusted to bound its own reading)
MAX_CONFIG_BYTES = 2**20
MAX_CONFIG_VALUES = 100_000  # scalars, lists and mappings, counting each alias as often as it is used


def parse_config(text: str | bytes, source: str = "config") -> Config:
    """Parse and validate YAML text (bytes must be UTF-8); ConfigError lists each problem as
    `source: key.path: message`. Duplicate keys are errors, and YAML aliases may not expand a
    config beyond MAX_CONFIG_VALUES values."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = exc.object.count(b"\n", 0, exc.start) + 1
            raise ConfigError(f"{source}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line}, offset "
                              f"{exc.start}); save the config as UTF-8") from None
    try:
        raw = _load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = Config.model_validate(raw)
        _ = config.all_models  # the reserved-name check
        return config
    except ValidationError as exc:
        lines = [f"{source}: {_key_path(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid config\n  " + "\n  ".join(lines)) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


CREDENTIAL_KEYS = ("access_key_id", "secret_access_key")


def without_credentials(text: str, source: str = "config") -> str:
    """The config text with the store's inline credentials left out, for places that keep what they
    are given (Prefect stores every flow-run parameter in its database). Unchanged, byte for byte,
    when it has none; otherwise the parsed document dumped again (comments and anchors dropped)."""
    parse_config(text, source)  # a bad config fails here, naming its source, not in a flow run
    raw = _load_yaml(text)
    store = raw.get("store")
    if not isinstance(store, dict) or not any(key in store for key in CREDENTIAL_KEYS):
        return text
    raw["store"] = {key: value for key, value in store.items() if key not in CREDENTIAL_KEYS}
    return yaml.safe_dump(raw, sort_keys=False)


def with_checkpoints(text: str, checkpoints: dict[str, str], source: str = "config") -> str:
    """The config text with each named model's `generator.checkpoint` replaced (model name -> path or
    store URL): how a training script has the nightly deployment evaluate a new checkpoint of a model the
    config already holds, under that model's name. Unchanged, byte for byte, when `checkpoints` is empty;
    otherwise the parsed document dumped again (comments and anchors dropped). ConfigError names the
    model when it is not in the config or its generator takes no checkpoint (only `python` ones do)."""
    if not checkpoints:
        return text
    config = parse_config(text, source)
    kinds = {m.name: m.generator.kind for m in config.models}
    for name, checkpoint in checkpoints.items():
        if name not in kinds:
            raise ConfigError(f"{source}: checkpoint for model '{name}': no such model (the config has "
                              f"{', '.join(kinds)})")
        if kinds[name] != "python":
            raise ConfigError(f"{source}: checkpoint for model '{name}': its generator is {kinds[name]}; "
                              "only python generators take a checkpoint")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise ConfigError(f"{source}: checkpoint for model '{name}': expected a path or URL, got {checkpoint!r}")
    raw = _load_yaml(text)
    for model in raw["models"]:
        if model["name"] in checkpoints:
            model["generator"]["checkpoint"] = checkpoints[model["name"]]
    return yaml.safe_dump(raw, sort_keys=False)


def _key_path(loc: tuple[Any, ...]) -> str:
    """`models.1.generator.temperature`: the union tag pydantic inserts is dropped."""
    tags = {"generator": generators.SOURCES, "dataset": datasets.SOURCES, "seeds": ("list", "range")}
    parts = [str(item) for i, item in enumerate(loc) if not (i > 0 and item in tags.get(loc[i - 1], ()))]
    return ".".join(parts) or "(top level)"


class _ConfigLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so a second `models:` would replace the first). Keys merged in with `<<`
    may be overridden, as YAML means them to be."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in lines:
                    raise ConfigError(f"duplicate key {key!r} at line {line} (first at line {lines[key]})")
                lines[key] = line
            except TypeError:  # an unhashable key: the base class says so
                continue
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        count = _expanded_size(node)
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded "
                              f"({count}); a config is far smaller (aliases used to blow it up?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document with every alias expanded, counted without expanding (each node once)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_CONFIG_VALUES + 1)
        elif id(node) not in sizes:
            if id(node) in open_nodes:
                raise ConfigError("a YAML alias refers to a collection that contains it")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]
