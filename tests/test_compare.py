"""tool_test/compare.py: the newest evaluation per run, one row per model and attack, refusals to compare."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def fake_run(root, name, clean, pgd, result="compare", eps=0.1, protocol="full"):
    folder = root / name / "result" / result
    folder.mkdir(parents=True)
    metrics = {"protocol": {"name": protocol, "split": "val", "images": 4},
               "clean": {"mIoU": clean}, "attacks": {"pgd": {"name": "pgd", "params": {"eps": eps}, "mIoU": pgd}},
               "worst_case": {"mIoU": pgd}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return root / name


def compare(tmp_path, *runs):
    return subprocess.run([sys.executable, str(ROOT / "tool_test/compare.py"), "--out", str(tmp_path / "cmp"),
                           *runs], capture_output=True, text=True, timeout=120)


def test_compare_tables_the_newest_evaluation_of_each_run(tmp_path):
    a = fake_run(tmp_path, "a", 0.8, 0.3)
    b = fake_run(tmp_path, "b", 0.7, 0.1)
    fake_run(tmp_path, "b", 0.75, 0.5, result="compare_2")  # the newer evaluation of b
    fake_run(tmp_path, "b", 0.0, 0.0, result="compare_other")  # another name: not read
    proc = compare(tmp_path, f"clean={a}", f"AT={b}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "cmp.json").read_text())
    rows = {(r["model"], r["attack"]): r["mIoU"] for r in out["rows"]}
    assert rows == {("clean", "clean"): 0.8, ("clean", "pgd"): 0.3, ("clean", "worst_case"): 0.3,
                    ("AT", "clean"): 0.75, ("AT", "pgd"): 0.5, ("AT", "worst_case"): 0.5}
    assert abs(out["difference_to_clean"]["AT"]["pgd"] - 0.2) < 1e-12
    text = (tmp_path / "cmp.md").read_text()
    assert "| AT | 75.00 | 50.00 | 50.00 |" in text and "![mIoU per attack and model](cmp.png)" in text
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_compare_refuses_runs_evaluated_differently(tmp_path):
    a = fake_run(tmp_path, "a", 0.8, 0.3)
    b = fake_run(tmp_path, "b", 0.7, 0.1, eps=0.03)
    c = fake_run(tmp_path, "c", 0.7, 0.1, protocol="legacy")
    for other, message in ((b, "attacks differ"), (c, "different protocol"), (tmp_path / "none", "no evaluation")):
        proc = compare(tmp_path, f"x={a}", f"y={other}")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "cmp.json").exists()
