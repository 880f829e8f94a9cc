"""A generated segmentation dataset for first runs and tests: procedural scenes in Pascal VOC layout.

Each scene has a textured background and 1-4 objects of six classes that differ in shape, colour and
texture, placed at random scales and overlapping (later objects occlude earlier ones). Like VOC, object
outlines carry a one-pixel void border (255). The output is deterministic for a given seed:

    <root>/JPEGImages/<name>.jpg            RGB images
    <root>/SegmentationClass/<name>.png     palette PNG labels (0 background, 1-6 objects, 255 void)
    <root>/list/{train,val}.txt             "JPEGImages/<name>.jpg SegmentationClass/<name>.png"
    <root>/class_names.txt                  one class name per line
    <root>/.complete                        written last: the dataset is whole

Command line: python -m util.data.demo_data --dst data/demo [--train 800 --val 100 --size 96 --seed 0]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from util.data.label_png import voc_palette
from util.errors import UserError

DEMO_CLASSES = ("background", "disc", "square", "triangle", "ring", "star", "cross")

# Per object class: base colour (RGB) and texture. Colours are jittered per object.
OBJECTS = {
    1: ((220, 50, 40), "plain"),  # disc
    2: ((40, 90, 220), "stripes"),  # square
    3: ((230, 200, 40), "dots"),  # triangle
    4: ((40, 190, 70), "plain"),  # ring
    5: ((200, 60, 210), "checker"),  # star
    6: ((40, 200, 210), "noise"),  # cross
}
COMPLETE = ".complete"


def _shape_mask(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) uint8 mask of the class's shape, randomly rotated where it matters."""
    m = np.zeros((size, size), np.uint8)
    c, r = size / 2, size / 2 - 1
    angle = rng.uniform(0, 2 * np.pi)
    if cls == 1:  # disc
        cv2.circle(m, (int(c), int(c)), int(r), 1, -1)
    elif cls == 2:  # square
        pts = [(c + r * 0.95 * np.cos(angle + k * np.pi / 2), c + r * 0.95 * np.sin(angle + k * np.pi / 2))
               for k in range(4)]
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif cls == 3:  # triangle
        pts = [(c + r * np.cos(angle + k * 2 * np.pi / 3), c + r * np.sin(angle + k * 2 * np.pi / 3))
               for k in range(3)]
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif cls == 4:  # ring
        cv2.circle(m, (int(c), int(c)), int(r), 1, -1)
        cv2.circle(m, (int(c), int(c)), max(int(r * 0.5), 1), 0, -1)
    elif cls == 5:  # five-pointed star
        pts = [(c + (r if k % 2 == 0 else r * 0.45) * np.cos(angle + k * np.pi / 5),
                c + (r if k % 2 == 0 else r * 0.45) * np.sin(angle + k * np.pi / 5)) for k in range(10)]
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif cls == 6:  # cross
        w = max(int(r * 0.35), 1)
        cv2.rectangle(m, (int(c - r), int(c - w)), (int(c + r), int(c + w)), 1, -1)
        cv2.rectangle(m, (int(c - w), int(c - r)), (int(c + w), int(c + r)), 1, -1)
        rot = cv2.getRotationMatrix2D((c, c), np.degrees(angle), 1.0)
        m = cv2.warpAffine(m, rot, (size, size), flags=cv2.INTER_NEAREST)
    return m


