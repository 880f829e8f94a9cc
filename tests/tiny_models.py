"""Small models for attack tests: fast on a CPU, with BatchNorm and dropout so eval/train mode matters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attack import AttackResult
from util.data.dataset import SegDataset


class TinySeg(nn.Module):
    """Three convs to a stride-4 feature map, a 1x1 classifier, bilinear upsampling to the input size.

    Follows the project's model contract: model(x) -> logits, model(x, return_dict=True) -> out/aux/feat, and
    normalisation inside (`normalize.mean/std`, as the release RP-PGD start needs).
    """

    def __init__(self, classes: int = 7, width: int = 16) -> None:
        super().__init__()
        self.normalize = nn.Module()
        self.normalize.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.normalize.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=2, dilation=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(2 * width, classes, 1))

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        feat = self.body((x - self.normalize.mean) / self.normalize.std)
        out = F.interpolate(self.head(feat), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out, "aux": None, "feat": feat} if return_dict else out


class SpyAttack:
    """Stands in for an attack: records its inputs and returns them shifted by a constant."""

    def __init__(self, model: nn.Module, shift: float = 0.01) -> None:
        self.model, self.shift, self.calls = model, shift, []

    def run(self, images, labels, trace=True, on_iterate=None, seeds=None):
        self.calls.append((images.clone(), labels.clone(), list(seeds)))
        return AttackResult(adv=(images + self.shift).clamp(0, 1))


class LogitsOnly(nn.Module):
    """A model without return_dict (what most users' models look like)."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.net = TinySeg(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_tiny(data_root, classes: int = 7, iterations: int = 150, seed: int = 0) -> tuple[TinySeg, list]:
    """Train a TinySeg on the demo-layout dataset at `data_root`; returns the model (eval mode) and the
    validation samples [(image (3,H,W), label (H,W))]."""
    torch.manual_seed(seed)
    train = SegDataset(data_root, "list/train.txt", classes)
    val = SegDataset(data_root, "list/val.txt", classes)
    xs = torch.stack([train[i][0] for i in range(len(train))])
    ys = torch.stack([train[i][1] for i in range(len(train))])
    model = TinySeg(classes, width=24)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        idx = torch.randint(len(xs), (8,), generator=gen)
        x, y = xs[idx], ys[idx]
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, [(val[i][0], val[i][1]) for i in range(len(val))]


class TinyNet(nn.Module):
    """TinySeg's layers as a network of the user's own (MODEL.arch python:tiny_models:tiny_network): normalised
    images in, stride-4 logits out; the adapter normalises and upsamples, and `body` gives RP-PGD's features."""

    def __init__(self, classes: int = 7, width: int = 16) -> None:
        super().__init__()
        self.body = TinySeg(classes, width).body
        self.head = nn.Conv2d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def tiny_network(cfg) -> nn.Module:
    """The python: family builder of TinyNet with DATA.classes classes."""
    return TinyNet(cfg.DATA.classes)
