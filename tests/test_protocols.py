"""Evaluation protocols (docs/method.md §7): what each predicts and attacks, per-image seeding, the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import SpyAttack, TinySeg

from attack import build_attack
from engine.attacks import AttackSpec
from engine.evaluation import evaluate
from engine.protocols import PROTOCOLS, Protocol, build_protocol, center_crop
from util.distributed import single_process
from util.errors import UserError
from util.evaluation.inference import Inference, cut_crops, slide_logits, windows
from util.evaluation.metrics import confusion_matrix

MEAN = (0.485, 0.456, 0.406)


def make(name, model, s, seed=0) -> Protocol:
    return PROTOCOLS.get(name)(model, s, seed)


def spec(name, **params) -> AttackSpec:
    return AttackSpec(name, name, params, "test")


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
def test_full_optimises_one_image_through_overlapping_windows(model, name, tiny_cfg):
    x, y = sample()
    s = settings()
    assert len(windows(40, 36, s["crop"], s["stride_rate"])) == 16  # 4 x 4 overlapping 16-pixel crops
    protocol = make("full", model, s)
    atk = protocol.build_attack(spec(name, eps=0.03, alpha=0.01, steps=3, random_start=False), tiny_cfg())
    adv = atk(x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.03 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    moved = (adv - x).abs().amax(1) > 0
    assert moved.float().mean() > 0.9, "the gradient through the stitched logits reaches the whole image"
    with torch.no_grad():
        clean_logits = slide_logits(model, x, s["crop"], s["stride_rate"], MEAN)
        assert torch.allclose(protocol.predict(x, y, [0, 1]).logits, clean_logits)
        p = protocol.predict(x, y, [0, 1], atk)
        logits, labels = p.logits, p.labels
    assert torch.equal(labels, y) and logits.shape == (2, 7, 40, 36)
    if name == "pgd":
        assert ce(logits, y) > ce(clean_logits, y), "the sliding-window loss went up"
    else:  # RP-PGD reads the features stitched from the crops
        assert all(r.extra["intra"] > 0 for r in atk.run(x, y).trace)


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


def test_legacy_crops_match_attacking_each_crop_alone(model):
    x, y = sample(1, 24, 24)
    s = settings(crop=(16, 16), stride_rate=0.5, base_size=24)
    protocol = make("legacy", model, s, seed=1)
    atk = build_attack("pgd", model, eps=0.03, alpha=0.01, steps=2)  # legacy attacks the bare model
    recorded = []
    real = atk.run

    def record(images, labels, **kw):
        result = real(images, labels, **kw)
        recorded.append((images, labels, kw["seeds"], result.adv))
        return result
    atk.run = record
    protocol.predict(x, y, [0], atk)
    images, labels, seeds, adv = recorded[0]
    atk.run = real
    for b in range(len(images)):
        alone = atk(images[b:b + 1], labels[b:b + 1], seeds=[seeds[b]])
        assert ((alone - adv[b:b + 1]).abs() > 1e-5).float().mean() < 1e-3


def sea_val_crop(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """SEA's centre crop (docs/method.md §7) with PIL, as its dataset wrapper does it: short side to `size` (the long
    side int(long * size / short)), image bilinear, labels nearest, centre square at int(round(offset / 2))."""
    img, lab = Image.fromarray(image), Image.fromarray(label.astype(np.int32), mode="I")
    w, h = img.size
    ow, oh = (int(w * size / h), size) if w > h else (size, int(h * size / w))
    img, lab = img.resize((ow, oh), Image.BILINEAR), lab.resize((ow, oh), Image.NEAREST)
    x1, y1 = int(round((ow - size) / 2.0)), int(round((oh - size) / 2.0))
    box = (x1, y1, x1 + size, y1 + size)
    return np.asarray(img.crop(box)), np.asarray(lab.crop(box))


@pytest.mark.parametrize("h,w", [(37, 53), (61, 41), (45, 45), (32, 50), (20, 27)])
def test_center_is_seas_crop(h, w):
    """Landscape, portrait and square images with odd sizes (offsets of 6.5 and 7.5 round to even), one already at
    the crop size and one smaller than it (upscaled): the same pixels as SEA's PIL pipeline, labels exactly."""
    size = 32
    g = np.random.default_rng(h * w)
    image = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = np.arange(h * w).reshape(h, w)  # every pixel its own value: any shift or other pick shows
    want_x, want_y = sea_val_crop(image, label, size)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    xc, yc = center_crop(x, torch.from_numpy(label)[None].long(), size)
    assert xc.shape == (1, 3, size, size) and yc.shape == (1, size, size)
    assert torch.equal(yc[0], torch.from_numpy(want_y.astype(np.int64)))
    # PIL rounds to uint8 and computes its filter weights in fixed point
    assert (xc[0].permute(1, 2, 0) * 255 - torch.tensor(want_x, dtype=torch.float32)).abs().max() <= 1.0


def test_center_predicts_and_attacks_the_crop(model):
    x, y = sample(2, 40, 60)
    protocol = make("center", model, settings(mode="whole", crop=(32, 32)))
    p = protocol.predict(x, y, [0, 1])
    assert p.logits.shape == (2, 7, 32, 32) and p.labels.shape == (2, 32, 32)
    xc, yc = center_crop(x, y, 32)
    assert torch.equal(p.labels, yc)
    spy = SpyAttack(model)
    attacked = protocol.predict(x, y, [0, 1], spy)
    assert torch.equal(spy.calls[0][0], xc) and torch.equal(spy.calls[0][1], yc), "the attack sees the same crop"
    assert torch.equal(attacked.labels, yc)


