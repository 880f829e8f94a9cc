"""End to end for each library family (marked slow): one epoch of RP-PGD++ adversarial training on the tiny demo
data through tool_train/train.py, then tool_test/test.py with two attacks and the worst case; and the one-call
robustness evaluation from Python of library models built in this file."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from library_models import TinyUserNet, hf_configs
from test_end_to_end import run
from torch.utils.data import Subset

from conftest import ROOT, write_yaml
from engine.robustness import RobustnessEvaluation
from model.library import wrap_model
from util.config import load_config
from util.data.dataset import build_dataset
from util.data.loader import make_loader

pytestmark = pytest.mark.slow

CONFIGS = {
    "hf": ("config/demo/demo_segformer_b0_sat.yaml", []),
    "torchvision": ("config/demo/demo_torchvision_deeplabv3_mbv3_sat.yaml", []),
    "smp": ("config/demo/demo_smp_unet_r18_sat.yaml", []),
    "python": ("config/demo/demo_pspnet18_sat.yaml", ["MODEL.arch", "python:library_models:build_tiny_user_net",
                                                     "MODEL.feature_layer", "body", "MODEL.head_modules",
                                                     "[classifier]"]),
}
ATTACKS = "[{name: pgd, eps: 0.1, alpha: 0.05, steps: 2}, {name: rppgd++, eps: 0.1, alpha: 0.05, steps: 2}]"
# the families are evaluated under the protocols' different inferences: sliding windows, the whole image, SEA's
# centre crop
PROTOCOLS = {"hf": ("full", ["TEST.mode", "slide", "TEST.crop_size", "[32, 32]"]), "torchvision": ("full", []),
             "smp": ("full", ["TEST.mode", "slide", "TEST.crop_size", "[32, 32]"]),
             "python": ("center", ["ATTACK.protocol", "center", "TEST.crop_size", "[40, 40]"])}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_adversarial_training_then_evaluation(tmp_path, tiny_data, family):
    config, extra = CONFIGS[family]
    common = ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"),
              "TRAIN.batch_size", "4", "TRAIN.crop_size", "40", "TRAIN.print_freq", "1", "TRAIN.epochs", "1",
              "TEST.batch_size", "2", "TEST.workers", "0", "TEST.vis", "1", "TEST.vis_regions", "0", *extra]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", str(ROOT / config), *common,
         "ADV_TRAIN.attack.steps", "1"], cwd=ROOT, env_extra=env)
    run_dir = tmp_path / "exp" / "demo" / (config.split("/")[-1][:-5])
    log = (run_dir / "train.log").read_text()
    assert "adversarial training: 2 of 4 images per process and step replaced by RPPGDPlusPlus(eps=0.1" in log
    assert "epoch 1 validation: mIoU" in log
    state = torch.load(run_dir / "model" / "last.pth", weights_only=True)
    assert not any(k.startswith("net.") for k in state["model"]), "checkpoints hold the library's own keys"

    protocol, protocol_args = PROTOCOLS[family]
    proc = run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", str(ROOT / config), *common,
                "ATTACK.attacks", ATTACKS, *protocol_args], cwd=ROOT, env_extra=env)
    result = run_dir / "result" / f"val_last_{protocol}"
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == protocol
    assert list(metrics["attacks"]) == ["pgd", "rppgd++"]
    for entry in metrics["attacks"].values():
        assert entry["images"] == 4 and metrics["worst_case"]["mIoU"] <= entry["mIoU"] + 1e-12
    assert metrics["worst_case"]["mIoU"] <= metrics["clean"]["mIoU"] + 1e-12
    assert "| worst case over the attacks |" in (result / "report.md").read_text()
    assert "| rppgd++ |" in proc.stdout
    # pictures: a panel of the first image per attack (and clean), and RP-PGD++'s region strip through the hooked
    # features
    for key in ("clean", "pgd", "rppgd++"):
        assert len(list((result / "panels" / key).glob("00000*.png"))) == 1, key
    assert [p.name[:13] for p in (result / "regions").glob("*.png")] == ["rppgd++_00000"]
    if family == "hf":  # the log says which normalisation the folder's model uses
        line = "normalisation DATA.mean/DATA.std ('config/demo/hf/segformer_b0' has no image_mean"
        assert line in proc.stdout + proc.stderr


def test_one_call_evaluation_of_models_built_in_python(tmp_path, tiny_data):
    """The documented way: build the network in Python, wrap it, hand it to RobustnessEvaluation."""
    from transformers import SegformerForSemanticSegmentation
    path = write_yaml(tmp_path / "eval.yaml", f"""
