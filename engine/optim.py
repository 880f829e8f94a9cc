"""Optimizers and learning-rate schedules by name (TRAIN.optimizer, TRAIN.scheduler), built on torch.optim.

An optimizer builder takes the model (its `param_groups()`: "backbone", "head"; or its named parameters) and the
config; a scheduler builder the optimizer, the config and the run's number of iterations (the schedule steps once per
iteration, after the optimizer). A new one is a function and its registration here or in a module of its own.

`adamw` and `warmup-poly` are PIR-AT's (SEA's `semseg/optimizers.py` and `semseg/schedulers.py`, docs/training.md,
"The PIR-AT recipe, point by point"); `poly-sea` is the schedule SEA's `tools/train_rob_seg.py` gives its PSPNet.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from util.errors import UserError
from util.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", "TRAIN.optimizer")
SCHEDULERS: Registry[Callable[..., torch.optim.lr_scheduler.LRScheduler]] = Registry("scheduler", "TRAIN.scheduler")


@OPTIMIZERS.register("sgd")
def sgd(model: nn.Module, cfg) -> torch.optim.SGD:
    """SGD with momentum and weight decay: TRAIN.base_lr on the backbone, TRAIN.head_lr_mult x that on the heads."""
    t, groups = cfg.TRAIN, model.param_groups()
    return torch.optim.SGD(
        [{"params": groups["backbone"], "lr": t.base_lr}, {"params": groups["head"], "lr": t.base_lr * t.head_lr_mult}],
        lr=t.base_lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )


def decays(name: str, param: nn.Parameter) -> bool:
    """SEA's weight-decay rule (semseg/optimizers.py, group_weight): no decay on parameters of at most one dimension
    (biases, norm scales and shifts, ConvNeXt's layer scales) nor on any parameter whose name contains "norm". Our
    ConvNeXt keeps torchvision's layer scale, (C,1,1) where SEA's `gamma` is (C,): it is matched by its name."""
    return param.ndim > 1 and "norm" not in name and not name.endswith("layer_scale")


@OPTIMIZERS.register("adamw")
def adamw(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.999, eps 1e-8) as SEA builds it: two groups, the parameters that decay (TRAIN.weight_decay)
    and those that do not (decays()), both at TRAIN.base_lr; frozen parameters are left out. SEA has no separate
    head learning rate, so TRAIN.head_lr_mult must be 1."""
    t = cfg.TRAIN
    if t.head_lr_mult != 1:
        raise UserError(f"TRAIN.optimizer adamw gives every parameter TRAIN.base_lr, as PIR-AT's AdamW does: set "
                        f"TRAIN.head_lr_mult 1.0 (got {t.head_lr_mult})")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for n, p in named if decays(n, p)]},
         {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}],
        lr=t.base_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=t.weight_decay,
    )


def poly_factor(it: int, max_iter: int, power: float) -> float:
    """(1 - it / max_iter) ** power, 0 from max_iter on."""
    return max(1 - it / max_iter, 0.0) ** power


@SCHEDULERS.register("poly")
def poly(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay per iteration: iteration i at lr x (1 - i / max_iter) ** TRAIN.power."""
    power = cfg.TRAIN.power
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_factor(it, max_iter, power))


@SCHEDULERS.register("poly-sea")
def poly_sea(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The poly schedule as SEA's tools/train_rob_seg.py runs it for PSPNet: it sets the learning rates after each
    step from that step's index, so iteration 0 runs every group at TRAIN.base_lr (the heads too) and iteration i >= 1
    at poly(i - 1), with each group's own multiple of it (TRAIN.head_lr_mult on the heads)."""
    power, base = cfg.TRAIN.power, cfg.TRAIN.base_lr
    lambdas = [lambda it, first=base / group["lr"]: first if it == 0 else poly_factor(it - 1, max_iter, power)
               for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


@SCHEDULERS.register("warmup-poly")
def warmup_poly(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """SEA's WarmupPolyLR with linear warm-up (semseg/schedulers.py, as get_scheduler builds it): W =
    TRAIN.warmup_epochs x iterations per epoch, r = TRAIN.warmup_ratio; iteration i runs at lr x (r + (1 - r) i / W)
    for i < W and lr x (1 - (i - W) / (max_iter - W)) ** TRAIN.power from W on."""
    t = cfg.TRAIN
    if not 0 <= t.warmup_epochs < t.epochs:
        raise UserError(f"TRAIN.warmup_epochs must be in [0, TRAIN.epochs) = [0, {t.epochs}); got {t.warmup_epochs}")
    warmup, ratio, power = t.warmup_epochs * max_iter // t.epochs, t.warmup_ratio, t.power

    def factor(it: int) -> float:
        if it < warmup:
            return ratio + (1 - ratio) * (it / warmup)
        return poly_factor(it - warmup, max_iter - warmup, power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """TRAIN.optimizer over the model's parameters."""
    return OPTIMIZERS.get(cfg.TRAIN.optimizer)(model, cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LRScheduler:
    """TRAIN.scheduler for a run of max_iter iterations."""
    return SCHEDULERS.get(cfg.TRAIN.scheduler)(optimizer, cfg, max_iter)
