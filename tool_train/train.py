"""Train a segmentation model, clean or adversarially (METHOD.md §6), as one process or under torchrun (DDP).

    python tool_train/train.py --config config/demo/demo_pspnet18_sat.yaml [SECTION.key value ...]

ADV_TRAIN.method at: in every step the first round(adv_ratio x per-process batch) images (at least one) are
replaced by adversarial examples of ADV_TRAIN.attack, generated for those images only, on the unwrapped model
in eval mode (BN running statistics and dropout untouched); the model then trains in train mode on the mixed
batch with CE(main) + aux_weight x CE(aux). Logs and tensorboard show the loss and pixel accuracy of the
adversarial and the clean part. ADV_TRAIN.val_attack adds robust validation on the first ADV_TRAIN.val_images
validation images, which then chooses model/best.pth (otherwise the clean validation mIoU does).

Writes <EXP.root>/<DATA.name>/<EXP.name>/: config.yaml, train.log, tb/, model/last.pth every epoch,
model/best.pth and model/epoch_<N>.pth every TRAIN.save_freq epochs. TRAIN.resume continues from a
checkpoint; with the same config, a resumed run reaches the same weights as an uninterrupted one.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tensorboardX import SummaryWriter
from torch.utils.data import Subset
from tqdm import tqdm

from attack import Attack, NonFiniteError
from engine.attacks import attack_spec, build_from_spec
from engine.evaluation import evaluate
from engine.interrupts import StopRequests
from engine.pictures import ImageView, panel
from engine.precision import check_amp, grad_scaler
from engine.protocols import Protocol, build_protocol
from engine.resume import Checkpoints, ResumePoint, TrainingState, resume_point, set_rng_states
from engine.training import (
    adversarial_count,
    build_optimizer,
    build_scheduler,
    per_process_batch,
    seed_epoch,
    train_step,
)
from model import build_model, to_project_weights
from util.checkpoint import load_checkpoint, load_model_state
from util.config import config_from_cli, run_dir, save_config
from util.data.dataset import build_dataset, prepare_on_first_use
from util.data.datasets import class_names, palette
from util.data.loader import make_loader
from util.distributed import DistEnv, all_reduce_sum, barrier, cleanup, init_distributed, use_sync_bn, wrap_ddp
from util.errors import EXIT_NON_FINITE, EXIT_STOPPED, RunStopped, UserError, run_cli
from util.logger import make_logger
from util.loss import loss_and_accuracy_sums


def new_sums() -> dict[str, torch.Tensor]:
    """An epoch's running sums on this process: loss * n, aux loss * n, n; and (adversarial, clean) x (CE sum,
    correct, valid pixels)."""
    return {"loss": torch.zeros(3, dtype=torch.float64), "parts": torch.zeros(2, 3, dtype=torch.float64)}


def train_epoch(net, batches, first: int, iters: int, optimizer, scheduler, cfg, env: DistEnv, bar: tqdm, writer,
                logger, epoch: int, attack: Attack | None, sums: dict[str, torch.Tensor], stop: StopRequests,
                checkpoints: Checkpoints, best: dict) -> dict[str, float]:
    """Iterations first..iters of an epoch (adversarial when `attack` is given) from `batches`, adding to `sums`;
    returns the epoch's mean losses and pixel accuracies over all processes.

    After each iteration every process learns whether any got SIGTERM/SIGUSR1 (then model/last.pth is written
    mid-epoch and the run stops with exit code 75) or a non-finite loss (the run stops with exit code 3, keeping
    the last good checkpoint); model/last.pth is also written every TRAIN.save_iters iterations.
    """
    ignore = cfg.DATA.ignore_index
    net.train()
    for it, (images, labels, _) in enumerate(batches, start=first):
        images = images.to(env.device, non_blocking=True)
        labels = labels.to(env.device, non_blocking=True)
        try:
            logits, labels, main_loss, aux_loss, n_adv = train_step(net, images, labels, optimizer, scheduler, cfg,
                                                                    attack, checkpoints.scaler)
        except NonFiniteError as exc:
            raise RunStopped(f"epoch {epoch} iteration {it}/{iters}: {exc}; {checkpoints.kept()}",
                             EXIT_NON_FINITE) from exc
        losses = torch.stack([main_loss, aux_loss]).detach()
        requested, non_finite = stop.check(losses, env)
        step = scheduler.last_epoch
        if non_finite:
            raise RunStopped(f"non-finite training loss at epoch {epoch} iteration {it}/{iters} (iteration {step} of "
                             f"the run): loss {float(losses[0]):.6g}, aux loss {float(losses[1]):.6g} on process "
                             f"{env.rank}; {checkpoints.kept()}", EXIT_NON_FINITE)

        per_image = loss_and_accuracy_sums(logits, labels, ignore).cpu()  # (N,3)
        step_parts = torch.stack([per_image[:n_adv].sum(0), per_image[n_adv:].sum(0)])
        sums["parts"] += step_parts
        stats = losses.double().cpu()
        sums["loss"] += torch.cat([stats * len(images), torch.tensor([len(images)], dtype=torch.float64)])
        lr = optimizer.param_groups[0]["lr"]
        bar.update()
        bar.set_postfix(epoch=epoch, loss=f"{stats[0]:.3f}", lr=f"{lr:.2e}")
        if env.is_main:
            writer.add_scalar("train/loss", float(stats[0]), step)
            writer.add_scalar("train/aux_loss", float(stats[1]), step)
            writer.add_scalar("train/lr", lr, step)
            for name, (ce, correct, valid) in zip(("adv", "clean"), step_parts.tolist()):
                if valid:
                    writer.add_scalar(f"train/{name}_loss", ce / valid, step)
                    writer.add_scalar(f"train/{name}_pixel_acc", correct / valid, step)
            if it % cfg.TRAIN.print_freq == 0 or it == iters:
                logger.info(f"epoch {epoch} iter {it}/{iters} loss {stats[0]:.4f} aux {stats[1]:.4f} "
                            f"{describe_parts(step_parts)} lr {lr:.3e}")
        periodic = cfg.TRAIN.save_iters and it % cfg.TRAIN.save_iters == 0
        if it < iters and (requested or periodic):
            path = checkpoints.save(TrainingState(epoch - 1, it, best, sums))
            if requested:
                raise RunStopped(f"{stop.name()} received: stopped after epoch {epoch} iteration {it}/{iters} with "
                                 f"checkpoint {path}; continue with TRAIN.resume auto", EXIT_STOPPED)
    total = all_reduce_sum(torch.cat([sums["loss"], sums["parts"].flatten()]).to(env.device), env).cpu()
    loss_sums, parts = total[:3], total[3:].view(2, 3)
    out = {"loss": float(loss_sums[0] / loss_sums[2]), "aux_loss": float(loss_sums[1] / loss_sums[2])}
    for name, (ce, correct, valid) in zip(("adv", "clean"), parts.tolist()):
        if valid:
            out[f"{name}_loss"], out[f"{name}_pixel_acc"] = ce / valid, correct / valid
    return out


def describe_parts(parts: torch.Tensor) -> str:
    """'adv loss .. acc .. clean loss .. acc ..' for (2,3) (CE sum, correct, valid) rows; empty parts left out."""
    text = []
    for name, (ce, correct, valid) in zip(("adv", "clean"), parts.tolist()):
        if valid:
            text.append(f"{name} loss {ce / valid:.4f} acc {correct / valid:.4f}")
    return " ".join(text)


def validate(protocol: Protocol, val_loader, robust_loader, robust_attack: Attack | None, cfg, env, logger, writer,
             epoch: int) -> dict[str, float]:
    """Clean validation (and robust validation when configured) under ATTACK.protocol; returns {"mIoU": ...,
    "robust_mIoU": ...}. Tensorboard gets the scores and a panel of the first validation image (clean, or under
    the robust validation attack)."""
    first: dict[str, ImageView] = {}

    def keep(name: str):
        return lambda view: first.setdefault(name, view) if view.index == 0 else None
    res = evaluate(protocol, val_loader, env, cfg.DATA.classes, desc="val", on_prediction=keep("clean")).summary()
    names = class_names(cfg.DATA.name, cfg.DATA.classes)
    iou = {n: v for n, v in zip(names, res["per_class_iou"]) if v is not None}
    weakest = ", ".join(f"{n} {v:.3f}" for n, v in sorted(iou.items(), key=lambda kv: kv[1])[:5])
    logger.info(f"epoch {epoch} validation: mIoU {res['mIoU']:.4f} mAcc {res['mAcc']:.4f} aAcc {res['aAcc']:.4f}; "
                f"lowest class IoU: {weakest}")
    out = {"mIoU": res["mIoU"]}
    if robust_attack is not None:
        rob = evaluate(protocol, robust_loader, env, cfg.DATA.classes, attack=robust_attack, desc="robust val",
                       on_prediction=keep("attacked"))
        rob = rob.summary()
        out["robust_mIoU"] = rob["mIoU"]
        logger.info(f"epoch {epoch} robust validation ({robust_attack.name}, {rob['images']} images, protocol "
                    f"{protocol.name}): mIoU {rob['mIoU']:.4f} mAcc {rob['mAcc']:.4f} aAcc {rob['aAcc']:.4f}")
    if env.is_main:
        for k, v in out.items():
            writer.add_scalar(f"val/{k}", v, epoch)
        for n, v in iou.items():
            writer.add_scalar(f"val_class_iou/{n}", v, epoch)
        if "clean" in first:  # the first validation image is on the main process (shards are contiguous)
            clean, adv = first["clean"], first.get("attacked")
            picture, _ = panel(clean.image.cpu(), None if adv is None else adv.adv.cpu(), clean.labels, clean.pred,
                               None if adv is None else adv.pred, palette(cfg.DATA.name), names,
                               f"epoch {epoch}, validation image 0" + ("" if adv is None else
                                                                       f", {robust_attack.name}"),
                               0.0 if adv is None else robust_attack.eps,
                               None if adv is None or adv.regions is None else adv.regions.cpu(), cfg.DATA.ignore_index)
            writer.add_image("val/panel", picture, epoch, dataformats="HWC")
    return out


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Train a segmentation model (clean or adversarial training).", argv)
    env = init_distributed(cfg.DIST.backend)
    t = cfg.TRAIN
    per_process = per_process_batch(t.batch_size, env.world)
    # Check the data before anything is written to the run folder.
    if env.is_main:
        prepare_on_first_use(cfg, make_logger("train", None))
    barrier(env)
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    if len(train_set) < t.batch_size:
        raise UserError(f"TRAIN.batch_size {t.batch_size} exceeds the {len(train_set)} training images")

    out_dir = run_dir(cfg)
    pin = env.device.type == "cuda"
    train_loader = make_loader(train_set, per_process, cfg.DATA.workers, env.rank, env.world, True, cfg.EXP.seed, pin)
    val_loader = make_loader(val_set, cfg.TEST.batch_size, cfg.DATA.workers, env.rank, env.world, False)

    torch.manual_seed(cfg.EXP.seed)  # identical initial weights on every process
    model = build_model(cfg)
    if t.weight:  # the network's initial weights (the release's TRAIN.weight); TRAIN.resume then overrides them
        load_model_state(model, to_project_weights(load_checkpoint(t.weight, key="TRAIN.weight")["model"], cfg,
                                                   f"checkpoint '{t.weight}'"), f"TRAIN.weight '{t.weight}'")
    if use_sync_bn(cfg.DIST.sync_bn, env):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    check_amp(t.amp, env.device, "TRAIN.amp")
    check_amp(cfg.ATTACK.amp, env.device, "ATTACK.amp")
    scaler = grad_scaler(t.amp, env.device)  # fp16 only
    a = cfg.ADV_TRAIN
    # attacks and the protocol are built now, so that a bad name or parameter stops before anything is written
    attack = None
    if a.method == "at":  # on the unwrapped model: it runs in eval mode and restores train mode
        attack = build_from_spec(attack_spec(a.attack, "ADV_TRAIN.attack"), model, cfg)
    protocol = build_protocol(cfg, model)  # clean and robust validation
    robust_attack = robust_loader = None
    if a.val_attack:
        robust_attack = protocol.build_attack(attack_spec(a.val_attack, "ADV_TRAIN.val_attack"), cfg)
        subset = Subset(val_set, range(min(a.val_images or len(val_set), len(val_set))))
        robust_loader = make_loader(subset, cfg.TEST.batch_size, cfg.DATA.workers, env.rank, env.world, False)
    optimizer = build_optimizer(model, cfg)
    iters = len(train_loader)  # iterations per epoch
    max_iter = t.epochs * iters
    scheduler = build_scheduler(optimizer, cfg, max_iter)
    point = ResumePoint()
    best = {"metric": "robust_mIoU" if robust_attack is not None else "mIoU", "value": None, "epoch": None}
    resume = t.resume
    if resume == "auto":  # the newest complete checkpoint: last.pth is only ever replaced whole
        resume = str(out_dir / "model" / "last.pth") if (out_dir / "model" / "last.pth").is_file() else ""
    if resume:
        state = load_checkpoint(resume, key="TRAIN.resume")
        load_model_state(model, state["model"], f"TRAIN.resume '{resume}'")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        point = resume_point(state, env, iters, f"TRAIN.resume '{resume}'")
        best = state.get("best", best)

    # Inputs are all checked: now the run folder is written.
    if env.is_main:
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    logger = make_logger("train", out_dir / "train.log", enabled=env.is_main)
    logger.info(f"run folder {out_dir}; {env.world} process(es) on {env.device.type}")
    if t.weight:
        logger.info(f"network initialised from TRAIN.weight {t.weight}")
    if resume:
        logger.info(f"resumed from {resume} after epoch {point.epoch}"
                    + (f" and {point.iteration} iteration(s) of epoch {point.epoch + 1}" if point.iteration else ""))
    if env.distributed and not use_sync_bn(cfg.DIST.sync_bn, env):
        logger.info(f"SyncBatchNorm off (DIST.sync_bn {cfg.DIST.sync_bn}"
                    + (": it needs CUDA" if env.device.type != "cuda" else "") + "): each process normalises its "
                    "own part of the batch")
    if attack is not None:
        logger.info(f"adversarial training: {adversarial_count(per_process, a.adv_ratio)} of {per_process} images "
                    f"per process and step replaced by {attack!r}")
    if robust_attack is not None:
        logger.info(f"robust validation on {len(robust_loader.dataset)} images: {robust_attack!r}, protocol "
                    f"{protocol.name}; model/best.pth by robust mIoU")
    net = wrap_ddp(model, env)  # `net` trains; `model` (the same weights) is attacked, validated and saved
    writer = SummaryWriter(str(out_dir / "tb")) if env.is_main else None
    logger.info(f"{len(train_set)} training images, {len(val_set)} validation images, "
                f"{len(train_loader)} iterations per epoch, {max_iter} in all")

    checkpoints = Checkpoints(model, optimizer, scheduler, env, out_dir / "model", scaler)
    start = time.time()
    bar = tqdm(total=max_iter, initial=point.epoch * iters + point.iteration, disable=not env.is_main,
               desc="train", dynamic_ncols=True)
    with StopRequests() as stop:  # SIGTERM/SIGUSR1 from here on: a checkpoint, then exit code 75
        for epoch in range(point.epoch + 1, t.epochs + 1):
            skip = point.iteration if epoch == point.epoch + 1 else 0
            seed_epoch(cfg.EXP.seed, epoch, env.rank)
            train_set.set_epoch(epoch)
            train_loader.sampler.set_epoch(epoch, skip * per_process)
            batches = iter(train_loader)  # creating the iterator draws from torch's RNG, so it comes first
            sums = new_sums()
            if skip:  # mid-epoch: this process's RNG and sums as they were after iteration `skip`
                set_rng_states(point.rng)
                sums = point.sums
            stats = train_epoch(net, batches, skip + 1, iters, optimizer, scheduler, cfg, env, bar, writer, logger,
                                epoch, attack, sums, stop, checkpoints, best)
            logger.info(f"epoch {epoch}/{t.epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in stats.items()))
            if env.is_main:
                for k, v in stats.items():
                    writer.add_scalar(f"epoch/{k}", v, epoch)
            improved = False
            if t.eval_freq and (epoch % t.eval_freq == 0 or epoch == t.epochs):
                res = validate(protocol, val_loader, robust_loader, robust_attack, cfg, env, logger, writer, epoch)
                if best["value"] is None or res[best["metric"]] > best["value"]:
                    best, improved = {"metric": best["metric"], "value": res[best["metric"]], "epoch": epoch}, True
            also = (("best.pth",) if improved else ()) + ((f"epoch_{epoch}.pth",) if t.save_freq and
                                                           epoch % t.save_freq == 0 else ())
            checkpoints.save(TrainingState(epoch, 0, best), also)
            if improved:
                logger.info(f"epoch {epoch}: best {best['metric']} so far ({best['value']:.4f}), model/best.pth")
            if stop.check(torch.zeros(1), env)[0] and epoch < t.epochs:  # a signal during validation or saving
                raise RunStopped(f"{stop.name()} received: stopped after epoch {epoch} with checkpoint "
                                 f"{checkpoints.last}; continue with TRAIN.resume auto", EXIT_STOPPED)
            barrier(env)
    bar.close()
    logger.info(f"training finished in {time.time() - start:.0f} s; checkpoint {out_dir / 'model' / 'last.pth'}")
    if writer is not None:
        writer.close()
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
