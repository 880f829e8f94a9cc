"""util.data.prepare on fake raw trees in each dataset's real layout: every converted value, the lists, the links,
a second run, and the errors (missing or incomplete source, out-of-range label values) that leave no list."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fake_raw
import numpy as np
import pytest
import torch
from PIL import Image
from published import cityscapes_table

from conftest import ROOT
from model.resnet import DilatedResNet
from util.data.dataset import SegDataset
from util.data.prepare import prepare
from util.errors import UserError


def read(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "L", f"{path} must be a palette-free 8-bit PNG"
        return np.array(png)


def list_lines(dst: Path, name: str) -> list[list[str]]:
    return [line.split() for line in (dst / "list" / name).read_text().splitlines()]


def assert_linked(dst: Path, rel: str, source: Path) -> None:
    assert (dst / rel).is_symlink(), rel
    assert Path(os.readlink(dst / rel)) == source.resolve()


# ---------------------------------------------------------------- Pascal VOC 2012 + SBD


@pytest.fixture
def voc_raw(tmp_path):
    return fake_raw.fake_voc(tmp_path / "raw")


def test_voc_lists_labels_and_links(voc_raw, tmp_path, capsys):
    voc, sbd = voc_raw
    dst = tmp_path / "voc2012"
    report = prepare("voc2012", voc, dst, sbd)
    pair = lambda n: [f"JPEGImages/{n}.jpg", f"SegmentationClassAug/{n}.png"]  # noqa: E731
    assert list_lines(dst, "train.txt") == [pair(n) for n in sorted(fake_raw.VOC_TRAIN)]
    assert list_lines(dst, "val.txt") == [pair(n) for n in sorted(fake_raw.VOC_VAL)]
    # VOC train + SBD train + SBD val minus VOC val: 2008_c (SBD train, VOC val) stays out
    assert list_lines(dst, "train_aug.txt") == [pair(n) for n in ["2007_a", "2007_b", "2009_e", "2010_f"]]
    assert report.lists == {"list/train.txt": 2, "list/val.txt": 2, "list/train_aug.txt": 4}
    names = sorted(set(fake_raw.VOC_TRAIN + fake_raw.VOC_VAL + fake_raw.SBD_TRAIN + fake_raw.SBD_VAL))
    for i, name in enumerate(names):
        label = read(dst / f"SegmentationClassAug/{name}.png")
        if name in fake_raw.VOC_TRAIN + fake_raw.VOC_VAL:  # VOC's own annotation wins, void border included
            assert (label == fake_raw.voc_label(i)).all(), name
            assert_linked(dst, f"JPEGImages/{name}.jpg", voc / "JPEGImages" / f"{name}.jpg")
        else:  # from the SBD .mat file, with the SBD image
            assert (label == fake_raw.sbd_label(i)).all(), name
            assert_linked(dst, f"JPEGImages/{name}.jpg", sbd / "img" / f"{name}.jpg")
    assert set(np.unique(read(dst / "SegmentationClassAug/2007_a.png"))) == set(range(21)) | {255}
    assert not (dst / "JPEGImages/2011_unlabelled.jpg").exists()
    # the tiny splits differ from the official ones: a warning with both numbers, for every list
    err = capsys.readouterr().err
    assert "list/train_aug.txt has 4 images; the official split has 10,582" in err
    assert "list/val.txt has 2 images; the official split has 1,449" in err
    # the training code reads the result
    data = SegDataset(dst, "list/train_aug.txt", 21)
    image, label, _ = data[2]
    assert image.shape == (3, fake_raw.H, 22) and int(label.max()) == 20


def test_voc_without_sbd_writes_train_and_val_and_says_why_there_is_no_train_aug(voc_raw, tmp_path):
    dst = tmp_path / "voc2012"
    report = prepare("voc2012", voc_raw[0], dst)
    assert sorted(p.name for p in (dst / "list").iterdir()) == ["train.txt", "val.txt"]
    assert any("train_aug" in note and "--sbd" in note for note in report.notes)
    # with --sbd, then without: the prepared root holds what the last run made
    prepare("voc2012", voc_raw[0], dst, voc_raw[1])
    assert (dst / "list/train_aug.txt").is_file()
    report = prepare("voc2012", voc_raw[0], dst)
    assert not (dst / "list/train_aug.txt").exists() and "removed list/train_aug.txt of an earlier run" in report.notes


def test_second_run_skips_finished_files_and_gives_the_same_result(voc_raw, tmp_path):
    voc, sbd = voc_raw
    dst = tmp_path / "voc2012"
    first = prepare("voc2012", voc, dst, sbd)
    assert (first.labels_written, first.labels_kept, first.images_linked) == (6, 0, 6)
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in dst.rglob("*") if p.is_file()}
    second = prepare("voc2012", voc, dst, sbd)
    assert (second.labels_written, second.labels_kept, second.images_linked, second.images_kept) == (0, 6, 0, 6)
    for path, (data, mtime) in snapshot.items():
        assert path.read_bytes() == data, path
        if "list" not in path.parts:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    # a source label that changes is converted again
    src = voc / "SegmentationClass" / "2007_a.png"
    os.utime(src, (src.stat().st_atime + 10, src.stat().st_mtime + 10))
    assert prepare("voc2012", voc, dst, sbd).labels_written == 1


def test_copy_mode_copies_the_images(voc_raw, tmp_path):
    dst = tmp_path / "voc2012"
    report = prepare("voc2012", voc_raw[0], dst, copy=True)
    out = dst / "JPEGImages/2007_a.jpg"
    assert report.copied and not out.is_symlink() and out.read_bytes() == (voc_raw[0] / "JPEGImages/2007_a.jpg"
                                                                           ).read_bytes()


def test_voc_label_value_out_of_range_names_the_file_and_writes_no_list(voc_raw, tmp_path):
    voc, sbd = voc_raw
    bad = fake_raw.voc_label(0)
    bad[2, 3] = 22
    fake_raw.write_palette_png(voc / "SegmentationClass/2008_d.png", bad)
    dst = tmp_path / "voc2012"
    with pytest.raises(UserError, match=r"2008_d\.png' holds value\(s\) \[22\] outside the VOC class ids 0-20"):
        prepare("voc2012", voc, dst, sbd)
    assert not (dst / "list").exists()


def test_sbd_file_without_segmentation_names_the_file(voc_raw, tmp_path):
    voc, sbd = voc_raw
    import scipy.io
    scipy.io.savemat(str(sbd / "cls/2009_e.mat"), {"GTinst": {"Segmentation": np.zeros((6, 22), np.uint8)}})
    with pytest.raises(UserError, match=r"2009_e\.mat' has no 2-D GTcls\.Segmentation"):
        prepare("voc2012", voc, tmp_path / "voc2012", sbd)
    assert not (tmp_path / "voc2012" / "list").exists()


def test_label_and_image_of_different_sizes(voc_raw, tmp_path):
    voc, sbd = voc_raw
    fake_raw.write_sbd_mat(sbd / "cls/2010_f.mat", fake_raw.sbd_label(0, h=fake_raw.H + 1))
    with pytest.raises(UserError, match=r"2010_f\.mat' is 22x7 \(WxH\) but its image '.*2010_f\.jpg' is 22x6"):
        prepare("voc2012", voc, tmp_path / "voc2012", sbd)


@pytest.mark.parametrize("missing, message", [
    ("VOCdevkit/VOC2012/JPEGImages/2007_b.jpg", r"train\.txt names '2007_b', but its image: '.*2007_b\.jpg'"),
    ("VOCdevkit/VOC2012/SegmentationClass/2008_c.png", r"val\.txt names '2008_c', but its label: '.*2008_c\.png'"),
    ("benchmark_RELEASE/dataset/cls/2010_f.mat", r"val\.txt names '2010_f', but its label: '.*2010_f\.mat'"),
    ("VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", r"VOCdevkit/VOC2012: split file '.*val\.txt' does not"),
    ("benchmark_RELEASE/dataset/img", r"benchmark_RELEASE/dataset: folder '.*img' does not exist"),
])
def test_voc_incomplete_source_stops_before_writing_anything(voc_raw, tmp_path, missing, message):
    path = tmp_path / "raw" / missing
    if path.is_dir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    else:
        path.unlink()
    dst = tmp_path / "voc2012"
    with pytest.raises(UserError, match=message):
        prepare("voc2012", voc_raw[0], dst, voc_raw[1])
    assert not dst.exists(), "the structure is checked before anything is written"


def test_missing_source_and_destination_inside_source(tmp_path, voc_raw):
    with pytest.raises(UserError, match=r"--src must be VOCdevkit/VOC2012: folder '.*nowhere' does not exist"):
        prepare("voc2012", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(UserError, match=r"--src '.*raw/VOCdevkit' has no JPEGImages/ but '.*VOCdevkit/VOC2012' has"):
        prepare("voc2012", tmp_path / "raw/VOCdevkit", tmp_path / "out")
    with pytest.raises(UserError, match=r"--sbd '.*raw' has no cls/ but '.*raw/benchmark_RELEASE/dataset' has"):
        prepare("voc2012", voc_raw[0], tmp_path / "out", tmp_path / "raw")
    with pytest.raises(UserError, match="lies inside --src"):
        prepare("voc2012", voc_raw[0], voc_raw[0] / "prepared")
    with pytest.raises(UserError, match="--sbd belongs to voc2012"):
        prepare("ade20k", tmp_path / "ade", tmp_path / "out", sbd=voc_raw[1])


def test_command_line_error_is_one_line_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "util.data.prepare", "cityscapes", "--src", str(tmp_path / "raw"),
                           "--dst", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: --src must hold Cityscapes' leftImg8bit/ and gtFine/ folders: folder")


def test_command_line_prepares_with_workers(tmp_path):
    src = fake_raw.fake_ade20k(tmp_path / "raw")
    proc = subprocess.run([sys.executable, "-m", "util.data.prepare", "ade20k", "--src", str(src), "--dst",
                           str(tmp_path / "ade20k"), "--workers", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 labels written" in proc.stdout and "list/training.txt (2)" in proc.stdout
    assert "list/validation.txt has 1 images; the official split has 2,000" in proc.stderr
    for k, name in enumerate(fake_raw.ADE20K["training"]):
        assert (read(tmp_path / f"ade20k/annotations/training/{name}.png") ==
                reduce_zero_label(fake_raw.columns(fake_raw.ADE20K_VALUES, k))).all()


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_every_label_id_becomes_its_official_train_id(tmp_path):
    src = fake_raw.fake_cityscapes(tmp_path / "raw")
    dst = tmp_path / "cityscapes"
    prepare("cityscapes", src, dst)
    expected = np.full(256, 255, np.uint8)  # from the published table, not the dataset modules
    for row in cityscapes_table():
        if row["id"] >= 0 and 0 <= row["trainId"] < 255:
            expected[row["id"]] = row["trainId"]
    k = 0
    for split in ("train", "val"):
        for city, stems in fake_raw.CITYSCAPES[split].items():
            for stem in stems:
                label = read(dst / f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png")
                assert (label == expected[fake_raw.columns(fake_raw.CITYSCAPES_IDS, k)]).all(), stem
                assert_linked(dst, f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                              src / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
                k += 1
    assert set(np.unique(read(dst / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"))) == \
        set(range(19)) | {255}
    assert list_lines(dst, "train.txt") == [
        [f"leftImg8bit/train/aachen/{s}_leftImg8bit.png", f"gtFine/train/aachen/{s}_gtFine_labelTrainIds.png"]
        for s in fake_raw.CITYSCAPES["train"]["aachen"]]
    assert list_lines(dst, "val.txt") == [["leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
                                           "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"]]
    # test: images only; the gtFine/test files of the download are not converted
    assert list_lines(dst, "test.txt") == [[f"leftImg8bit/test/berlin/{s}_leftImg8bit.png"]
                                           for s in fake_raw.CITYSCAPES["test"]["berlin"]]
    assert not (dst / "gtFine/test").exists()


def test_cityscapes_workers_give_the_same_labels(tmp_path):
    src = fake_raw.fake_cityscapes(tmp_path / "raw")
    prepare("cityscapes", src, tmp_path / "one", workers=1)
    prepare("cityscapes", src, tmp_path / "two", workers=2)
    one = sorted((tmp_path / "one").rglob("*.png"))
    assert len(one) == 8  # 3 labels (train and val) and 5 linked images
    for path in one:
        twin = tmp_path / "two" / path.relative_to(tmp_path / "one")
        assert twin.read_bytes() == path.read_bytes()
    assert (tmp_path / "one/list/train.txt").read_text() == (tmp_path / "two/list/train.txt").read_text()


def test_cityscapes_label_without_image_and_unknown_id(tmp_path):
    src = fake_raw.fake_cityscapes(tmp_path / "raw")
    image = src / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    image.unlink()
    with pytest.raises(UserError, match=r"frankfurt_000000_000294_gtFine_labelIds\.png' has no image: '.*"
                                        r"frankfurt_000000_000294_leftImg8bit\.png' does not exist"):
        prepare("cityscapes", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    fake_raw.write_image(image, fake_raw.H, 34, 0)
    bad = fake_raw.columns(fake_raw.CITYSCAPES_IDS, 0)
    bad[0, 0] = 34
    fake_raw.write_grey_png(src / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png", bad)
    with pytest.raises(UserError, match=r"aachen_000001_000019_gtFine_labelIds\.png' holds value\(s\) \[34\] "
                                        r"outside the Cityscapes label ids 0-33"):
        prepare("cityscapes", src, tmp_path / "out", workers=2)  # raised in a worker, re-raised here
    assert not (tmp_path / "out/list").exists()


def test_cityscapes_image_without_label(tmp_path):
    src = fake_raw.fake_cityscapes(tmp_path / "raw")
    (src / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match=r"aachen_000001_000019_leftImg8bit\.png' has no label"):
        prepare("cityscapes", src, tmp_path / "out")


# ---------------------------------------------------------------- ADE20k


def reduce_zero_label(values: np.ndarray) -> np.ndarray:
    """0 -> 255, k -> k-1, written out element by element."""
    return np.array([[255 if v == 0 else v - 1 for v in row] for row in values.tolist()], np.uint8)


def test_ade20k_reduce_zero_label_and_lists(tmp_path):
    src = fake_raw.fake_ade20k(tmp_path / "raw")
    dst = tmp_path / "ade20k"
    report = prepare("ade20k", src, dst)
    k = 0
    for split, names in fake_raw.ADE20K.items():
        assert list_lines(dst, f"{split}.txt") == [[f"images/{split}/{n}.jpg", f"annotations/{split}/{n}.png"]
                                                   for n in names]
        for name in names:
            label = read(dst / f"annotations/{split}/{name}.png")
            assert (label == reduce_zero_label(fake_raw.columns(fake_raw.ADE20K_VALUES, k))).all(), name
            assert_linked(dst, f"images/{split}/{name}.jpg", src / f"images/{split}/{name}.jpg")
            k += 1
    assert set(np.unique(read(dst / "annotations/training/ADE_train_00000001.png"))) == set(range(150)) | {255}
    assert report.lists == {"list/training.txt": 2, "list/validation.txt": 1}
    assert any("list/training.txt has 2 images; the official split has 20,210" in w for w in report.warnings)


def test_ade20k_errors(tmp_path):
    src = fake_raw.fake_ade20k(tmp_path / "raw")
    bad = fake_raw.columns(fake_raw.ADE20K_VALUES, 0)
    bad[1, 5] = 151
    fake_raw.write_grey_png(src / "annotations/validation/ADE_val_00000001.png", bad)
    with pytest.raises(UserError, match=r"ADE_val_00000001\.png' holds value\(s\) \[151\] outside the ADE20k"):
        prepare("ade20k", src, tmp_path / "out")
    assert not (tmp_path / "out/list").exists()
    (src / "images/training/ADE_train_00000002.jpg").unlink()
    with pytest.raises(UserError, match=r"ADE_train_00000002\.png' has no image"):
        prepare("ade20k", src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------- the launcher on prepared data


@pytest.mark.slow
def test_voc_launcher_trains_on_the_prepared_tree(tmp_path):
    """`sh tool_train/voc2012/psp_train_sat.sh` with DATA.data_root set runs on the prepared fake tree: the
    release config (PSPNet-ResNet50 from an ImageNet-style file, RP-PGD++ AT, robust validation) with CPU-sized
    overrides only (batch 4 on small crops): one iteration."""
    voc, sbd = fake_raw.fake_voc(tmp_path / "raw", h=40, repeat=3)
    proc = subprocess.run([sys.executable, "-m", "util.data.prepare", "voc2012", "--src", str(voc), "--sbd", str(sbd),
                           "--dst", str(tmp_path / "voc2012"), "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # a stand-in for initmodel/resnet50-0676ba61.pth (no download here): torchvision's layout, plain stem, classifier
    backbone = DilatedResNet(50, deep_stem=False).state_dict()
    torch.save({**backbone, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)},
               tmp_path / "resnet50-0676ba61.pth")
    env = {**os.environ, "PYTHON": sys.executable, "NPROC": "1"}
    proc = subprocess.run(
        ["sh", str(ROOT / "tool_train/voc2012/psp_train_sat.sh"), "DATA.data_root", str(tmp_path / "voc2012"),
         "EXP.root", str(tmp_path / "exp"), "MODEL.pretrained", str(tmp_path / "resnet50-0676ba61.pth"),
         "TRAIN.batch_size", "4", "TRAIN.epochs", "1",
         "TRAIN.crop_size", "[65, 65]", "TEST.base_size", "64", "TEST.crop_size", "[65, 65]",
         "ADV_TRAIN.val_images", "1", "DATA.workers", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "exp/voc2012/voc2012_pspnet50_sat"
    log = (run / "train.log").read_text()
    assert "4 training images, 2 validation images" in log  # list/train_aug.txt and list/val.txt
    assert "epoch 1 iter 1/1" in log and "adversarial" in log
    assert "robust validation" in log and (run / "model/last.pth").is_file()
    # and its test twin evaluates the checkpoint on the prepared val list, with VOC's class names in the report
    proc = subprocess.run(
        ["sh", str(ROOT / "tool_test/voc2012/psp_test_sat.sh"), "DATA.data_root", str(tmp_path / "voc2012"),
         "EXP.root", str(tmp_path / "exp"), "MODEL.pretrained", "", "TEST.base_size", "64", "TEST.crop_size",
         "[65, 65]", "ATTACK.attacks", "[{name: pgd, eps: 0.03, alpha: 0.01, steps: 2}]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (run / "result/val_last_full/report.md").read_text()
    assert "2 images of the val split" in report and "| aeroplane |" in report and "| tvmonitor |" in report
