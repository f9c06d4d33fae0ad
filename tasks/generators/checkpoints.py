"""A Python model's checkpoint: read from the configured file and deserialised for its factory,
and, when torch's safe loading refuses one, the pickle inspected to say why.

  *.safetensors            `safetensors.torch.load`
  any other file           `torch.load(weights_only=True)`; weights_only=False with `allow_unsafe_checkpoint: true`
  `load_checkpoint: false`   not loaded: the factory gets a local path and loads the file itself

A refused checkpoint is named with the Python globals its pickle would import, found by reading the
pickle's opcodes (`pickletools`), never by running it: a pickle that imports a global can run any code.
"""

from __future__ import annotations

import _compat_pickle
import io
import re
import zipfile
import zlib
from typing import Any

from casflow.tasks.errors import InputError
from casflow.tasks.files import SourceFiles


def for_factory(files: SourceFiles, location: str, *, load: bool, allow_unsafe: bool, device: str, model: str) -> Any:
    """What the factory gets as its checkpoint: the file at `location` deserialised (`load_checkpoint`),
    or its local path when `load` is False. A missing, irregular or oversized file is an InputError."""
    try:
        if load:
            return load_checkpoint(files.read_bytes(location), location, allow_unsafe=allow_unsafe, device=device,
                                   model=model)
        return files.local_path(location)
    except FileNotFoundError:
        raise InputError(f"checkpoint {location}: no such file", model=model) from None
    except ValueError as exc:  # not a regular file, or over limits.max_file_bytes: the message names it
        if isinstance(exc, InputError):
            raise
        raise InputError(f"checkpoint {exc}", model=model) from None


def load_checkpoint(data: bytes, name: str, *, allow_unsafe: bool, device: str, model: str) -> Any:
    """Deserialise a checkpoint: safetensors, or torch.load with weights_only=True unless allowed.

    A checkpoint that weights_only loading refuses is refused as unsafe, naming the Python globals its
    pickle would import (found by reading its opcodes, never by running it)."""
    import torch

    if name.endswith(".safetensors"):
        try:
            from safetensors.torch import load
        except ImportError:
            raise InputError("reading .safetensors needs the safetensors package", model=model, source=name) from None
        try:
            return load(data)
        except Exception as exc:
            raise InputError(f"unreadable safetensors checkpoint ({exc})", model=model, source=name) from None
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=not allow_unsafe)
    except Exception as exc:  # an UnpicklingError, or torch's zip reader: "failed finding central directory" and the like
        failure = exc
    unsafe = [] if allow_unsafe else unsafe_globals(data)
    if unsafe:
        more = f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else ""
        raise InputError(f"checkpoint refused as unsafe: its pickle would load {', '.join(unsafe[:3])}{more} (a pickle "
                         "that loads Python objects can run any code; weights_only loading allows only tensors and plain "
                         "containers). If you trust the file, set allow_unsafe_checkpoint: true", model=model, source=name)
    reason = re.sub(r"\x1b\[[0-9;]*m", "", str(failure))  # torch colours and appends paragraphs of advice
    found = re.search(r"(Unsupported operand \d+|[^.\n]*central directory[^.\n]*|invalid load key[^.\n]*)", reason)
    first = found.group(1) if found else reason.strip().splitlines()[0].split(". ")[0] if reason.strip() else type(failure).__name__
    raise InputError(f"unreadable checkpoint (not a torch checkpoint, or corrupt: {first[:160]})", model=model,
                     source=name) from None


def unsafe_globals(data: bytes) -> list[str]:
    """The globals a checkpoint's pickle would import that weights_only loading does not allow, in order."""
    import torch

    allowed: set[str] = set()
    try:  # torch's own allowlist, as torch.serialization.get_unsafe_globals_in_checkpoint reads it
        from torch import _weights_only_unpickler as restricted

        allowed |= set(restricted._get_allowed_globals()) | set(restricted._get_user_allowed_globals())
    except (ImportError, AttributeError):
        allowed |= {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals() if hasattr(g, "__qualname__")}
    return [g for g in checkpoint_globals(data) if g not in allowed]


def checkpoint_globals(data: bytes) -> list[str]:
    """Every global (module.name) a torch checkpoint's pickles name: `data.pkl` in a torch.save zip,
    else the pickles of a legacy file or a plain pickle one after another. Nothing is executed."""
    pickles = [data]
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pickles = [archive.read(i) for i in archive.infolist() if i.filename.endswith("data.pkl")]
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error):
            return []
    found: list[str] = []
    for blob in pickles:
        for module, name in pickle_globals(blob):
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            shown = f"{module}.{name}" + (f" (os.{name})" if module in ("posix", "nt") else "")
            if shown not in found:
                found.append(shown)
    return found


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """(module, name) of each GLOBAL, INST and STACK_GLOBAL opcode, as the pickle spells them (Python 2
    names for protocols 0-2), with the stack simulated just enough to know STACK_GLOBAL's module and
    name (strings pushed, or fetched from the memo). Pickles that follow one another are all read."""
    import pickletools

    stream, found = io.BytesIO(data), []
    mark = object()
    while stream.tell() < len(data):
        stack: list[Any] = []
        memo: dict[Any, Any] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    found.append((module, name))
                elif op.name == "STACK_GLOBAL":
                    name, module = (stack.pop() if stack else None), (stack.pop() if stack else None)
                    known = isinstance(module, str) and isinstance(name, str)
                    found.append((module, name) if known else ("?", "a global named at load time"))
                    stack.append(None)
                    continue
                if op.name == "MEMOIZE":
                    memo[len(memo)] = stack[-1] if stack else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = stack[-1] if stack else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo.get(arg))
                elif op.name == "MARK":
                    stack.append(mark)
                else:
                    before = op.stack_before
                    if pickletools.markobject in before:  # pops through the mark, then what lies below it
                        while stack and stack.pop() is not mark:
                            pass
                        del stack[len(stack) - before.index(pickletools.markobject):]
                    elif before:
                        del stack[len(stack) - len(before):]
                    stack.extend([arg if op.name in _STRING_OPS else None] * len(op.stack_after))
        except Exception:  # not a pickle, or a truncated one: report what was found so far
            break
    return found
