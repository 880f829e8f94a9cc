"""Training-set class pixel counts (MCE-Bal weights): a brute-force count, and the cache."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from util.data.class_counts import class_pixel_counts, count_pixels


def test_counts_match_a_brute_force_count_and_are_cached(tiny_cfg, tiny_data):
    cfg = tiny_cfg()
    expected = np.zeros(7, dtype=np.int64)
    for line in (tiny_data / "list/train.txt").read_text().split("\n"):
        if line.strip():
            label = np.array(Image.open(tiny_data / line.split()[1]))
            for c in range(7):
                expected[c] += int((label == c).sum())
    assert count_pixels(tiny_data, "list/train.txt", 7) == expected.tolist()
    assert class_pixel_counts(cfg) == expected.tolist()

    cache = os.path.join(cfg.EXP.root, "demo", "class_counts.json")  # under EXP.root, not in the dataset
    stored = json.loads(open(cache).read())
    stored["counts"] = [1] * 7
    open(cache, "w").write(json.dumps(stored))
    assert class_pixel_counts(cfg) == [1] * 7, "a valid cache is read, not recomputed"
    list_file = tiny_data / "list/train.txt"
    os.utime(list_file, (1, 1))  # the list changed: the cache no longer matches
    assert class_pixel_counts(cfg) == expected.tolist()
