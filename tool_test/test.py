"""Evaluate a trained checkpoint on a dataset split (clean evaluation).

    python tool_test/test.py --config config/demo/demo_pspnet18.yaml [SECTION.key value ...]

Reads TEST.model_path (default: the run's model/last.pth) and writes
<EXP.root>/<DATA.name>/<EXP.name>/result/<run_name>/: metrics.json, report.md and, with
TEST.save_pictures, colour prediction PNGs. A second evaluation never overwrites the first.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import Subset

from model import build_model
from util.checkpoint import load_checkpoint, load_model_state
from util.classes import class_names, palette
from util.config import config_from_cli, run_dir
from util.dataset import build_dataset, make_loader
from util.demo_data import ensure_demo_data
from util.distributed import all_gather_objects, barrier, cleanup, init_distributed
from util.errors import run_cli
from util.evaluation import evaluate, inference_settings
from util.logger import make_logger
from util.results import new_result_dir, per_class_table, report_table, save_colour_label, write_json


def write_results(cfg, result_dir: Path, model_path: Path, epoch: int | None, clean: dict, seconds: float) -> None:
    """metrics.json and report.md of one evaluation (DESIGN.md, Outputs); prints the table."""
    payload = {
        "config": cfg.to_dict(),
        "model_path": str(model_path),
        "epoch": epoch,
        "protocol": {"split": cfg.TEST.split, "images": clean["images"], **inference_settings(cfg)},
        "clean": clean,
        "attacks": {},
        "worst_case": None,
        "seconds": round(seconds, 1),
    }
    write_json(payload, result_dir / "metrics.json")
    table = report_table([{"name": "clean", **clean}])
    names = class_names(cfg.DATA.name, cfg.DATA.classes)
    (result_dir / "report.md").write_text(
        f"# {cfg.EXP.name}: evaluation of {model_path}\n\n"
        f"{clean['images']} images of the {cfg.TEST.split} split, inference {cfg.TEST.mode}.\n\n"
        f"{table}\n\n## Per-class IoU (clean)\n\n{per_class_table(names, clean['per_class_iou'])}\n")
    print(table)
    print(f"wrote {result_dir / 'metrics.json'} and report.md in {seconds:.0f} s")


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Evaluate a segmentation model.", argv)
    env = init_distributed(cfg.DIST.backend)
    out_dir = run_dir(cfg)
    model_path = Path(cfg.TEST.model_path or out_dir / "model" / "last.pth")
    state = load_checkpoint(model_path)
    model = build_model(cfg)
    load_model_state(model, state["model"], f"checkpoint '{model_path}'")
    model.to(env.device).eval()

    logger = make_logger("test", None, enabled=env.is_main)
    if env.is_main:
        ensure_demo_data(cfg, logger)
    barrier(env)
    dataset = build_dataset(cfg, cfg.TEST.split, train=False)
    if cfg.TEST.num_images:
        dataset = Subset(dataset, range(min(cfg.TEST.num_images, len(dataset))))
    loader = make_loader(dataset, cfg.TEST.batch_size, cfg.TEST.workers, env.rank, env.world, train=False)

    name = cfg.TEST.run_name or f"{cfg.TEST.split}_{model_path.stem}"
    result_dir = all_gather_objects(
        str(new_result_dir(out_dir / "result", name)) if env.is_main else None, env)[0]
    result_dir = Path(result_dir)
    logger.info(f"evaluating {model_path} (epoch {state.get('epoch')}) on {len(dataset)} images of "
                f"{cfg.TEST.split}; results in {result_dir}")

    on_prediction = None
    if cfg.TEST.save_pictures:
        (result_dir / "pictures").mkdir(exist_ok=True)
        entries = dataset.dataset.entries if isinstance(dataset, Subset) else dataset.entries
        colours = palette(cfg.DATA.name)

        def on_prediction(index: int, pred: torch.Tensor) -> None:
            save_colour_label(pred.numpy(), colours, result_dir / "pictures" / f"{entries[index].image.stem}.png")

    try:
        start = time.time()
        clean = evaluate(model, loader, cfg, env, desc="clean", on_prediction=on_prediction).summary()
        seconds = time.time() - start
    except BaseException:
        if env.is_main:  # nothing half-written: a failed evaluation leaves no result folder
            shutil.rmtree(result_dir, ignore_errors=True)
        raise
    if env.is_main:
        write_results(cfg, result_dir, model_path, state.get("epoch"), clean, seconds)
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
