"""Pictures of an evaluation: one panel per image and attack, RP-PGD's region map and its evolution over the steps.

A panel shows the clean image, the adversarial image, the perturbation (amplified, its gain in the title), the
ground truth, the clean and the adversarial prediction (each with the image's mean IoU) and, for RP-PGD, the final
region map (True / Boundary / False / ignored in four named colours), with a legend of the classes present. The
view is the protocol's (`full`: the image; `center`: SEA's crop; `legacy`: the image, its adversarial version pasted
from the first scale's attacked crops). `Panels` collects the clean predictions of the first TEST.vis images and
writes a panel for each attack; each process writes the images of its own shard, so every panel is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Subset

from attack import Attack
from attack.regions import BOUNDARY, FALSE, IGNORED, TRUE
from util.data.datasets import class_names, palette
from util.evaluation.metrics import confusion_matrix, scores
from util.visualisation.tiles import (
    TILE,
    TITLE,
    colourise,
    fit,
    grid,
    legend,
    perturbation,
    rgb,
    save_colour_label,
    save_png,
    stack,
    tile_size,
    titled,
)

# region code -> (name, colour): True green, Boundary orange, False red, ignored grey
REGION_COLOURS: dict[int, tuple[str, tuple[int, int, int]]] = {
    TRUE: ("True", (44, 160, 44)), BOUNDARY: ("Boundary", (255, 127, 14)), FALSE: ("False", (214, 39, 40)),
    IGNORED: ("ignored", (127, 127, 127)),
}


def region_palette() -> np.ndarray:
    """(256,3) uint8: the four region colours at their codes, black elsewhere."""
    palette = np.zeros((256, 3), np.uint8)
    for code, (_, colour) in REGION_COLOURS.items():
        palette[code] = colour
    return palette


@dataclass
class ImageView:
    """One evaluated image as a protocol scores it (evaluate() hands one to on_prediction per image; its tensors
    are on the evaluation's device)."""
    index: int                              # dataset index
    pred: torch.Tensor                      # (h,w) long
    labels: torch.Tensor                    # (h,w) long
    image: torch.Tensor | None = None       # (3,h,w) the clean view
    adv: torch.Tensor | None = None         # (3,h,w) the adversarial view
    regions: torch.Tensor | None = None     # (h,w) uint8, RP-PGD's final region map


def image_miou(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int) -> float:
    return scores(confusion_matrix(pred, labels, num_classes, ignore_index))["mIoU"]


def class_legend(labels: list[torch.Tensor], palette: np.ndarray, names: list[str], width: int) -> np.ndarray:
    """Swatches of the classes present in any of the label maps (ignore excluded)."""
    present = sorted({int(v) for m in labels for v in torch.unique(m).tolist() if int(v) < len(names)})
    return legend([(names[c], palette[c]) for c in present], width, "classes")


def panel(image: torch.Tensor, adv: torch.Tensor | None, labels: torch.Tensor, clean_pred: torch.Tensor,
          adv_pred: torch.Tensor | None, palette: np.ndarray, names: list[str], title: str, eps: float = 0.0,
          regions: torch.Tensor | None = None, ignore_index: int = 255) -> tuple[np.ndarray, dict]:
    """The panel of one image (tensors of one view: image (3,h,w), labels and predictions (h,w)) and the box
    (y0, y1, x0, x1) of each named tile's picture in it (below its title). Without `adv` it is the clean panel:
    image, ground truth and prediction."""
    k = len(names)
    size = tile_size(*labels.shape[-2:])

    def label_tile(m: torch.Tensor, name: str, pal: np.ndarray = palette) -> np.ndarray:
        return titled(fit(colourise(m, pal), size, exact=True), name)

    def image_tile(picture: np.ndarray, name: str) -> np.ndarray:
        return titled(fit(picture, size, exact=False), name)

    miou = image_miou(clean_pred, labels, k, ignore_index)
    top = {"image": image_tile(rgb(image), "image")}
    bottom = {"ground truth": label_tile(labels, "ground truth"),
              "clean prediction": label_tile(clean_pred, f"clean prediction, mIoU {100 * miou:.1f}")}
    maps = [labels, clean_pred]
    attacked = adv is not None and adv_pred is not None
    if attacked:
        delta, gain = perturbation(adv - image, eps)
        top["adversarial image"] = image_tile(rgb(adv), "adversarial image")
        top["perturbation"] = image_tile(delta, f"perturbation x{gain:.1f} (grey: 0)")
        miou = image_miou(adv_pred, labels, k, ignore_index)
        bottom["adversarial prediction"] = label_tile(adv_pred, f"adversarial prediction, mIoU {100 * miou:.1f}")
        maps.append(adv_pred)
        if regions is not None:
            top["regions"] = label_tile(regions, "RP-PGD regions (final)", region_palette())
    picture, boxes = grid([list(top.values()), list(bottom.values())])
    shift = TITLE + 4  # the header above the grid
    where = {name: (y0 + TITLE + shift, y1 + shift, x0, x1)
             for row, tiles in zip(boxes, (top, bottom)) for name, (y0, y1, x0, x1) in zip(tiles, row)}
    parts = [titled(np.full((0, picture.shape[1], 3), 255, np.uint8), title), picture,
             class_legend(maps, palette, names, picture.shape[1])]
    if attacked and regions is not None:
        parts.append(legend([(n, c) for n, c in REGION_COLOURS.values()], picture.shape[1], "RP-PGD regions"))
    return stack(parts), where


def region_strip(maps: list[torch.Tensor], title: str) -> np.ndarray:
    """RP-PGD's region map after each judged iterate (x_0, then every step), side by side with the region legend."""
    size = tile_size(*maps[0].shape[-2:], long_side=min(TILE, 200))
    tiles = [titled(fit(colourise(m, region_palette()), size, exact=True), "x_0" if t == 0 else f"after step {t}")
             for t, m in enumerate(maps)]
    picture, _ = grid([tiles])
    return stack([titled(np.full((0, picture.shape[1], 3), 255, np.uint8), title), picture,
                  legend([(n, c) for n, c in REGION_COLOURS.values()], picture.shape[1], "regions")])


class Panels:
    """Panels of the first `count` dataset images: clean() and attacked(key, eps, regions) give on_prediction
    callbacks for evaluate(); panels go to folder/<key>/<index>_<stem>.png."""

    def __init__(self, folder: Path, count: int, palette: np.ndarray, names: list[str], stems: list[str],
                 ignore_index: int = 255) -> None:
        self.folder, self.count, self.palette, self.names = Path(folder), count, palette, names
        self.stems, self.ignore_index = stems, ignore_index
        self.clean_views: dict[int, ImageView] = {}
        self.written: list[Path] = []

    def path(self, key: str, index: int) -> Path:
        return self.folder / key / f"{index:05d}_{self.stems[index]}.png"

    def clean(self):
        def keep(view: ImageView) -> None:
            if view.index >= self.count:
                return
            view = ImageView(view.index, view.pred.cpu(), view.labels.cpu(), view.image.detach().cpu())
            self.clean_views[view.index] = view
            picture, _ = panel(view.image, None, view.labels, view.pred, None, self.palette, self.names,
                               f"image {view.index} ({self.stems[view.index]}), clean", ignore_index=self.ignore_index)
            self.written.append(save_png(picture, self.path("clean", view.index)))
        return keep

    def attacked(self, key: str, eps: float):
        def draw(view: ImageView) -> None:
            clean = self.clean_views.get(view.index)
            if clean is None or view.adv is None:
                return
            regions = None if view.regions is None else view.regions.cpu()
            picture, _ = panel(clean.image, view.adv.cpu(), clean.labels, clean.pred, view.pred.cpu(), self.palette,
                               self.names, f"image {view.index} ({self.stems[view.index]}), {key} (eps {eps:.4g})",
                               eps, regions, self.ignore_index)
            self.written.append(save_png(picture, self.path(key, view.index)))
        return draw


def image_stems(dataset) -> list[str]:
    """The name of every image for picture files: its file's stem when the dataset reads a list file (through any
    Subset), else its index."""
    if isinstance(dataset, Subset):
        stems = image_stems(dataset.dataset)
        return [stems[i] for i in dataset.indices]
    if hasattr(dataset, "entries"):
        return [e.image.stem for e in dataset.entries]
    return [f"{i:05d}" for i in range(len(dataset))]


def pictures_asked(cfg) -> tuple[bool, bool]:
    """(whether the TEST section asks for any picture, whether for pictures of every image): colour predictions and
    panels need every image predicted in the run, so they rule out reusing an interrupted evaluation's shards."""
    every_image = bool(cfg.TEST.save_pictures or cfg.TEST.vis)
    return every_image or cfg.TEST.vis_regions >= 0, every_image


class Pictures:
    """What an evaluation draws into its result folder, from the TEST section: colour predictions per entry
    (TEST.save_pictures: pictures/<key>/<stem>.png), panels of the first TEST.vis images (panels/) and, for attacks
    that keep region maps, the maps after every step of image TEST.vis_regions (regions/). Each process draws the
    images of its own shard; region strips are drawn by the main process."""

    def __init__(self, cfg, result_dir: Path, dataset) -> None:
        self.result_dir, self.dataset, self.stems = Path(result_dir), dataset, image_stems(dataset)
        self.colours, self.save_colours = palette(cfg.DATA.name), cfg.TEST.save_pictures
        self.strip_index = cfg.TEST.vis_regions
        self.panels = Panels(self.result_dir / "panels", cfg.TEST.vis, self.colours,
                             class_names(cfg.DATA.name, cfg.DATA.classes), self.stems, cfg.DATA.ignore_index)
        self.strips: list[Path] = []

    def on_prediction(self, key: str, attack: Attack | None = None) -> Callable[[ImageView], None] | None:
        """evaluate()'s on_prediction for entry `key` (clean when attack is None), or None when nothing is drawn."""
        calls = []
        if self.save_colours:
            folder = self.result_dir / "pictures" / key
            folder.mkdir(parents=True, exist_ok=True)
            calls.append(lambda v: save_colour_label(v.pred.cpu().numpy(), self.colours,
                                                     folder / f"{self.stems[v.index]}.png"))
        if self.panels.count:
            calls.append(self.panels.clean() if attack is None else self.panels.attacked(key, attack.eps))
        return (lambda view: [call(view) for call in calls]) if calls else None

    def region_strip(self, protocol, key: str, attack: Attack, device: torch.device) -> None:
        """The attack's region map after every step on image TEST.vis_regions (its seed is the evaluation's, so the
        iterates are the evaluation's): regions/<key>_<index>_<stem>.png; nothing for attacks without regions."""
        history, index = attack.region_history(), self.strip_index
        if history is None or not 0 <= index < len(self.dataset):
            return
        image, label, _ = self.dataset[index]
        protocol.predict(image[None].to(device), label[None].to(device), [index], attack, on_iterate=history)
        stem = self.stems[index]
        title = (f"{key} (eps {attack.eps:.4g}, {attack.steps} steps) on image {index} ({stem}): True / Boundary / "
                 "False after each step")
        self.strips.append(save_png(region_strip(history.maps, title),
                                    self.result_dir / "regions" / f"{key}_{index:05d}_{stem}.png"))
