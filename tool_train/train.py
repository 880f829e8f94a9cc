"""Train a segmentation model (METHOD.md §6), as one process or under torchrun (DDP).

    python tool_train/train.py --config config/demo/demo_pspnet18.yaml [SECTION.key value ...]

Writes <EXP.root>/<DATA.name>/<EXP.name>/: config.yaml, train.log, tb/, model/last.pth every epoch and
model/epoch_<N>.pth every TRAIN.save_freq epochs. TRAIN.resume continues from a checkpoint; with the same
config, a resumed run reaches the same weights as an uninterrupted one.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tensorboardX import SummaryWriter
from tqdm import tqdm

from model import build_model
from util.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from util.config import config_from_cli, run_dir, save_config
from util.dataset import build_dataset, make_loader
from util.demo_data import ensure_demo_data
from util.distributed import DistEnv, all_reduce_sum, barrier, cleanup, init_distributed, use_sync_bn, wrap_ddp
from util.errors import UserError, run_cli
from util.evaluation import evaluate
from util.logger import make_logger
from util.loss import segmentation_loss


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch (dropout, random ops) from (seed, epoch, rank), so a resumed epoch repeats exactly."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def build_optimizer(model, cfg) -> torch.optim.SGD:
    """SGD with the base lr on the backbone and head_lr_mult x base lr on the heads."""
    t = cfg.TRAIN
    head = model.head_parameters()
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.SGD(
        [{"params": backbone, "lr": t.base_lr}, {"params": head, "lr": t.base_lr * t.head_lr_mult}],
        lr=t.base_lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )


def train_epoch(net, loader, optimizer, scheduler, cfg, env: DistEnv, bar: tqdm, writer, logger, epoch: int
                ) -> dict[str, float]:
    """One epoch of clean training; returns the epoch's mean loss and pixel accuracy over all processes."""
    ignore = cfg.DATA.ignore_index
    net.train()
    sums = torch.zeros(4, dtype=torch.float64)  # loss * n, aux loss * n, correct pixels, valid pixels
    for it, (images, labels, _) in enumerate(loader, start=1):
        images = images.to(env.device, non_blocking=True)
        labels = labels.to(env.device, non_blocking=True)
        out = net(images, return_dict=True)
        main_loss = segmentation_loss(out["out"], labels, ignore)
        aux_loss = segmentation_loss(out["aux"], labels, ignore)
        loss = main_loss + cfg.TRAIN.aux_weight * aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        with torch.no_grad():
            valid = labels != ignore
            correct = ((out["out"].argmax(1) == labels) & valid).sum()
            stats = torch.stack([main_loss, aux_loss, correct.float(), valid.sum().float()]).double().cpu()
        sums += stats * torch.tensor([len(images), len(images), 1, 1], dtype=torch.float64)
        lr = optimizer.param_groups[0]["lr"]
        step = scheduler.last_epoch
        bar.update()
        bar.set_postfix(epoch=epoch, loss=f"{stats[0]:.3f}", lr=f"{lr:.2e}")
        if env.is_main:
            writer.add_scalar("train/loss", float(stats[0]), step)
            writer.add_scalar("train/aux_loss", float(stats[1]), step)
            writer.add_scalar("train/lr", lr, step)
            if it % cfg.TRAIN.print_freq == 0 or it == len(loader):
                logger.info(f"epoch {epoch} iter {it}/{len(loader)} loss {stats[0]:.4f} aux {stats[1]:.4f} "
                            f"pixel_acc {stats[2] / max(float(stats[3]), 1):.4f} lr {lr:.3e}")
    n = torch.tensor([len(loader) * loader.batch_size], dtype=torch.float64)
    sums = all_reduce_sum(torch.cat([sums, n]).to(env.device), env).cpu()
    return {"loss": float(sums[0] / sums[4]), "aux_loss": float(sums[1] / sums[4]),
            "pixel_acc": float(sums[2] / sums[3].clamp(min=1))}


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Train a segmentation model (clean training).", argv)
    env = init_distributed(cfg.DIST.backend)
    t = cfg.TRAIN
    if t.batch_size % env.world:
        raise UserError(f"TRAIN.batch_size {t.batch_size} must be divisible by the {env.world} processes")
    # Check the data before anything is written to the run folder.
    if env.is_main:
        ensure_demo_data(cfg, make_logger("train", None))
    barrier(env)
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    if len(train_set) < t.batch_size:
        raise UserError(f"TRAIN.batch_size {t.batch_size} exceeds the {len(train_set)} training images")

    out_dir = run_dir(cfg)
    per_process = t.batch_size // env.world
    pin = env.device.type == "cuda"
    train_loader = make_loader(train_set, per_process, cfg.DATA.workers, env.rank, env.world, True, cfg.EXP.seed, pin)
    val_loader = make_loader(val_set, cfg.TEST.batch_size, cfg.DATA.workers, env.rank, env.world, False)

    torch.manual_seed(cfg.EXP.seed)  # identical initial weights on every process
    model = build_model(cfg)
    if use_sync_bn(cfg.DIST.sync_bn, env):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    optimizer = build_optimizer(model, cfg)
    max_iter = t.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(1 - it / max_iter, 0.0) ** t.power)
    start_epoch = 1
    resume = t.resume
    if resume == "auto":
        resume = str(out_dir / "model" / "last.pth") if (out_dir / "model" / "last.pth").is_file() else ""
    if resume:
        state = load_checkpoint(resume, key="TRAIN.resume")
        load_model_state(model, state["model"], f"TRAIN.resume '{resume}'")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1

    # Inputs are all checked: now the run folder is written.
    if env.is_main:
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    logger = make_logger("train", out_dir / "train.log", enabled=env.is_main)
    logger.info(f"run folder {out_dir}; {env.world} process(es) on {env.device.type}")
    if resume:
        logger.info(f"resumed from {resume} after epoch {start_epoch - 1}")
    net = wrap_ddp(model, env)  # `net` trains; `model` (the same weights) is validated and saved
    writer = SummaryWriter(str(out_dir / "tb")) if env.is_main else None
    logger.info(f"{len(train_set)} training images, {len(val_set)} validation images, "
                f"{len(train_loader)} iterations per epoch, {max_iter} in all")

    start = time.time()
    bar = tqdm(total=max_iter, initial=(start_epoch - 1) * len(train_loader), disable=not env.is_main,
               desc="train", dynamic_ncols=True)
    for epoch in range(start_epoch, t.epochs + 1):
        seed_epoch(cfg.EXP.seed, epoch, env.rank)
        train_set.set_epoch(epoch)
        train_loader.sampler.set_epoch(epoch)
        stats = train_epoch(net, train_loader, optimizer, scheduler, cfg, env, bar, writer, logger, epoch)
        logger.info(f"epoch {epoch}/{t.epochs}: loss {stats['loss']:.4f} aux {stats['aux_loss']:.4f} "
                    f"pixel_acc {stats['pixel_acc']:.4f}")
        if env.is_main:
            for k, v in stats.items():
                writer.add_scalar(f"epoch/{k}", v, epoch)
        if t.eval_freq and (epoch % t.eval_freq == 0 or epoch == t.epochs):
            res = evaluate(model, val_loader, cfg, env, desc="val").summary()
            logger.info(f"epoch {epoch} validation: mIoU {res['mIoU']:.4f} mAcc {res['mAcc']:.4f} "
                        f"aAcc {res['aAcc']:.4f}")
            if env.is_main:
                for k in ("mIoU", "mAcc", "aAcc"):
                    writer.add_scalar(f"val/{k}", res[k], epoch)
        if env.is_main:
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict()}
            save_checkpoint(state, out_dir / "model" / "last.pth")
            if t.save_freq and epoch % t.save_freq == 0:
                save_checkpoint(state, out_dir / "model" / f"epoch_{epoch}.pth")
        barrier(env)
    bar.close()
    logger.info(f"training finished in {time.time() - start:.0f} s; checkpoint {out_dir / 'model' / 'last.pth'}")
    if writer is not None:
        writer.close()
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
