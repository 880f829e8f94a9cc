"""Transfer from a surrogate (ATTACK.surrogate, engine/surrogate.py): the surrogate equal to the evaluated model gives
the white-box figures; the surrogate is recorded in metrics.json and report.md; a surrogate whose protocol gives
another view, or another class count, is refused before anything is written."""
from __future__ import annotations

import json

import pytest
import torch

from engine.robustness import RobustnessEvaluation
from model import build_model
from util.data.dataset import build_dataset
from util.data.loader import make_loader
from util.errors import UserError

ATTACKS = [{"name": "pgd", "eps": 0.1, "alpha": 0.03, "steps": 2},
           {"name": "rppgd++", "eps": 0.1, "alpha": 0.03, "steps": 2}]


@pytest.fixture
def surrogate_files(tiny_cfg, tmp_path):
    cfg = tiny_cfg("TEST.mode", "whole")
    torch.manual_seed(0)
    model = build_model(cfg, backbone_weights=False).eval()
    state = model.state_dict()
    state["head.5.bias"][0] = 0.3  # a model that predicts something: attacks have pixels to flip
    model.load_state_dict(state)
    checkpoint = tmp_path / "model.pth"
    torch.save({"epoch": 1, "model": state}, checkpoint)
    return cfg, model, tmp_path / "tiny.yaml", checkpoint


def test_the_surrogate_equal_to_the_model_gives_the_white_box_figures(surrogate_files, tmp_path):
    cfg, model, config, checkpoint = surrogate_files
    loader = make_loader(build_dataset(cfg, "val", train=False), 2, 0, 0, 1, train=False)
    white = RobustnessEvaluation(cfg, model, ATTACKS).run(loader, tmp_path / "r", "white")
    cfg.ATTACK.surrogate = {"config": str(config), "model_path": str(checkpoint)}
    transfer = RobustnessEvaluation(cfg, model, ATTACKS)
    assert all(atk.model is not transfer.protocol._target for atk in transfer.attacks.values())  # the surrogate's
    moved = transfer.run(loader, tmp_path / "r", "transfer")
    a, b = (json.loads((r.result_dir / "metrics.json").read_text()) for r in (white, moved))
    for key in ("pgd", "rppgd++"):
        assert b["attacks"][key]["mIoU"] == a["attacks"][key]["mIoU"] < a["clean"]["mIoU"]
        assert b["attacks"][key]["per_image_miou"] == a["attacks"][key]["per_image_miou"]
    assert b["worst_case"]["mIoU"] == a["worst_case"]["mIoU"]
    assert b["surrogate"]["model_path"] == str(checkpoint) and len(b["surrogate"]["checkpoint_sha256"]) == 64
    assert "surrogate" not in a
    assert "Transfer (black-box): every attack ran on the surrogate" in (moved.result_dir / "report.md").read_text()


def test_a_surrogate_with_another_view_or_other_classes_is_refused(surrogate_files, tmp_path):
    cfg, model, config, checkpoint = surrogate_files
    text = config.read_text()
    other = tmp_path / "other.yaml"
    other.write_text(text + "ATTACK: {protocol: center}\n")
    cfg.ATTACK.surrogate = {"config": str(other), "model_path": str(checkpoint)}
    with pytest.raises(UserError, match="ATTACK.surrogate: the surrogate's protocol center .* must give the view of "
                                        "the evaluated protocol full"):
        RobustnessEvaluation(cfg, model, ATTACKS)
    other.write_text(text.replace("classes: 7", "classes: 5, check: false"))
    with pytest.raises(UserError, match="the surrogate predicts 5 classes"):
        RobustnessEvaluation(cfg, model, ATTACKS)
    cfg.ATTACK.surrogate = {"config": str(tmp_path / "absent.yaml")}
    with pytest.raises(UserError, match="ATTACK.surrogate.config: config file .*absent.yaml' does not exist"):
        RobustnessEvaluation(cfg, model, ATTACKS)
