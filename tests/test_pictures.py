"""Pictures: panels (tile sizes, exact palette colours, the perturbation tile, the four region colours), region
strips against the attack's own regions, the report's links, and plots written without a display."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import torch
from tiny_models import TinySeg

from attack.regions import RegionHistory
from conftest import ROOT
from engine.attacks import AttackSpec
from engine.pictures import REGION_COLOURS, Panels, panel, region_strip
from engine.protocols import PROTOCOLS, image_seed
from engine.report import write_results
from util.config import load_config
from util.data.datasets import class_names, palette
from util.visualisation.plots import grouped_bars, miou_bars, step_curves
from util.visualisation.tiles import TILE, TITLE, colourise, fit, tile_size

K = 7
NAMES = class_names("demo", K)
PALETTE = palette("demo")


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def sample(h=30, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    labels = torch.randint(0, 4, (h, w), generator=g)
    labels[:3] = 255
    clean_pred, adv_pred = torch.randint(0, K, (2, h, w), generator=g)
    adv = (image + 0.03 * torch.sign(torch.randn(3, h, w, generator=g))).clamp(0, 1)
    regions = torch.tensor([0, 1, 2], dtype=torch.uint8)[torch.randint(0, 3, (h, w), generator=g)]
    regions[labels == 255] = 255
    return image, adv, labels, clean_pred, adv_pred, regions


def colours(picture: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in picture.reshape(-1, 3)}


def test_panel_tiles_sizes_and_exact_colours(tmp_path):
    image, adv, labels, clean_pred, adv_pred, regions = sample()
    picture, boxes = panel(image, adv, labels, clean_pred, adv_pred, PALETTE, NAMES, "title", 0.03, regions)
    assert set(boxes) == {"image", "adversarial image", "perturbation", "regions", "ground truth",
                          "clean prediction", "adversarial prediction"}
    h, w = tile_size(30, 40)
    assert (h, w) == (192, 256) and max(h, w) == TILE
    for y0, y1, x0, x1 in boxes.values():
        assert (y1 - y0, x1 - x0) == (h, w)
    assert picture.shape[1] == 4 * w + 5 * 4  # four columns and their gaps

    gt = picture[slice(*boxes["ground truth"][:2]), slice(*boxes["ground truth"][2:])]
    assert np.array_equal(gt, colourise(fit_labels(labels, (h, w)), PALETTE)), "nearest only: exact palette colours"
    assert colours(gt) == {tuple(int(v) for v in PALETTE[c]) for c in torch.unique(labels).tolist()}
    region = picture[slice(*boxes["regions"][:2]), slice(*boxes["regions"][2:])]
    assert colours(region) == {c for _, c in REGION_COLOURS.values()}, "the four region colours and nothing else"

    delta = picture[slice(*boxes["perturbation"][:2]), slice(*boxes["perturbation"][2:])]
    assert len(colours(delta)) > 1 and colours(delta) != {(128, 128, 128)}
    blank, boxes = panel(image, image.clone(), labels, clean_pred, clean_pred, PALETTE, NAMES, "clean", 0.03)
    delta = blank[slice(*boxes["perturbation"][:2]), slice(*boxes["perturbation"][2:])]
    assert colours(delta) == {(128, 128, 128)}, "no perturbation: a blank grey tile"
    assert "regions" not in boxes and blank.shape[1] == 3 * w + 4 * 4

    clean_only, boxes = panel(image, None, labels, clean_pred, None, PALETTE, NAMES, "clean")
    assert set(boxes) == {"image", "ground truth", "clean prediction"}


def fit_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.from_numpy(fit(labels.numpy().astype(np.uint8)[..., None].repeat(3, 2), size, exact=True)[..., 0])


def test_panels_are_written_once_for_the_first_images(tmp_path):
    """Two processes (two Panels on disjoint shards) write each of the first N images' panels once."""
    from engine.pictures import ImageView
    image, adv, labels, clean_pred, adv_pred, regions = sample()
    stems = [f"img{i}" for i in range(6)]
    ranks = [Panels(tmp_path, 3, PALETTE, NAMES, stems), Panels(tmp_path, 3, PALETTE, NAMES, stems)]
    for rank, shard in zip(ranks, ([0, 1, 2], [3, 4, 5])):
        for i in shard:
            rank.clean()(ImageView(i, clean_pred, labels, image))
        for i in shard:
            rank.attacked("rppgd++", 0.03)(ImageView(i, adv_pred, labels, image, adv, regions))
    written = sorted(p.relative_to(tmp_path).as_posix() for r in ranks for p in r.written)
    assert written == sorted(f"{k}/{i:05d}_img{i}.png" for k in ("clean", "rppgd++") for i in range(3))
    shape = read_rgb(tmp_path / "rppgd++" / "00000_img0.png").shape
    assert shape[1] == 4 * 256 + 5 * 4 and shape[0] > 2 * (192 + TITLE)


