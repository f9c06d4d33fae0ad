"""What every config section is built from: frozen pydantic models that reject
unknown keys, and the small field types several sections share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# PIL's filters, by name: a sample set resized to the dataset's size (the filter is fingerprinted)
ResizeFilter = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]


def location_fields(spec: BaseModel) -> tuple[str, ...]:
    """Fields that say where data lives: replaced by content digests in fingerprints."""
    return getattr(type(spec), "LOCATION_FIELDS", ())
