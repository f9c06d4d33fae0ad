"""How much one input may make casflow read: the config's `limits:` section.

An input is a model's samples (a file, folder, archive or set of shards), a
checkpoint or a dataset split. Every limit is checked against a declared size
(a file's size, an archive member's or an image's header, an npz array's
shape, a brace pattern's count) before the bytes are read, so a small file
that declares a huge content fails with an error naming it and the limit,
and the run goes on for the other models. The defaults are far above what
CAS inputs need (CIFAR-10's 50,000 samples decode to 150 MB, ImageNet 64x64's
1.28 million to 15.7 GB). Limits never change results, so they are not part
of any fingerprint.

`step_seconds` bounds time instead: a `sample()` that never returns or an
input that never ends fails its model, not the night.
"""

from __future__ import annotations

from pydantic import Field

from casflow.tasks.schema import Frozen

GiB = 2**30


class Limits(Frozen):
    max_file_bytes: int = Field(16 * GiB, gt=0)  # one file, archive member or tar member, by its declared size
    max_image_pixels: int = Field(4096 * 4096, gt=0)  # width x height of one image, from its header
    max_decoded_bytes: int = Field(16 * GiB, gt=0)  # one input's images decoded (N x H x W x C), or an npz array
    max_files: int = Field(10_000_000, gt=0)  # files a folder or zip holds, shards a folder or brace pattern names
    step_seconds: float = Field(6 * 3600, gt=0)  # one step of one model (sampling, one training, one evaluation,
    # scoring): past it the model fails, naming the step and the limit, and its device goes on with the next model
