"""Sample sources: where a model's samples come from, and the registry the
config and the pipeline ask.

Built in (`builtin`): `real` (the train split; the baseline), `real-shuffled`
(a negative control) and `gaussian` (a class-conditional Gaussian in PCA
space). Users bring a Python entry point (`python_entry`, its checkpoint read by
`checkpoints`) or samples already
drawn in one of the common formats (`files`). Each family module lists its
kinds as `SOURCES`; a new family is one module and one line below.
"""

from __future__ import annotations

from casflow.tasks.generators import builtin, files, python_entry
from casflow.tasks.generators.common import DrawRequest, Samples, SampleSource

SOURCES: dict[str, SampleSource] = {s.kind: s for family in (
    builtin,
    files,
    python_entry,
) for s in family.SOURCES}

__all__ = ["SOURCES", "DrawRequest", "SampleSource", "Samples"]
