"""The launchers (docs/design.md, Launchers): each parses, loads its config, builds its model, and without the dataset
stops at once with a message naming the missing path and the README's Datasets section."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from model import build_model
from util.config import load_config

DATASETS = ("voc2012", "cityscapes", "ade20k")
SAT = [f"tool_{kind}/{ds}/{m}_{kind}_sat.sh" for ds in DATASETS + ("demo",) for m in ("psp", "aspp")
       for kind in ("train", "test")]
CLASSES = {"voc2012": 21, "cityscapes": 19, "ade20k": 150, "demo": 7}


def config_of(launcher: str) -> str:
    found = re.findall(r"config/\S+\.yaml", (ROOT / launcher).read_text().split("exec", 1)[1])
    assert len(found) == 1, f"{launcher} must name exactly one config"
    return found[0]


def test_the_twelve_launchers_and_the_demo_ones_exist():
    assert len(SAT) == 16
    for launcher in SAT:
        assert (ROOT / launcher).is_file(), launcher


@pytest.mark.parametrize("launcher", SAT)
def test_launcher_parses_loads_its_config_and_builds_its_model(launcher):
    subprocess.run(["sh", "-n", str(ROOT / launcher)], check=True)
    dataset, script = launcher.split("/")[1], launcher.split("/")[2]
    cfg = load_config(ROOT / config_of(launcher), ["MODEL.pretrained", ""])
    assert cfg.DATA.name == dataset and cfg.DATA.classes == CLASSES[dataset]
    assert cfg.MODEL.arch == ("pspnet" if script.startswith("psp") else "deeplabv3")
    assert cfg.ADV_TRAIN.method == "at" and cfg.ADV_TRAIN.attack["name"] == "rppgd++"
    assert {a["name"] for a in cfg.ATTACK.attacks} == {"bim", "pgd", "segpgd", "cospgd", "rppgd", "rppgd++"}
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 33, 33)).shape == (1, CLASSES[dataset], 33, 33)
    # the test launcher evaluates the checkpoint its train launcher wrote: the same config, so the same run folder
    twin = launcher.replace("tool_train", "tool_test").replace("_train_", "_test_") if "train" in launcher else \
        launcher.replace("tool_test", "tool_train").replace("_test_", "_train_")
    assert config_of(twin) == config_of(launcher)


@pytest.mark.parametrize("dataset", DATASETS)
def test_release_recipe_of_the_real_configs(dataset):
    """docs/method.md §6 and the issue's evaluation budget."""
    crop, scales, epochs = {"voc2012": (473, [0.5, 2.0], 50), "cityscapes": (449, [0.25, 1.0], 400),
                            "ade20k": (465, [0.5, 2.0], 100)}[dataset]
    cfg = load_config(ROOT / f"config/{dataset}/{dataset}_pspnet50_sat.yaml")
    t = cfg.TRAIN
    assert (t.crop_size, t.scale_range, t.epochs, t.batch_size) == ([crop, crop], scales, epochs, 16)
    assert (t.base_lr, t.aux_weight, t.head_lr_mult, t.power) == (0.01, 0.4, 10.0, 0.9)
    assert cfg.ADV_TRAIN.attack == {"name": "rppgd++", "eps": 0.03, "alpha": 0.01, "steps": 3, "random_start": True}
    assert cfg.ADV_TRAIN.adv_ratio == 0.5 and cfg.MODEL.layers == 50 and cfg.ATTACK.protocol == "full"
    for a in cfg.ATTACK.attacks:  # BIM with the legacy budget (no random start by definition), the rest 20 steps
        assert (a["eps"], a["alpha"], a["steps"]) == (0.03, 0.01, 2 if a["name"] == "bim" else 20)
    assert cfg.TEST.mode == "slide" and cfg.TEST.crop_size == [crop, crop]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [s for s in SAT if "/demo/" not in s])
