"""Classifier recipes, selected by name in the config.

Each recipe is one module with the same surface:
  Hyper     a frozen dataclass of every hyperparameter (the config's
            `classifier.options` override its fields)
  VERSION   bumped when the recipe's output changes for the same inputs
  build(hp, image_shape, num_classes) -> nn.Module
  train(loader, num_classes, hp, device, seed) -> (nn.Module, log dict)
Prediction with test-time augmentation is shared: `common.predict_logits`.
The same recipe and seed is used for every model of a run, real included.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from pydantic import TypeAdapter, ValidationError

RECIPE_NAMES = ("fast", "accurate", "paper")


def recipe(name: str) -> ModuleType:
    if name not in RECIPE_NAMES:
        raise ValueError(f"unknown classifier recipe '{name}' (known: {', '.join(RECIPE_NAMES)})")
    return importlib.import_module(f"tasks.classifiers.{name}")


def hyperparameters(name: str, options: dict[str, Any]) -> Any:
    """The recipe's Hyper with `options` applied; unknown or mistyped options raise ValueError."""
    hyper_cls = recipe(name).Hyper
    known = {f.name for f in dataclasses.fields(hyper_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"options.{unknown[0]}: not a hyperparameter of recipe '{name}' (known: {', '.join(sorted(known))})")
    try:
        return TypeAdapter(hyper_cls).validate_python(dataclasses.asdict(hyper_cls()) | dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"options.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
