"""Metrics against a brute-force count, with absent classes and ignored pixels."""
from __future__ import annotations

import math

import pytest
import torch

from util.evaluation.metrics import SegMetric, confusion_matrix, scores


def brute_force(preds, labels, k, ignore=255):
    """mIoU over classes occurring in labels or predictions, mAcc over classes in labels, aAcc, by loops."""
    inter, gt, pr = [0] * k, [0] * k, [0] * k
    total = correct = 0
    for p_img, y_img in zip(preds, labels):
        for p, y in zip(p_img.flatten().tolist(), y_img.flatten().tolist()):
            if y == ignore:
                continue
            total += 1
            gt[y] += 1
            pr[p] += 1
            if p == y:
                inter[y] += 1
                correct += 1
    ious = [inter[c] / (gt[c] + pr[c] - inter[c]) for c in range(k) if gt[c] + pr[c] > 0]
    accs = [inter[c] / gt[c] for c in range(k) if gt[c] > 0]
    return sum(ious) / len(ious), sum(accs) / len(accs), correct / total


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    k = 6
    preds, labels = [], []
    metric = SegMetric(k)
    for i in range(3):
        y = torch.randint(0, 4, (9, 11), generator=g)  # classes 4 and 5 never occur in labels...
        y[torch.rand(9, 11, generator=g) < 0.2] = 255  # ...some pixels are ignored
        p = torch.randint(0, 5, (9, 11), generator=g)  # ...class 4 occurs only in predictions, 5 nowhere
        p[y == 255] = 5  # predictions on ignored pixels must not count
        preds.append(p)
        labels.append(y)
        metric.update(p, y, index=i)
    s = metric.summary()
    miou, macc, aacc = brute_force(preds, labels, k)
    assert s["mIoU"] == pytest.approx(miou) and s["mAcc"] == pytest.approx(macc) and s["aAcc"] == pytest.approx(aacc)
    assert s["per_class_iou"][4] == 0.0  # predicted but never true: IoU 0, counted
    assert s["per_class_iou"][5] is None  # occurs nowhere: not counted
    for i in range(3):
        assert s["per_image_miou"][i] == pytest.approx(brute_force([preds[i]], [labels[i]], k)[0])


def test_perfect_and_all_ignored():
    y = torch.tensor([[0, 1], [2, 255]])
    s = scores(confusion_matrix(y.clone(), y, 3))
    assert s["mIoU"] == s["mAcc"] == s["aAcc"] == 1.0
    empty = scores(confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255), 3))
    assert math.isnan(empty["mIoU"])
    metric = SegMetric(3)
    metric.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255), index=0)
    assert metric.summary()["per_image_miou"] == [None]


def test_bad_label_value_raises():
    with pytest.raises(ValueError, match="label values"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 7]), 3)


def test_miou_over_all_classes_as_the_released_scripts_print_it():
    """cal_acc of semseg/DDC-AT/the RP-PGD release: mean over all K classes of I/(U+1e-10), absent classes as 0."""
    from util.evaluation.metrics import SegMetric
    m = SegMetric(4)
    m.update(torch.tensor([[0, 0, 1], [1, 1, 0]]), torch.tensor([[0, 0, 1], [1, 0, 0]]), 0)  # classes 2, 3 absent
    s = m.summary()
    # class 0: I 3, U 4; class 1: I 2, U 3; classes 2 and 3 occur nowhere
    assert s["mIoU"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert s["mIoU_all_classes"] == pytest.approx((3 / 4 + 2 / 3 + 0 + 0) / 4)


def test_batch_confusion_matrices_are_each_images_own():
    """One bincount for a batch (evaluation's path) gives each image's confusion matrix, ignored pixels left out;
    a label out of range is refused as for one image."""
    from util.evaluation.metrics import confusion_matrices
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (3, 9, 7), generator=g)
    label = torch.randint(0, 5, (3, 9, 7), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = 255
    cms = confusion_matrices(pred, label, 5)
    assert cms.shape == (3, 5, 5)
    for i in range(3):
        brute = torch.zeros(5, 5, dtype=torch.int64)
        for p, y in zip(pred[i].flatten().tolist(), label[i].flatten().tolist()):
            if y != 255:
                brute[y, p] += 1
        assert torch.equal(cms[i], brute)
    label[1, 0, 0] = 7
    with pytest.raises(ValueError, match="label values"):
        confusion_matrices(pred, label, 5)