def test_launcher_without_the_dataset_stops_at_once(launcher, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "NPROC": "1"}
    proc = subprocess.run(["sh", str(ROOT / launcher), "EXP.root", str(tmp_path / "exp")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    dataset = launcher.split("/")[1]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"data/{dataset}" in proc.stderr and "docs/datasets.md" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists(), "nothing is written"


PIRAT = [f"tool_{kind}/{ds}/psp_{kind}_{twin}.sh" for ds in ("voc2012", "demo") for twin in ("pirat", "rpat")
         for kind in ("train", "test")]


@pytest.mark.parametrize("launcher", PIRAT)
def test_pirat_launchers_parse_load_their_config_and_build_their_model(launcher):
    """PIR-AT and its RP-PGD++ twin (docs/training.md, "The PIR-AT recipe, point by point")."""
    subprocess.run(["sh", "-n", str(ROOT / launcher)], check=True)
    dataset, twin = launcher.split("/")[1], launcher.rsplit("_", 1)[1].removesuffix(".sh")
    config = config_of(launcher)
    assert config == f"config/{dataset}/{dataset}_pspnet{50 if dataset == 'voc2012' else 18}_{twin}.yaml"
    cfg = load_config(ROOT / config, ["MODEL.pretrained", ""])
    assert cfg.DATA.name == dataset and cfg.DATA.classes == CLASSES[dataset] and cfg.MODEL.arch == "pspnet"
    assert cfg.ADV_TRAIN.method == "pirat" and cfg.ATTACK.protocol == "center"
    assert cfg.ADV_TRAIN.attack["name"] == {"pirat": "pirat-pgd", "rpat": "rppgd++"}[twin]
    assert "sea" in {a["name"] for a in cfg.ATTACK.attacks}
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 33, 33)).shape == (1, CLASSES[dataset], 33, 33)
    twin_launcher = launcher.replace("tool_train", "tool_test").replace("_train_", "_test_") if "train" in launcher \
        else launcher.replace("tool_test", "tool_train").replace("_test_", "_train_")
    assert config_of(twin_launcher) == config


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [s for s in PIRAT if "/voc2012/" in s])
def test_pirat_launcher_without_the_dataset_stops_at_once(launcher, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "NPROC": "1"}
    proc = subprocess.run(["sh", str(ROOT / launcher), "EXP.root", str(tmp_path / "exp")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data/voc2012" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists(), "nothing is written"


SEA_FAMILIES = [(ds, fam, twin) for ds in ("voc2012", "ade20k") for fam in ("upernet", "segmenter")
                for twin in ("pirat", "rpat") if fam == "upernet" or ds == "ade20k"]


@pytest.mark.parametrize("dataset, family, twin", SEA_FAMILIES)
def test_sea_family_launchers_train_and_evaluate_as_sea_reports(dataset, family, twin):
    """SEA's UperNet-ConvNeXt and Segmenter: PIR-AT and its RP-PGD++ twin, evaluated under `center` with SEA at 4/255
    and (by the eps sweep) 8/255 beside our attacks."""
    train = f"tool_train/{dataset}/{family}_train_{twin}.sh"
    test = f"tool_test/{dataset}/{family}_test_sea{'' if twin == 'pirat' else '_rpat'}.sh"
    for launcher in (train, test):
        subprocess.run(["sh", "-n", str(ROOT / launcher)], check=True)
    assert config_of(train) == config_of(test)
    cfg = load_config(ROOT / config_of(train), ["MODEL.pretrained", ""])
    assert cfg.MODEL.arch == family and cfg.MODEL.style == "sea" and cfg.ADV_TRAIN.method == "pirat"
    assert cfg.ADV_TRAIN.attack["name"] == {"pirat": "pirat-pgd", "rpat": "rppgd++"}[twin]
    assert cfg.ADV_TRAIN.attack["eps"] == 4 / 255 and cfg.ADV_TRAIN.attack["steps"] == 5
    assert cfg.ATTACK.protocol == "center" and cfg.ATTACK.eps_sweep == [4 / 255, 8 / 255]
    sea = [a for a in cfg.ATTACK.attacks if a["name"] == "sea"]
    assert sea == [{"name": "sea", "eps": 4 / 255, "steps": 300}]
    assert {a["name"] for a in cfg.ATTACK.attacks} == {"sea", "pgd", "segpgd", "cospgd", "rppgd++"}
    assert cfg.DATA.classes == {"voc2012": 21, "ade20k": 151}[dataset]
