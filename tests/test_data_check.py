"""The pre-flight data check (util/data/check.py): a brute-force count of its class pixels, its cache and what
invalidates it, and the first bad line of a list reported with the count of the others."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from util.data.check import cache_path, check_data, check_list
from util.data.class_counts import class_pixel_counts
from util.errors import UserError


@pytest.fixture
def data(tmp_path, tiny_data):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def brute_force_counts(root, list_file, classes=7):
    expected = np.zeros(classes, dtype=np.int64)
    for line in (root / list_file).read_text().split("\n"):
        if line.strip():
            label = np.array(Image.open(root / line.split()[1]))
            for c in range(classes):
                expected[c] += int((label == c).sum())
    return expected.tolist()


def test_counts_match_a_brute_force_count_and_are_cached(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data))
    expected = brute_force_counts(data, "list/train.txt")
    first = check_list(cfg, "list/train.txt")
    assert first.counts == expected and not first.cached and first.samples == 16
    assert class_pixel_counts(cfg) == expected

    cache = cache_path(cfg, (data / "list/train.txt").resolve())
    assert cache.parent == data.parent / "exp" / "demo" / "data_check"  # under EXP.root, not in the dataset
    stored = json.loads(cache.read_text())
    stored["counts"] = [1] * 7
    cache.write_text(json.dumps(stored))
    again = check_list(cfg, "list/train.txt")
    assert again.cached and again.counts == [1] * 7, "a valid cache is read, not recomputed"


@pytest.mark.parametrize("change", ["list", "file", "classes", "ignore_index"])
def test_a_change_to_the_list_a_file_or_a_setting_checks_again(tiny_cfg, data, change):
    cfg = tiny_cfg("DATA.data_root", str(data))
    check_list(cfg, "list/train.txt")
    if change == "list":
        lines = (data / "list/train.txt").read_text().splitlines()
        (data / "list/train.txt").write_text("\n".join(lines[:-1]) + "\n")
    elif change == "file":
        label = data / "SegmentationClass" / "train_00005.png"
        os.utime(label, ns=(1, 1))
    elif change == "classes":
        cfg = tiny_cfg("DATA.data_root", str(data), "DATA.classes", "8", "DATA.check", "false")  # no class table
    else:  # the labels' 255 pixels are no longer ignored: checked again, they are refused
        cfg = tiny_cfg("DATA.data_root", str(data), "DATA.ignore_index", "254")
        with pytest.raises(UserError, match="neither a class id .* nor DATA.ignore_index 254"):
            check_list(cfg, "list/train.txt")
        return
    result = check_list(cfg, "list/train.txt")
    assert not result.cached
    assert result.counts == brute_force_counts(data, "list/train.txt", cfg.DATA.classes)


def break_lines(data):
    """Lines 3 and 14 of the training list: a label of another size, a value above the classes."""
    Image.fromarray(np.zeros((40, 48), np.uint8), mode="L").save(data / "SegmentationClass" / "train_00002.png")
    Image.fromarray(np.full((48, 48), 9, np.uint8), mode="L").save(data / "SegmentationClass" / "train_00013.png")


def test_the_first_bad_line_is_named_with_the_count_of_the_others_and_nothing_is_cached(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data), "DATA.workers", "2")
    break_lines(data)
    with pytest.raises(UserError) as info:
        check_list(cfg, "list/train.txt")
    message = str(info.value)
    assert message.startswith(f"{data / 'list/train.txt'}, line 3: image '")
    assert "is 48x48 but label" in message and "is 48x40 (width x height)" in message
    assert message.endswith("(and 1 further bad line(s) in this list)")
    assert not cache_path(cfg, (data / "list/train.txt").resolve()).exists()


def test_label_values_are_checked_against_the_classes(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data), "DATA.classes", "5", "DATA.check", "false")  # check_list runs anyway
    with pytest.raises(UserError, match=r"line \d+: label .* holds value\(s\) \[(5, 6|5|6)\], which are neither a "
                                        r"class id \(0-4, DATA.classes 5\) nor DATA.ignore_index 255"):
        check_list(cfg, "list/train.txt")


def test_a_named_dataset_needs_its_class_count(tiny_cfg, data):
    with pytest.raises(UserError, match="DATA.classes 6 disagrees with dataset demo's class table of 7 classes"):
        tiny_cfg("DATA.data_root", str(data), "DATA.classes", "6")
    assert tiny_cfg("DATA.data_root", str(data), "DATA.classes", "6", "DATA.check", "false").DATA.classes == 6


def test_missing_files_are_counted(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data))
    for name in ("train_00004.jpg", "train_00007.jpg"):
        (data / "JPEGImages" / name).unlink()
    with pytest.raises(UserError, match=r"train.txt, line 5: image file .*train_00004.jpg' does not exist \(and 1 "
                                        r"further missing file\(s\) in this list\)"):
        check_list(cfg, "list/train.txt")


def test_data_check_false_skips_the_check(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data), "DATA.check", "false")
    break_lines(data)
    assert check_data(cfg, ["list/train.txt"]) == []
    assert not (data.parent / "exp").exists()


def test_the_caches_are_written_only_once_every_list_passed(tiny_cfg, data):
    cfg = tiny_cfg("DATA.data_root", str(data))
    truncate = data / "JPEGImages" / "val_00003.jpg"
    truncate.write_bytes(truncate.read_bytes()[:100])
    with pytest.raises(UserError, match="val.txt, line 4: cannot read image"):
        check_data(cfg, ["list/train.txt", "list/val.txt"])
    assert not (data.parent / "exp").exists(), "the training list passed, but its cache waits for the others"
