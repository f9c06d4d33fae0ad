"""A real class-conditional generative model with classifier-free guidance,
small enough to train on a laptop CPU in minutes: flow matching on the
embedded 8x8 grey digits. It is casflow's reference model for scores that
move with guidance (benchmarks/guidance_sweep.py), and a Python entry point
to copy.

Training, conditional flow matching with straight paths (Lipman et al. 2023,
Liu et al. 2023): x0 ~ N(0, I), x1 a train image scaled to [-1, 1],
t ~ U(0, 1), x_t = (1 - t) x0 + t x1; a network v(x_t, t, c) learns the
velocity x1 - x0 by mean squared error. With probability `label_dropout`
the class c is replaced by a null class (index num_classes), so the same
network also learns the unconditional velocity (Ho & Salimans 2022).
The saved weights are an exponential moving average of the trained ones.

Sampling: `steps` Euler steps from t = 0 to 1 along the guided velocity

    v = v(x, t, c) + guidance * (v(x, t, c) - v(x, t, null))

so guidance 0 is the conditional model alone and larger values push
samples towards what makes them their class (Ho & Salimans' w). The result
is clipped to [-1, 1], as diffusion samplers clip to the data range; strong
guidance overshoots it, and the clipping is part of what it does.

    python -m examples.cfg_flow --out cfg_flow.pt [--steps 6000] [--seed 0]

The checkpoint is a plain dict, {"model": state dict, "config": ints},
that torch.load(weights_only=True) reads. casflow config:

    generator:
      kind: python
      entry_point: examples.cfg_flow:make_sampler
      checkpoint: cfg_flow.pt
      output_range: "-1..1"
      layout: NCHW
      options: {guidance: 1.0, steps: 32}
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class Hyper:
    steps: int = 6000  # optimiser steps; about 4 minutes on 2 CPU cores at the defaults
    batch_size: int = 256
    lr: float = 2e-3  # AdamW peak, after `warmup` steps, cosine decay to 0
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # the saved weights: an average over the last ~1000 steps
    label_dropout: float = 0.1  # share of labels replaced by the null class (Ho & Salimans 2022 use 0.1 to 0.2)
    hidden: int = 256  # MLP width
    depth: int = 4  # residual blocks


# ---------------------------------------------------------------- network

def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (Vaswani et al. 2017's positions, with t scaled to 0..1000)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000 * t.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Block(nn.Module):
    """LayerNorm -> SiLU -> Linear, plus the conditioning, -> SiLU -> Linear, added back (a residual MLP block)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.first = nn.Linear(hidden, hidden)
        self.condition = nn.Linear(hidden, hidden)
        self.second = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        x = self.first(F.silu(self.norm(h))) + self.condition(condition)
        return h + self.second(F.silu(x))


