"""Train a segmentation model, clean or adversarially (docs/training.md), as one process or under torchrun (DDP).

    python tool_train/train.py --config config/demo/demo_pspnet18_sat.yaml [SECTION.key value ...]

ADV_TRAIN.method chooses the training recipe (none: clean; at: ADV_TRAIN.adv_ratio of every batch replaced by
adversarial examples of ADV_TRAIN.attack; release: the RP-PGD release's composition); ADV_TRAIN.val_attack adds
robust validation, which then chooses model/best.pth. Writes <EXP.root>/<DATA.name>/<EXP.name>/ (config.yaml,
train.log, tb/, model/); TRAIN.resume auto continues a run exactly. engine/training.py builds the run,
engine/trainer.py runs it.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.training import build_trainer
from util.config import config_from_cli
from util.distributed import cleanup, init_distributed
from util.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Train a segmentation model (clean or adversarial training).", argv)
    env = init_distributed(cfg.DIST.backend)
    build_trainer(cfg, env).train()
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
