"""Joint augmentation keeps image and label aligned and pads labels with 255, images with the mean."""
from __future__ import annotations

import numpy as np
import pytest

from util.data.transform import TrainTransform

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]], np.uint8)
MEAN = (124.0, 116.0, 104.0)


def block_scene(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A label of four large quadrant-like blocks and an image whose colour encodes the label."""
    label = np.zeros((h, w), np.uint8)
    label[: h // 2, w // 3:] = 1
    label[h // 2:, : w // 2] = 2
    label[h // 2:, w // 2:] = 3
    return COLOURS[label], label


def transform(crop=(48, 48), **kw) -> TrainTransform:
    params = dict(crop_size=crop, scale_range=(0.6, 1.6), rotate_range=(-10, 10), rotate_prob=0.5, blur_prob=0.0,
                  flip_prob=0.5, mean_colour=MEAN)
    params.update(kw)
    return TrainTransform(**params)


@pytest.mark.parametrize("seed", range(20))
def test_image_and_label_stay_aligned(seed):
    image, label = block_scene()
    out_img, out_lab = transform()(image, label, np.random.default_rng(seed))
    assert out_img.shape == (48, 48, 3) and out_lab.shape == (48, 48) and out_img.dtype == np.uint8
    # Away from block edges (where bilinear and nearest interpolation legitimately differ), the colour of
    # each labelled pixel is the colour of its class.
    inner = np.ones_like(out_lab, bool)
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            inner &= np.roll(np.roll(out_lab, dy, 0), dx, 1) == out_lab
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
    keep = inner & (out_lab != 255)
    assert keep.sum() > 200
    dist = np.abs(out_img[keep].astype(int) - COLOURS[out_lab[keep]].astype(int)).max(axis=1)
    assert (dist <= 3).mean() > 0.99


def test_padding_uses_255_for_labels_and_the_mean_colour_for_images():
    image, label = block_scene(20, 30)
    t = transform(crop=(50, 64), scale_range=(1.0, 1.0), rotate_prob=0.0, flip_prob=0.0)
    out_img, out_lab = t(image, label, np.random.default_rng(0))
    assert out_lab.shape == (50, 64)
    pad = out_lab == 255
    assert pad.sum() == 50 * 64 - 20 * 30  # exactly the added border is ignored
    assert np.all(np.abs(out_img[pad].astype(float) - np.array(MEAN)) <= 1)
    ys, xs = np.nonzero(~pad)  # the original sits in the middle, unchanged
    assert np.array_equal(out_lab[ys.min():ys.max() + 1, xs.min():xs.max() + 1], label)
    assert np.array_equal(out_img[ys.min():ys.max() + 1, xs.min():xs.max() + 1], image)


def test_rotation_fills_labels_with_255():
    image, label = block_scene(64, 64)
    t = transform(crop=(64, 64), scale_range=(1.0, 1.0), rotate_prob=1.0, rotate_range=(10, 10), flip_prob=0.0)
    _, out_lab = t(image, label, np.random.default_rng(0))
    assert out_lab[0, 0] == 255 and out_lab[-1, -1] == 255  # rotated-in corners are ignored
    assert set(np.unique(out_lab)) <= {0, 1, 2, 3, 255}


def test_same_rng_same_sample_and_flip_is_joint():
    image, label = block_scene()
    t = transform()
    a = t(image, label, np.random.default_rng([1, 2, 3]))
    b = t(image, label, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    flip = transform(crop=(60, 80), scale_range=(1.0, 1.0), rotate_prob=0.0, flip_prob=1.0)
    img, lab = flip(image, label, np.random.default_rng(0))
    assert np.array_equal(lab, label[:, ::-1]) and np.array_equal(img, image[:, ::-1])
