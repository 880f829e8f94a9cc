"""Joint image/label augmentation with cv2 (docs/method.md §6): image bilinear, label nearest; padding uses
the mean colour for images and 255 for labels. Every random draw comes from the `rng` passed in, so a
sample's augmentation depends only on (seed, epoch, index), whatever the worker or process count."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, rotation, Gaussian blur, horizontal flip and crop, in semseg's order.

    __call__(image (H,W,3) uint8 RGB, label (H,W) uint8, rng) -> (image (h,w,3), label (h,w)), (h,w) = crop.
    """

    crop_size: tuple[int, int]  # (h, w)
    scale_range: tuple[float, float]
    rotate_range: tuple[float, float]
    rotate_prob: float
    blur_prob: float
    flip_prob: float
    mean_colour: tuple[float, float, float]  # RGB, 0-255
    ignore_index: int = 255

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        s = rng.uniform(*self.scale_range)
        if s != 1.0:
            image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        if rng.random() < self.rotate_prob:
            image, label = self._rotate(image, label, rng.uniform(*self.rotate_range))
        if rng.random() < self.blur_prob:
            image = cv2.GaussianBlur(image, (5, 5), 0)
        if rng.random() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        return self._crop(image, label, rng)

    def _rotate(self, image: np.ndarray, label: np.ndarray, angle: float):
        h, w = label.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=self.mean_colour)
        label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore_index)
        return image, label

    def _crop(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        ch, cw = self.crop_size
        h, w = label.shape
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:  # pad around the image, split evenly, as semseg does
            t, lft = ph // 2, pw // 2
            image = cv2.copyMakeBorder(np.ascontiguousarray(image), t, ph - t, lft, pw - lft,
                                       cv2.BORDER_CONSTANT, value=self.mean_colour)
            label = cv2.copyMakeBorder(np.ascontiguousarray(label), t, ph - t, lft, pw - lft,
                                       cv2.BORDER_CONSTANT, value=self.ignore_index)
            h, w = label.shape
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        return (np.ascontiguousarray(image[y:y + ch, x:x + cw]),
                np.ascontiguousarray(label[y:y + ch, x:x + cw]))
