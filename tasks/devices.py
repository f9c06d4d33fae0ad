"""`classifier.device`: the one parser of device strings, for the config, placement and training.

  auto            every visible GPU, else the CPU
  cpu             the CPU
  cuda, cuda:N    a GPU (bare cuda is cuda:0)
  cuda:0,cuda:2   a list: one lane per device
GPU indices count the devices this process sees (CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import os
import sys

# The device files through which torch.cuda reaches a GPU: NVIDIA's driver, ROCm's (torch.cuda drives AMD GPUs
# too), WSL2's. A Linux machine with none of them has no GPU torch could use.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def parse(spec: str) -> list[str]:
    """Canonical device names, repeats dropped, order kept; ['auto'] for auto. ValueError on a bad name."""
    names = []
    parts = [p.strip() for p in spec.split(",")]
    for part in parts:
        if part in ("auto", "cpu"):
            names.append(part)
        elif part == "cuda" or (part.startswith("cuda:") and part[5:].isdigit()):
            names.append(f"cuda:{int(part[5:] or 0)}")  # cuda, cuda:1, cuda:01
        else:
            raise ValueError(f"'{part}' is not auto, cpu, cuda or cuda:N")
    if "auto" in names and len(parts) > 1:
        raise ValueError("'auto' stands alone, not in a list")
    return list(dict.fromkeys(names))


def may_have_gpus(platform: str = sys.platform) -> bool:
    """False where torch.cuda certainly sees no GPU (macOS; Linux without GPU device files), so that a CPU
    machine never imports torch (2-4 s) just to count none; True where only torch can tell."""
    if platform == "darwin":
        return False
    if platform.startswith("linux"):
        return any(os.path.exists(path) for path in GPU_DEVICE_FILES)
    return True


def visible_devices(spec: str, cuda_count: int) -> list[str]:
    """The devices `spec` names, given how many GPUs this process sees."""
    names = parse(spec)
    if names == ["auto"]:
        return [f"cuda:{i}" for i in range(cuda_count)] or ["cpu"]
    for name in names:
        if name.startswith("cuda:") and int(name[5:]) >= cuda_count:
            raise ValueError(f"classifier.device names {name}, but {cuda_count} GPU(s) are visible")
    return names


def torch_device(name: str):
    """One device name as a torch.device; auto is the first GPU, else the CPU."""
    import torch

    (name,) = parse(name)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but CUDA is not available")
    return torch.device(name)
