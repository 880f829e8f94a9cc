"""Resumable evaluation never mixes code versions: the shard store's digest covers the project's sources and torch's
version, and a rerun under other code removes the old shards, starts afresh and says why (engine/result_store.py)."""
from __future__ import annotations

import importlib.util
import json
import shutil

import torch

from conftest import ROOT
from engine import result_store
from engine.result_store import ShardStore, code_changes, code_digests
from model import build_model
from util.config import load_config


def test_the_code_digest_follows_every_source_of_the_packages(tmp_path):
    for package in ("attack", "engine", "model", "util"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_digests(tmp_path)
    assert before == code_digests(ROOT) and "attack/pgd.py" in before and "util/data/check.py" in before
    with open(tmp_path / "attack" / "pgd.py", "a") as f:
        f.write("# a fix\n")
    after = code_digests(tmp_path)
    assert [k for k in before if before[k] != after[k]] == ["attack/pgd.py"]
    assert code_changes({"sources": before, "torch": "0.0"}, {"sources": after, "torch": torch.__version__}) == \
        f"1 source(s) changed: attack/pgd.py; torch 0.0 then, {torch.__version__} now"


def test_an_interrupted_evaluation_rerun_under_changed_code_starts_afresh_and_says_why(tmp_path, tiny_data, capsys,
                                                                                        monkeypatch):
    spec = importlib.util.spec_from_file_location("tool_test_test", ROOT / "tool_test/test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    common = ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"),
              "MODEL.head_channels", "32", "TEST.workers", "0", "TEST.batch_size", "2", "TEST.mode", "whole"]
    checkpoint = tmp_path / "model.pth"
    torch.manual_seed(0)
    state = build_model(load_config(config, common)).state_dict()
    state["head.5.bias"][0] = 10.0  # every pixel predicted background: a non-zero mIoU
    torch.save({"epoch": 1, "model": state}, checkpoint)
    argv = ["--config", config, *common, "TEST.model_path", str(checkpoint),
            "ATTACK.attacks", "[{name: pgd, eps: 0.03, alpha: 0.01, steps: 2}]"]
    result = tmp_path / "exp" / "demo" / "demo_pspnet18" / "result"

    # the old code: its evaluation is "interrupted" after every shard was kept (the store is not cleared)
    real = code_digests()
    old = {**real, "attack/pgd.py": "0" * 64}
    monkeypatch.setattr(result_store, "code_digests", lambda: old)
    monkeypatch.setattr(ShardStore, "clear", lambda self: None)
    test_script.main(argv + ["TEST.run_name", "old"])
    shards = sorted((result / ".partial").glob("*/*.pt"))
    assert len(shards) == 2 and json.loads((shards[0].parent / "code.json").read_text())["sources"] == old
    for shard in shards:  # figures the new code must never load
        state = torch.load(shard, weights_only=True)
        state["cm"] = torch.zeros_like(state["cm"])
        torch.save(state, shard)
    monkeypatch.undo()

    capsys.readouterr()
    test_script.main(argv + ["TEST.run_name", "new"])
    log = capsys.readouterr().out
    assert f"the interrupted evaluation kept in {shards[0].parent} was computed by other code (1 source(s) " \
           "changed: attack/pgd.py): removed, this evaluation starts afresh" in log
    assert not shards[0].parent.exists() and not any((result / ".partial").iterdir())
    old_metrics, new_metrics = (json.loads((result / n / "metrics.json").read_text()) for n in ("old", "new"))
    assert new_metrics["clean"]["mIoU"] == old_metrics["clean"]["mIoU"] > 0
    assert new_metrics["attacks"]["pgd"]["mIoU"] == old_metrics["attacks"]["pgd"]["mIoU"]


def _write_many(path, n):
    from util.outputs import write_json
    for i in range(n):
        write_json({"writer": i}, path)


def test_processes_that_write_the_same_json_at_once_never_fail(tmp_path):
    """The ranks of one evaluation each write the store's code.json; with one shared temporary name a rank's rename
    found its temporary file gone (FileNotFoundError), which failed a two-process evaluation in CI."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "code.json"
    procs = [ctx.Process(target=_write_many, args=(path, 400)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert json.loads(path.read_text()) == {"writer": 399}
    assert [p.name for p in tmp_path.iterdir()] == ["code.json"]
