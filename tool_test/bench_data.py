"""Is the data loader fast enough? Time loading batches against training steps on the same batches.

    python tool_test/bench_data.py --config config/demo/demo_pspnet18.yaml [--batches 20] [SECTION.key value ...]

Prints the median seconds per batch of (a) the training loader alone, with DATA.workers workers, and
(b) one training step (forward + backward + SGD) of the config's model, run one after the other in this
process, and their ratio. A ratio well below 1 means the model, not the data, is the bottleneck.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from model import build_model
from util.config import load_config
from util.dataset import build_dataset, make_loader
from util.demo_data import ensure_demo_data
from util.errors import run_cli
from util.logger import make_logger
from util.loss import segmentation_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args()
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

    model = build_model(cfg).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    step_times = []
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        start = time.perf_counter()
        out = model(images, return_dict=True)
        ignore = cfg.DATA.ignore_index
        loss = segmentation_loss(out["out"], labels, ignore) + \
            cfg.TRAIN.aux_weight * segmentation_loss(out["aux"], labels, ignore)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)

    # The first loader batch includes worker start-up and the first step the allocator's warm-up: skip both.
    load, step = statistics.median(load_times[1:]), statistics.median(step_times[1:])
    print(f"batch {cfg.TRAIN.batch_size} x {tuple(cfg.TRAIN.crop_size)}, {cfg.DATA.workers} worker(s), "
          f"{len(batches)} batches on {device.type}")
    print(f"loader  {load * 1000:8.1f} ms/batch (median)")
    print(f"train   {step * 1000:8.1f} ms/batch (median)")
    print(f"ratio loader/train = {load / step:.3f}")


if __name__ == "__main__":
    run_cli(main)
