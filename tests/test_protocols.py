"""Evaluation protocols (METHOD.md §7), per-image seeding, the worst case summary and attacks from configs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinySeg

from attack import build_attack
from attack.protocols import Protocol, center_crop, image_seed
from attack.robust import attack_entries, attack_from_config, worst_case_summary
from util.config import load_config
from util.errors import UserError
from util.inference import Inference, cut_crops, pad_labels, slide_logits, windows
from util.metrics import SegMetric

MEAN = (0.485, 0.456, 0.406)


def settings(mode="slide", crop=(16, 16), stride_rate=0.5, base_size=0):
    return {"mode": mode, "crop": crop, "stride_rate": stride_rate, "mean": MEAN, "base_size": base_size}


def sample(n=2, h=40, w=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, (n, h, w), generator=g)
    y[:, :3] = 255
    return torch.rand(n, 3, h, w, generator=g), y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinySeg()
    with torch.no_grad():
        m.train()
        m(torch.rand(4, 3, 32, 32))
    return m.eval()


def ce(logits, y):
    return F.cross_entropy(logits, y, ignore_index=255).item()


@pytest.mark.parametrize("name", ["pgd", "rppgd++"])
def test_full_optimises_one_image_through_overlapping_windows(model, name):
    x, y = sample()
    s = settings()
    assert len(windows(40, 36, s["crop"], s["stride_rate"])) == 16  # 4 x 4 overlapping 16-pixel crops
    protocol = Protocol("full", model, s)
    atk = build_attack(name, protocol.target, eps=0.03, alpha=0.01, steps=3, random_start=False)
    adv = atk(x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.03 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    moved = (adv - x).abs().amax(1) > 0
    assert moved.float().mean() > 0.9, "the gradient through the stitched logits reaches the whole image"
    with torch.no_grad():
        clean_logits = slide_logits(model, x, s["crop"], s["stride_rate"], MEAN)
        assert torch.allclose(protocol.target(x), clean_logits)
        logits, labels = protocol.predict(atk)(x, y, [0, 1])
    assert torch.equal(labels, y) and logits.shape == (2, 7, 40, 36)
    if name == "pgd":
        assert ce(logits, y) > ce(clean_logits, y), "the sliding-window loss went up"
    else:  # RP-PGD reads the features stitched from the crops
        assert all(t["intra"] > 0 for t in atk.run(x, y).terms)


def test_stitched_features_tile_the_image(model):
    x, _ = sample(1, 32, 32)
    out = Inference(model, **settings(crop=(16, 16), stride_rate=1.0))(x, return_dict=True)
    crops, _ = cut_crops(x, (16, 16), 1.0, MEAN)
    with torch.no_grad():
        feats = model(crops, return_dict=True)["feat"]  # (4,C,4,4): crops (0,0), (0,16), (16,0), (16,16)
    top = torch.cat([feats[0], feats[1]], dim=-1)
    bottom = torch.cat([feats[2], feats[3]], dim=-1)
    assert torch.allclose(out["feat"][0], torch.cat([top, bottom], dim=-2), atol=1e-6)
    assert out["out"].shape == (1, 7, 32, 32)


class Spy:
    """Stands in for an attack: records its inputs and returns them shifted by a constant."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, images, labels, seeds=None):
        self.calls.append((images.clone(), labels.clone(), list(seeds)))
        return (images + 0.01).clamp(0, 1)


