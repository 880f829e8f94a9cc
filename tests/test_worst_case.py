"""The worst case over attacks: never above any single attack, greedy against brute force (docs/method.md §5)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from engine.report import sea_entry, worst_case_entry
from engine.worst_case import sea_worst_case, worst_case_choice, worst_case_miou
from util.evaluation.metrics import SegMetric, scores, scores_from_counts


def miou_of(cms: torch.Tensor, choice) -> float:
    """Dataset mIoU (util.evaluation.metrics.scores) when image i takes attack choice[i]; cms (A,N,K,K)."""
    total = sum(cms[a, i] for i, a in enumerate(choice))
    return scores(total)["mIoU"]


def lowest_accuracy_choice(cms: torch.Tensor) -> list[int]:
    a_count, n = cms.shape[:2]
    choice = []
    for i in range(n):
        accs = []
        for a in range(a_count):
            total = int(cms[a, i].sum())
            accs.append(int(cms[a, i].trace()) / total if total else 0.0)
        choice.append(accs.index(min(accs)))
    return choice


@pytest.mark.parametrize("seed", range(8))
def test_worst_case_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    a_count, n, k = 3, 4, 3
    cms = torch.randint(0, 6, (a_count, n, k, k), generator=g)
    cms[:, :, 2] = torch.where(torch.rand(a_count, n, 1, generator=g) < 0.5, 0, cms[:, :, 2])  # class 2 often absent
    choice, miou = worst_case_miou(cms)
    assert len(choice) == n and all(0 <= a < a_count for a in choice)
    assert miou == pytest.approx(miou_of(cms, choice), abs=1e-12)
    singles = [miou_of(cms, [a] * n) for a in range(a_count)]
    start = min([miou_of(cms, lowest_accuracy_choice(cms))] + singles)
    assert all(miou <= s + 1e-12 for s in singles), "never above any single attack"
    optimum = min(miou_of(cms, c) for c in itertools.product(range(a_count), repeat=n))
    assert optimum - 1e-12 <= miou <= start + 1e-12
    # greedy stops only where no single switch lowers the mIoU
    for i in range(n):
        for a in range(a_count):
            switched = list(choice)
            switched[i] = a
            assert miou_of(cms, switched) >= miou - 1e-12


def test_worst_case_switches_away_from_the_lowest_accuracy_attack():
    """The start (lowest accuracy per image = attack 0 everywhere, mIoU 0.332) is improved by switching image 1 to
    attack 1 (higher pixel accuracy there), which gives 0.271, below both single attacks."""
    cms = torch.tensor([[[[0, 0], [2, 0]], [[4, 0], [3, 4]], [[0, 2], [2, 1]]],
                        [[[0, 1], [0, 0]], [[1, 0], [1, 4]], [[3, 3], [1, 3]]]])
    assert lowest_accuracy_choice(cms) == [0, 0, 0]
    assert min(miou_of(cms, [a] * 3) for a in (0, 1)) == pytest.approx(0.33241758)
    choice, miou = worst_case_miou(cms)
    assert choice == [0, 1, 0]
    assert miou == pytest.approx(miou_of(cms, [0, 1, 0])) and miou == pytest.approx(0.27083333)


def test_worst_case_also_starts_from_each_single_attack():
    """The lowest-accuracy choice [0, 0] (accuracies 1/4 < 3/9 and 4/9 < 3/6) is a local minimum, mIoU
    (3/11 + 2/10)/2, that greedy switching cannot leave; the global minimum [1, 1], (1/10 + 5/14)/2, is attack 1
    on every image, one of the starts."""
    cms = torch.tensor([[[[1, 0], [3, 0]], [[2, 3], [2, 2]]],
                        [[[1, 3], [3, 2]], [[0, 1], [2, 3]]]])
    assert lowest_accuracy_choice(cms) == [0, 0]
    assert miou_of(cms, [1, 1]) == pytest.approx((1 / 10 + 5 / 14) / 2)
    choice, miou = worst_case_miou(cms)
    assert choice == [1, 1]
    assert miou == pytest.approx((1 / 10 + 5 / 14) / 2)


def test_counts_and_confusions_agree():
    g = torch.Generator().manual_seed(0)
    cms = torch.randint(0, 6, (3, 5, 4, 4), generator=g)
    counts = torch.stack([cms.diagonal(dim1=2, dim2=3), cms.sum(3), cms.sum(2)], dim=2)
    assert worst_case_choice(counts) == worst_case_miou(cms)
    with pytest.raises(ValueError, match="A,N,3,K"):
        worst_case_choice(torch.zeros(2, 3, 4, 5))


def test_worst_case_rejects_bad_shapes():
    with pytest.raises(ValueError, match="A,N,K,K"):
        worst_case_miou(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="A,N,K,K"):
        worst_case_miou(torch.zeros(2, 3, 4, 5))


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
    wc = worst_case_entry(metrics)
    for i in range(6):
        assert wc["per_image_miou"][i] == min(m.per_image[i] for m in metrics.values())
    for m in metrics.values():
        assert wc["mIoU"] <= m.summary()["mIoU"] + 1e-12
    chosen = sum(metrics[k].per_image_counts[i] for i, k in enumerate(wc["per_image_attack"]))
    assert math.isclose(wc["aAcc"], int(chosen[0].sum()) / int(chosen[1].sum()))
    assert sum(wc["images_per_attack"].values()) == 6 and wc["attacks"] == ["a", "b", "c"]
    assert worst_case_entry({}) is None


# ---- SEA's own worst case (tools/worse_only.py) ------------------------------------------------------------

def counts_of(cms: torch.Tensor) -> torch.Tensor:
    return torch.stack([cms.diagonal(dim1=2, dim2=3), cms.sum(3), cms.sum(2)], dim=2)


def test_sea_worst_case_by_hand():
    """Two images, two runs (run 0 = MCE-Bal). Image 0 (4 pixels of class 0): run 0 right everywhere, run 1 wrong on
    2. Image 1 (4 pixels of class 1): run 0 wrong on 1, run 1 right. All on run 0: IoUs 4/5 and 3/4, mIoU 0.775;
    image 0 on run 1: 2/5 and 3/6, mIoU 0.45; image 1 on run 1 instead would raise it (to 1.0, or 0.583 from
    there). SEA ends at [1, 0], 0.45, in any visiting order, which is also the brute-force minimum."""
    cms = torch.tensor([[[[4, 0], [0, 0]], [[0, 1], [0, 3]]],     # run 0: image 0, image 1
                        [[[2, 2], [0, 0]], [[0, 0], [0, 4]]]])    # run 1
    assert miou_of(cms, [0, 0]) == pytest.approx(0.775) and miou_of(cms, [1, 0]) == pytest.approx(0.45)
    for seed in range(4):
        choice, miou = sea_worst_case(counts_of(cms), start=0, seed=seed)
        assert choice == [1, 0] and miou == pytest.approx(0.45)
    assert min(miou_of(cms, c) for c in itertools.product(range(2), repeat=2)) == pytest.approx(0.45)


@pytest.mark.parametrize("seed", range(10))
def test_sea_worst_case_against_brute_force(seed):
    """Never above the all-MCE-Bal start, never below the brute-force minimum, the mIoU it reports is that of its
    choice, and it stops where no switch to a later run lowers the mIoU (earlier runs are never taken again)."""
    g = torch.Generator().manual_seed(100 + seed)
    runs, n, k = 3, 5, 3
    cms = torch.randint(0, 6, (runs, n, k, k), generator=g)
    cms[:, :, 2] = torch.where(torch.rand(runs, n, 1, generator=g) < 0.4, 0, cms[:, :, 2])  # class 2 often absent
    choice, miou = sea_worst_case(counts_of(cms), start=0)
    assert miou == pytest.approx(miou_of(cms, choice), abs=1e-12)
    optimum = min(miou_of(cms, c) for c in itertools.product(range(runs), repeat=n))
    assert optimum - 1e-12 <= miou <= miou_of(cms, [0] * n) + 1e-12
    for i in range(n):
        for r in range(choice[i] + 1, runs):
            switched = list(choice)
            switched[i] = r
            assert miou_of(cms, switched) >= miou - 1e-12
    # engine's own worst case, started from SEA's choice, is never above it
    assert worst_case_choice(counts_of(cms), [choice])[1] <= miou + 1e-12


def test_sea_worst_case_keeps_the_last_run_that_does_not_raise_the_mIoU():
    """One image of 5 + 5 pixels. Run 0 is right everywhere (mIoU 1), run 1 wrong everywhere (0), run 2 wrong on one
    pixel of class 0 (IoUs 4/5 and 5/6). At the visit runs 1 and 2 both lower the mIoU and the later one, 2, stays;
    at the next visit run 1 would lower it again, but the image's own run 2 passes the reference's test after it
    (its estimate sits 1e-8 below its mIoU), so SEA ends on run 2, 0.8167, where the brute-force minimum is 0;
    engine's worst case, started from SEA's choice, goes on to run 1."""
    cms = torch.tensor([[[[5, 0], [0, 5]]], [[[0, 5], [5, 0]]], [[[4, 1], [0, 5]]]])  # (run, image, K, K)
    choice, miou = sea_worst_case(counts_of(cms), start=0)
    assert choice == [2] and miou == pytest.approx((4 / 5 + 5 / 6) / 2)
    assert worst_case_choice(counts_of(cms), [choice]) == ([1], 0.0)


def test_sea_worst_case_keeps_the_start_when_nothing_lowers_it():
    cms = torch.zeros(3, 4, 2, 2, dtype=torch.long)
    cms[:, :, 0, 0] = 5  # every run right everywhere: nothing lowers the mIoU
    assert sea_worst_case(counts_of(cms), start=2) == ([2, 2, 2, 2], 1.0)
    with pytest.raises(ValueError, match="start"):
        sea_worst_case(counts_of(cms), start=3)


def sea_runs(seed: int) -> tuple[dict, dict, torch.Tensor]:
    """Three noisy 'runs' on 6 images: their metrics, predictions and the labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (6, 10, 10), generator=g)
    preds = {}
    for k, noise in (("mce-bal", 0.3), ("mce", 0.5), ("js", 0.4)):
        flip = torch.rand(labels.shape, generator=g) < noise
        preds[k] = torch.where(flip, torch.randint(0, 4, labels.shape, generator=g), labels)
    return {k: metric_of(p, labels) for k, p in preds.items()}, preds, labels