def test_region_history_is_the_attacks_own_regions():
    """The strip's maps, rebuilt from the iterates, end where RP-PGD's own region state ends (its last map is
    judged on x_{T-1}, the strip also shows x_T)."""
    torch.manual_seed(0)
    model = TinySeg(K).eval()
    x = torch.rand(1, 3, 32, 32)
    y = torch.randint(0, K, (1, 32, 32))
    y[:, :4] = 255
    settings = {"mode": "whole", "crop": (32, 32), "stride_rate": 2 / 3, "mean": (0.485, 0.456, 0.406),
                "base_size": 0}
    protocol = PROTOCOLS.get("full")(model, settings, seed=1)
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml")
    atk = protocol.build_attack(AttackSpec("rppgd++", "rppgd++", {"eps": 0.1, "alpha": 0.05, "steps": 4}, "t"), cfg)
    history = RegionHistory(0, 255)
    p = protocol.predict(x, y, [0], atk, on_iterate=history)
    assert len(history.maps) == 5
    own = atk.run(x, y, trace=False, seeds=[image_seed(1, 0)]).extras["regions"][0]
    assert torch.equal(history.maps[-2], own) and torch.equal(p.regions[0], own)
    assert (history.maps[-1] == 1).sum() >= (history.maps[0] == 1).sum(), "Boundary only grows"
    strip = region_strip(history.maps, "strip")
    assert strip.shape[1] >= 5 * 150


def fake_results():
    def entry(m):
        return {"mIoU": m, "mAcc": m, "aAcc": m, "mIoU_all_classes": m, "images": 2, "per_image_miou": [m, m],
                "per_class_iou": [m] * (K - 1) + [None]}
    attacks = {key: {"name": key, "params": {"eps": 0.03, "steps": 3}, **entry(m)}
               for key, m in (("pgd", 0.4), ("rppgd++", 0.3))}
    worst = {**entry(0.25), "images_per_attack": {"pgd": 0, "rppgd++": 2}}
    return {"clean": entry(0.8), "attacks": attacks, "worst_case": worst, "warnings": []}


def test_report_lists_every_attack_and_links_existing_files(tmp_path, tiny_cfg):
    cfg = tiny_cfg()
    panels = []
    for key in ("clean", "pgd"):
        path = tmp_path / "panels" / key / "00000_a.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
        panels.append(path)
    protocol = {"name": "full", "rule": "one perturbation of the whole image", "split": "val", "images": 2}
    write_results(cfg, tmp_path, tmp_path / "m.pth", 1, protocol, fake_results(), 1.0, {"panels": panels})
    report = (tmp_path / "report.md").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in metrics["attacks"]:
        assert f"| {key} |" in report
    assert "Threat model: untargeted white-box L-inf attacks" in report and "eps 0.03 (7.65/255), 3 steps" in report
    assert "| class | clean | worst case |" in report
    assert "the greedy dataset-level choice: `rppgd++` 2 (of 2 images)." in report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert "miou_per_attack.png" in links and "panels/clean/00000_a.png" in links and "panels/pgd/00000_a.png" in links
    for link in links:
        assert (tmp_path / link).is_file(), link


def test_plots_are_written_without_a_display(tmp_path):
    script = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from util.visualisation.plots import grouped_bars, miou_bars, step_curves
out = Path({str(tmp_path)!r})
miou_bars(["clean", "pgd"], [0.8, 0.4], out / "a.png", "t")
grouped_bars(["clean", "pgd"], {{"m1": [0.8, 0.4], "m2": [0.7, None]}}, out / "b.png", "t")
step_curves({{"pgd": ([0, 1, 2], [0.8, 0.5, 0.4])}}, {{"pgd": (2, 0.4), "sea": (300, 0.2)}}, out / "c.png", "t", 0.8)
import matplotlib; print(matplotlib.get_backend())
"""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().lower() == "agg"
    for name in ("a", "b", "c"):
        picture = cv2.imread(str(tmp_path / f"{name}.png"))
        assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100


def test_plots_in_process(tmp_path):
    assert miou_bars(["clean", "a", "b"], [0.9, 0.5, 0.1], tmp_path / "bars.png", "bars").is_file()
    assert grouped_bars(["x"], {"m": [0.5]}, tmp_path / "g.png", "g").is_file()
    assert step_curves({"a": ([0, 1], [0.5, 0.4])}, {}, tmp_path / "s.png", "s").is_file()
