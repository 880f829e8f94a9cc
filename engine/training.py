"""A training run from its config: data, model, recipe, optimizer, schedule, validation and hooks, wired into a
Trainer (engine/trainer.py). Every input is checked, and every attack, the protocol and the resume point are built,
before the run folder is written; `build_trainer` writes config.yaml, train.log's first lines and tensorboard's folder
only then.

Writes <EXP.root>/<DATA.name>/<EXP.name>/: config.yaml, train.log, tb/, model/last.pth every epoch, model/best.pth
and model/epoch_<N>.pth every TRAIN.save_freq epochs. TRAIN.resume continues from a checkpoint; with the same
config, a resumed run reaches the same weights as an uninterrupted one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tensorboardX import SummaryWriter
from torch.utils.data import Subset

from engine.attacks import attack_spec
from engine.hooks import Checkpointing, Logging, Validation
from engine.optim import build_optimizer, build_scheduler
from engine.precision import check_amp, grad_scaler
from engine.protocols import build_protocol
from engine.recipes import RECIPES
from engine.resume import Checkpoints, ResumePoint, resume_point
from engine.trainer import Trainer
from model import build_model, to_project_weights
from util.checkpoint import load_checkpoint, load_model_state
from util.config import run_dir, save_config
from util.data.check import check_data, log_checks
from util.data.dataset import build_dataset, prepare_on_first_use
from util.data.loader import make_loader
from util.distributed import DistEnv, barrier, use_sync_bn, wrap_ddp
from util.errors import UserError
from util.logger import make_logger


def per_process_batch(global_batch: int, world: int) -> int:
    """TRAIN.batch_size is the global batch: each of the world's processes takes an equal share of it."""
    if global_batch % world:
        raise UserError(f"TRAIN.batch_size {global_batch} (the global batch) must be divisible by the world size "
                        f"{world} (NPROC x NNODES processes)")
    return global_batch // world


def build_trainer(cfg, env: DistEnv) -> Trainer:
    """The Trainer of a config on this process; bad input raises a UserError before anything is written."""
    t, a = cfg.TRAIN, cfg.ADV_TRAIN
    per_process = per_process_batch(t.batch_size, env.world)
    if env.is_main:  # the demo dataset is generated on first use, before the data is checked
        prepare_on_first_use(cfg, make_logger("train", None))
    barrier(env)
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    if len(train_set) < t.batch_size:
        raise UserError(f"TRAIN.batch_size {t.batch_size} exceeds the {len(train_set)} training images")
    out_dir = run_dir(cfg)
    loader = make_loader(train_set, per_process, cfg.DATA.workers, env.rank, env.world, True, cfg.EXP.seed,
                         env.device.type == "cuda")
    val_loader = make_loader(val_set, cfg.TEST.batch_size, cfg.DATA.workers, env.rank, env.world, False)

    torch.manual_seed(cfg.EXP.seed)  # identical initial weights on every process
    model = build_model(cfg)
    if t.weight:  # the network's initial weights (the release's TRAIN.weight); TRAIN.resume then overrides them
        weights = load_checkpoint(t.weight, key="TRAIN.weight")["model"]
        load_model_state(model, to_project_weights(weights, cfg, f"checkpoint '{t.weight}'"),
                         f"TRAIN.weight '{t.weight}'")
    if use_sync_bn(cfg.DIST.sync_bn, env):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    check_amp(t.amp, env.device, "TRAIN.amp")
    check_amp(cfg.ATTACK.amp, env.device, "ATTACK.amp")
    scaler = grad_scaler(t.amp, env.device)  # fp16 only
    # the recipe's attack (on the unwrapped model: it runs in eval mode and restores train mode) and the protocol
    # are built now, so that a bad name or parameter stops before anything is written
    recipe = RECIPES.get(a.method)(cfg, model)
    protocol = build_protocol(cfg, model)  # clean and robust validation
    robust_attack = robust_loader = None
    if a.val_attack:
        robust_attack = protocol.build_attack(attack_spec(a.val_attack, "ADV_TRAIN.val_attack"), cfg)
        subset = Subset(val_set, range(min(a.val_images or len(val_set), len(val_set))))
        robust_loader = make_loader(subset, cfg.TEST.batch_size, cfg.DATA.workers, env.rank, env.world, False)
    optimizer = build_optimizer(model, cfg)
    max_iter = t.epochs * len(loader)
    scheduler = build_scheduler(optimizer, cfg, max_iter)
    start, best = ResumePoint(), {"metric": "robust_mIoU" if robust_attack else "mIoU", "value": None, "epoch": None}
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
        start = resume_point(state, env, len(loader), f"TRAIN.resume '{resume}'")
        best = state.get("best", best)

    # last, the data: every line of both lists, once (cached under EXP.root when it passes, nothing written if not)
    data_checks = check_data(cfg, [cfg.DATA.train_list, cfg.DATA.val_list], env)

    # inputs are all checked: now the run folder is written
    if env.is_main:
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    logger = make_logger("train", out_dir / "train.log", enabled=env.is_main)
    log_start(logger, cfg, env, out_dir, resume, start, recipe.describe(per_process), robust_attack, robust_loader,
              protocol.name)
    logger.info(f"{len(train_set)} training images, {len(val_set)} validation images, {len(loader)} iterations per "
                f"epoch, {max_iter} in all")
    if cfg.DATA.check:
        log_checks(logger, data_checks)
    else:
        logger.info("DATA.check false: the data was not checked before the run (a bad file stops it when read)")
    writer = SummaryWriter(str(out_dir / "tb")) if env.is_main else None
    hooks = [Logging(logger, writer, t.print_freq),
             Validation(protocol, val_loader, robust_loader, robust_attack, cfg, logger, writer),
             Checkpointing(t.save_iters, t.save_freq, logger)]
    net = wrap_ddp(model, env)  # `net` trains; `model` (the same weights) is attacked, validated and saved
    checkpoints = Checkpoints(model, optimizer, scheduler, env, out_dir / "model", scaler)
    return Trainer(net, model, recipe, loader, optimizer, scheduler, env, t.epochs, cfg.EXP.seed, checkpoints, hooks,
                   scaler, start, best, cfg.DATA.ignore_index)


def log_start(logger, cfg, env: DistEnv, out_dir: Path, resume: str, start: ResumePoint, recipe: str, robust_attack,
              robust_loader, protocol: str) -> None:
    """The first lines of train.log: where, on what, from where, how."""
    logger.info(f"run folder {out_dir}; {env.world} process(es) on {env.device.type}")
    if cfg.TRAIN.weight:
        logger.info(f"network initialised from TRAIN.weight {cfg.TRAIN.weight}")
    if resume:
        logger.info(f"resumed from {resume} after epoch {start.epoch}"
                    + (f" and {start.iteration} iteration(s) of epoch {start.epoch + 1}" if start.iteration else ""))
    if env.distributed and not use_sync_bn(cfg.DIST.sync_bn, env):
        logger.info(f"SyncBatchNorm off (DIST.sync_bn {cfg.DIST.sync_bn}"
                    + (": it needs CUDA" if env.device.type != "cuda" else "") + "): each process normalises its "
                    "own part of the batch")
    logger.info(recipe)
    if robust_attack is not None:
        logger.info(f"robust validation on {len(robust_loader.dataset)} images: {robust_attack!r}, protocol "
                    f"{protocol}; model/best.pth by robust mIoU")
