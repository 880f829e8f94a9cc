"""The generated demo dataset: deterministic, VOC layout, valid labels, every class present."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from util.data.demo_data import generate, make_scene
from util.errors import UserError


def test_layout_and_labels(tiny_data):
    lines = (tiny_data / "list" / "train.txt").read_text().splitlines()
    assert len(lines) == 16 and len((tiny_data / "list" / "val.txt").read_text().splitlines()) == 4
    image, label = lines[0].split()
    assert image.startswith("JPEGImages/") and image.endswith(".jpg") and label.startswith("SegmentationClass/")
    png = Image.open(tiny_data / label)
    assert png.mode == "P" and png.size == (48, 48)
    assert (tiny_data / "class_names.txt").read_text().split() == [
        "background", "disc", "square", "triangle", "ring", "star", "cross"]


def test_scenes_are_deterministic_and_use_every_class():
    seen = set()
    for seed in range(2):
        a = make_scene(64, np.random.default_rng(seed))
        b = make_scene(64, np.random.default_rng(seed))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    rng = np.random.default_rng(0)
    for _ in range(40):
        image, label = make_scene(64, rng)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(7)) | {255}  # all six objects, background and VOC-style void borders


def test_generation_is_reproducible_and_skips_a_complete_dataset(tmp_path):
    a = generate(tmp_path / "a", train=3, val=1, size=32, seed=5)
    b = generate(tmp_path / "b", train=3, val=1, size=32, seed=5)
    for name in ("JPEGImages/train_00002.jpg", "SegmentationClass/val_00000.png", "list/train.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    stamp = (a / "list" / "train.txt").stat().st_mtime_ns
    generate(a, train=3, val=1, size=32, seed=5)
    assert (a / "list" / "train.txt").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other settings"):
        generate(a, train=4, val=1, size=32, seed=5)
