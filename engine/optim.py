"""Optimizers and learning-rate schedules by name (TRAIN.optimizer, TRAIN.scheduler), built on torch.optim.

An optimizer builder takes the model's parameter groups (model.param_groups(): "backbone", "head") and the config; a
scheduler builder the optimizer, the config and the run's number of iterations (the schedule steps once per
iteration). A new one is a function and its registration here or in a module of its own.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from util.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", "TRAIN.optimizer")
SCHEDULERS: Registry[Callable[..., torch.optim.lr_scheduler.LRScheduler]] = Registry("scheduler", "TRAIN.scheduler")


@OPTIMIZERS.register("sgd")
def sgd(groups: dict[str, list[nn.Parameter]], cfg) -> torch.optim.SGD:
    """SGD with momentum and weight decay: TRAIN.base_lr on the backbone, TRAIN.head_lr_mult x that on the heads."""
    t = cfg.TRAIN
    return torch.optim.SGD(
        [{"params": groups["backbone"], "lr": t.base_lr}, {"params": groups["head"], "lr": t.base_lr * t.head_lr_mult}],
        lr=t.base_lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )


@SCHEDULERS.register("poly")
def poly(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay per iteration: lr x (1 - it / max_iter) ** TRAIN.power."""
    power = cfg.TRAIN.power
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(1 - it / max_iter, 0.0) ** power)


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """TRAIN.optimizer over model.param_groups()."""
    return OPTIMIZERS.get(cfg.TRAIN.optimizer)(model.param_groups(), cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LRScheduler:
    """TRAIN.scheduler for a run of max_iter iterations."""
    return SCHEDULERS.get(cfg.TRAIN.scheduler)(optimizer, cfg, max_iter)