def test_protocol_checks_its_settings(model, tiny_cfg):
    with pytest.raises(ValueError, match="slide"):
        make("legacy", model, settings(mode="whole", base_size=32))
    with pytest.raises(ValueError, match="TEST.base_size"):
        make("legacy", model, settings())
    with pytest.raises(ValueError, match="TEST.scales .* protocol full predicts at one scale"):
        PROTOCOLS.get("full")(model, settings(), scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="square"):
        make("center", model, settings(mode="whole", crop=(32, 48)))
    with pytest.raises(UserError, match="ATTACK.protocol must be one of center, full, legacy"):
        build_protocol(tiny_cfg("ATTACK.protocol", "tiled"), model)
    with pytest.raises(UserError, match=r"ATTACK.protocol: protocol center .* square .* \[32, 48\]"):
        build_protocol(tiny_cfg("ATTACK.protocol", "center", "TEST.crop_size", "[32,48]"), model)
    with pytest.raises(ValueError, match="protocol.build_attack"):
        make("full", model, settings()).predict(*sample(1)[:2], [0], build_attack("pgd", model))
    assert build_protocol(tiny_cfg("ATTACK.protocol", "center"), model).describe()["name"] == "center"


@pytest.mark.parametrize("name", ["full", "legacy"])
def test_results_do_not_depend_on_the_batch(model, name, tiny_cfg):
    """Random starts are seeded by dataset index: a batch of 4 and four batches of 1 give the same predictions."""
    x, y = sample(4, 24, 20)
    protocol = make(name, model, settings(crop=(16, 16), base_size=24), seed=3)
    atk = protocol.build_attack(spec("pgd", eps=0.03, alpha=0.01, steps=2), tiny_cfg())
    batched = protocol.predict(x, y, [10, 11, 12, 13], atk).logits
    single = torch.cat([protocol.predict(x[i:i + 1], y[i:i + 1], [10 + i], atk).logits for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-4)
    other = protocol.predict(x, y, [20, 21, 22, 23], atk).logits
    assert not torch.allclose(batched, other, atol=1e-4), "other indices, other random starts"


@pytest.mark.parametrize("name", ["full", "legacy", "center"])
def test_on_iterate_sees_what_the_protocol_scores(model, name, tiny_cfg):
    """Every judged iterate reaches on_iterate as the protocol's logits and labels; the last one is the result."""
    x, y = sample(2, 40, 36)
    protocol = make(name, model, settings(crop=(16, 16), base_size=40), seed=2)
    atk = protocol.build_attack(spec("pgd", eps=0.03, alpha=0.01, steps=3), tiny_cfg())
    seen = []
    p = protocol.predict(x, y, [0, 1], atk, on_iterate=lambda t, lg, lb: seen.append((t, lg, lb)))
    logits, labels = p.logits, p.labels
    per_call = 2 if name == "legacy" else 1  # legacy predicts image by image (the scripts' batch 1)
    assert [t for t, _, _ in seen] == [0, 1, 2, 3] * per_call
    assert all(lg.shape[-2:] == labels.shape[-2:] for _, lg, _ in seen)
    assert torch.equal(torch.cat([lb for t, _, lb in seen if t == 3]), labels)
    assert torch.allclose(torch.cat([lg for t, lg, _ in seen if t == 3]), logits, atol=1e-5)
    untraced = protocol.predict(x, y, [0, 1], atk).logits
    assert torch.allclose(untraced, logits, atol=1e-5), "tracing does not change the attack"


def test_clean_validation_and_testing_take_one_route(model, tiny_cfg):
    """evaluate() without an attack is the protocol's clean prediction, under center too (the crop)."""
    x, y = sample(3, 40, 60)
    protocol = make("center", model, settings(mode="whole", crop=(32, 32)))
    loader = [(list(x), list(y), [0, 1, 2])]
    metric = evaluate(protocol, loader, single_process(torch.device("cpu")), 7)
    p = protocol.predict(x, y, [0, 1, 2])
    logits, labels = p.logits, p.labels
    assert torch.equal(metric.cm, confusion_matrix(logits.argmax(1), labels, 7))
    assert model.training is False




@pytest.mark.parametrize("name", ["full", "legacy", "center"])
def test_sea_runs_are_scored_on_their_own(model, name, tiny_cfg):
    """evaluate() with SEA keeps a metric per loss run; the attack's own metric is, per image, the run with the
    lowest pixel accuracy (on the crops under legacy, so there only the run metrics are checked)."""
    x, y = sample(3, 40, 36)
    protocol = make(name, model, settings(crop=(16, 16), base_size=40), seed=4)
    atk = protocol.build_attack(spec("sea", eps=0.03, steps=4, class_weights=[1.0] * 7), tiny_cfg())
    loader = [(list(x), list(y), [0, 1, 2])]
    metric = evaluate(protocol, loader, single_process(torch.device("cpu")), 7, attack=atk)
    assert list(metric.runs) == ["mce-bal", "mce", "js"]
    for run in metric.runs.values():
        assert sorted(run.per_image) == [0, 1, 2] and int(run.cm.sum()) == int(metric.cm.sum())
    if name != "legacy":
        for i in range(3):
            correct = [int(run.per_image_counts[i][0].sum()) for run in metric.runs.values()]
            assert int(metric.per_image_counts[i][0].sum()) == min(correct)
