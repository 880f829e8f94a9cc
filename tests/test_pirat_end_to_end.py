"""PIR-AT and RP-PGD++-inside-PIR-AT end to end on the tiny demo data (marked slow): one epoch of each through its
launcher, then SEA's evaluation (protocol center, SEA beside PGD) through the test launcher."""
from __future__ import annotations

import json
import sys

import pytest
from test_end_to_end import run, tiny_overrides

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("twin,attack", [("pirat", "PIRATPGD(eps=0.1, alpha=0.04, steps=3"),
                                         ("rpat", "RPPGDPlusPlus(eps=0.1, alpha=0.04, steps=3, random_start=False")])
def test_one_epoch_then_seas_evaluation(tmp_path, tiny_data, twin, attack):
    common = tiny_overrides(tiny_data, tmp_path / "exp")
    env = {"NPROC": "1", "PYTHON": sys.executable}
    run(["sh", str(ROOT / f"tool_train/demo/psp_train_{twin}.sh"), *common, "TRAIN.epochs", "1"], cwd=tmp_path,
        env_extra=env)
    run_dir = tmp_path / "exp" / "demo" / f"demo_pspnet18_{twin}"
    log = (run_dir / "train.log").read_text()
    assert f"PIR-AT: all 4 images per process and step attacked by {attack}" in log
    assert "is descended too (ADV_TRAIN.iterate_grads)" in log
    assert "epoch 1 validation: mIoU" in log and (run_dir / "model" / "last.pth").is_file()

    attacks = "[{name: sea, eps: 0.1, steps: 4}, {name: pgd, eps: 0.1, alpha: 0.05, steps: 2}]"
    run(["sh", str(ROOT / f"tool_test/demo/psp_test_{twin}.sh"), *common, "TEST.crop_size", "48",
         "ATTACK.attacks", attacks], cwd=tmp_path, env_extra=env)
    metrics = json.loads((run_dir / "result" / "val_last_center" / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "center" and metrics["config"]["ADV_TRAIN"]["method"] == "pirat"
    assert list(metrics["attacks"]) == ["sea", "pgd"] and list(metrics["attacks"]["sea"]["runs"]) == \
        ["mce-bal", "mce", "js"]
    for entry in metrics["attacks"].values():
        assert entry["images"] == 4 and 0 <= entry["mIoU"] <= 1
        assert metrics["worst_case"]["mIoU"] <= entry["mIoU"] + 1e-12
