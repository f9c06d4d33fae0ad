"""A user's model behind a Python entry point `package.module:factory` (or
`path/to/file.py:factory`).

    factory(checkpoint, device, **options) -> object with sample(labels, seed)

`checkpoint` is what casflow loaded from the configured file (a state dict,
say), with `torch.load(weights_only=True)` unless the config allows unsafe
loading (`checkpoints.py`); None when no checkpoint is configured; the local
file path when `load_checkpoint: false`. `sample(labels, seed)` gets an int64
numpy array of labels and an int seed, and returns images for exactly those
labels, in order: a numpy array or torch tensor, uint8 or float in the declared
range, NHWC or NCHW as declared. It runs under torch.inference_mode.

A text-to-image model says `takes_prompts = True` (an attribute of the
sampler); casflow then calls `sample(labels, seed, prompts)` with one
prompt per label, the config's `prompt_template` filled with that label's
class name ("a photo of a {class_name}" -> "a photo of a cat").
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import inspect
import os
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles
from casflow.tasks.fingerprint import derive_seed
from casflow.tasks.generators import checkpoints
from casflow.tasks.generators.common import DrawRequest, Samples, SampleSource, settings_and_files
from casflow.tasks.images import Transcode, png_chunk, to_uint8
from casflow.tasks.parallel import ordered_map
from casflow.tasks.progress import Progress
from casflow.tasks.samples import check_class_count, conform_images, label_schedule
from casflow.tasks.schema import Frozen, ResizeFilter

DEFAULT_PROMPT_TEMPLATE = "a photo of a {class_name}"  # CLIP's zero-shot template (Radford et al. 2021)


class PythonGenerator(Frozen):
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
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # for samplers with takes_prompts = True; fingerprinted
    LOCATION_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint",)

    @field_validator("prompt_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        """`{class_name}` at least once and no other placeholder (`{{` and `}}` are literal braces)."""
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as exc:  # a lone { or }
            raise ValueError(f"not a format string ({exc}); write {{{{ and }}}} for literal braces") from None
        unknown = sorted(names - {"class_name"})
        if unknown:
            shown = ", ".join("{" + name + "}" for name in unknown)
            raise ValueError(f"unknown placeholder {shown}: the only one is {{class_name}}")
        if "class_name" not in names:
            raise ValueError("must contain {class_name}, where each label's class name goes")
        return template


def content(spec: PythonGenerator, files: SourceFiles, model: str) -> dict[str, Any]:
    """The settings, the checkpoint's content and the factory's source file: editing it draws again.

    `prompt_template` came after the first stored samples: at its default it is
    left out, so samples stored before it existed keep their fingerprint; any
    other template is in. (Whether a sampler takes prompts is known only once
    the factory has run, so a template changes the fingerprint of any Python
    model; leave it at its default for models without prompts.)"""
    inputs = settings_and_files(spec, files, model)
    if spec.prompt_template == DEFAULT_PROMPT_TEMPLATE:
        del inputs["generator"]["prompt_template"]
    inputs["generator"]["code"] = code_digest(spec.entry_point, model)
    return inputs


def draw_python(spec: PythonGenerator, request: DrawRequest) -> Samples:
    """The entry point, checkpoint and factory are checked now, before anything is written;
    what sample() returns is checked batch by batch as the stream is consumed."""
    factory = load_factory(spec.entry_point, request.model)
    checkpoint = None
    if spec.checkpoint:
        checkpoint = checkpoints.for_factory(request.files, spec.checkpoint, load=spec.load_checkpoint,
                                             allow_unsafe=spec.allow_unsafe_checkpoint, device=request.device,
                                             model=request.model)
    sampler = make_sampler(factory, checkpoint, request.device, dict(spec.options), entry_point=spec.entry_point,
                           model=request.model)
    declared = getattr(sampler, "num_classes", None)
    if declared is not None:
        check_class_count(int(declared), len(request.class_names), model=request.model, source=spec.entry_point)
    prompts = class_prompts(spec.prompt_template, request.class_names) if takes_prompts(sampler) else None

    def stream() -> Samples:
        """Batches drawn (and checked) here, encoded by the worker processes meanwhile, in order."""
        progress = Progress(f"model {request.model}: sampling", sum(request.budget))
        drawn_labels: collections.deque[np.ndarray] = collections.deque()

        def jobs() -> Iterator[tuple]:
            for images, labels in draw(sampler, request.budget, seed=request.seed, batch_size=spec.batch_size,
                                       output_range=spec.output_range, layout=spec.layout, image_shape=request.image_shape,
                                       resize_filter=spec.resize, model=request.model, prompts_per_class=prompts):
                drawn_labels.append(labels)
                yield images, [], Transcode(tuple(images.shape[1:]), 0)

        for pngs in ordered_map(png_chunk, jobs()):
            labels = drawn_labels.popleft()
            yield from zip((int(label) for label in labels), pngs)
            progress.update(len(labels))

    return stream()


SOURCES = (SampleSource(PythonGenerator, content, draw_python),)


# What a user's code may raise and still be only that model failing. SystemExit too: sys.exit() or an
# argparse at import in a user's module is the model failing, not casflow asked to stop (a real Ctrl-C
# is a KeyboardInterrupt in the main thread, and SIGTERM is handled by the `cas` command).
USER_CODE_ERRORS = (Exception, SystemExit)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: it called sys.exit({exc.code!r}) (as argparse does on a command line it cannot parse)"
    return f"{type(exc).__name__}: {exc}"


def load_factory(entry_point: str, model: str) -> Callable[..., Any]:
    """`package.module:factory` (installed, or found from the working directory as `python -m`
    would) or `path/to/file.py:factory`."""
    module_name, _, attr = entry_point.rpartition(":")
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else _import_module(module_name)
    except USER_CODE_ERRORS as exc:  # a user's module can raise anything at import, even exit
        raise InputError(f"entry point {entry_point}: cannot import {module_name} ({_describe(exc)})", model=model) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"entry point {entry_point}: module {module_name} has no callable '{attr}'", model=model)
    return factory


def _import_module(name: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # after installed packages, which win
    return importlib.import_module(name)


def _import_file(path: str) -> ModuleType:
    """A module from a file path, once per process (a stable name derived from the absolute path)."""
    path = os.path.abspath(path)
    name = f"casflow_entry_{hashlib.sha256(path.encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def code_digest(entry_point: str, model: str) -> str:
    """sha256 of the source file that defines the factory: editing it redraws the samples."""
    factory = load_factory(entry_point, model)
    module = sys.modules[factory.__module__]
    try:
        path = inspect.getsourcefile(module)
        with open(path, "rb") as f:  # type: ignore[arg-type]
            return hashlib.sha256(f.read()).hexdigest()
    except (TypeError, OSError):
        return f"module:{module.__name__}:{getattr(module, '__version__', 'unversioned')}"


def make_sampler(factory: Callable[..., Any], checkpoint: Any, device: str, options: dict[str, Any], *,
                 entry_point: str, model: str) -> Any:
    try:
        sampler = factory(checkpoint, device=device, **options)
    except USER_CODE_ERRORS as exc:
        raise InputError(f"factory {entry_point} raised {_describe(exc)}", model=model) from None
    if not callable(getattr(sampler, "sample", None)):
        raise InputError(f"factory {entry_point} returned {type(sampler).__name__}, which has no sample(labels, seed)",
                         model=model)
    return sampler


def takes_prompts(sampler: Any) -> bool:
    """A text-to-image sampler declares `takes_prompts = True` and gets `sample(labels, seed, prompts)`."""
    return getattr(sampler, "takes_prompts", False) is True


def class_prompts(template: str, class_names: Sequence[str]) -> tuple[str, ...]:
    """One prompt per class: the template with `{class_name}` filled in (validated by the config)."""
    return tuple(template.format(class_name=name) for name in class_names)


def draw(sampler: Any, budget: Sequence[int], *, seed: int, batch_size: int, output_range: str, layout: str,
         image_shape: tuple[int, int, int], resize_filter: str | None, model: str,
         prompts_per_class: Sequence[str] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 NHWC images, labels) per batch of the class-balanced label schedule.

    Batch b is drawn with seed derive_seed(seed, b): the samples depend on
    the seed and the batch size, both fingerprinted. With `prompts_per_class`,
    sample() also gets each label's prompt, in label order."""
    import torch

    schedule = label_schedule(budget)
    for batch, start in enumerate(range(0, len(schedule), batch_size)):
        labels = schedule[start : start + batch_size]
        where = f"sample() batch {batch}"
        arguments = (labels.copy(), derive_seed(seed, batch))
        if prompts_per_class is not None:
            arguments += ([prompts_per_class[label] for label in labels],)
        try:
            with torch.inference_mode():
                out = sampler.sample(*arguments)
        except USER_CODE_ERRORS as exc:
            raise InputError(f"sample() raised {_describe(exc)}", model=model, source=where) from None
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu()
            out = out.float().numpy() if out.dtype in (torch.bfloat16, torch.float16) else out.numpy()
        if not isinstance(out, np.ndarray):
            raise InputError(f"sample() returned {type(out).__name__}, expected a numpy array or torch tensor",
                             model=model, source=where)
        if out.ndim != 4:
            raise InputError(f"sample() returned shape {out.shape}, expected 4 dimensions ({layout})", model=model, source=where)
        if len(out) != len(labels):
            raise InputError(f"sample() returned {len(out)} images for {len(labels)} labels", model=model, source=where)
        channels = image_shape[2]
        channel_axis, other_axis, other = (1, 3, "NHWC") if layout == "NCHW" else (3, 1, "NCHW")
        if out.shape[channel_axis] != channels and out.shape[other_axis] == channels:  # the other layout, surely
            raise InputError(f"sample() returned shape {tuple(out.shape)}, which looks {other}, but the config declares "
                             f"layout: {layout} (the dataset has {channels} channel{'s' if channels != 1 else ''})",
                             model=model, source=where)
        if layout == "NCHW":
            out = out.transpose(0, 2, 3, 1)
        images = to_uint8(np.ascontiguousarray(out), output_range, model=model, source=where)
        yield conform_images(images, image_shape, resize_filter=resize_filter, model=model, source=where), labels
