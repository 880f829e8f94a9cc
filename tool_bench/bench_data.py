"""Is the data loader fast enough? Time loading batches against training steps on the same batches.

    python tool_bench/bench_data.py --config config/demo/demo_pspnet18.yaml [--batches 20] [SECTION.key value ...]

Prints the median seconds per batch of (a) the training loader alone, with DATA.workers workers, and
(b) the training step of tool_train/train.py (engine.training.train_step: forward, CE + aux CE, backward, SGD
with the config's optimizer and poly schedule; adversarial when ADV_TRAIN.method is at) on the same batches,
run one after the other in this process, and their ratio. A ratio well below 1 means the model, not the data,
is the bottleneck.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from engine.attacks import attack_spec, build_from_spec
from engine.training import build_optimizer, build_scheduler, train_step
from model import build_model
from util.config import load_config
from util.dataset import build_dataset, make_loader
from util.demo_data import ensure_demo_data
from util.errors import UserError, run_cli
from util.logger import make_logger


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.batches < 2:
        raise UserError(f"--batches must be >= 2 (the first batch is left out of the medians); got {args.batches}")
    cfg = load_config(args.config, args.overrides)
    ensure_demo_data(cfg, make_logger("bench", None))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = build_dataset(cfg, "train", train=True)
    loader = make_loader(dataset, cfg.TRAIN.batch_size, cfg.DATA.workers, 0, 1, True, cfg.EXP.seed)

    load_times, batches = [], []
    start = time.perf_counter()
    for images, labels, _ in loader:
        now = time.perf_counter()
        load_times.append(now - start)
        batches.append((images, labels))
        if len(batches) == args.batches:
            break
        start = time.perf_counter()

    torch.manual_seed(cfg.EXP.seed)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_iter=len(batches))
    attack = None
    if cfg.ADV_TRAIN.method == "at":
        attack = build_from_spec(attack_spec(cfg.ADV_TRAIN.attack, "ADV_TRAIN.attack"), model, cfg)
    step_times = []
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        start = time.perf_counter()
        train_step(model, images, labels, optimizer, scheduler, cfg, attack)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)

    # The first loader batch includes worker start-up and the first step the allocator's warm-up: skip both.
    load, step = statistics.median(load_times[1:]), statistics.median(step_times[1:])
    kind = f"AT ({attack.name})" if attack is not None else "clean"
    print(f"batch {cfg.TRAIN.batch_size} x {tuple(cfg.TRAIN.crop_size)}, {cfg.DATA.workers} worker(s), "
          f"{len(batches)} batches on {device.type}, {kind} training step")
    print(f"loader  {load * 1000:8.1f} ms/batch (median)")
    print(f"train   {step * 1000:8.1f} ms/batch (median)")
    print(f"ratio loader/train = {load / step:.3f}")


if __name__ == "__main__":
    run_cli(main)
