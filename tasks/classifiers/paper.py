"""`paper`: a torchvision ResNet trained the textbook way, for users who
compare with the CAS paper (Ravuri & Vinyals 2019 used ResNet-50 on
ImageNet and ResNet-56 on CIFAR-10; torchvision has no ResNet-56, so the
default is ResNet-18 with a CIFAR stem for images of 64 pixels or less).

SGD with Nesterov momentum, linear warm-up then cosine decay, random flips
and translations, no test-time augmentation by default.
"""

from __future__ import annotations

import math
import time

import torch
import torchvision
from torch import nn

from casflow.tasks.classifiers.common import EpochLog, Normalize, TrainLoader, autocast, seeded_on_device, total_steps
from casflow.tasks.classifiers.hyper import PaperHyper

Hyper = PaperHyper  # every hyperparameter (hyper.py)


class Net(nn.Module):
    def __init__(self, hp: Hyper, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        height, width, channels = image_shape
        self.normalize = Normalize(channels)
        self.resnet = getattr(torchvision.models, hp.arch)(weights=None, num_classes=num_classes)
        if channels != 3 or min(height, width) <= 64:
            # CIFAR stem: a 3x3 stride-1 conv and no max pool keep small images from vanishing
            self.resnet.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if min(height, width) <= 64:
            self.resnet.maxpool = nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (N, 512 or 2048): torchvision's ResNet.forward up to its fc layer."""
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(self.normalize(x)))))
        x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
        return torch.flatten(r.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.normalize(x))  # torchvision's own forward: logits exactly as before features() existed


def build(hp: Hyper, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return Net(hp, image_shape, num_classes)


def train(loader: TrainLoader, num_classes: int, hp: Hyper, device: torch.device, seed: int,
          image_shape: tuple[int, int, int]) -> tuple[nn.Module, dict]:
    started = time.perf_counter()
    net = seeded_on_device(lambda: build(hp, image_shape, num_classes), seed, device)
    with torch.no_grad():
        net.normalize.fit(loader.whitening_sample())

    steps = total_steps(loader, hp.epochs)
    warmup = max(1, int(hp.warmup_epochs * len(loader)))
    decay, no_decay = [], []
    for p in net.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BatchNorm and biases
    optimizer = torch.optim.SGD([dict(params=decay, weight_decay=hp.weight_decay), dict(params=no_decay, weight_decay=0.0)],
                                lr=hp.lr, momentum=hp.momentum, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)

    epochs = EpochLog(total_epochs=-(-steps // len(loader)), num_samples=loader.num_samples)
    step = 0
    for epoch in range(epochs.total_epochs):
        epoch_start, seen = time.perf_counter(), 0
        net.train()
        for images, labels in loader.epoch(epoch):
            factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
            for group in optimizer.param_groups:
                group["lr"] = hp.lr * factor
            with autocast(device):
                logits = net(images)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += len(images)
            if step >= steps:
                break
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        epochs.add(epoch, loss.item(), accuracy, time.perf_counter() - epoch_start, seen)
        if step >= steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return net, {"steps": step, "epochs": epochs.rows, "train_seconds": round(time.perf_counter() - started, 3)}
