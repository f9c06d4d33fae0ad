"""Which device trains which model.

One lane per device: the models of a lane run one after another, lanes run
side by side, so each GPU trains one model at a time. Models are dealt to
lanes round-robin in config order (the baseline first). The devices are
those `classifier.device` names (`casflow.tasks.devices`)."""

from __future__ import annotations


def assign_lanes(models: list[str], devices: list[str]) -> dict[str, str]:
    """model name -> device, round-robin."""
    return {model: devices[i % len(devices)] for i, model in enumerate(models)}
