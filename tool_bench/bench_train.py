"""Training throughput: images per second of clean and adversarial training steps on random tensors.

    python tool_bench/bench_train.py --config config/voc2012/voc2012_pspnet50_sat.yaml --iters 200 [--batch 16]

Builds the config's model (MODEL.pretrained is not needed: the weights do not change the cost), feeds random
images and labels of TRAIN.crop_size, and times the training step of train.py (engine.training.train_step)
without and with the
ADV_TRAIN attack, alternating blocks of the two so that both see the same machine state. Prints the median
images per second of each and their ratio, and writes them as JSON with --out. One process; on a GPU the
clock waits for the device (torch.cuda.synchronize) at the end of every step.
"""
from __future__ import annotations

import argparse
import json
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
from util.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Images per second of clean and adversarial training steps.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--iters", type=int, default=200, help="timed steps of each kind (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of each kind first (default 10)")
    parser.add_argument("--batch", type=int, default=0, help="images per step (default: TRAIN.batch_size)")
    parser.add_argument("--block", type=int, default=10, help="steps per block; clean and AT blocks alternate")
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="SECTION.key value pairs")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["MODEL.pretrained", "", *args.overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.EXP.seed)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_iter=2 * (args.warmup + args.iters))
    attack = build_from_spec(attack_spec(cfg.ADV_TRAIN.attack, "ADV_TRAIN.attack"), model, cfg)
    batch = args.batch or cfg.TRAIN.batch_size
    h, w = cfg.TRAIN.crop_size
    images = torch.rand(batch, 3, h, w, device=device)
    labels = torch.randint(0, cfg.DATA.classes, (batch, h, w), device=device)
    labels[:, :8] = cfg.DATA.ignore_index

    def step(atk) -> float:
        start = time.perf_counter()
        train_step(model, images, labels, optimizer, scheduler, cfg, atk)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step(None)
        step(attack)
    times: dict[str, list[float]] = {"clean": [], "at": []}
    while len(times["at"]) < args.iters:
        for kind, atk in (("clean", None), ("at", attack)):
            times[kind] += [step(atk) for _ in range(min(args.block, args.iters - len(times[kind])))]
    speed = {k: batch / statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"config": args.config, "device": name, "batch": batch, "crop": [h, w], "iters": args.iters,
              "attack": attack.config(), "adv_ratio": cfg.ADV_TRAIN.adv_ratio,
              "clean_images_per_s": speed["clean"], "at_images_per_s": speed["at"],
              "at_over_clean_time": speed["clean"] / speed["at"]}
    print(f"{name}: batch {batch} at {h}x{w}, median of {args.iters} steps each: clean {speed['clean']:.2f} img/s, "
          f"AT ({attack.name}, adv_ratio {cfg.ADV_TRAIN.adv_ratio}) {speed['at']:.2f} img/s, "
          f"an AT step takes {result['at_over_clean_time']:.2f}x a clean one")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_cli(main)
