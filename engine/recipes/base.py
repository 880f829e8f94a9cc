"""What one training step does: a recipe (docs/method.md §6, §10). The trainer (engine/trainer.py) calls
`recipe.step(...)` once per iteration; a recipe decides the batch that is trained on (clean, partly or wholly
adversarial) and the loss, and everything else (optimizer, scheduler, logging, checkpoints) stays the trainer's.

A new recipe is one Recipe subclass in its own module, registered in RECIPES under the name ADV_TRAIN.method takes,
and one import line in engine/recipes/__init__.py.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attack import Attack
from engine.precision import autocast
from util.distributed import share_buffers
from util.errors import UserError
from util.registry import Registry

RECIPES: Registry[type[Recipe]] = Registry("training recipe", "ADV_TRAIN.method")


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels (0, not NaN, when every pixel is ignored); logits (N,K,H,W), labels
    (N,H,W) long."""
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


class StepResult(NamedTuple):
    logits: torch.Tensor      # (N,K,H,W) detached, of the batch as trained (adversarial images first)
    labels: torch.Tensor      # (N,H,W) in the same order
    main_loss: torch.Tensor   # detached
    aux_loss: torch.Tensor    # detached
    n_adv: int                # adversarial images at the front


class Recipe:
    """A training step: batch() composes the batch trained on, step() trains the network on it with
    CE(main) + TRAIN.aux_weight x CE(aux) under TRAIN.amp. `attack` is the training attack (None for clean
    training), built on the unwrapped model: it runs in eval mode and restores train mode."""

    name = ""
    attack: Attack | None = None
    supports_iterate_grads = False  # ADV_TRAIN.iterate_grads: PIR-AT's only (engine/recipes/pirat.py)

    def __init__(self, cfg, model: nn.Module) -> None:
        if cfg.ADV_TRAIN.iterate_grads and not self.supports_iterate_grads:
            raise UserError(f"ADV_TRAIN.iterate_grads is PIR-AT's (ADV_TRAIN.method pirat); ADV_TRAIN.method "
                            f"{self.name} does not take it")
        self.cfg = cfg

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The batch (N,3,H,W) to train on, its labels (N,H,W) and the number of adversarial images at its front."""
        return images, labels, 0

    def describe(self, per_process: int) -> str:
        """One log line: what a step does to a per-process batch of `per_process` images."""
        return f"training recipe {self.name}"

    def attack_passes(self) -> float:
        """Forward+backward passes that batch() makes per training image, by the recipe's definition (the
        benchmark's AT target scales with it): the attack's backward passes for every image, none without one."""
        return 0.0 if self.attack is None else float(self.attack.expected_passes(1)[1])

    def losses(self, out: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(main, auxiliary) cross-entropy; the auxiliary loss is 0 for a model without an auxiliary head."""
        ignore = self.cfg.DATA.ignore_index
        main = segmentation_loss(out["out"], labels, ignore)
        aux = segmentation_loss(out["aux"], labels, ignore) if out.get("aux") is not None else torch.zeros_like(main)
        return main, aux

    def step(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
             scheduler, scaler: torch.amp.GradScaler | None = None) -> StepResult:
        """One optimisation step on a batch (N,3,H,W): the batch of batch() (its attack under TRAIN.amp's autocast
        too), the losses, backward (scaled by `scaler` under fp16), the optimizer and scheduler steps. Under DDP every
        process then takes rank 0's BatchNorm statistics (what DDP broadcasts before the next forward anyway), so
        the next attack, a validation and a checkpoint see one model on every process, and a resumed run continues
        exactly."""
        optimizer.zero_grad(set_to_none=True)  # before batch(): a recipe may add gradients there (pirat)
        with autocast(self.cfg.TRAIN.amp, images.device):
            images, labels, n_adv = self.batch(images, labels)
            out = net(images, return_dict=True)
            main_loss, aux_loss = self.losses(out, labels)
            loss = main_loss + self.cfg.TRAIN.aux_weight * aux_loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        share_buffers(net)
        return StepResult(out["out"].detach(), labels, main_loss.detach(), aux_loss.detach(), n_adv)
