"""The training loop's hooks (engine/trainer.py), each with one job, called in this order after every step and epoch:

- Logging: the progress bar, the log lines and tensorboard's per-iteration and per-epoch scalars;
- Validation: clean validation (and robust validation with ADV_TRAIN.val_attack) every TRAIN.eval_freq epochs and
  after the last, and which epoch is the best so far (robust mIoU with a validation attack, else clean mIoU);
- Checkpointing: model/last.pth every TRAIN.save_iters iterations, at every epoch end (with best.pth and
  epoch_<N>.pth) and when a stop is requested, after which the run exits with code 75.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from attack import Attack
from engine.evaluation import evaluate
from engine.pictures import ImageView, panel
from engine.protocols import Protocol
from engine.recipes import StepResult
from engine.resume import TrainingState
from engine.trainer import HookBase, Trainer
from util.data.datasets import class_names, palette
from util.errors import EXIT_STOPPED, RunStopped


def describe_parts(parts: torch.Tensor) -> str:
    """'adv loss .. acc .. clean loss .. acc ..' for (2,3) (CE sum, correct, valid) rows; empty parts left out."""
    text = []
    for name, (ce, correct, valid) in zip(("adv", "clean"), parts.tolist()):
        if valid:
            text.append(f"{name} loss {ce / valid:.4f} acc {correct / valid:.4f}")
    return " ".join(text)


class Logging(HookBase):
    """Progress bar, log lines every `print_freq` iterations and at an epoch's end, tensorboard scalars (rank 0)."""

    def __init__(self, logger, writer, print_freq: int) -> None:
        self.logger, self.writer, self.print_freq = logger, writer, print_freq

    def before_train(self, trainer: Trainer) -> None:
        self.start = time.time()
        self.bar = tqdm(total=trainer.epochs * trainer.iterations, disable=not trainer.env.is_main, desc="train",
                        initial=trainer.start.epoch * trainer.iterations + trainer.start.iteration, dynamic_ncols=True)

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        stats, step, it = trainer.losses.double().cpu(), trainer.step, trainer.iteration
        lr = trainer.optimizer.param_groups[0]["lr"]
        self.bar.update()
        self.bar.set_postfix(epoch=trainer.epoch, loss=f"{stats[0]:.3f}", lr=f"{lr:.2e}")
        if not trainer.env.is_main:
            return
        self.writer.add_scalar("train/loss", float(stats[0]), step)
        self.writer.add_scalar("train/aux_loss", float(stats[1]), step)
        self.writer.add_scalar("train/lr", lr, step)
        for name, (ce, correct, valid) in zip(("adv", "clean"), trainer.step_parts.tolist()):
            if valid:
                self.writer.add_scalar(f"train/{name}_loss", ce / valid, step)
                self.writer.add_scalar(f"train/{name}_pixel_acc", correct / valid, step)
        if it % self.print_freq == 0 or it == trainer.iterations:
            self.logger.info(f"epoch {trainer.epoch} iter {it}/{trainer.iterations} loss {stats[0]:.4f} aux "
                             f"{stats[1]:.4f} {describe_parts(trainer.step_parts)} lr {lr:.3e}")

    def after_epoch(self, trainer: Trainer) -> None:
        stats = trainer.epoch_stats
        self.logger.info(f"epoch {trainer.epoch}/{trainer.epochs}: "
                         + " ".join(f"{k} {v:.4f}" for k, v in stats.items()))
        if trainer.env.is_main:
            for k, v in stats.items():
                self.writer.add_scalar(f"epoch/{k}", v, trainer.epoch)

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()
        self.logger.info(f"training finished in {time.time() - self.start:.0f} s; checkpoint "
                         f"{trainer.checkpoints.last}")
        if self.writer is not None:
            self.writer.close()