def test_legacy_attacks_each_crop_on_its_own(model):
    x, y = sample(2, 40, 36)
    s = settings(crop=(16, 16), stride_rate=2 / 3)
    protocol = Protocol("legacy", model, s, seed=5)
    spy = Spy(model)
    logits, labels = protocol.predict(spy)(x, y, [3, 8])
    assert len(spy.calls) == 1
    images, crop_labels, seeds = spy.calls[0]
    boxes = windows(40, 36, (16, 16), 2 / 3)
    assert images.shape == (2 * len(boxes), 3, 16, 16), "every crop of every image, crop-sized"
    crops, _ = cut_crops(x, (16, 16), 2 / 3, MEAN)
    assert torch.equal(images, crops)
    padded = pad_labels(y, (16, 16), 255)
    for b, (y0, y1, x0, x1) in enumerate(boxes):
        for i, index in enumerate((3, 8)):
            assert torch.equal(crop_labels[b * 2 + i], padded[i, y0:y1, x0:x1])
            assert seeds[b * 2 + i] == image_seed(5, index, b)
    assert len(set(seeds)) == len(seeds)
    assert torch.equal(labels, y) and logits.shape == (2, 7, 40, 36)
    with torch.no_grad():  # the prediction is the sliding-window average over the attacked crops
        expected = slide_logits(lambda c: model((c + 0.01).clamp(0, 1)), x, (16, 16), 2 / 3, MEAN)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_legacy_crops_match_attacking_each_crop_alone(model):
    x, y = sample(1, 24, 24)
    s = settings(crop=(16, 16), stride_rate=0.5)
    protocol = Protocol("legacy", model, s, seed=1)
    atk = build_attack("pgd", model, eps=0.03, alpha=0.01, steps=2)
    recorded = []
    real = atk.run

    def record(images, labels, **kw):
        result = real(images, labels, **kw)
        recorded.append((images, labels, kw["seeds"], result.adv))
        return result
    atk.run = record
    protocol.predict(atk)(x, y, [0])
    images, labels, seeds, adv = recorded[0]
    atk.run = real
    for b in range(len(images)):
        alone = atk(images[b:b + 1], labels[b:b + 1], seeds=[seeds[b]])
        assert ((alone - adv[b:b + 1]).abs() > 1e-5).float().mean() < 1e-3


def test_center_resizes_the_short_side_and_crops(model):
    x, y = sample(2, 40, 60)
    protocol = Protocol("center", model, settings(mode="whole", crop=(32, 32), base_size=48))
    logits, labels = protocol.predict(None)(x, y, [0, 1])
    assert logits.shape == (2, 7, 32, 32) and labels.shape == (2, 32, 32)
    xc, yc = center_crop(x, y, 48, (32, 32))
    big_y = F.interpolate(y[:, None].float(), size=(48, 72), mode="nearest")[:, 0].long()
    assert torch.equal(yc, big_y[:, 8:40, 20:52]) and torch.equal(labels, yc)
    spy = Spy(model)
    protocol.predict(spy)(x, y, [0, 1])
    assert spy.calls[0][0].shape == (2, 3, 32, 32) and torch.equal(spy.calls[0][0], xc)


def test_protocol_checks_its_settings(model):
    with pytest.raises(ValueError, match="slide"):
        Protocol("legacy", model, settings(mode="whole"))
    with pytest.raises(ValueError, match="base_size"):
        Protocol("center", model, settings(mode="whole"))
    with pytest.raises(ValueError, match="full, legacy, center"):
        Protocol("tiled", model, settings())
    with pytest.raises(ValueError, match="protocol.target"):
        Protocol("full", model, settings()).predict(build_attack("pgd", model))