def test_sea_entry_and_the_overall_worst_case_over_its_runs():
    runs, preds, labels = sea_runs(1)
    sea = sea_entry(runs)
    assert set(sea["runs"]) == {"mce-bal", "mce", "js"} and sea["images"] == 6
    chosen = sum(runs[r].per_image_counts[i] for i, r in enumerate(sea["per_image_run"]))
    assert sea["mIoU"] == pytest.approx(scores_from_counts(*chosen)["mIoU"])
    assert sea["mIoU"] <= runs["mce-bal"].summary()["mIoU"] + 1e-12  # it starts on MCE-Bal
    # the SEA entry as the evaluation makes it: its own metric is the per-image choice by pixel accuracy
    best = [min(preds, key=lambda r: int((preds[r][i] == labels[i]).sum())) for i in range(6)]
    entry = metric_of(torch.stack([preds[r][i] for i, r in enumerate(best)]), labels)
    entry.runs = runs
    other = sea_runs(2)[0]["mce"]  # another attack on the same images
    wc = worst_case_entry({"pgd": other, "sea": entry}, starts=[[f"sea/{r}" for r in sea["per_image_run"]]])
    assert wc["attacks"] == ["pgd", "sea"]
    assert wc["candidates"] == ["pgd", "sea", "sea/mce-bal", "sea/mce", "sea/js"]
    assert wc["mIoU"] <= sea["mIoU"] + 1e-12
    for i in range(6):
        assert wc["per_image_miou"][i] == min(m.per_image[i] for m in [other, *runs.values()])