class Velocity(nn.Module):
    """v(x_t, t, c) for images (N, C, H, W); class index num_classes is the null (unconditional) class."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, hidden: int, depth: int):
        super().__init__()
        channels, height, width = image_shape
        self.image_shape, self.num_classes = image_shape, num_classes
        pixels = channels * height * width
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.classes = nn.Embedding(num_classes + 1, hidden)
        self.inp = nn.Linear(pixels, hidden)
        self.blocks = nn.ModuleList([Block(hidden) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, pixels)
        nn.init.zeros_(self.out.weight)  # start at velocity 0: the first steps learn the mean flow
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        condition = self.time(time_features(t, self.classes.embedding_dim)) + self.classes(labels)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, condition)
        return self.out(F.silu(self.out_norm(h))).view(len(x), *self.image_shape)


def build(config: dict[str, int]) -> Velocity:
    return Velocity((config["channels"], config["height"], config["width"]), config["num_classes"],
                    config["hidden"], config["depth"])


# ---------------------------------------------------------------- training

def train(images: np.ndarray, labels: np.ndarray, num_classes: int, hp: Hyper, seed: int,
          log_every: int = 500, save_every: int = 0,
          save: Callable[[int, dict[str, object]], None] | None = None) -> dict[str, object]:
    """Train on uint8 NHWC images; returns the checkpoint {"model": EMA state dict, "config": ints}.

    With `save_every`, `save(step, checkpoint)` is called after every `save_every` optimiser steps with the
    checkpoint as it stands then (its config adds "step"); the learning-rate schedule is the whole run's,
    so these are the checkpoints of one training, not shorter trainings."""
    x1_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    _, channels, height, width = x1_all.shape
    config = {"channels": channels, "height": height, "width": width, "num_classes": num_classes,
              "hidden": hp.hidden, "depth": hp.depth, "train_steps": hp.steps, "seed": seed}
    with torch.random.fork_rng(devices=[]):  # the initial weights from the seed, the global RNG untouched
        torch.manual_seed(seed)
        net = build(config)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    generator = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    for step in range(hp.steps):
        warm = (step + 1) / hp.warmup
        cosine = 0.5 * (1 + math.cos(math.pi * (step - hp.warmup) / max(1, hp.steps - hp.warmup)))
        for group in optimizer.param_groups:
            group["lr"] = hp.lr * (warm if step < hp.warmup else cosine)
        index = torch.randint(0, len(x1_all), (hp.batch_size,), generator=generator)
        x1, c = x1_all[index], labels_all[index]
        dropped = torch.rand(hp.batch_size, generator=generator) < hp.label_dropout
        c = torch.where(dropped, torch.full_like(c, num_classes), c)
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(hp.batch_size, generator=generator)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
        loss = F.mse_loss(net(xt, t, c), x1 - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for name, value in net.state_dict().items():
                ema[name].lerp_(value, 1 - hp.ema_decay)
        if save_every and (step + 1) % save_every == 0:
            save(step + 1, {"model": ema, "config": config | {"step": step + 1}})
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{hp.steps}: loss {loss.item():.4f}, {time.perf_counter() - started:.0f} s", flush=True)
    return {"model": ema, "config": config}


# ---------------------------------------------------------------- sampling: the casflow entry point

class Sampler:
    def __init__(self, net: Velocity, device: torch.device, guidance: float, steps: int):
        self.net, self.device, self.guidance, self.steps = net, device, guidance, steps
        self.num_classes = net.num_classes  # casflow checks it against the dataset

    @torch.no_grad()
    def sample(self, labels, seed: int) -> torch.Tensor:
        """Images in [-1, 1], NCHW, for the labels; the same labels and seed give the same images."""
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self.device)
        n = len(labels)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        x = torch.randn((n, *self.net.image_shape), generator=generator, device=self.device)
        both_labels = torch.cat([labels, torch.full_like(labels, self.net.num_classes)])  # conditional, then null
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((2 * n,), i * dt, device=self.device)
            conditional, unconditional = self.net(torch.cat([x, x]), t, both_labels).chunk(2)
            x = x + dt * (conditional + self.guidance * (conditional - unconditional))
        return x.clamp(-1, 1)


def make_sampler(checkpoint, device="cpu", guidance: float = 1.0, steps: int = 32) -> Sampler:
    """The entry point, `examples.cfg_flow:make_sampler`: the checkpoint as torch.load(weights_only=True) reads it."""
    if guidance < 0 or steps < 1:
        raise ValueError(f"guidance must be >= 0 and steps >= 1, got guidance={guidance}, steps={steps}")
    device = torch.device(device)
    net = build({k: int(v) for k, v in checkpoint["config"].items()})
    net.load_state_dict(checkpoint["model"])
    return Sampler(net.to(device).eval(), device, float(guidance), int(steps))


def train_digits(hp: Hyper, seed: int, log_every: int = 500, save_every: int = 0,
                 save: Callable[[int, dict[str, object]], None] | None = None) -> dict[str, object]:
    """The checkpoint trained on the digits train split that casflow's default dataset uses (eval_fraction 0.2, split_seed 0)."""
    from casflow.tasks.datasets import digits_splits

    train_split, _ = digits_splits(0.2, 0)
    return train(train_split.images, train_split.labels, len(train_split.class_names), hp, seed, log_every,
                 save_every, save)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="cfg_flow.pt")
    parser.add_argument("--steps", type=int, default=Hyper.steps, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.save(train_digits(Hyper(steps=args.steps), args.seed), args.out)
    print(f"saved {args.out}")
