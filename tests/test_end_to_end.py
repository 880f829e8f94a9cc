"""End-to-end runs of the training and test scripts on a tiny generated dataset (marked slow)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT

pytestmark = pytest.mark.slow


def run(args: list[str], cwd, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    # a failed multi-process run prints each rank's traceback before the launcher's summary: keep enough to see them
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-12000:]
    return proc


def tiny_overrides(tiny_data, exp_root) -> list[str]:
    return ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(exp_root),
            "MODEL.head_channels", "32", "TRAIN.batch_size", "4", "TRAIN.crop_size", "40", "TRAIN.print_freq", "1",
            "TEST.batch_size", "2", "TEST.workers", "0"]


def test_train_then_test(tmp_path, tiny_data):
    common = tiny_overrides(tiny_data, tmp_path / "exp")
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common,
         "TRAIN.epochs", "1", "TRAIN.save_freq", "1"], cwd=tmp_path)
    run_dir = tmp_path / "exp" / "demo" / "demo_pspnet18"
    assert (run_dir / "model" / "last.pth").is_file() and (run_dir / "model" / "epoch_1.pth").is_file()
    assert "epoch 1 validation: mIoU" in (run_dir / "train.log").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    assert "TRAIN:" in (run_dir / "config.yaml").read_text()

    proc = run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common,
                "TEST.save_pictures", "true", "ATTACK.attacks", "[]"], cwd=tmp_path)
    result = run_dir / "result" / "val_last_full"
    metrics = json.loads((result / "metrics.json").read_text())
    clean = metrics["clean"]
    assert 0 <= clean["mIoU"] <= 1 and 0 <= clean["aAcc"] <= 1 and clean["images"] == 4
    assert len(clean["per_class_iou"]) == 7 and len(clean["per_image_miou"]) == 4
    assert metrics["protocol"]["mode"] == "whole" and metrics["attacks"] == {} and metrics["epoch"] == 1
    assert metrics["config"]["MODEL"]["head_channels"] == 32
    assert "| clean |" in (result / "report.md").read_text() and "| clean |" in proc.stdout
    assert len(list((result / "pictures" / "clean").glob("*.png"))) == 4

    # a checkpoint of one process evaluates in two: the same figures
    run(["sh", str(ROOT / "tool_test/demo/psp_test.sh"), *common, "ATTACK.attacks", "[]", "TEST.run_name", "np2",
         "TEST.vis", "3"], cwd=tmp_path, env_extra={"NPROC": "2", "PYTHON": sys.executable})
    assert json.loads((run_dir / "result" / "np2" / "metrics.json").read_text())["clean"] == clean
    # each process draws the panels of its own images: the first 3 once each, all linked from the report
    panels = sorted(p.name for p in (run_dir / "result" / "np2" / "panels" / "clean").glob("*.png"))
    assert [p[:5] for p in panels] == ["00000", "00001", "00002"]
    assert all(f"panels/clean/{p}" in (run_dir / "result" / "np2" / "report.md").read_text() for p in panels)
    run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common, "TEST.num_images", "2",
         "ATTACK.attacks", "[]"], cwd=tmp_path)
    again = json.loads((run_dir / "result" / "val_last_full_2" / "metrics.json").read_text())  # nothing overwritten
    assert again["clean"]["images"] == 2 and (result / "metrics.json").is_file()

    broken = tmp_path / "broken"  # a bad label stops the evaluation cleanly and leaves no result folder
    shutil.copytree(tiny_data, broken)
    Image.fromarray(np.full((48, 48), 9, np.uint8), mode="L").save(broken / "SegmentationClass" / "val_00003.png")
    proc = subprocess.run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common,
                           "DATA.data_root", str(broken), "TEST.run_name", "broken"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "holds value(s) [9]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run_dir / "result" / "broken").exists()


@pytest.mark.parametrize("method", ["none", "at"])
def test_resume_reaches_the_same_weights(tmp_path, tiny_data, method):
    common = tiny_overrides(tiny_data, tmp_path / "exp") + ["TRAIN.epochs", "2", "TRAIN.eval_freq", "0",
                                                           "ADV_TRAIN.method", method]
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    train = [sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common]
    run(train + ["EXP.name", "straight", "TRAIN.save_freq", "1"], cwd=tmp_path)
    straight = tmp_path / "exp" / "demo" / "straight" / "model"
    run(train + ["EXP.name", "resumed", "TRAIN.resume", str(straight / "epoch_1.pth")], cwd=tmp_path)
    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "exp" / "demo" / "resumed" / "model" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    first = torch.load(straight / "epoch_1.pth", weights_only=True)
    assert not torch.equal(first["model"]["head.5.weight"], a["model"]["head.5.weight"])  # epoch 2 trained
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6), key


def test_ddp_two_processes_through_the_launchers(tmp_path, tiny_data):
    common = tiny_overrides(tiny_data, tmp_path / "exp")
    run(["sh", str(ROOT / "tool_train/demo/psp_train.sh"), *common, "TRAIN.epochs", "1"], cwd=tmp_path,
        env_extra={"NPROC": "2", "PYTHON": sys.executable})
    run_dir = tmp_path / "exp" / "demo" / "demo_pspnet18"
    assert "2 process(es)" in (run_dir / "train.log").read_text()
    attack = "[{name: pgd, eps: 0.1, alpha: 0.05, steps: 2}, {name: rppgd++, eps: 0.1, alpha: 0.05, steps: 2}]"
    for nproc in ("2", "1"):  # batches of one image: each image is computed alike whatever the process count
        run(["sh", str(ROOT / "tool_test/demo/psp_test.sh"), *common, "TEST.run_name", f"np{nproc}",
             "TEST.batch_size", "1", "ATTACK.attacks", attack], cwd=tmp_path,
            env_extra={"NPROC": nproc, "PYTHON": sys.executable})
    two = json.loads((run_dir / "result" / "np2" / "metrics.json").read_text())
    one = json.loads((run_dir / "result" / "np1" / "metrics.json").read_text())
    # sharded evaluation counts every image exactly once, and per-image seeds make the attacked images independent
    # of the shards: identical figures, clean and under every attack
    assert two["clean"] == one["clean"] and two["attacks"] == one["attacks"]
    assert two["worst_case"] == one["worst_case"]


def test_adversarial_training_then_robust_evaluation(tmp_path, tiny_data):
    common = tiny_overrides(tiny_data, tmp_path / "exp")
    config = str(ROOT / "config/demo/demo_pspnet18_sat.yaml")
    run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common, "TRAIN.epochs", "2",
         "ADV_TRAIN.val_attack", "{name: pgd, eps: 0.1, alpha: 0.05, steps: 1}", "ADV_TRAIN.val_images", "2",
         "ADV_TRAIN.attack.steps", "2"], cwd=tmp_path)
    run_dir = tmp_path / "exp" / "demo" / "demo_pspnet18_sat"
    log = (run_dir / "train.log").read_text()
    assert "adversarial training: 2 of 4 images per process and step replaced by RPPGDPlusPlus(eps=0.1" in log
    assert "adv loss" in log and "clean loss" in log and "adv_pixel_acc" in log
    assert "robust validation (pgd, 2 images, protocol full)" in log
    assert (run_dir / "model" / "best.pth").is_file()
    best = torch.load(run_dir / "model" / "best.pth", weights_only=True)["best"]
    assert best["metric"] == "robust_mIoU" and best["epoch"] in (1, 2)

    attacks = ("[{name: bim, eps: 0.1, alpha: 0.01, steps: 2}, "
               + ", ".join(f"{{name: {n}, eps: 0.1, alpha: 0.05, steps: 2}}"
                           for n in ("pgd", "segpgd", "cospgd", "rppgd", "rppgd++"))
               + ", {name: sea, eps: 0.1, steps: 4}]")
    proc = run([sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common,
                "ATTACK.attacks", attacks, "TEST.vis", "2", "TEST.vis_regions", "1"], cwd=tmp_path)
    result = run_dir / "result" / "val_last_full"
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "full" and "per image" in metrics["protocol"]["seeds"]
    assert list(metrics["attacks"]) == ["bim", "pgd", "segpgd", "cospgd", "rppgd", "rppgd++", "sea"]
    sea = metrics["attacks"]["sea"]  # SEA's figure, and the per-image choice of the images it returns
    assert "worse_only" in sea["figure"] and "pictures" in sea["per_image_choice"]["rule"]
    assert list(sea["runs"]) == ["mce-bal", "mce", "js"] and len(sea["per_image_run"]) == 4
    assert sea["mIoU"] <= sea["runs"]["mce-bal"]["mIoU"] + 1e-12  # SEA's search starts with every image on MCE-Bal
    assert "sea/mce-bal" in metrics["worst_case"]["candidates"]
    for key, entry in metrics["attacks"].items():
        assert entry["name"] == key and entry["params"]["eps"] == 0.1 and entry["images"] == 4
        assert 0 <= entry["mIoU"] <= 1 and len(entry["per_image_miou"]) == 4
        assert metrics["worst_case"]["mIoU"] <= entry["mIoU"] + 1e-12
        for worst, single in zip(metrics["worst_case"]["per_image_miou"], entry["per_image_miou"]):
            assert worst <= single
    bim = metrics["attacks"]["bim"]["params"]
    assert bim["steps"] == 2 and "random_start" not in bim  # BIM: PGD without a random start
    report = (result / "report.md").read_text()
    assert "| rppgd++ | 0.1000 | 2 |" in report and "| worst case over the attacks |" in report
    assert "| segpgd |" in proc.stdout
    assert "`sea`: SEA's figure" in report
    # pictures: a panel per image and attack (and clean) for the first 2 images, a region strip per RP-PGD attack,
    # every one embedded in the report, and the log says where they are
    for key in ["clean", *metrics["attacks"]]:
        assert sorted(p.name[:5] for p in (result / "panels" / key).glob("*.png")) == ["00000", "00001"], key
    assert sorted(p.name for p in (result / "regions").glob("*.png")) == ["rppgd++_00001_val_00001.png",
                                                                          "rppgd_00001_val_00001.png"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len([link for link in links if link.startswith("panels/")]) == 2 * 8 and all(
        (result / link).is_file() for link in links)
    assert "regions/rppgd_00001_val_00001.png" in links and "miou_per_attack.png" in links
    assert f"report: {result / 'report.md'}; panels under {result / 'panels'}" in proc.stderr + proc.stdout
    events = [p for p in (run_dir / "tb").iterdir() if p.name.startswith("events")]
    assert any(b"val/panel" in p.read_bytes() for p in events), "a validation panel in tensorboard"


def test_launchers_parse():
    for launcher in sorted(ROOT.glob("tool_*/*/*.sh")) + [ROOT / "util" / "launch.sh"]:
        subprocess.run(["sh", "-n", str(launcher)], check=True)


def test_convergence_study(tmp_path, tiny_data):
    common = tiny_overrides(tiny_data, tmp_path / "exp")
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common, "TRAIN.epochs", "1"],
        cwd=tmp_path)
    proc = run([sys.executable, str(ROOT / "tool_test/convergence.py"), "--config", config, "--images", "2",
                "--steps", "1,2", "--apgd-steps", "3", "--sea-steps", "5", *common], cwd=tmp_path)
    out = tmp_path / "exp" / "demo" / "demo_pspnet18" / "result" / "convergence"
    rows = list(csv.DictReader(open(out / "convergence.csv")))
    results = {(r["name"], int(r["budget"])) for r in rows if r["kind"] == "result"}
    for name in ("bim", "pgd", "segpgd", "cospgd", "rppgd", "rppgd++"):
        assert {(name, 1), (name, 2)} <= results
    assert {("apgd-ce", 3), ("apgd-mce-bal", 3), ("sea", 5)} <= results
    figure = [r for r in rows if r["kind"] == "sea_figure"]
    assert len(figure) == 1 and figure[0]["name"] == "sea"
    pgd_steps = sorted(int(r["step"]) for r in rows if r["name"] == "pgd" and r["budget"] == "2"
                       and r["kind"] == "iterate")
    assert pgd_steps == [0, 1, 2]  # mIoU after every step, the start included
    # PGD's last iterate is what it returns, so its "after step T" and result rows agree
    last = [r["mIoU"] for r in rows if r["name"] == "pgd" and r["budget"] == "2" and r["step"] == "2"]
    assert len(last) == 2 and last[0] == last[1]
    table = (out / "convergence.md").read_text()
    assert "| PGD |" in table and "region loss only" in table and "| T=2 |" in table
    assert "SEA's worst case over its runs | 5 |" in table and "per image the lowest-accuracy run | 5 |" in table
    assert "| PGD |" in proc.stdout
    metrics = json.loads((out / "convergence.json").read_text())
    assert all(0 <= a["mIoU"] <= 1 for a in metrics["attacks"])
    sea = [a for a in metrics["attacks"] if a["config"]["name"] == "sea"][0]["sea_figure"]
    assert float(figure[0]["mIoU"]) == pytest.approx(sea["mIoU"], abs=1e-6)
    assert sea["mIoU"] <= sea["runs"]["mce-bal"]["mIoU"] + 1e-12  # SEA's search starts with every image on MCE-Bal
    assert len(list((tmp_path / "exp" / "demo" / "data_check").glob("train-*.json"))) == 1  # MCE-Bal's counts
    for plot in ("convergence.png", "ablation_rp_pgd___region_loss_only.png",
                 "ablation_rp_pgd___intra_term_negated.png"):
        assert (out / plot).stat().st_size > 1000, plot


def test_the_benchmark_times_every_entry_and_counts_passes(tmp_path, tiny_data):
    """tool_bench/bench.py on a small network: the floor, attack steps with their passes counted, training steps,
    one robustly evaluated image under sliding windows, the data loader, and the targets in its JSON."""
    out = tmp_path / "bench.json"
    proc = run([sys.executable, str(ROOT / "tool_bench/bench.py"), "--config",
                str(ROOT / "config/demo/demo_pspnet18_sat.yaml"), "--size", "33", "--batch", "1", "--repeats", "1",
                "--steps", "2", "--attacks", "pgd,rppgd++,rppgd++:release,apgd-ce", "--train-batch", "2",
                "--train-size", "33", "--eval-size", "40x50", "--loader-batches", "2", "--out", str(out),
                *tiny_overrides(tiny_data, tmp_path / "exp"), "TEST.mode", "slide", "TEST.crop_size", "33"],
               cwd=tmp_path)
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert {name: tuple(r["passes"]) for name, r in rows.items() if r["passes"]} == {
        "pgd step": (2, 2), "rppgd++ step": (2, 2), "rppgd++:release step": (2, 2),
        "apgd-ce step": (3, 2)}  # APGD judges its start and each step; its last iterate needs no gradient
    for name in ("fwd+bwd", "clean training step", "AT training step", "one image: fwd+bwd through the inference",
                 "one image: clean prediction", "one image: PGD-2 robust prediction"):
        assert rows[name]["seconds"] > 0 and rows[name]["peak_mib"] >= 0, name
    assert rows["AT training step"]["reference"] == "clean training step"
    assert result["loader"]["seconds_per_batch"] > 0
    whats = [t["what"] for t in result["targets"]]
    assert "rppgd++ step / pgd step (time)" in whats
    at = [t for t in result["targets"] if t["what"].startswith("AT training step")]
    # the demo's RP-PGD++ AT (3 steps on half the batch) is the setting of the 2.8x target itself
    assert [(t["what"], t["limit"]) for t in at] == [
        ("AT training step / clean training step (1.5 attack passes per image)", pytest.approx(2.8))]
    assert any(w.startswith("robust evaluation of one image (PGD-2)") for w in whats)
    assert "| pgd step | 2 / 2 |" in proc.stdout and "target: " in proc.stdout


def test_the_benchmark_refuses_fp16_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tool_bench/bench.py"), "--config",
                           str(ROOT / "config/demo/demo_pspnet18.yaml"), "--amp", "fp16", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "--amp fp16 needs CUDA" in proc.stderr
