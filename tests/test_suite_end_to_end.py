"""The strongest evaluation end to end: a briefly trained small network of the user's own (MODEL.arch python:, the
demo config otherwise) evaluated by tool_test/test.py under `ATTACK.suite strongest` (rse's ensemble, SEA, RP-PGD++,
SegPGD and CosPGD with their full presets, about 4,200 passes per image) on 8 images of the demo data."""
from __future__ import annotations

import json
import sys

import pytest
from test_end_to_end import run, tiny_overrides

from conftest import ROOT
from engine.suites import suite_specs

pytestmark = pytest.mark.slow


def test_the_strongest_suite_on_eight_images(tmp_path, tiny_data):
    common = tiny_overrides(tiny_data, tmp_path / "exp") + ["TEST.mode", "whole", "MODEL.arch",
                                                             "python:tiny_models:tiny_network", "MODEL.feature_layer",
                                                             "body", "TRAIN.base_lr", "0.05"]
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    path = {"PYTHONPATH": str(ROOT / "tests")}  # where tiny_models is
    run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common, "TRAIN.epochs", "3"],
        cwd=tmp_path, env_extra=path)
    proc = run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common, "ATTACK.suite",
                "strongest", "ATTACK.suite_eps", "8/255", "ATTACK.attacks", "[]", "TEST.split", "train",
                "TEST.num_images", "8", "TEST.batch_size", "8", "TEST.run_name", "strongest"], cwd=tmp_path,
               env_extra=path)
    result = tmp_path / "exp" / "demo" / "demo_pspnet18" / "result" / "strongest"
    metrics = json.loads((result / "metrics.json").read_text())
    keys = [s.get("key", s["name"]) for s in suite_specs("strongest", 8 / 255)]
    assert list(metrics["attacks"]) == keys and len(keys) == 14
    assert all(a["params"]["eps"] == pytest.approx(8 / 255) for a in metrics["attacks"].values())
    worst = metrics["worst_case"]
    assert worst["images"] == 8 and sum(worst["images_per_attack"].values()) == 8
    assert worst["mIoU"] <= min(a["mIoU"] for a in metrics["attacks"].values()) + 1e-12
    assert worst["mIoU"] <= metrics["clean"]["mIoU"]
    assert "figure" in metrics["attacks"]["sea"] and set(metrics["attacks"]["sea"]["runs"]) == {"mce-bal", "mce", "js"}
    report = (result / "report.md").read_text()
    assert "The worst case takes, per image, the attack" in report and "| alma-prox |" in report
    assert "| worst case over the attacks |" in proc.stdout
