"""Robustness curves (ATTACK.eps_sweep, engine/eps_sweep.py): the expansion of the attacks, step sizes scaled with
eps, and the sweep's figures at one eps equal to a single run at that eps, in metrics.json, the CSV and report.md."""
from __future__ import annotations

import csv
import json

import pytest

from attack import attack_parameters
from engine.attacks import AttackSpec
from engine.eps_sweep import sweep_specs
from engine.robustness import RobustnessEvaluation
from util.data.dataset import build_dataset
from util.data.loader import make_loader
from util.errors import UserError

SWEEP = [2 / 255, 4 / 255, 8 / 255]


def test_the_sweep_scales_step_sizes_with_eps_and_reuses_runs_at_their_own_eps():
    specs = [AttackSpec("pgd", "pgd", {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5}),
             AttackSpec("apgd-ce", "apgd-ce", {"eps": 4 / 255, "steps": 5}),
             AttackSpec("bim", "bim", {"steps": 2})]  # bim's default eps and alpha
    extra, points = sweep_specs(specs, SWEEP)
    by_key = {s.key: s for s in extra}
    assert by_key["pgd@0.007843"].params == {"eps": 2 / 255, "alpha": pytest.approx(0.5 / 255), "steps": 5}
    assert by_key["pgd@0.01569"].params["alpha"] == pytest.approx(1 / 255)
    assert "pgd@0.03137" not in by_key and ("pgd", "pgd") in {(p.attack, p.key) for p in points if p.eps == 8 / 255}
    assert by_key["apgd-ce@0.03137"].params == {"eps": 8 / 255, "steps": 5}  # APGD's step is a fraction of eps
    bim = attack_parameters("bim")  # its default eps and alpha
    assert by_key["bim@0.01569"].params == {"steps": 2, "eps": 4 / 255,
                                            "alpha": pytest.approx(bim["alpha"] * (4 / 255) / bim["eps"])}
    assert len(points) == 3 * len(SWEEP)


def test_the_sweep_at_one_eps_equals_a_single_run_at_that_eps(tiny_cfg, trained_tiny, tmp_path):
    model = trained_tiny[0]
    cfg = tiny_cfg("TEST.mode", "whole")
    loader = make_loader(build_dataset(cfg, "val", train=False), 2, 0, 0, 1, train=False)
    attacks = [{"name": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 3},
               {"name": "segpgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 3}]
    cfg.ATTACK.eps_sweep = SWEEP
    swept = RobustnessEvaluation(cfg, model, attacks).run(loader, tmp_path, "swept")
    cfg.ATTACK.eps_sweep = []
    single = RobustnessEvaluation(cfg, model, [{**a, "eps": 4 / 255, "alpha": 1 / 255} for a in attacks]).run(
        loader, tmp_path, "single")
    sweep = json.loads((swept.result_dir / "metrics.json").read_text())["eps_sweep"]
    one = json.loads((single.result_dir / "metrics.json").read_text())
    at4 = sweep["0.01569"]
    for key in ("pgd", "segpgd"):
        assert at4["attacks"][key]["mIoU"] == one["attacks"][key]["mIoU"]
        assert at4["attacks"][key]["per_image_miou"] == one["attacks"][key]["per_image_miou"]
    assert at4["worst_case"]["mIoU"] == one["worst_case"]["mIoU"]
    mious = [sweep[k]["worst_case"]["mIoU"] for k in ("0.007843", "0.01569", "0.03137")]
    assert mious[0] >= mious[1] >= mious[2], "a larger ball never helps the model here"
    rows = list(csv.DictReader(open(swept.result_dir / "eps_sweep.csv")))
    assert [r["eps"] for r in rows] == ["0.007843", "0.01569", "0.03137"]
    assert rows[1]["worst_case"] == f"{100 * one['worst_case']['mIoU']:.2f}"
    report = (swept.result_dir / "report.md").read_text()
    assert "## Robustness curve" in report and "![mIoU against eps](eps_sweep.png)" in report
    assert (swept.result_dir / "eps_sweep.png").stat().st_size > 1000


def test_a_sweep_eps_outside_the_unit_interval_is_refused(tiny_cfg):
    with pytest.raises(UserError, match=r"ATTACK.eps_sweep\[1\] must be in \[0, 1\]"):
        tiny_cfg("ATTACK.eps_sweep", "[1/255, 300/255]")
    assert tiny_cfg("ATTACK.eps_sweep", "[1/255, 8/255]").ATTACK.eps_sweep == [1 / 255, 8 / 255]
