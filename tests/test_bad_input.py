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
    (["ATTACK.attacks", "[{name: pgd, eps: 2}]"], "ATTACK.attacks[0].eps must be in [0, 1] (an L-inf radius"),
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
    assert code == 2 and "val.txt, line 3: image '" in err and "is 48x48 but label" in err and "48x40" in err
    Image.fromarray(np.full((48, 48), 200, np.uint8), mode="L").save(label)
    code, err = exit_of(capsys, main, argv)
    assert code == 2 and "holds value(s) [200]" in err and "val.txt, line 3" in err
    assert no_result(tmp_path)


def test_a_checkpoint_of_another_class_count_lists_the_keys(capsys, tmp_path, evaluation):
    main, argv = evaluation
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["MODEL.head_channels", "32", "DATA.classes", "5",
                                                                "DATA.check", "false"])
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


# ---- nothing half-written: the output tree before and after each bad input ---------------------------------------

def tree(root):
    """Every path under `root` with its size and modification time (empty when `root` does not exist)."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")) \
        if root.exists() else []


class Payload:
    """A pickled object that would create a file if it were ever unpickled."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def truncate(path):
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])


BAD_EVALUATIONS = {
    "wrong DATA.classes": (lambda d, c: ["DATA.classes", "6"],
                           "DATA.classes 6 disagrees with dataset demo's class table of 7 classes"),
    "label of the wrong size": (lambda d, c: Image.fromarray(np.zeros((40, 48), np.uint8), mode="L").save(
        d / "SegmentationClass" / "val_00002.png"), "val.txt, line 3: image '"),
    "truncated image on the last line": (lambda d, c: truncate(d / "JPEGImages" / "val_00003.jpg"),
                                         "val.txt, line 4: cannot read image"),
    "corrupt checkpoint": (lambda d, c: truncate(c), "is not a checkpoint, or a damaged one (truncated? "),
    "pickled payload": (lambda d, c: torch.save({"epoch": 1, "model": {}, "x": Payload(c.parent / "ran")}, c),
                        "holds Python objects other than tensors (io.open), which this project never unpickles"),
    "DATA.classes 0": (lambda d, c: ["DATA.classes", "0"], "DATA.classes must be at least 1"),
    "ignore_index a class id": (lambda d, c: ["DATA.ignore_index", "3"], "DATA.ignore_index 3 is a class id"),
    "adv_ratio": (lambda d, c: ["ADV_TRAIN.adv_ratio", "1.5"], "ADV_TRAIN.adv_ratio must be in (0, 1], got 1.5"),
    "eps": (lambda d, c: ["ATTACK.attacks", "[{name: pgd, eps: 8}]"], "ATTACK.attacks[0].eps must be in [0, 1]"),
    "val_attack eps": (lambda d, c: ["ADV_TRAIN.val_attack", "{name: pgd, eps: -0.1}"],
                       "ADV_TRAIN.val_attack.eps must be in [0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD_EVALUATIONS))
def test_a_bad_evaluation_input_leaves_the_output_tree_as_it_was(capsys, tmp_path, data, evaluation, case):
    main, argv = evaluation
    checkpoint = tmp_path / "model.pth"
    make_bad, needle = BAD_EVALUATIONS[case]
    extra = make_bad(data, checkpoint) or []
    before = tree(tmp_path / "exp")
    code, err = exit_of(capsys, main, argv + extra)
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert tree(tmp_path / "exp") == before
    assert not (tmp_path / "ran").exists(), "the checkpoint's payload ran"


@pytest.mark.parametrize("case", ["wrong DATA.classes", "truncated image on the last line", "corrupt checkpoint",
                                  "pickled payload"])
def test_a_bad_training_input_leaves_the_output_tree_as_it_was(capsys, tmp_path, data, evaluation, case):
    _, argv = evaluation
    argv = [a for a in argv[:argv.index("TEST.model_path")]] + ["TRAIN.weight", str(tmp_path / "model.pth")]
    make_bad, needle = BAD_EVALUATIONS[case]
    extra = make_bad(data, tmp_path / "model.pth") or []
    if case == "truncated image on the last line":
        truncate(data / "JPEGImages" / "train_00015.jpg")
        needle = "train.txt, line 16: cannot read image"
    before = tree(tmp_path / "exp")
    code, err = exit_of(capsys, script("tool_train/train.py").main, argv + extra)
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert tree(tmp_path / "exp") == before
    assert not (tmp_path / "ran").exists(), "the checkpoint's payload ran"
