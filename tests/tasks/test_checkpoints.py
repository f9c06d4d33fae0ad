"""A Python model's checkpoint (tasks/generators/checkpoints.py): unsafe pickles refused, naming the
globals they would load, without running them; trusted ones loaded; unreadable ones said so."""

import pytest
import torch

from casflow.tasks.errors import InputError
from casflow.tasks.generators import checkpoints


class RunsACommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _torch_save(obj, **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


UNSAFE_CHECKPOINTS = {
    # id: (checkpoint bytes from the marker path, the global the message must name)
    "class-instance": (lambda m: _torch_save({"w": torch.zeros(2), "args": __import__("argparse").Namespace(lr=0.1)}),
                       "argparse.Namespace"),
    "reduce-os-system": (lambda m: _torch_save({"w": torch.zeros(2), "x": RunsACommand(m)}), "posix.system (os.system)"),
    "reduce-plain-pickle": (lambda m: __import__("pickle").dumps({"x": RunsACommand(m)}), "posix.system (os.system)"),
    "reduce-protocol-0": (lambda m: __import__("pickle").dumps(RunsACommand(m), protocol=0), "posix.system (os.system)"),
    "reduce-legacy-format": (lambda m: _torch_save({"x": RunsACommand(m)}, _use_new_zipfile_serialization=False),
                             "posix.system (os.system)"),
    "whole-module": (lambda m: _torch_save(torch.nn.Linear(2, 2)), "torch.nn.modules.linear.Linear"),
}


@pytest.mark.parametrize("kind", UNSAFE_CHECKPOINTS)
def test_unsafe_checkpoint_refused_naming_what_it_loads(kind, tmp_path):
    build, name = UNSAFE_CHECKPOINTS[kind]
    marker = tmp_path / "the-pickle-ran"
    with pytest.raises(InputError) as info:
        checkpoints.load_checkpoint(build(marker), "c.pt", allow_unsafe=False, device="cpu", model="m")
    message = str(info.value)
    assert message.startswith("model 'm' c.pt: checkpoint refused as unsafe: its pickle would load "), message
    assert name in message and "set allow_unsafe_checkpoint: true" in message, message
    assert not marker.exists()  # nothing of it ran


def test_allowed_unsafe_checkpoint_loads_and_unreadable_ones_say_so(tmp_path):
    import argparse

    loaded = checkpoints.load_checkpoint(_torch_save({"args": argparse.Namespace(a=1)}), "c.pt", allow_unsafe=True,
                                          device="cpu", model="m")
    assert loaded["args"].a == 1
    with pytest.raises(InputError, match=r"unreadable checkpoint \(not a torch checkpoint, or corrupt"):
        checkpoints.load_checkpoint(b"not a checkpoint", "c.pt", allow_unsafe=False, device="cpu", model="m")
    safe = checkpoints.load_checkpoint(_torch_save({"w": torch.ones(2)}), "c.pt", allow_unsafe=False, device="cpu", model="m")
    assert torch.equal(safe["w"], torch.ones(2))


class LocalFiles:
    """The two SourceFiles methods a checkpoint needs, over local paths; a folder is refused as Files refuses it."""

    def read_bytes(self, name: str) -> bytes:
        import os

        if os.path.isdir(name):
            raise ValueError(f"{name}: not a regular file (a folder)")
        with open(name, "rb") as f:
            return f.read()

    def local_path(self, name: str) -> str:
        return name


def test_what_the_factory_gets(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(_torch_save({"w": torch.ones(2)}))
    common = {"allow_unsafe": False, "device": "cpu", "model": "m"}
    assert torch.equal(checkpoints.for_factory(LocalFiles(), str(path), load=True, **common)["w"], torch.ones(2))
    assert checkpoints.for_factory(LocalFiles(), str(path), load=False, **common) == str(path)
    with pytest.raises(InputError, match=r"^model 'm': checkpoint .*missing.pt: no such file$"):
        checkpoints.for_factory(LocalFiles(), str(tmp_path / "missing.pt"), load=True, **common)
    with pytest.raises(InputError, match=r"^model 'm': checkpoint .*: not a regular file \(a folder\)$"):
        checkpoints.for_factory(LocalFiles(), str(tmp_path), load=True, **common)
    with pytest.raises(InputError, match=r"model 'm' .*bad.pt: unreadable checkpoint"):  # the loader's own error, as it is
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        checkpoints.for_factory(LocalFiles(), str(tmp_path / "bad.pt"), load=True, **common)
