"""The dataset modules' class tables against the published ones: Cityscapes, ADE20k's objectInfo150, VOC's devkit."""
from __future__ import annotations

import numpy as np
from published import VOC_DEVKIT_CLASSES, ade20k_table, cityscapes_table

from util.data.datasets import class_names, palette
from util.data.datasets.ade20k import ADE20K_CLASSES, ADE20K_COLOURS, ADE20K_OFFICIAL_NAMES
from util.data.datasets.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_LABELS, cityscapes_train_ids
from util.data.datasets.voc2012 import VOC_CLASSES
from util.data.demo_data import DEMO_CLASSES


def test_cityscapes_label_table_is_the_official_one():
    published = cityscapes_table()
    assert len(published) == len(CITYSCAPES_LABELS) == 35
    for row, lab in zip(published, CITYSCAPES_LABELS):
        assert (lab.name, lab.id, lab.train_id, lab.category, lab.category_id, lab.has_instances,
                lab.ignore_in_eval, lab.color) == tuple(row.values()), row["name"]


def test_cityscapes_train_ids_and_names_follow_the_table():
    published = cityscapes_table()
    table = cityscapes_train_ids()
    for row in published:
        if row["id"] >= 0:
            assert table[row["id"]] == (row["trainId"] if 0 <= row["trainId"] < 255 else 255), row["name"]
    assert (table[34:] == 255).all()
    trained = sorted((r["trainId"], r["name"]) for r in published if 0 <= r["trainId"] < 255)
    assert [t for t, _ in trained] == list(range(19))
    assert CITYSCAPES_CLASSES == tuple(name for _, name in trained)
    assert CITYSCAPES_CLASSES[:3] == ("road", "sidewalk", "building") and CITYSCAPES_CLASSES[-1] == "bicycle"
    # the evaluated classes are exactly the trained ones
    assert {r["name"] for r in published if not r["ignoreInEval"]} == set(CITYSCAPES_CLASSES)


def test_ade20k_classes_are_objectinfo150_in_index_order():
    published = ade20k_table()
    assert [i for i, _ in published] == list(range(1, 151))
    assert ADE20K_OFFICIAL_NAMES == tuple(name for _, name in published)
    assert ADE20K_CLASSES == tuple(name.split(",")[0] for _, name in published)
    assert (ADE20K_CLASSES[0], ADE20K_CLASSES[12], ADE20K_CLASSES[149]) == ("wall", "person", "flag")
    assert len(ADE20K_COLOURS) == 150


def test_voc_classes_are_the_devkit_ones_after_background():
    assert VOC_CLASSES == ("background",) + VOC_DEVKIT_CLASSES
    assert len(VOC_CLASSES) == 21


def test_class_names_per_dataset():
    assert class_names("voc2012", 21) == list(VOC_CLASSES)
    assert class_names("cityscapes", 19) == list(CITYSCAPES_CLASSES)
    assert class_names("ade20k", 150) == list(ADE20K_CLASSES)
    assert class_names("demo", 7) == list(DEMO_CLASSES)
    # another dataset, or a table that does not fit DATA.classes: numbered names
    assert class_names("mine", 3) == ["class_0", "class_1", "class_2"]
    assert class_names("voc2012", 5) == [f"class_{i}" for i in range(5)]


def test_palettes():
    voc = palette("voc2012")
    assert voc.shape == (256, 3) and voc.dtype == np.uint8
    assert tuple(voc[1]) == (128, 0, 0) and tuple(voc[15]) == (192, 128, 128) and tuple(voc[255]) == (224, 224, 192)
    assert (palette("demo") == voc).all()
    city = palette("cityscapes")
    for row in cityscapes_table():
        if 0 <= row["trainId"] < 255:
            assert tuple(city[row["trainId"]]) == row["color"], row["name"]
    assert tuple(city[255]) == (0, 0, 0)
    ade = palette("ade20k")
    assert [tuple(c) for c in ade[:150]] == list(ADE20K_COLOURS) and tuple(ade[255]) == (0, 0, 0)
    assert tuple(ade[0]) == (120, 120, 120) and tuple(ade[2]) == (6, 230, 230)  # wall, sky


def test_shipped_configs_use_their_datasets_published_settings():
    """Every shipped config trains and evaluates on its dataset's lists with the crop and long side of the published
    recipes, as the dataset's module (util/data/datasets/) records them."""
    from conftest import ROOT
    from util.config import load_config
    from util.data.datasets import DATASETS
    checked = 0
    for path in sorted(ROOT.glob("config/*/*.yaml")):
        if path.parent.name == "_base_":
            continue
        cfg = load_config(path)
        info = DATASETS.get(cfg.DATA.name)
        folder = {"ade20k151": "ade20k"}.get(info.name, info.name)  # ADE20k with its 151 labels (SEA's)
        assert path.parent.name == folder, f"{path}: a {info.name} config outside config/{folder}/"
        assert (cfg.DATA.train_list, cfg.DATA.val_list) == (info.lists["train"], info.lists["val"]), path
        assert cfg.TRAIN.crop_size == [info.crop_size] * 2 and cfg.TEST.base_size == info.base_size, path
        checked += 1
    assert checked >= 13
