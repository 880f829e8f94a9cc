"""The training step (METHOD.md §6) and what it needs: optimizer, scheduler, per-epoch seeding and, for
adversarial training, the mixed batch. tool_train/train.py and the benchmarks run this one step."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from attack import Attack
from engine.precision import autocast
from util.distributed import share_buffers
from util.errors import UserError
from util.loss import segmentation_loss


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch (dropout, random ops, random starts) from (seed, epoch, rank), so a resumed epoch repeats."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def build_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    """SGD with the base lr on the backbone and head_lr_mult x base lr on the heads (model.param_groups())."""
    t = cfg.TRAIN
    groups = model.param_groups()
    backbone, head = groups["backbone"], groups["head"]
    return torch.optim.SGD(
        [{"params": backbone, "lr": t.base_lr}, {"params": head, "lr": t.base_lr * t.head_lr_mult}],
        lr=t.base_lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay per iteration: lr x (1 - it / max_iter) ** TRAIN.power."""
    power = cfg.TRAIN.power
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(1 - it / max_iter, 0.0) ** power)


def per_process_batch(global_batch: int, world: int) -> int:
    """TRAIN.batch_size is the global batch: each of the world's processes takes an equal share of it."""
    if global_batch % world:
        raise UserError(f"TRAIN.batch_size {global_batch} (the global batch) must be divisible by the world size "
                        f"{world} (NPROC x NNODES processes)")
    return global_batch // world


def adversarial_count(batch: int, ratio: float) -> int:
    """How many images of a per-process batch are replaced: ratio x batch rounded half up, at least one."""
    return min(batch, max(1, math.floor(ratio * batch + 0.5)))


def adversarial_batch(attack: Attack, images: torch.Tensor, labels: torch.Tensor, ratio: float,
                      composition: str = "attacked") -> tuple[torch.Tensor, torch.Tensor, int]:
    """The training batch with adversarial_count(N, ratio) images replaced by adversarial versions, those first.

    composition "attacked": only the replaced images (the first ones) are attacked. "release": as the RP-PGD
    release, the whole batch is attacked and the adversarial versions of its second half (images N//2 ..) are
    kept beside the clean first half, so with batch-pooled attack terms a kept image depends on the discarded
    ones (ratio must be 0.5). The attack runs in eval mode (BN running statistics and dropout untouched) and
    restores every module's mode. Returns the batch (N,3,H,W), its labels (N,H,W) and the number of adversarial
    images at its front.
    """
    if composition == "release":
        half = len(images) // 2
        adv = attack(images, labels)
        return torch.cat([adv[half:], images[:half]]), torch.cat([labels[half:], labels[:half]]), len(images) - half
    n_adv = adversarial_count(len(images), ratio)
    adv = attack(images[:n_adv], labels[:n_adv])
    return torch.cat([adv, images[n_adv:]]), labels, n_adv


class StepResult(NamedTuple):
    logits: torch.Tensor      # (N,K,H,W) detached, of the batch as trained (adversarial images first)
    labels: torch.Tensor      # (N,H,W) in the same order
    main_loss: torch.Tensor   # detached
    aux_loss: torch.Tensor    # detached
    n_adv: int                # adversarial images at the front


def train_step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
               scheduler, cfg, attack: Attack | None = None, scaler: torch.amp.GradScaler | None = None
               ) -> StepResult:
    """One optimisation step on a batch (N,3,H,W): CE(main) + TRAIN.aux_weight x CE(aux), adversarial when
    `attack` is given (built on the unwrapped model; ADV_TRAIN.adv_ratio of the batch is replaced). The attack and
    the forward pass run under TRAIN.amp's autocast (engine/precision.py); `scaler` (fp16) scales the loss.

    Returns a StepResult: the batch as trained (its adversarial images first, see adversarial_batch). Under DDP
    every process then takes rank 0's BatchNorm statistics (what DDP broadcasts before the next forward anyway),
    so the next attack, a validation and a checkpoint see one model on every process, and a resumed run continues
    exactly.
    """
    n_adv = 0
    with autocast(cfg.TRAIN.amp, images.device):
        if attack is not None:
            images, labels, n_adv = adversarial_batch(attack, images, labels, cfg.ADV_TRAIN.adv_ratio,
                                                      cfg.ADV_TRAIN.composition)
        out = net(images, return_dict=True)
        main_loss = segmentation_loss(out["out"], labels, cfg.DATA.ignore_index)
        aux_loss = segmentation_loss(out["aux"], labels, cfg.DATA.ignore_index)
        loss = main_loss + cfg.TRAIN.aux_weight * aux_loss
    optimizer.zero_grad(set_to_none=True)
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
