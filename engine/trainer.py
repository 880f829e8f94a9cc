"""The training loop, with hooks (detectron2's trainer): epochs of recipe steps, and what happens around them.

The Trainer owns what a resumed run must restore exactly: the epoch and iteration, this process's running sums of
the epoch, the best validation metric, the per-epoch seeding and the sampler position (engine/resume.py). After every
iteration all processes agree, in one small all-reduce, whether any got SIGTERM/SIGUSR1 or saw a non-finite loss
(engine/interrupts.py): a non-finite loss stops the run at once with exit code 3, keeping the last good checkpoint.
Everything else is a hook, called in order: logging and tensorboard, validation and the best checkpoint, and the
checkpoints (periodic, at epoch ends, and on a stop request, after which the run exits with code 75), see
engine/hooks.py.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attack import NonFiniteError
from engine.interrupts import StopRequests
from engine.recipes import Recipe, StepResult
from engine.resume import Checkpoints, ResumePoint, set_rng_states
from util.distributed import DistEnv, all_reduce_sum, barrier
from util.errors import EXIT_NON_FINITE, RunStopped


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch (dropout, random ops, random starts) from (seed, epoch, rank), so a resumed epoch repeats."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def new_sums() -> dict[str, torch.Tensor]:
    """An epoch's running sums on this process: loss * n, aux loss * n, n; and (adversarial, clean) x (CE sum,
    correct, valid pixels)."""
    return {"loss": torch.zeros(3, dtype=torch.float64), "parts": torch.zeros(2, 3, dtype=torch.float64)}


def loss_and_accuracy_sums(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per image (N,3) float64 sums for logging: cross-entropy over valid pixels, correct pixels, valid pixels."""
    with torch.no_grad():
        valid = labels != ignore_index
        ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 where ignored
        correct = (logits.argmax(1) == labels) & valid
        return torch.stack([ce.flatten(1).sum(1), correct.flatten(1).sum(1), valid.flatten(1).sum(1)], 1).double()


class HookBase:
    """What runs around the loop; every method gets the trainer, whose attributes say where the run is."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        pass

    def after_epoch(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


class Trainer:
    """Trains `net` (the model, DDP-wrapped under several processes) with `recipe` for `epochs` epochs of `loader`,
    from `start` (a resume point). `model` is the unwrapped network that attacks, validation and checkpoints see.

    State the hooks read: epoch, iteration (1-based, within the epoch), iterations (per epoch), step (iterations of
    the run so far), step_parts ((2,3) adversarial/clean CE sum, correct, valid of the last step), losses (the last
    step's main and aux loss), stop_requested, epoch_stats (after an epoch), best and improved (after validation).
    """

    def __init__(self, net: nn.Module, model: nn.Module, recipe: Recipe, loader, optimizer, scheduler, env: DistEnv,
                 epochs: int, seed: int, checkpoints: Checkpoints, hooks: list[HookBase],
                 scaler: torch.amp.GradScaler | None = None, start: ResumePoint | None = None,
                 best: dict | None = None, ignore_index: int = 255) -> None:
        self.net, self.model, self.recipe, self.loader = net, model, recipe, loader
        self.optimizer, self.scheduler, self.scaler, self.env = optimizer, scheduler, scaler, env
        self.epochs, self.seed, self.checkpoints, self.hooks = epochs, seed, checkpoints, hooks
        self.start = start or ResumePoint()
        self.best = best or {"metric": "mIoU", "value": None, "epoch": None}
        self.ignore_index = ignore_index
        self.iterations = len(loader)
        self.epoch = self.start.epoch
        self.iteration = self.step = 0
        self.sums = new_sums()
        self.losses = torch.zeros(2)  # the last step's main and auxiliary loss
        self.step_parts = torch.zeros(2, 3, dtype=torch.float64)  # its adversarial and clean CE sum, correct, valid
        self.stop = StopRequests()
        self.stop_requested, self.improved = False, False
        self.epoch_stats: dict[str, float] = {}

    def train(self) -> None:
        with self.stop:  # SIGTERM/SIGUSR1 from here on: a checkpoint, then exit code 75
            for hook in self.hooks:
                hook.before_train(self)
            for epoch in range(self.start.epoch + 1, self.epochs + 1):
                self.epoch = epoch
                skip = self.start.iteration if epoch == self.start.epoch + 1 else 0
                seed_epoch(self.seed, epoch, self.env.rank)
                self.loader.dataset.set_epoch(epoch)
                self.loader.sampler.set_epoch(epoch, skip * self.loader.batch_size)
                batches = iter(self.loader)  # creating the iterator draws from torch's RNG, so it comes first
                self.sums = new_sums()
                if skip:  # mid-epoch: this process's RNG and sums as they were after iteration `skip`
                    set_rng_states(self.start.rng)
                    self.sums = self.start.sums
                self.run_epoch(batches, skip + 1)
                self.epoch_stats = self.reduce_sums()
                self.improved = False
                for hook in self.hooks:
                    hook.after_epoch(self)
                barrier(self.env)
            for hook in self.hooks:
                hook.after_train(self)

    def run_epoch(self, batches, first: int) -> None:
        """Iterations first..iterations of the epoch, each followed by the stop check and the hooks."""
        self.net.train()
        for it, (images, labels, _) in enumerate(batches, start=first):
            self.iteration = it
            images = images.to(self.env.device, non_blocking=True)
            labels = labels.to(self.env.device, non_blocking=True)
            try:
                result = self.recipe.step(self.net, images, labels, self.optimizer, self.scheduler, self.scaler)
            except NonFiniteError as exc:
                raise RunStopped(f"epoch {self.epoch} iteration {it}/{self.iterations}: {exc}; "
                                 f"{self.checkpoints.kept()}", EXIT_NON_FINITE) from exc
            self.losses = torch.stack([result.main_loss, result.aux_loss]).detach()
            self.stop_requested, non_finite = self.stop.check(self.losses, self.env)
            self.step = self.scheduler.last_epoch
            if non_finite:
                raise RunStopped(f"non-finite training loss at epoch {self.epoch} iteration {it}/{self.iterations} "
                                 f"(iteration {self.step} of the run): loss {float(self.losses[0]):.6g}, aux loss "
                                 f"{float(self.losses[1]):.6g} on process {self.env.rank}; {self.checkpoints.kept()}",
                                 EXIT_NON_FINITE)
            per_image = loss_and_accuracy_sums(result.logits, result.labels, self.ignore_index).cpu()  # (N,3)
            self.step_parts = torch.stack([per_image[:result.n_adv].sum(0), per_image[result.n_adv:].sum(0)])
            self.sums["parts"] += self.step_parts
            n = len(images)
            self.sums["loss"] += torch.cat([self.losses.double().cpu() * n, torch.tensor([n], dtype=torch.float64)])
            for hook in self.hooks:
                hook.after_step(self, result)

    def reduce_sums(self) -> dict[str, float]:
        """The epoch's mean losses and pixel accuracies over all processes."""
        total = all_reduce_sum(torch.cat([self.sums["loss"], self.sums["parts"].flatten()]).to(self.env.device),
                               self.env).cpu()
        loss_sums, parts = total[:3], total[3:].view(2, 3)
        out = {"loss": float(loss_sums[0] / loss_sums[2]), "aux_loss": float(loss_sums[1] / loss_sums[2])}
        for name, (ce, correct, valid) in zip(("adv", "clean"), parts.tolist()):
            if valid:
                out[f"{name}_loss"], out[f"{name}_pixel_acc"] = ce / valid, correct / valid
        return out
