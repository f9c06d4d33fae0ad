"""Which device trains which model.

One lane per device: the models of a lane run one after another, lanes run
side by side, so each GPU trains one model at a time. Models are dealt to
lanes round-robin in config order (the baseline first)."""

from __future__ import annotations


def visible_devices(spec: str, cuda_count: int) -> list[str]:
    """Devices named by `classifier.device`, given how many GPUs this process sees."""
    if spec == "auto":
        return [f"cuda:{i}" for i in range(cuda_count)] or ["cpu"]
    devices = []
    for part in (p.strip() for p in spec.split(",")):
        if part == "auto":
            raise ValueError("classifier.device: 'auto' stands alone, not in a list")
        name = "cpu" if part == "cpu" else f"cuda:{int(part[5:] or 0)}"  # cuda, cuda:1, cuda:01
        if name.startswith("cuda:") and int(name[5:]) >= cuda_count:
            raise ValueError(f"classifier.device names {name}, but {cuda_count} GPU(s) are visible")
        devices.append(name)
    return list(dict.fromkeys(devices))


def assign_lanes(models: list[str], devices: list[str]) -> dict[str, str]:
    """model name -> device, round-robin."""
    return {model: devices[i % len(devices)] for i, model in enumerate(models)}
