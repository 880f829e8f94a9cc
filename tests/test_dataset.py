"""The list-file dataset: paths, samples, and a clear error naming the file, line or key for bad input."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, write_yaml
from util.data.dataset import SegDataset, read_list
from util.data.loader import ShardSampler
from util.errors import UserError


@pytest.fixture
def data(tmp_path, tiny_data):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def test_samples_are_unit_range_images_and_class_id_labels(data):
    ds = SegDataset(data, "list/val.txt", num_classes=7)
    image, label, index = ds[1]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert label.shape == (48, 48) and label.dtype == torch.int64 and index == 1
    assert set(label.unique().tolist()) <= set(range(7)) | {255}
    palette_png = np.array(Image.open(ds.entries[1].label))  # palette PNG: indices, not colours
    assert np.array_equal(label.numpy(), palette_png)


def test_missing_image_names_the_list_file_and_line(data):
    (data / "list" / "val.txt").write_text("# header\n" + (data / "list" / "val.txt").read_text()
                                           + "JPEGImages/nope.jpg SegmentationClass/val_00000.png\n")
    with pytest.raises(UserError, match=r"val.txt, line 6: image file '.*nope.jpg' does not exist"):
        read_list(data, "list/val.txt")


def test_malformed_line_and_empty_list(data):
    (data / "list" / "bad.txt").write_text("JPEGImages/val_00000.jpg\n")
    with pytest.raises(UserError, match="bad.txt, line 1: expected 'image label'"):
        read_list(data, "list/bad.txt")
    (data / "list" / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="names no images"):
        read_list(data, "list/empty.txt")


def test_unreadable_image_names_the_list_file_and_line(data):
    (data / "JPEGImages" / "val_00002.jpg").write_bytes(b"garbage")
    ds = SegDataset(data, "list/val.txt", num_classes=7)
    with pytest.raises(UserError, match=r"val.txt, line 3: cannot read image"):
        ds[2]


def test_label_value_out_of_range_names_the_file_and_value(data):
    bad = np.zeros((48, 48), np.uint8)
    bad[3, 4] = 9
    Image.fromarray(bad, mode="L").save(data / "SegmentationClass" / "val_00000.png")
    ds = SegDataset(data, "list/val.txt", num_classes=7)
    with pytest.raises(UserError, match=r"val_00000.png' holds value\(s\) \[9\]"):
        ds[0]


def test_colour_label_is_rejected(data):
    Image.new("RGB", (48, 48)).save(data / "SegmentationClass" / "val_00001.png")
    with pytest.raises(UserError, match="mode RGB"):
        SegDataset(data, "list/val.txt", num_classes=7)[1]


def test_missing_data_root_names_the_key_and_the_docs(tmp_path):
    with pytest.raises(UserError, match=r"DATA.data_root is not set.*docs/datasets.md"):
        read_list("", "list/train.txt")
    with pytest.raises(UserError, match=r"DATA.data_root '.*absent' does not exist.*docs/datasets.md"):
        read_list(tmp_path / "absent", "list/train.txt")


def test_shards_cover_each_image_once_and_training_order_is_seeded():
    shards = [list(ShardSampler(10, r, 3, shuffle=False)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]  # contiguous, each image once, no padding
    assert [list(ShardSampler(2, r, 3, shuffle=False)) for r in range(3)] == [[0], [1], []]
    a = ShardSampler(10, 0, 1, shuffle=True, seed=1)
    a.set_epoch(2)
    b = ShardSampler(10, 0, 1, shuffle=True, seed=1)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_training_script_reports_a_bad_label_from_a_worker_without_traceback(data, tmp_path):
    """With the pre-flight check off (DATA.check false), a loader worker meets the bad label."""
    bad = np.full((48, 48), 7, np.uint8)
    for i in range(16):
        Image.fromarray(bad, mode="L").save(data / "SegmentationClass" / f"train_{i:05d}.png")
    cfg = write_yaml(tmp_path / "c.yaml", f"DATA: {{data_root: {data}, workers: 1, check: false}}\n"
                                          f"MODEL: {{layers: 18}}\nEXP: {{root: {tmp_path / 'exp'}}}\n"
                                          "TRAIN: {batch_size: 2}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", str(cfg)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "holds value(s) [7], which are neither a class id (0-6) nor 255" in proc.stderr
    assert "Traceback" not in proc.stderr