DATA: {{name: demo, data_root: {tiny_data}, classes: 7, workers: 0}}
TEST: {{mode: whole, batch_size: 2, workers: 0}}
""")
    cfg = load_config(path)
    loader = make_loader(Subset(build_dataset(cfg, "val", train=False), range(4)), 2, 0, 0, 1, train=False)
    config = hf_configs()["segformer"]
    config.num_labels = 7
    models = {"segformer": wrap_model(SegformerForSemanticSegmentation(config), feature_layer="segformer",
                                      head_modules=["decode_head"]),
              "own": wrap_model(TinyUserNet(7), feature_layer="body")}
    for name, model in models.items():
        evaluation = RobustnessEvaluation(cfg, model.eval(), attacks=[
            {"name": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2},
            {"name": "rppgd++", "eps": 0.1, "alpha": 0.05, "steps": 2}])
        result = evaluation.run(loader, tmp_path / "results", name)
        metrics = json.loads((result.result_dir / "metrics.json").read_text())
        assert metrics["model_path"] is None and list(metrics["attacks"]) == ["pgd", "rppgd++"]
        assert metrics["clean"]["images"] == 4 and (result.result_dir / "report.md").is_file()
        assert not model.training, "the evaluation leaves the mode as it found it"


@pytest.mark.parametrize("family", list(CONFIGS))
def test_the_benchmark_runs_on_every_family(tmp_path, tiny_data, family):
    config, extra = CONFIGS[family]
    out = tmp_path / "bench.json"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = run([sys.executable, str(ROOT / "tool_bench/bench.py"), "--config", str(ROOT / config), "--size", "40",
                "--batch", "1", "--repeats", "1", "--steps", "2", "--attacks", "pgd,rppgd++", "--train-batch", "2",
                "--train-size", "40", "--eval-size", "40x48", "--loader-batches", "1", "--out", str(out),
                "DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"), *extra],
               cwd=ROOT, env_extra=env)
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert {name: tuple(r["passes"]) for name, r in rows.items() if r["passes"]} == {
        "pgd step": (2, 2), "rppgd++ step": (2, 2)}
    assert rows["AT training step"]["seconds"] > 0 and "| rppgd++ step | 2 / 2 |" in proc.stdout
    assert f"; {family}:" in proc.stdout, "the header names the library model"


def test_two_processes_in_channels_last_train_a_library_model_and_resume_exactly(tmp_path, tiny_data):
    """DDP, channels_last and resume with a library model (hf: SegFormer) through the one launcher: two processes
    train two epochs of RP-PGD++ AT; a run resumed from the first epoch's checkpoint reaches the same weights."""
    config = "config/demo/demo_segformer_b0_sat.yaml"
    common = ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"),
              "TRAIN.batch_size", "4", "TRAIN.crop_size", "40", "TRAIN.epochs", "2", "TRAIN.eval_freq", "0",
              "MODEL.channels_last", "true", "ADV_TRAIN.attack.steps", "1"]
    launch = ["sh", str(ROOT / "util/launch.sh"), "tool_train/train.py", config]
    env = {"NPROC": "2", "PYTHON": sys.executable}
    run(launch + common + ["EXP.name", "straight", "TRAIN.save_freq", "1"], cwd=ROOT, env_extra=env)
    straight = tmp_path / "exp" / "demo" / "straight"
    assert "2 process(es)" in (straight / "train.log").read_text()
    run(launch + common + ["EXP.name", "resumed", "TRAIN.resume", str(straight / "model" / "epoch_1.pth")],
        cwd=ROOT, env_extra=env)
    a = torch.load(straight / "model" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "exp" / "demo" / "resumed" / "model" / "last.pth", weights_only=True)
    first = torch.load(straight / "model" / "epoch_1.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["world"] == b["world"] == 2
    assert any(not torch.equal(v, first["model"][k]) for k, v in a["model"].items()), "epoch 2 trained"
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6), key
