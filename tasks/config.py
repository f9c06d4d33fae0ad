"""The run configuration: one YAML file validated into frozen pydantic models.

Unknown keys are errors, never ignored; a bad config fails before any work
starts, with the key path in the message. Relative local paths are relative
to the working directory.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from tasks import classifiers


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem with its key path."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- store

class StoreConfig(_Frozen):
    url: str = "./casflow-store"  # local folder or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible endpoint; else AWS_ENDPOINT_URL
    region: str | None = None  # else AWS_DEFAULT_REGION
    access_key_id: SecretStr | None = None  # else AWS_ACCESS_KEY_ID (prefer the environment)
    secret_access_key: SecretStr | None = None  # else AWS_SECRET_ACCESS_KEY
    shard_size: int = Field(5000, gt=0)  # samples per tar shard; changes the shard bytes, so fingerprinted

    @model_validator(mode="after")
    def _both_or_neither_key(self) -> "StoreConfig":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self


# ---------------------------------------------------------------- datasets

class DigitsDataset(_Frozen):
    """scikit-learn's bundled digits: 1,797 real 8x8 grey images, 10 classes."""

    kind: Literal["digits"] = "digits"
    name: str = "digits"
    eval_fraction: float = Field(0.2, gt=0, lt=1)  # stratified held-out split
    split_seed: int = 0


class HFParquetDataset(_Frozen):
    """Hugging Face style Parquet: image{bytes,path} + label, class names in the schema metadata."""

    kind: Literal["hf-parquet"]
    name: str
    train: str  # path or URL of the train split's Parquet file
    eval: str
    limit_per_class: int | None = Field(None, gt=0)  # seeded per-class subset of both splits, for quick runs
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("train", "eval")


class ImageFolderDataset(_Frozen):
    """One folder per split, one subfolder per class (class names sorted)."""

    kind: Literal["imagefolder"]
    name: str
    train: str
    eval: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("train", "eval")


DatasetConfig = Annotated[Union[DigitsDataset, HFParquetDataset, ImageFolderDataset], Field(discriminator="kind")]


# ---------------------------------------------------------------- generators

ResizeFilter = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]


class _FromFiles(_Frozen):
    """Options shared by generators whose samples are already drawn."""

    resize: ResizeFilter | None = None  # resize to the dataset's size with this PIL filter; else a size mismatch is an error
    allow_shortfall: bool = False  # accept fewer samples than the budget for a class (shows in the results)


class RealGenerator(_Frozen):
    """The real train split itself: the upper bound and the CAS baseline."""

    kind: Literal["real"]


class ShuffledRealGenerator(_Frozen):
    """Real train images with labels permuted under the seed: a negative control that scores near chance."""

    kind: Literal["real-shuffled"]


class GaussianGenerator(_Frozen):
    """A class-conditional Gaussian in PCA space, fitted on the real train split."""

    kind: Literal["gaussian"]
    components: int = Field(32, gt=0)  # PCA dimensions kept
    temperature: float = Field(1.0, ge=0)  # scales the sampling std; < 1 trades diversity away, like truncation


class PythonGenerator(_Frozen):
    """A user's model: entry point `package.module:factory` or `path/to/file.py:factory`."""

    kind: Literal["python"]
    entry_point: str = Field(pattern=r"^([A-Za-z_][\w.]*|.+\.py):[A-Za-z_]\w*$")  # package.module:factory or file.py:factory
    checkpoint: str | None = None  # path or store URL; loaded by casflow, passed to the factory
    load_checkpoint: bool = True  # False: the factory gets a local path and loads it itself
    allow_unsafe_checkpoint: bool = False  # True: torch.load with weights_only=False (only for trusted files)
    options: dict[str, Any] = {}  # passed to the factory as keyword arguments
    output_range: Literal["uint8", "0..1", "-1..1"] = "uint8"
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    batch_size: int = Field(256, gt=0)  # labels per sample() call; changes the seeds, so fingerprinted
    resize: ResizeFilter | None = None
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint",)


