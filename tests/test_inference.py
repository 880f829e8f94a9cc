"""Sliding-window inference: equal to whole-image inference when one crop covers the image, full
coverage of every pixel, and gradients reaching the input through the overlapping crops."""
from __future__ import annotations

import pytest
import torch

from model import build_model
from util.evaluation.inference import infer, windows

MEAN = (0.485, 0.456, 0.406)


@pytest.fixture
def model(tiny_cfg):
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


def test_slide_equals_whole_when_the_crop_is_the_image(model):
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        whole = infer(model, x, mode="whole")
        slide = infer(model, x, mode="slide", crop=(40, 56), mean=MEAN)
    assert torch.allclose(whole, slide, atol=1e-5)


@pytest.mark.parametrize("h, w, crop", [(100, 70, (48, 48)), (48, 48, (48, 48)), (97, 130, (40, 64))])
def test_windows_cover_every_pixel_within_bounds(h, w, crop):
    cover = torch.zeros(h, w)
    for y0, y1, x0, x1 in windows(h, w, crop, 2 / 3):
        assert 0 <= y0 and y1 <= h and 0 <= x0 and x1 <= w and (y1 - y0, x1 - x0) == tuple(crop)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1


def test_slide_averages_overlapping_crops():
    calls = []

    def constant(crops):  # logits = per-crop index, so the average in overlaps is checkable
        calls.append(crops.shape)
        k = torch.arange(crops.shape[0], dtype=crops.dtype).view(-1, 1, 1, 1)
        return k.expand(-1, 2, *crops.shape[-2:])

    x = torch.rand(1, 3, 30, 20)
    out = infer(constant, x, mode="slide", crop=(20, 20), stride_rate=0.5, mean=MEAN)
    assert calls == [(2, 3, 20, 20)]  # two crops (rows 0-19 and 10-29), one batch
    assert torch.all(out[0, 0, :10] == 0) and torch.all(out[0, 0, 20:] == 1) and torch.all(out[0, 0, 10:20] == 0.5)


def test_padding_with_the_mean_colour_for_small_images():
    seen = []

    def record(crops):
        seen.append(crops.clone())
        return crops[:, :2]

    x = torch.rand(1, 3, 10, 12)
    out = infer(record, x, mode="slide", crop=(16, 16), mean=MEAN)
    assert out.shape == (1, 2, 10, 12)
    padded = seen[0][0]
    assert torch.allclose(padded[:, 3:13, 2:14], x[0])
    assert torch.allclose(padded[:, 0, 0], torch.tensor(MEAN))


def test_gradient_reaches_every_input_pixel_through_slide(model):
    x = torch.rand(1, 3, 64, 80, requires_grad=True)
    logits = infer(model, x, mode="slide", crop=(40, 40), stride_rate=2 / 3, mean=MEAN)
    assert logits.shape == (1, 7, 64, 80)
    logits.logsumexp(1).sum().backward()
    assert x.grad is not None and (x.grad.abs().sum(1) > 0).float().mean() > 0.99


def test_base_size_resizes_and_returns_input_resolution():
    shapes = []

    def record(images):
        shapes.append(tuple(images.shape[-2:]))
        return images[:, :2]

    out = infer(record, torch.rand(1, 3, 50, 100), mode="whole", base_size=60)
    assert shapes == [(30, 60)] and out.shape == (1, 2, 50, 100)
