"""What a training checkpoint holds and how a run continues from it exactly, at an epoch boundary or mid-epoch.

tool_train/train.py writes model/last.pth after every epoch, every TRAIN.save_iters iterations and when a stop is
requested (engine/interrupts.py). Besides the model, optimizer and scheduler states and the best metric, it holds
`epoch` (complete epochs), `iteration` (iterations done of the next epoch, 0 at a boundary) and, from every
process, its RNG states and its running sums of the epoch (`processes`, in rank order). An epoch starts from
seeds of (EXP.seed, epoch, rank) and a sampler order of (EXP.seed, epoch), so a boundary checkpoint continues with
any number of processes; a mid-epoch one continues with the world size that wrote it, each process restoring
its RNG states, skipping the batches already trained on and keeping its sums. On the CPU a resumed run ends
with the weights of an uninterrupted one (tests/test_faults.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from util.checkpoint import save_checkpoint
from util.distributed import DistEnv, all_gather_objects
from util.errors import UserError


def rng_states() -> dict[str, Any]:
    """This process's torch RNG states: the CPU generator and, with CUDA, the current device's."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


@dataclass
class ResumePoint:
    """Where a run continues: after `epoch` complete epochs and `iteration` iterations of the next one, with this
    process's RNG states and epoch sums when mid-epoch (None at a boundary)."""
    epoch: int = 0
    iteration: int = 0
    rng: dict[str, Any] | None = None
    sums: dict[str, torch.Tensor] | None = None


@dataclass
class TrainingState:
    """The parts of a checkpoint that say how far training got."""
    epoch: int
    iteration: int
    best: dict
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # this process's running sums of the epoch


def checkpoint_state(model: torch.nn.Module, optimizer, scheduler, progress: TrainingState, env: DistEnv,
                     scaler: torch.amp.GradScaler | None = None) -> dict[str, Any] | None:
    """The checkpoint dict on rank 0 (None on the others), with the fp16 grad scaler's state when there is one.
    Every process must call it: it gathers their RNG states and epoch sums."""
    processes = all_gather_objects({"rng": rng_states(), "sums": progress.sums}, env)
    if not env.is_main:
        return None
    return {"epoch": progress.epoch, "iteration": progress.iteration, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": progress.best,
            "world": env.world, "processes": processes,
            "scaler": None if scaler is None else scaler.state_dict()}


def resume_point(state: dict[str, Any], env: DistEnv, iterations_per_epoch: int, where: str) -> ResumePoint:
    """Where a checkpoint's run continues on this process; a UserError when a mid-epoch checkpoint was written by
    another number of processes or for another epoch length."""
    epoch, iteration = int(state["epoch"]), int(state.get("iteration", 0))
    if iteration == 0:
        return ResumePoint(epoch)
    world = int(state.get("world", 1))
    if world != env.world:
        raise UserError(f"{where} was written mid-epoch (epoch {epoch + 1}, iteration {iteration}) by {world} "
                        f"process(es); continue it with {world} (NPROC x NNODES), or from an epoch checkpoint")
    if iteration >= iterations_per_epoch:
        raise UserError(f"{where} stopped at iteration {iteration} of epoch {epoch + 1}, but an epoch now has "
                        f"{iterations_per_epoch} iterations: TRAIN.batch_size or the training list changed")
    mine = state["processes"][env.rank]
    return ResumePoint(epoch, iteration, mine["rng"], mine["sums"])


class Checkpoints:
    """The run's checkpoint files under `folder` (model/): every process calls save(), rank 0 writes."""

    def __init__(self, model: torch.nn.Module, optimizer, scheduler, env: DistEnv, folder: Path,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.model, self.optimizer, self.scheduler, self.env, self.scaler = model, optimizer, scheduler, env, scaler
        self.last = folder / "last.pth"

    def kept(self) -> str:
        """What a run that stops now without writing leaves behind, for its message."""
        if self.last.is_file():
            return f"the last good checkpoint {self.last} is kept"
        return f"no checkpoint was written yet ({self.last})"

    def save(self, progress: TrainingState, also: tuple[str, ...] = ()) -> Path:
        """Write last.pth (and the files named in `also`, e.g. best.pth) atomically; returns last.pth's path."""
        state = checkpoint_state(self.model, self.optimizer, self.scheduler, progress, self.env, self.scaler)
        if state is not None:
            for path in (self.last, *(self.last.with_name(name) for name in also)):
                save_checkpoint(state, path)
        return self.last