@pytest.mark.parametrize("name", ["full", "legacy"])
def test_results_do_not_depend_on_the_batch(model, name):
    """Random starts are seeded by dataset index: a batch of 4 and four batches of 1 give the same predictions."""
    x, y = sample(4, 24, 20)
    protocol = Protocol(name, model, settings(crop=(16, 16)), seed=3)
    atk = build_attack("pgd", protocol.target, eps=0.03, alpha=0.01, steps=2)
    predict = protocol.predict(atk)
    batched, _ = predict(x, y, [10, 11, 12, 13])
    single = torch.cat([predict(x[i:i + 1], y[i:i + 1], [10 + i])[0] for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-4)
    other, _ = protocol.predict(atk)(x, y, [20, 21, 22, 23])
    assert not torch.allclose(batched, other, atol=1e-4), "other indices, other random starts"


def metric_of(preds, labels, classes=4):
    m = SegMetric(classes)
    for i, (p, y) in enumerate(zip(preds, labels)):
        m.update(p, y, i)
    return m


def test_worst_case_is_per_image_and_below_every_attack():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (6, 10, 10), generator=g)
    metrics = {}
    for k, noise in (("a", 0.3), ("b", 0.5), ("c", 0.4)):
        flip = torch.rand(labels.shape, generator=g) < noise
        metrics[k] = metric_of(torch.where(flip, torch.randint(0, 4, labels.shape, generator=g), labels), labels)
    wc = worst_case_summary(metrics)
    for i in range(6):
        assert wc["per_image_miou"][i] == min(m.per_image[i] for m in metrics.values())
    for m in metrics.values():
        assert wc["mIoU"] <= m.summary()["mIoU"] + 1e-12
    chosen = sum(metrics[k].per_image_counts[i] for i, k in enumerate(wc["per_image_attack"]))
    assert math.isclose(wc["aAcc"], int(chosen[0].sum()) / int(chosen[1].sum()))
    assert sum(wc["images_per_attack"].values()) == 6 and wc["attacks"] == ["a", "b", "c"]
    assert worst_case_summary({}) is None


def test_attacks_from_the_config(tiny_cfg):
    cfg = tiny_cfg("ATTACK.attacks", "[{name: pgd, eps: 8/255, steps: 2}, {name: pgd, key: pgd-l2, norm: l2}]")
    assert [(k, n) for k, n, _ in attack_entries(cfg)] == [("pgd", "pgd"), ("pgd-l2", "pgd")]
    assert attack_entries(cfg)[0][2] == {"eps": 8 / 255, "steps": 2}
    with pytest.raises(UserError, match=r"ATTACK.attacks\[1\].*'pgd' is taken"):
        attack_entries(tiny_cfg("ATTACK.attacks", "[{name: pgd}, {name: pgd, steps: 3}]"))
    model = TinySeg()
    with pytest.raises(UserError, match="ADV_TRAIN.params: pgd has no parameter stpes"):
        attack_from_config("pgd", {"stpes": 3}, model, "ADV_TRAIN.params", cfg)
    with pytest.raises(UserError, match="here: unknown attack 'pgdd'"):
        attack_from_config("pgdd", {}, model, "here", cfg)
    atk = attack_from_config("apgd-mce-bal", {"steps": 2}, model, "k", cfg)  # class counts of the training list
    assert atk.class_weights is not None and len(atk.class_weights) == 7
    assert attack_from_config("pgd", {}, model, "k", tiny_cfg("DATA.ignore_index", "250")).ignore_index == 250


def test_adv_train_and_attack_config_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ADV_TRAIN: {method: at, params: {eps: 4/255, variant: release}}\n")
    cfg = load_config(path, ["ADV_TRAIN.params.steps", "7", "ATTACK.protocol", "legacy"])
    assert cfg.ADV_TRAIN.params == {"eps": 4 / 255, "variant": "release", "steps": 7}
    assert cfg.ATTACK.protocol == "legacy" and cfg.ADV_TRAIN.adv_ratio == 0.5
    for overrides, message in ((["ADV_TRAIN.method", "pgd-at"], "ADV_TRAIN.method must be one of"),
                               (["ADV_TRAIN.adv_ratio", "0"], "adv_ratio"),
                               (["ATTACK.attacks", "[pgd]"], "ATTACK.attacks must be a list of mappings"),
                               (["ADV_TRAIN.params", "3"], "ADV_TRAIN.params must be a mapping"),
                               (["ADV_TRAIN.epochs.x", "3"], "unknown key 'ADV_TRAIN.epochs'"),
                               (["TRAIN.epochs.x", "3"], "only mapping-typed keys"),
                               (["ADV_TRAIN.val_attack", "{steps: 3}"], "val_attack needs a 'name'"),
                               (["ATTACK.protocol", "center"], "TEST.base_size")):
        with pytest.raises(UserError, match=message):
            load_config(path, overrides)
