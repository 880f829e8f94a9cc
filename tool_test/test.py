"""Evaluate a trained checkpoint, clean and under the attacks of the config's ATTACK section (docs/evaluation.md).

    python tool_test/test.py --config config/demo/demo_pspnet18_sat.yaml [SECTION.key value ...]

Reads TEST.model_path (default: the run's model/last.pth) and runs the robustness evaluation (engine/robustness.py)
on TEST.split (the first TEST.num_images images when set) under ATTACK.protocol: clean, every ATTACK.attacks entry,
the sanity checks, SEA's figure and the worst case. Writes <EXP.root>/<DATA.name>/<EXP.name>/result/<run_name>/
metrics.json and report.md, with the pictures TEST.save_pictures, TEST.vis and TEST.vis_regions ask for. A second
evaluation never overwrites the first; without pictures an interrupted evaluation continues where it stopped when
run again with the same settings (engine/result_store.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.data import Subset

from engine.pictures import pictures_asked
from engine.precision import check_amp
from engine.result_store import evaluation_store
from engine.robustness import RobustnessEvaluation
from engine.trained_model import load_trained_model
from util.config import config_from_cli, run_dir
from util.data.check import check_data
from util.data.dataset import build_dataset, prepare_on_first_use, split_list
from util.data.loader import make_loader
from util.distributed import barrier, cleanup, init_distributed
from util.errors import run_cli
from util.logger import make_logger


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Evaluate a segmentation model, clean and under attack.", argv)
    env = init_distributed(cfg.DIST.backend)
    logger = make_logger("test", None, enabled=env.is_main)
    if env.is_main:
        prepare_on_first_use(cfg, logger)
    barrier(env)
    dataset = build_dataset(cfg, cfg.TEST.split, train=False)  # a missing dataset stops before anything else
    check_amp(cfg.ATTACK.amp, env.device, "ATTACK.amp")
    trained = load_trained_model(cfg, env.device)
    evaluation = RobustnessEvaluation(cfg, trained.model, env=env)  # every attack built and checked: nothing written
    if cfg.TEST.num_images:
        dataset = Subset(dataset, range(min(cfg.TEST.num_images, len(dataset))))
    loader = make_loader(dataset, cfg.TEST.batch_size, cfg.TEST.workers, env.rank, env.world, train=False)
    check_data(cfg, [split_list(cfg, cfg.TEST.split)], env, logger)  # last before anything is written
    protocol = evaluation.protocol
    logger.info(f"evaluating {trained.path} (epoch {trained.epoch}) on {len(dataset)} images of {cfg.TEST.split}, "
                f"protocol {protocol.name}, clean and {len(evaluation.attacks)} attack(s)")
    # pictures need every image predicted in this run, so they turn off the store of finished shards
    pictures, every_image = pictures_asked(cfg)
    store = None if every_image else evaluation_store(
        cfg, run_dir(cfg), trained.path, protocol.describe(), len(dataset),
        surrogate=None if evaluation.surrogate is None else evaluation.surrogate.describe())
    if store is not None and store.note:
        logger.info(store.note)
    evaluation.run(loader, run_dir(cfg) / "result", cfg.TEST.run_name or f"{cfg.TEST.split}_{trained.path.stem}_"
                   f"{protocol.name}", model_path=trained.path, epoch=trained.epoch, store=store, pictures=pictures,
                   logger=logger)
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
