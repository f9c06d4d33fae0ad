"""`fast`: an airbench94-class recipe (Jordan 2024), written for any image
size, channel count and class count.

Whole data set on the device, channels_last, bf16 autocast on CUDA, a
frozen patch-whitening first layer, three conv groups, alternating flips
and small translations on the device, Nesterov SGD in airbench's decoupled
parametrisation with a triangular schedule, label smoothing, a lookahead
weight average, and test-time augmentation. Defaults are airbench94's
CIFAR-10 settings; tiny CPU runs override them in the config.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from casflow.tasks.classifiers.common import (
    EpochLog,
    Lookahead,
    Normalize,
    TrainLoader,
    autocast,
    seeded_on_device,
    total_steps,
    triangle,
)
from casflow.tasks.classifiers.hyper import FastHyper

Hyper = FastHyper  # every hyperparameter, with airbench94's CIFAR-10 defaults (hyper.py)


# ---------------------------------------------------------------- network

class BatchNorm(nn.BatchNorm2d):
    """Scale fixed at 1 (not trained), bias trained; airbench's momentum convention."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias, initialised as identity on its first channels (dirac)."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(channels_in, channels_out, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    """conv -> pool -> BN -> GELU, then conv -> BN -> GELU once more (airbench94), or twice
    with a residual connection around both (airbench96)."""

    def __init__(self, channels_in: int, channels_out: int, convs: int, bn_momentum: float, pool: bool):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.convs = nn.ModuleList([Conv(channels_in if i == 0 else channels_out, channels_out) for i in range(convs)])
        self.norms = nn.ModuleList([BatchNorm(channels_out, bn_momentum) for _ in range(convs)])
        self.residual = convs > 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norms[0](self.pool(self.convs[0](x))))
        skip = x
        for conv, norm in zip(self.convs[1:], self.norms[1:]):
            x = F.gelu(norm(conv(x)))
        return x + skip if self.residual else x


class Net(nn.Module):
    def __init__(self, hp: Hyper, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        height, width, channels = image_shape
        self.normalize = Normalize(channels)
        whiten_width = 2 * channels * hp.whiten_kernel**2  # each whitening direction and its negative
        self.whiten = nn.Conv2d(channels, whiten_width, hp.whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        size = min(height, width) - hp.whiten_kernel + 1
        groups, channels_in = [], whiten_width
        for channels_out in hp.widths:
            groups.append(ConvGroup(channels_in, channels_out, hp.convs_per_group, hp.batchnorm_momentum, pool=size >= 2))
            size, channels_in = (size // 2 if size >= 2 else size), channels_out
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(channels_in, num_classes, bias=False)
        self.logit_scale = hp.logit_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (N, widths[-1]): the last group's channels, max-pooled over space."""
        x = F.gelu(self.whiten(self.normalize(x)))
        x = self.groups(x)
        return torch.amax(x, dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


def build(hp: Hyper, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return Net(hp, image_shape, num_classes)


@torch.no_grad()
def init_from_data(net: Net, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Fit the input statistics, then set the whitening filters to the eigenvectors
    of the patch covariance scaled by 1/sqrt(eigenvalue), with their negatives."""
    net.normalize.fit(images)
    net.whiten.bias.zero_()
    x = net.normalize(images.float())
    k = net.whiten.kernel_size[0]
    c = x.shape[1]
    patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, c * k * k)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps).view(-1, 1)).reshape(-1, c, k, k)
    net.whiten.weight.copy_(torch.cat([filters, -filters]))


# ---------------------------------------------------------------- training

def train(loader: TrainLoader, num_classes: int, hp: Hyper, device: torch.device, seed: int,
          image_shape: tuple[int, int, int]) -> tuple[nn.Module, dict]:
    started = time.perf_counter()
    net = seeded_on_device(lambda: build(hp, image_shape, num_classes), seed, device)
    init_from_data(net, loader.whitening_sample())

    steps = total_steps(loader, hp.epochs)
    kilostep_scale = 1024 * (1 + 1 / (1 - hp.momentum))  # Nesterov's step growth, divided out
    lr = hp.lr / kilostep_scale
    wd = hp.weight_decay * hp.batch_size / kilostep_scale
    norm_biases = [p for m in net.modules() if isinstance(m, BatchNorm) for p in m.parameters() if p.requires_grad]
    # includes the whitening bias, whose requires_grad toggles below; without a gradient SGD skips it
    others = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in norm_biases)]
    groups = [dict(params=norm_biases, lr=lr * hp.bias_scaler, weight_decay=wd / (lr * hp.bias_scaler)),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    optimizer = torch.optim.SGD(groups, momentum=hp.momentum, nesterov=True)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    lookahead = Lookahead(net)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing, reduction="sum")

    epochs = EpochLog(total_epochs=-(-steps // len(loader)), num_samples=loader.num_samples)
    step = 0
    for epoch in range(epochs.total_epochs):
        epoch_start, seen = time.perf_counter(), 0
        net.whiten.bias.requires_grad = epoch < hp.whiten_bias_epochs
        net.train()
        for images, labels in loader.epoch(epoch):
            with autocast(device):
                logits = net(images)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            factor = triangle(step, steps, start=0.2, peak_at=0.23, end=0.07)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            optimizer.step()
            step += 1
            seen += len(images)
            if step % hp.lookahead_every == 0:
                lookahead.update(net, decay=0.95**hp.lookahead_every * (step / steps) ** 3)
            if step >= steps:
                break
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        epochs.add(epoch, loss.item() / len(labels), accuracy, time.perf_counter() - epoch_start, seen)
        if step >= steps:
            break
    lookahead.update(net, decay=1.0)  # end on the averaged weights
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return net, {"steps": step, "epochs": epochs.rows, "train_seconds": round(time.perf_counter() - started, 3)}
