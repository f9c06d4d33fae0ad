"""Classifier recipes, selected by name in the config and resolved once.

Each recipe is one module with the same surface:
  Hyper     a frozen dataclass of every hyperparameter (the config's
            `classifier.options` override its fields)
  build(hp, image_shape, num_classes) -> nn.Module
  train(loader, num_classes, hp, device, seed, image_shape) -> (nn.Module, log dict)
`training` runs a recipe on a model's samples (resident on the device or
streamed, decided there), saves and loads its weights, and predicts with
test-time augmentation (`common.predict_logits`). The same recipe and seed
is used for every model of a run, real included.

The recipes' table (`hyper.RECIPES`, name -> `Hyper`) lives in `hyper.py` and
their code versions in `fingerprint.CODE_VERSIONS`, without torch: resolving a recipe
and fingerprinting a classifier import no torch, so a fully cached run never
pays for it; the recipe module (and torch) is imported when a classifier is
built or trained.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from casflow.tasks.classifiers import hyper
from casflow.tasks.fingerprint import code_version, fingerprint

RECIPE_NAMES = tuple(hyper.RECIPES)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A recipe resolved from the config: its module, and its hyperparameters with the options applied."""

    name: str
    hp: Any  # the recipe's Hyper

    @property
    def module(self) -> ModuleType:
        """Hyper, build and train (a name, not the module, is held: records stay picklable).
        Importing it imports torch."""
        return _module(self.name)

    @property
    def version(self) -> int:
        return code_version(f"recipe:{self.name}")

    def fingerprint_inputs(self) -> dict[str, Any]:
        return {"recipe": self.name, "recipe_version": self.version, "hyperparameters": dataclasses.asdict(self.hp)}

    @property
    def fingerprint(self) -> str:
        """Names the recipe with its hyperparameters: runs are compared only under the same one."""
        return fingerprint("recipe", self.fingerprint_inputs())


def resolve(name: str, options: dict[str, Any]) -> Recipe:
    """The named recipe with `options` applied; an unknown recipe or option, or a mistyped one, raises ValueError."""
    if name not in RECIPE_NAMES:
        raise ValueError(f"unknown classifier recipe '{name}' (known: {', '.join(RECIPE_NAMES)})")
    hyper_class = hyper.RECIPES[name]
    known = {f.name for f in dataclasses.fields(hyper_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"options.{unknown[0]}: not a hyperparameter of recipe '{name}' (known: {', '.join(sorted(known))})")
    try:
        hp = TypeAdapter(hyper_class).validate_python(dataclasses.asdict(hyper_class()) | dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"options.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return Recipe(name, hp)


DataPath = Literal["resident", "streaming"]


def data_path(num_samples: int, image_shape: tuple[int, int, int], resident_limit_gb: float) -> DataPath:
    """Resident when the set decoded to uint8 is at most the limit, else streamed (`training` runs either;
    the classifier's fingerprint records which)."""
    height, width, channels = image_shape
    return "streaming" if num_samples * height * width * channels > resident_limit_gb * 1e9 else "resident"


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"casflow.tasks.classifiers.{name}")
