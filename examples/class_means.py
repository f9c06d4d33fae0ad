"""A minimal class-conditional model behind a casflow Python entry point.

Copy this file to wrap your own model. casflow calls

    make_sampler(checkpoint, device=..., **options)

with the checkpoint it loaded (torch.load(weights_only=True): a state dict
here), and then `sampler.sample(labels, seed)` in batches. This toy model
keeps one mean image and one per-pixel std per class and samples
mean + noise * std * N(0, 1), returned as a float tensor in [-1, 1], NCHW:
the config says so with `output_range: "-1..1"` and `layout: NCHW`.

Make a checkpoint from the embedded digits train split:

    python -m examples.class_means --out class_means.pt
"""

from __future__ import annotations

import argparse

import torch


class ClassMeans(torch.nn.Module):
    def __init__(self, means: torch.Tensor, stds: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)  # (classes, C, H, W) in [-1, 1]
        self.register_buffer("stds", stds)

    @property
    def num_classes(self) -> int:  # optional: casflow checks it against the dataset
        return len(self.means)

    def sample(self, labels, seed: int, noise: float = 1.0) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=self.means.device)
        generator = torch.Generator(device=self.means.device).manual_seed(seed)
        eps = torch.randn((len(labels), *self.means.shape[1:]), generator=generator, device=self.means.device)
        return (self.means[labels] + noise * self.stds[labels] * eps).clamp(-1, 1)


class Sampler:
    def __init__(self, model: ClassMeans, noise: float):
        self.model, self.noise = model, noise
        self.num_classes = model.num_classes

    def sample(self, labels, seed):
        return self.model.sample(labels, seed, self.noise)


def make_sampler(checkpoint, device="cpu", noise: float = 1.0) -> Sampler:
    """The entry point: `examples.class_means:make_sampler`."""
    model = ClassMeans(checkpoint["means"], checkpoint["stds"]).to(device)
    return Sampler(model, noise)


def fit_digits() -> dict[str, torch.Tensor]:
    from casflow.tasks.datasets import digits_splits

    train, _ = digits_splits(0.2, 0)
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(train.labels)
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    stds = torch.stack([x[y == c].std(0) for c in range(10)])
    return {"means": means, "stds": stds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="class_means.pt")
    torch.save(fit_digits(), parser.parse_args().out)