class NpzGenerator(_FromFiles):
    """ADM / guided-diffusion sampler output: arr_0 uint8 NHWC, arr_1 int labels."""

    kind: Literal["npz"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class ImageFolderGenerator(_FromFiles):
    """One subfolder per class, matched to the dataset's class names."""

    kind: Literal["imagefolder"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class DatasetJsonGenerator(_FromFiles):
    """A zip or folder with dataset.json {"labels": [[relative_path, int], ...]} (StyleGAN2-ADA, EDM)."""

    kind: Literal["dataset-json"]
    path: str
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("path",)


class WebDatasetGenerator(_FromFiles):
    """WebDataset shards already on a store: `<key>.cls` labels and a png/jpg/jpeg/webp/ppm/bmp image."""

    kind: Literal["webdataset"]
    url: str  # a folder or prefix of .tar files, or a brace pattern shard-{000000..000009}.tar
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("url",)


GeneratorConfig = Annotated[
    Union[
        RealGenerator,
        ShuffledRealGenerator,
        GaussianGenerator,
        PythonGenerator,
        NpzGenerator,
        ImageFolderGenerator,
        DatasetJsonGenerator,
        WebDatasetGenerator,
    ],
    Field(discriminator="kind"),
]
GENERATOR_KINDS = ("real", "real-shuffled", "gaussian", "python", "npz", "imagefolder", "dataset-json", "webdataset")
DATASET_KINDS = ("digits", "hf-parquet", "imagefolder")


def location_fields(spec: BaseModel) -> tuple[str, ...]:
    """Fields that say where data lives: replaced by content digests in fingerprints."""
    return getattr(type(spec), "LOCATION_FIELDS", ())


# ---------------------------------------------------------------- classifier, models, run

class ClassifierConfig(_Frozen):
    recipe: Literal["fast", "accurate", "paper"] = "fast"
    options: dict[str, Any] = {}  # overrides of the recipe's hyperparameters (tasks/classifiers/<recipe>.py)
    device: str = "auto"  # auto (every visible GPU, else cpu), cpu, cuda, or a list: cuda:0,cuda:1
    resident_limit_gb: float = Field(16.0, gt=0)  # sample sets up to this size (decoded uint8) train from device memory; larger ones stream

    @model_validator(mode="after")
    def _options_known(self) -> "ClassifierConfig":
        classifiers.hyperparameters(self.recipe, self.options)  # raises naming the unknown or bad option
        return self

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        for part in value.split(","):
            part = part.strip()
            if part not in ("auto", "cpu", "cuda") and not (part.startswith("cuda:") and part[5:].isdigit()):
                raise ValueError(f"'{part}' is not auto, cpu, cuda or cuda:N")
        return value


class ModelConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    generator: GeneratorConfig


class Config(_Frozen):
    store: StoreConfig = StoreConfig()
    dataset: DatasetConfig = DigitsDataset()
    classifier: ClassifierConfig = ClassifierConfig()
    seed: int = Field(0, ge=0, lt=2**32)
    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        names = [m.name for m in self.models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"model names must be unique; repeated: {', '.join(repeated)}")
        return self

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


def parse_config(text: str, source: str = "config") -> Config:
    """Parse and validate YAML text; ConfigError lists each problem as `source: key.path: message`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = Config.model_validate(raw)
        config.all_models  # the reserved-name check
        return config
    except ValidationError as exc:
        lines = [f"{source}: {_key_path(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid config\n  " + "\n  ".join(lines)) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _key_path(loc: tuple[Any, ...]) -> str:
    """`models.1.generator.temperature`: the union tag pydantic inserts is dropped."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        after_union = i > 0 and loc[i - 1] in ("generator", "dataset")
        if after_union and item in GENERATOR_KINDS + DATASET_KINDS:
            continue
        parts.append(str(item))
    return ".".join(parts) or "(top level)"
