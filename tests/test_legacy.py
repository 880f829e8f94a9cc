"""Protocol `legacy` against the released test script (semseg, DDC-AT, the RP-PGD release: `test`,
`scale_process`, `net_process`) written out below crop by crop in numpy and cv2: every point of it (flip
averaging of clean crops, softmax averaged over crops and scales, each crop attacked with its own label crop,
mean padding, Python's rounding, cv2's resizes, Cityscapes' first resize) against that brute-force computation,
and the reference shown to tell each point apart."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from tiny_models import SpyAttack, TinySeg

from attack import AttackResult, build_attack
from engine.evaluation import evaluate
from engine.protocols import PROTOCOLS, image_seed
from util.distributed import single_process
from util.evaluation.rescale import long_side_size

MEAN = (0.485, 0.456, 0.406)
K = 7


def settings(base_size=40, crop=(24, 24), stride_rate=2 / 3):
    return {"mode": "slide", "crop": crop, "stride_rate": stride_rate, "mean": MEAN, "base_size": base_size}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinySeg(K)
    with torch.no_grad():
        m.train()
        m(torch.rand(4, 3, 32, 32))
    return m.eval()


def sample(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (h, w), generator=g)
    y[: h // 5] = 255
    return torch.rand(3, h, w, generator=g), y


class LabelShift(SpyAttack):
    """A deterministic stand-in for an attack whose result depends on the label crop it is given."""

    def run(self, images, labels, trace=True, on_iterate=None, seeds=None):
        self.calls.append((images.clone(), labels.clone(), list(seeds)))
        shift = 0.2 * (labels.float() / 255 - (labels % 2).float() * 0.5)[:, None]
        return AttackResult(adv=(images + shift).clamp(0, 1))


def released_script(model, image, label, s, scales=(1.0,), resize=None, attack=None, flip=True, average="softmax",
                    own_label_crops=True):
    """One image through the released script's steps, one crop at a time: (h,w,K) float64 probabilities and the
    scored labels. attack(crop (1,3,ch,cw), label crop (1,ch,cw), crop number) -> adversarial crop. The switches
    (flip, average, own_label_crops) give the wrong variants the test shows apart."""
    img = image.permute(1, 2, 0).numpy()
    target = label.numpy().astype(np.uint8)
    scored = target
    if resize is not None:
        img = cv2.resize(img, (resize[1], resize[0]), interpolation=cv2.INTER_LINEAR)
        scored = cv2.resize(target, (resize[1], resize[0]), interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    ch, cw = s["crop"]
    prediction = np.zeros((h, w, K))
    number = 0
    for scale in scales:
        long_size = round(scale * s["base_size"])
        new_h, new_w = long_size, long_size
        if h > w:
            new_w = round(long_size / float(h) * w)
        else:
            new_h = round(long_size / float(w) * h)
        image_scale = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        target_scale = cv2.resize(target, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        if not own_label_crops:  # the wrong variant: the scored labels, not the original resized to the scale
            target_scale = cv2.resize(scored, (new_w, new_h), interpolation=cv2.INTER_NEAREST) * 0 + 255
        ori_h, ori_w = new_h, new_w
        pad_h, pad_w = max(ch - ori_h, 0), max(cw - ori_w, 0)
        ph, pw = int(pad_h / 2), int(pad_w / 2)
        if pad_h > 0 or pad_w > 0:
            image_scale = cv2.copyMakeBorder(image_scale, ph, pad_h - ph, pw, pad_w - pw, cv2.BORDER_CONSTANT,
                                             value=list(MEAN))
            target_scale = cv2.copyMakeBorder(target_scale, ph, pad_h - ph, pw, pad_w - pw, cv2.BORDER_CONSTANT,
                                              value=255)
        nh, nw = image_scale.shape[:2]
        sh, sw = int(np.ceil(ch * s["stride_rate"])), int(np.ceil(cw * s["stride_rate"]))
        grid_h, grid_w = int(np.ceil(float(nh - ch) / sh) + 1), int(np.ceil(float(nw - cw) / sw) + 1)
        acc = np.zeros((nh, nw, K))
        count = np.zeros((nh, nw))
        for ih in range(grid_h):
            for iw in range(grid_w):
                e_h = min(ih * sh + ch, nh)
                e_w = min(iw * sw + cw, nw)
                s_h, s_w = e_h - ch, e_w - cw
                crop = torch.from_numpy(image_scale[s_h:e_h, s_w:e_w].copy().transpose(2, 0, 1))[None]
                crop_label = torch.from_numpy(target_scale[s_h:e_h, s_w:e_w].astype(np.int64))[None]
                with torch.no_grad():
                    if attack is not None:
                        out = model(attack(crop, crop_label, number))
                    elif flip:
                        out = torch.cat([model(crop), model(crop.flip(3)).flip(3)])
                    else:
                        out = model(crop)
                    p = out.softmax(1) if average == "softmax" else out
                    p = p.mean(0) if attack is None and flip else p[0]
                number += 1
                count[s_h:e_h, s_w:e_w] += 1
                acc[s_h:e_h, s_w:e_w] += p.permute(1, 2, 0).numpy()
        acc /= count[..., None]
        acc = acc[ph:ph + ori_h, pw:pw + ori_w]
        prediction += cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR)
    return prediction / len(scales), scored


def legacy(model, s, scales=(1.0,), resize=(), seed=0):
    return PROTOCOLS.get("legacy")(model, s, seed, 255, scales, resize)


CASES = [  # (h, w, base_size, scales, resize): landscape, portrait, padded, multi-scale, Cityscapes' first resize
    (30, 44, 40, (1.0,), None),
    (44, 30, 40, (1.0,), None),
    (37, 23, 40, (1.0,), None),        # the short side rounds (40/37*23 = 24.86) and is padded to the crop
    (30, 44, 20, (1.0,), None),        # downscaled below the crop: padded on both sides
    (31, 45, 40, (0.75, 1.0, 1.5), None),
    (40, 80, 48, (1.0,), (22, 44)),
]


@pytest.mark.parametrize("h,w,base,scales,resize", CASES)
def test_clean_is_the_released_script(model, h, w, base, scales, resize):
    x, y = sample(h, w)
    s = settings(base_size=base)
    p = legacy(model, s, scales, resize or ()).predict(x[None], y[None], [0])
    want, scored = released_script(model, x, y, s, scales, resize)
    got = p.logits[0].permute(1, 2, 0).numpy()
    assert p.logits.dtype == torch.float64 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6
    assert torch.equal(p.labels[0], torch.from_numpy(scored.astype(np.int64)))
    for wrong in (dict(flip=False), dict(average="logits")):  # the reference tells each point apart
        other, _ = released_script(model, x, y, s, scales, resize, **wrong)
        assert np.abs(other - want).max() > 1e-3, wrong


@pytest.mark.parametrize("h,w,base,scales,resize", CASES)
def test_each_crop_attacked_with_its_own_labels_and_seed(model, h, w, base, scales, resize):
    x, y = sample(h, w, seed=1)
    s = settings(base_size=base)
    spy = LabelShift(model)
    p = legacy(model, s, scales, resize or (), seed=5).predict(x[None], y[None], [9], spy)
    crops, crop_labels, seeds = spy.calls[0]
    recorded = []

    def alone(crop, crop_label, number):
        recorded.append((crop, crop_label))
        return LabelShift(model).run(crop, crop_label, seeds=[0]).adv
    want, scored = released_script(model, x, y, s, scales, resize, attack=alone)
    assert len(spy.calls) == 1 and len(crops) == len(recorded)
    assert seeds == [image_seed(5, 9, b) for b in range(len(recorded))], "a seed per (image, crop)"
    for b, (crop, crop_label) in enumerate(recorded):
        assert torch.allclose(crops[b], crop[0], atol=1e-6)
        assert torch.equal(crop_labels[b], crop_label[0])
    got = p.logits[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 1e-6, "attacked crops: softmax, no flip, averaged over crops and scales"
    assert torch.equal(p.labels[0], torch.from_numpy(scored.astype(np.int64)))
    other, _ = released_script(model, x, y, s, scales, resize, attack=alone, own_label_crops=False)
    assert np.abs(other - want).max() > 1e-3, "the reference tells the label crops apart"


def test_a_real_attack_per_crop_equals_attacking_each_crop_alone(model):
    """BIM (the scripts' budget) through the protocol, crops batched, against the script's one crop per call."""
    x, y = sample(30, 44, seed=2)
    s = settings(base_size=40)
    protocol = legacy(model, s, (1.0, 0.75), seed=3)
    atk = build_attack("bim", model, eps=0.03, alpha=0.01, steps=2)  # legacy attacks the bare model
    p = protocol.predict(x[None], y[None], [0], atk)
    want, _ = released_script(model, x, y, s, (1.0, 0.75),
                              attack=lambda c, lab, b: atk(c, lab, seeds=[image_seed(3, 0, b)]))
    got = p.logits[0].permute(1, 2, 0).numpy()
    assert (got.argmax(2) == want.argmax(2)).mean() > 0.999
    assert np.abs(got - want).max() < 1e-3


def test_long_side_rounds_as_python_does():
    assert long_side_size(375, 500, 512) == (384, 512)
    assert long_side_size(500, 375, 512) == (512, 384)
    assert long_side_size(5, 1024, 512) == (2, 512)    # 2.5 rounds to even
    assert long_side_size(7, 1024, 512) == (4, 512)    # 3.5 rounds to even
    assert long_side_size(64, 64, 100) == (100, 100)
    assert long_side_size(1024, 2048, 1024) == (512, 1024)


def test_the_prediction_keeps_probabilities_and_the_sanity_check_reads_the_model(model):
    """Legacy's scores are probabilities by definition: the output check reads the model's own logits and stays
    quiet on a model that returns logits."""
    x, y = sample(30, 44, seed=3)
    protocol = legacy(model, settings())
    p = protocol.predict(x[None], y[None], [0])
    assert torch.allclose(p.logits.sum(1), torch.ones(1, 30, 44, dtype=torch.float64))
    metric = evaluate(protocol, [([x], [y], [0])], single_process(torch.device("cpu")), K)
    assert not [w for w in metric.warnings if "probabilities" in w]


def test_describe_records_scales_and_resize(model):
    d = legacy(model, settings(), (0.5, 1.0), (512, 1024)).describe()
    assert d["scales"] == [0.5, 1.0] and d["resize"] == [512, 1024] and d["base_size"] == 40
    assert math.isclose(d["stride_rate"], 2 / 3)