class Validation(HookBase):
    """Clean validation of `val_loader` (and robust validation of `robust_loader` under `robust_attack`) under the
    protocol, every `eval_freq` epochs and after the last; sets trainer.best and trainer.improved."""

    def __init__(self, protocol: Protocol, val_loader, robust_loader, robust_attack: Attack | None, cfg, logger,
                 writer) -> None:
        self.protocol, self.val_loader, self.robust_loader = protocol, val_loader, robust_loader
        self.robust_attack, self.cfg, self.logger, self.writer = robust_attack, cfg, logger, writer

    def after_epoch(self, trainer: Trainer) -> None:
        freq, epoch = self.cfg.TRAIN.eval_freq, trainer.epoch
        if not freq or (epoch % freq and epoch != trainer.epochs):
            return
        res = self.validate(trainer)
        best = trainer.best
        if best["value"] is None or res[best["metric"]] > best["value"]:
            trainer.best = {"metric": best["metric"], "value": res[best["metric"]], "epoch": epoch}
            trainer.improved = True

    def validate(self, trainer: Trainer) -> dict[str, float]:
        """{"mIoU": ..., "robust_mIoU": ...}; tensorboard gets the scores and a panel of the first validation image
        (clean, or under the robust validation attack)."""
        cfg, env, epoch, first = self.cfg, trainer.env, trainer.epoch, {}

        def keep(name: str):
            return lambda view: first.setdefault(name, view) if view.index == 0 else None
        res = evaluate(self.protocol, self.val_loader, env, cfg.DATA.classes, desc="val",
                       on_prediction=keep("clean")).summary()
        names = class_names(cfg.DATA.name, cfg.DATA.classes)
        iou = {n: v for n, v in zip(names, res["per_class_iou"]) if v is not None}
        weakest = ", ".join(f"{n} {v:.3f}" for n, v in sorted(iou.items(), key=lambda kv: kv[1])[:5])
        self.logger.info(f"epoch {epoch} validation: mIoU {res['mIoU']:.4f} mAcc {res['mAcc']:.4f} aAcc "
                         f"{res['aAcc']:.4f}; lowest class IoU: {weakest}")
        out = {"mIoU": res["mIoU"]}
        atk = self.robust_attack
        if atk is not None:
            rob = evaluate(self.protocol, self.robust_loader, env, cfg.DATA.classes, attack=atk, desc="robust val",
                           on_prediction=keep("attacked")).summary()
            out["robust_mIoU"] = rob["mIoU"]
            self.logger.info(f"epoch {epoch} robust validation ({atk.name}, {rob['images']} images, protocol "
                             f"{self.protocol.name}): mIoU {rob['mIoU']:.4f} mAcc {rob['mAcc']:.4f} aAcc "
                             f"{rob['aAcc']:.4f}")
        if env.is_main:
            for k, v in out.items():
                self.writer.add_scalar(f"val/{k}", v, epoch)
            for n, v in iou.items():
                self.writer.add_scalar(f"val_class_iou/{n}", v, epoch)
            if "clean" in first:  # the first validation image is on the main process (shards are contiguous)
                self.writer.add_image("val/panel", self.panel(first["clean"], first.get("attacked"), epoch, names),
                                      epoch, dataformats="HWC")
        return out

    def panel(self, clean: ImageView, adv: ImageView | None, epoch: int, names: list[str]):
        atk, cfg = self.robust_attack, self.cfg
        picture, _ = panel(clean.image.cpu(), None if adv is None else adv.adv.cpu(), clean.labels, clean.pred,
                           None if adv is None else adv.pred, palette(cfg.DATA.name), names,
                           f"epoch {epoch}, validation image 0" + ("" if adv is None else f", {atk.name}"),
                           0.0 if adv is None else atk.eps,
                           None if adv is None or adv.regions is None else adv.regions.cpu(), cfg.DATA.ignore_index)
        return picture


class Checkpointing(HookBase):
    """model/last.pth every `save_iters` iterations (0: off) and on a stop request (then exit code 75); at every
    epoch end last.pth, best.pth when the epoch improved and epoch_<N>.pth every `save_freq` epochs."""

    def __init__(self, save_iters: int, save_freq: int, logger) -> None:
        self.save_iters, self.save_freq, self.logger = save_iters, save_freq, logger

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        it, requested = trainer.iteration, trainer.stop_requested
        periodic = self.save_iters and it % self.save_iters == 0
        if it < trainer.iterations and (requested or periodic):
            path = trainer.checkpoints.save(TrainingState(trainer.epoch - 1, it, trainer.best, trainer.sums))
            if requested:
                raise RunStopped(f"{trainer.stop.name()} received: stopped after epoch {trainer.epoch} iteration "
                                 f"{it}/{trainer.iterations} with checkpoint {path}; continue with TRAIN.resume auto",
                                 EXIT_STOPPED)

    def after_epoch(self, trainer: Trainer) -> None:
        epoch, best = trainer.epoch, trainer.best
        also = (("best.pth",) if trainer.improved else ()) + ((f"epoch_{epoch}.pth",) if self.save_freq and
                                                               epoch % self.save_freq == 0 else ())
        trainer.checkpoints.save(TrainingState(epoch, 0, best), also)
        if trainer.improved:
            self.logger.info(f"epoch {epoch}: best {best['metric']} so far ({best['value']:.4f}), model/best.pth")
        if trainer.stop.check(torch.zeros(1), trainer.env)[0] and epoch < trainer.epochs:  # a signal while validating
            raise RunStopped(f"{trainer.stop.name()} received: stopped after epoch {epoch} with checkpoint "
                             f"{trainer.checkpoints.last}; continue with TRAIN.resume auto", EXIT_STOPPED)