def _texture(kind: str, colour: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float RGB patch of the colour with the class's texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = np.zeros((h, w), np.float32)
    if kind == "stripes":
        period, theta = rng.uniform(4, 8), rng.uniform(0, np.pi)
        shade = 40 * np.sign(np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period))
    elif kind == "dots":
        period = rng.uniform(5, 8)
        shade = -70 * ((np.mod(xx, period) < period / 2.5) & (np.mod(yy, period) < period / 2.5))
    elif kind == "checker":
        period = rng.uniform(4, 7)
        shade = 45 * (((xx // period) + (yy // period)) % 2 * 2 - 1)
    elif kind == "noise":
        shade = rng.normal(0, 30, (h, w)).astype(np.float32)
    return colour[None, None, :] + shade[..., None]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) float RGB background: a muted colour with smooth blotches and faint lines."""
    base = rng.uniform(60, 190, 3).astype(np.float32)
    base = base.mean() + (base - base.mean()) * 0.4  # low saturation, so objects stand out by colour
    coarse = rng.normal(0, 30, (6, 6, 1)) + rng.normal(0, 14, (6, 6, 3))  # mostly brightness, some hue
    coarse = coarse.astype(np.float32)
    img = base + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(0, 4)):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        tone = float(rng.uniform(-50, 50))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), tuple(float(v) + tone for v in base), 1)
    return img


def make_scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (image (size, size, 3) uint8 RGB, label (size, size) uint8 with 0-6 and 255)."""
    img = _background(size, rng)
    label = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 5)):
        cls = int(rng.integers(1, 7))
        obj = int(rng.uniform(0.22, 0.55) * size)
        mask = _shape_mask(cls, obj, rng).astype(bool)
        y0, x0 = (int(v) for v in rng.integers(-obj // 4, size - obj + obj // 4, 2))
        ys, xs = slice(max(y0, 0), min(y0 + obj, size)), slice(max(x0, 0), min(x0 + obj, size))
        mask = mask[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        colour = np.array(OBJECTS[cls][0], np.float32) + rng.uniform(-25, 25, 3).astype(np.float32)
        patch = _texture(OBJECTS[cls][1], colour, *mask.shape, rng)
        img[ys, xs][mask] = patch[mask]
        label[ys, xs][mask] = cls
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    # VOC-style void border: one pixel where a region meets a different one (below or to the right).
    edge = np.zeros_like(label, dtype=bool)
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    label[edge] = 255
    return np.clip(img, 0, 255).astype(np.uint8), label


def is_complete(root: str | Path) -> bool:
    return (Path(root) / COMPLETE).is_file()


def generate(root: str | Path, train: int = 800, val: int = 100, size: int = 96, seed: int = 0) -> Path:
    """Write the demo dataset to `root` (skipped when a complete one with the same settings is there)."""
    root = Path(root)
    settings = {"train": train, "val": val, "size": size, "seed": seed}
    if is_complete(root):
        if json.loads((root / COMPLETE).read_text()) == settings:
            return root
        raise UserError(f"{root} holds a demo dataset made with other settings; remove it first")
    if root.exists():
        shutil.rmtree(root)  # an interrupted earlier run: start again
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "list").mkdir()
    pal = voc_palette(256).reshape(-1).tolist()
    rng = np.random.default_rng(seed)
    splits = {"train": train, "val": val}
    lines: dict[str, list[str]] = {s: [] for s in splits}
    with tqdm(total=train + val, desc=f"generating demo data in {root}", unit="img") as bar:
        for split, count in splits.items():
            for i in range(count):
                name = f"{split}_{i:05d}"
                img, label = make_scene(size, rng)
                cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), img[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
                png = Image.fromarray(label, mode="P")
                png.putpalette(pal)
                png.save(root / "SegmentationClass" / f"{name}.png")
                lines[split].append(f"JPEGImages/{name}.jpg SegmentationClass/{name}.png")
                bar.update()
    for split, entries in lines.items():
        (root / "list" / f"{split}.txt").write_text("\n".join(entries) + "\n")
    (root / "class_names.txt").write_text("\n".join(DEMO_CLASSES) + "\n")
    (root / COMPLETE).write_text(json.dumps(settings))
    return root


def ensure_demo_data(cfg, logger) -> None:
    """Generate the demo dataset at DATA.data_root on first use (call on one process)."""
    if is_complete(cfg.DATA.data_root):
        return
    if not cfg.DATA.data_root:
        raise UserError("DATA.data_root is not set: the demo dataset needs a folder to be generated in")
    logger.info(f"generating the demo dataset in {cfg.DATA.data_root} (once)")
    generate(cfg.DATA.data_root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dst", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    print(generate(a.dst, a.train, a.val, a.size, a.seed))


if __name__ == "__main__":
    main()
