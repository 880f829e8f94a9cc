"""Bad input ends with exit code 2 and one line naming the culprit, before anything is written (the issue "Runs
that span machines", point 6). The scripts run in this process through util.errors.run_cli, as from the shell."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from engine.training import per_process_batch
from model import build_model
from util.config import load_config
from util.errors import run_cli


def script(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_").removesuffix(".py"), ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_of(capsys, main, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    text = err.replace("\r", "\n")
    assert "error: " in text and "Traceback" not in err, err
    return info.value.code, text[text.rindex("error: "):]  # the message, after any progress bar


@pytest.fixture
def data(tmp_path, tiny_data):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


@pytest.fixture
def evaluation(tmp_path, data):
    """tool_test/test.py's main and the overrides of a 7-class tiny PSPNet with a checkpoint of random weights."""
    common = ["DATA.data_root", str(data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"),
              "MODEL.head_channels", "32", "TEST.workers", "0", "TEST.batch_size", "2"]
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    cfg = load_config(config, common)
    checkpoint = tmp_path / "model.pth"
    torch.save({"epoch": 1, "model": build_model(cfg).state_dict()}, checkpoint)
    return script("tool_test/test.py").main, ["--config", config, *common, "TEST.model_path", str(checkpoint),
                                              "ATTACK.attacks", "[]"]


def no_result(tmp_path):
    result = tmp_path / "exp" / "demo" / "demo_pspnet18" / "result"
    return not result.exists() or not any(p for p in result.iterdir() if p.name != ".partial")


@pytest.mark.parametrize("extra, needle", [
    (["TRAIN.epoch", "1"], "unknown key 'TRAIN.epoch'; did you mean 'TRAIN.epochs'"),
    (["ATTACK.attacks", "[{name: pgdd}]"], "ATTACK.attacks[0]: unknown attack 'pgdd'"),
    (["ATTACK.attacks", "[{name: pgd, stpes: 3}]"], "pgd has no parameter stpes"),
    (["ATTACK.attacks", "[{name: pgd, eps: 2}]"], "ATTACK.attacks[0] (pgd): eps must be a number in [0.0, 1.0]; got 2"),
])
def test_config_and_attack_errors(capsys, tmp_path, evaluation, extra, needle):
    main, argv = evaluation
    code, err = exit_of(capsys, main, argv + extra)
    assert code == 2 and needle in err
    assert no_result(tmp_path)


def test_a_truncated_or_non_image_file_names_the_list_and_line(capsys, tmp_path, data, evaluation):
    main, argv = evaluation
    missing = data / "JPEGImages" / "val_00003.jpg"
    missing.rename(missing.with_suffix(".gone"))
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "val.txt, line 4: image file" in err and "val_00003.jpg' does not exist" in err
    missing.with_suffix(".gone").rename(missing)
    jpeg = data / "JPEGImages" / "val_00001.jpg"
    whole = jpeg.read_bytes()
    jpeg.write_bytes(whole[:len(whole) // 2])  # OpenCV would decode the first half and grey the rest
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "val.txt, line 2: cannot read image" in err and "truncated" in err
    jpeg.write_text("not an image at all")
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "val.txt, line 2: cannot read image" in err and "not an image" in err
    assert no_result(tmp_path)


def test_a_label_of_the_wrong_size_or_with_invalid_values(capsys, tmp_path, data, evaluation):
    main, argv = evaluation
    label = data / "SegmentationClass" / "val_00002.png"
    Image.fromarray(np.zeros((40, 48), np.uint8), mode="L").save(label)
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "val.txt, line 3: image (48, 48) and label (40, 48) differ in size" in err
    Image.fromarray(np.full((48, 48), 200, np.uint8), mode="L").save(label)
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "holds value(s) [200]" in err and "val.txt, line 3" in err
    assert no_result(tmp_path)


def test_a_checkpoint_of_another_class_count_lists_the_keys(capsys, tmp_path, evaluation):
    main, argv = evaluation
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["MODEL.head_channels", "32", "DATA.classes", "5"])
    other = tmp_path / "five.pth"
    torch.save({"epoch": 1, "model": build_model(cfg).state_dict()}, other)
    code, err = exit_of(capsys, main, argv + ["TEST.model_path", str(other)])
    assert code == 2 and "does not match the model built from the config (MODEL.*, DATA.classes)" in err
    assert "shape mismatch: ['" in err and "missing: []" in err
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["MODEL.head_channels", "32", "MODEL.layers", "34"])
    torch.save({"epoch": 1, "model": build_model(cfg).state_dict()}, other)
    code, err = exit_of(capsys, main, argv + ["TEST.model_path", str(other)])
    assert code == 2 and "unexpected: ['backbone.layer1.2" in err


def test_a_world_size_that_does_not_divide_the_batch(capsys):
    assert per_process_batch(16, 4) == 4
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: per_process_batch(16, 3))
    assert info.value.code == 2
    assert "TRAIN.batch_size 16 (the global batch) must be divisible by the world size 3" in capsys.readouterr().err
