"""Runs that survive faults (the issue "Runs that span machines"): stop requests, exact resume after SIGTERM or
SIGKILL, non-finite losses, failed checkpoint writes, and the sampler that makes a resumed epoch repeat."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from engine.interrupts import StopRequests
from engine.resume import ResumePoint, resume_point
from util.checkpoint import save_checkpoint
from util.data.loader import ShardSampler
from util.distributed import single_process
from util.errors import EXIT_NON_FINITE, EXIT_STOPPED, EXIT_WRITE_FAILED, RunStopped, UserError

# ---- fast: the pieces --------------------------------------------------------------------------------------


def test_stop_requests_turn_signals_into_a_flag():
    env = single_process(torch.device("cpu"))
    previous = signal.getsignal(signal.SIGUSR1)
    with StopRequests() as stop:
        assert stop.check(torch.ones(2), env) == (False, False)
        os.kill(os.getpid(), signal.SIGUSR1)  # handled: the process goes on
        assert stop.check(torch.ones(2), env) == (True, False) and stop.name() == "SIGUSR1"
        assert stop.check(torch.tensor([1.0, float("nan")]), env) == (True, True)
    assert signal.getsignal(signal.SIGUSR1) is previous
    with StopRequests() as stop:
        assert stop.check(torch.tensor([float("inf")]), env) == (False, True)


def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    path = tmp_path / "model" / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)

    def full_disk(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunStopped, match=r"cannot write checkpoint .*last.pth.*No space left.*last good checkpoint") \
            as info:
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    assert info.value.exit_code == EXIT_WRITE_FAILED == 4
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"], "no temporary file left behind"


def test_resume_point_of_a_mid_epoch_checkpoint():
    env = single_process(torch.device("cpu"))
    assert resume_point({"epoch": 2}, env, 10, "c") == ResumePoint(2)  # an old checkpoint: a boundary
    rng = {"torch": torch.get_rng_state(), "cuda": None}
    sums = {"loss": torch.ones(3)}
    state = {"epoch": 1, "iteration": 3, "world": 1, "processes": [{"rng": rng, "sums": sums}]}
    point = resume_point(state, env, 10, "c")
    assert (point.epoch, point.iteration) == (1, 3) and point.sums is sums
    with pytest.raises(UserError, match=r"mid-epoch \(epoch 2, iteration 3\) by 2 process\(es\); continue it with 2"):
        resume_point({**state, "world": 2, "processes": [state["processes"][0]] * 2}, env, 10, "c")
    with pytest.raises(UserError, match="an epoch now has 3 iterations"):
        resume_point(state, env, 3, "c")


@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_sampler_order_depends_on_seed_and_epoch_only(world):
    """Iteration i of a global batch of 4 trains on the same images whatever the world size; skipping k indices
    of a shard continues it."""
    def global_batches(w):
        shards = []
        for r in range(w):
            sampler = ShardSampler(18, r, w, shuffle=True, seed=5, drop_last=True)
            sampler.set_epoch(3)
            shards.append(list(sampler))
        per = 4 // w
        return [sorted(i for shard in shards for i in shard[b * per:(b + 1) * per]) for b in range(18 // 4)]
    assert global_batches(world) == global_batches(1)
    s = ShardSampler(18, 0, world, shuffle=True, seed=5, drop_last=True)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, skip=2)
    assert list(s) == full[2:]


# ---- slow: real runs killed and resumed ------------------------------------------------------------------------

def overrides(tiny_data, exp, name, epochs=2):
    """Two epochs of 4 iterations of adversarial training (RP-PGD++, 1 step) on the 16 tiny images."""
    return ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(exp), "EXP.name", name,
            "MODEL.head_channels", "32", "TRAIN.batch_size", "4", "TRAIN.crop_size", "40", "TRAIN.print_freq", "1",
            "TRAIN.epochs", str(epochs), "TRAIN.eval_freq", "0", "TRAIN.save_freq", "0", "ADV_TRAIN.attack.steps", "1"]


CONFIG = str(ROOT / "config/demo/demo_pspnet18_sat.yaml")  # adversarial: random starts and dropout use the RNG


def train_cmd(tiny_data, exp, name, *extra):
    return [sys.executable, str(ROOT / "tool_train/train.py"), "--config", CONFIG, *overrides(tiny_data, exp, name),
            *extra]


def run_env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def weights(exp, name):
    return torch.load(exp / "demo" / name / "model" / "last.pth", weights_only=True)


def wait_for(log, text, proc, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        if log.is_file() and text in log.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"'{text}' never appeared in {log}")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_data):
    exp = tmp_path_factory.mktemp("straight")
    subprocess.run(train_cmd(tiny_data, exp, "run"), check=True, capture_output=True, env=run_env(), timeout=600)
    return weights(exp, "run")


def assert_same_weights(a, b):
    assert a["epoch"] == b["epoch"] == 2 and a["iteration"] == b["iteration"] == 0
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_mid_epoch_checkpoints_and_the_resumed_run_is_exact(tmp_path, tiny_data, straight, sig):
    log = tmp_path / "demo" / "run" / "train.log"
    proc = subprocess.Popen(train_cmd(tiny_data, tmp_path, "run"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=run_env())
    wait_for(log, "epoch 1 iter 2/4", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_STOPPED == 75, err[-2000:]
    assert f"{sig.name} received: stopped after epoch" in err and "TRAIN.resume auto" in err
    mid = weights(tmp_path, "run")
    # the log line of iteration 2 comes after its check, so the stop comes after iteration 3, or at the epoch's end
    assert mid["world"] == 1 and (mid["epoch"], mid["iteration"]) in {(0, 3), (1, 0)}
    done = subprocess.run(train_cmd(tiny_data, tmp_path, "run", "TRAIN.resume", "auto"), capture_output=True,
                          text=True, env=run_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in log.read_text()
    assert_same_weights(straight, weights(tmp_path, "run"))


@pytest.mark.slow
def test_a_bf16_run_stopped_mid_epoch_resumes_exactly(tmp_path, tiny_data):
    """TRAIN.amp bf16 (CPU autocast, RP-PGD++ under it too): stopped by SIGTERM and resumed, the same weights as an
    uninterrupted bf16 run, bit for bit."""
    bf16 = ("TRAIN.amp", "bf16")
    subprocess.run(train_cmd(tiny_data, tmp_path, "straight", *bf16), check=True, capture_output=True,
                   env=run_env(), timeout=600)
    log = tmp_path / "demo" / "run" / "train.log"
    proc = subprocess.Popen(train_cmd(tiny_data, tmp_path, "run", *bf16), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=run_env())
    wait_for(log, "epoch 1 iter 2/4", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_STOPPED, err[-2000:]
    done = subprocess.run(train_cmd(tiny_data, tmp_path, "run", *bf16, "TRAIN.resume", "auto"), capture_output=True,
                          text=True, env=run_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    straight = weights(tmp_path, "straight")
    assert_same_weights(straight, weights(tmp_path, "run"))
    assert straight["scaler"] is None  # bf16 needs no grad scaler


@pytest.mark.slow
def test_sigkill_at_a_random_iteration_then_resume_is_exact(tmp_path, tiny_data, straight):
    """Checkpoints every iteration (TRAIN.save_iters 1); killed without warning at a random iteration, the run
    continues from the newest complete one."""
    at = random.Random(os.getpid()).randint(1, 7)  # one of the 8 iterations of the 2 epochs
    log = tmp_path / "demo" / "run" / "train.log"
    proc = subprocess.Popen(train_cmd(tiny_data, tmp_path, "run", "TRAIN.save_iters", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=run_env())
    wait_for(log, f"epoch {1 + (at - 1) // 4} iter {1 + (at - 1) % 4}/4", proc)
    proc.kill()
    proc.communicate(timeout=60)
    done = subprocess.run(train_cmd(tiny_data, tmp_path, "run", "TRAIN.resume", "auto", "TRAIN.save_iters", "1"),
                          capture_output=True, text=True, env=run_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_weights(straight, weights(tmp_path, "run"))


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run(tmp_path, tiny_data):
    """A learning rate of 1e12 makes the loss non-finite within a few iterations: the run stops there, names the
    iteration and the loss, writes nothing and exits with code 3."""
    proc = subprocess.run(train_cmd(tiny_data, tmp_path, "run", "TRAIN.base_lr", "1e12", "ADV_TRAIN.method", "none"),
                          capture_output=True, text=True, env=run_env(), timeout=600)
    assert proc.returncode == EXIT_NON_FINITE == 3, proc.stderr[-2000:]
    assert "stopped: non-finite training loss at epoch 1 iteration" in proc.stderr
    assert "no checkpoint was written yet" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "demo" / "run" / "model" / "last.pth").exists()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_like_one_node_of_two_processes(tmp_path, tiny_data):
    """Two launcher calls on this machine as two nodes of one process each (NNODES=2, NODE_RANK 0 and 1,
    MASTER_ADDR 127.0.0.1) reach the weights of one node running two processes."""
    launcher = ["sh", str(ROOT / "tool_train/demo/psp_train_sat.sh")]
    common = overrides(tiny_data, tmp_path, "one_node", epochs=1)
    base = {**run_env(), "PYTHON": sys.executable}
    one = subprocess.run(launcher + common, capture_output=True, text=True, timeout=600,
                         env={**base, "NPROC": "2"})
    assert one.returncode == 0, one.stderr[-3000:]
    two_nodes = [c if c != "one_node" else "two_nodes" for c in common]
    port = str(free_port())
    procs = [subprocess.Popen(launcher + two_nodes, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**base, "NPROC": "1", "NNODES": "2", "NODE_RANK": str(rank),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for rank in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    log = (tmp_path / "demo" / "two_nodes" / "train.log").read_text()
    assert "2 process(es)" in log and "SyncBatchNorm off" in log
    a, b = weights(tmp_path, "one_node"), weights(tmp_path, "two_nodes")
    assert a["world"] == b["world"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_a_multi_node_launch_needs_its_rank_and_master(tmp_path):
    proc = subprocess.run(["sh", str(ROOT / "util/launch.sh"), "tool_train/train.py", "config/demo/demo_pspnet18.yaml"],
                          capture_output=True, text=True, env={**os.environ, "NNODES": "2", "NPROC": "1",
                                                               "PYTHON": sys.executable})
    assert proc.returncode == 2 and "needs NODE_RANK" in proc.stderr and "MASTER_ADDR" in proc.stderr


@pytest.mark.slow
def test_sigterm_to_the_launcher_of_two_processes_then_resume_is_exact(tmp_path, tiny_data):
    """Under torchrun (NPROC=2) the launcher passes SIGTERM to the workers, which checkpoint mid-epoch with both
    processes' RNG states; the launcher exits with their code 75, and the resumed run reaches the weights of an
    uninterrupted two-process run."""
    launcher = ["sh", str(ROOT / "tool_train/demo/psp_train_sat.sh")]
    env = {**run_env(), "PYTHON": sys.executable, "NPROC": "2"}
    done = subprocess.run(launcher + overrides(tiny_data, tmp_path, "straight"), capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = tmp_path / "demo" / "run" / "train.log"
    proc = subprocess.Popen(launcher + overrides(tiny_data, tmp_path, "run"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for(log, "epoch 1 iter 2/4", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    mid = weights(tmp_path, "run")
    assert mid["world"] == 2 and len(mid["processes"]) == 2
    resumed = subprocess.run(launcher + overrides(tiny_data, tmp_path, "run") + ["TRAIN.resume", "auto"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(weights(tmp_path, "straight"), weights(tmp_path, "run"))


# ---- resumable evaluation -------------------------------------------------------------------------------------

def test_a_finished_shard_is_loaded_not_recomputed(tmp_path):
    from tiny_models import TinySeg

    from engine.evaluation import evaluate
    from engine.protocols import build_protocol
    from engine.result_store import ShardStore
    from util.config import load_config
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["TEST.mode", "whole"])
    model = TinySeg().eval()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    protocol = build_protocol(cfg, model)
    g = torch.Generator().manual_seed(0)
    loader = [(list(torch.rand(3, 3, 24, 24, generator=g)), list(torch.randint(0, 7, (3, 24, 24), generator=g)),
               [0, 1, 2])]
    env = single_process(torch.device("cpu"))
    store = ShardStore(tmp_path / "partial")
    path = store.path("clean", {}, 0, 1)
    first = evaluate(protocol, loader, env, 7, shard=(store, path))
    assert path.is_file() and calls  # the clean pass (and the sanity checks' two extra passes)
    done = len(calls)
    again = evaluate(protocol, loader, env, 7, shard=(store, path))
    assert len(calls) == done, "loaded, not recomputed"
    assert torch.equal(first.cm, again.cm) and first.per_image == again.per_image
    assert store.path("pgd", {"eps": 0.1}, 0, 1) != store.path("pgd", {"eps": 0.2}, 0, 1) != path
    store.clear()
    assert not store.folder.exists()


@pytest.mark.slow
def test_an_evaluation_killed_midway_continues_to_the_same_metrics(tmp_path, tiny_data):
    config = str(ROOT / "config/demo/demo_pspnet18.yaml")
    common = overrides(tiny_data, tmp_path, "run", epochs=1) + ["TEST.batch_size", "1", "TEST.workers", "0"]
    subprocess.run([sys.executable, str(ROOT / "tool_train/train.py"), "--config", config, *common], check=True,
                   capture_output=True, env=run_env(), timeout=600)
    attacks = "[" + ", ".join(f"{{name: {n}, eps: 0.1, alpha: 0.05, steps: 3}}" for n in ("pgd", "segpgd", "cospgd",
                                                                                            "rppgd++")) + "]"
    test = [sys.executable, str(ROOT / "tool_test/test.py"), "--config", config, *common, "ATTACK.attacks", attacks]
    result = tmp_path / "demo" / "run" / "result"
    subprocess.run(test + ["TEST.run_name", "straight"], check=True, capture_output=True, env=run_env(), timeout=600)
    assert not (result / ".partial").exists() or not any((result / ".partial").iterdir())
    proc = subprocess.Popen(test + ["TEST.run_name", "killed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=run_env())
    start = time.time()
    while len(list((result / ".partial").glob("*/*.pt"))) < 2:  # clean and the first attack are done
        assert proc.poll() is None and time.time() - start < 300, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (result / "killed" / "metrics.json").exists()
    again = subprocess.run(test + ["TEST.run_name", "again"], capture_output=True, text=True, env=run_env(),
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the interrupted evaluation" in again.stdout + again.stderr
    import json
    a, b = (json.loads((result / n / "metrics.json").read_text()) for n in ("straight", "again"))
    for m in (a, b):
        m.pop("seconds")
        m["config"]["TEST"].pop("run_name")
    assert a == b
    assert not any((result / ".partial").iterdir())


# ---- non-finite attacks -----------------------------------------------------------------------------------------

class Exploding(torch.nn.Module):
    """Logits 5x the input's first channels, except image 1 of a batch, whose logits are infinite where x > 0.5."""

    def forward(self, x):
        logits = 5 * x[:, :1].repeat(1, 7, 1, 1) * torch.arange(1, 8, dtype=x.dtype).view(1, 7, 1, 1)
        blow = torch.zeros_like(logits)
        if x.shape[0] > 1:
            blow[1] = torch.where(x[1, :1] > 0.5, float("inf"), 0.0)
        return logits + blow


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "sea"])
def test_an_attack_says_which_images_turned_non_finite(name):
    from attack import NonFiniteError, build_attack
    params = {"steps": 4, "class_weights": [1.0] * 7} if name == "sea" else {"steps": 2}
    atk = build_attack(name, Exploding(), eps=0.03, **params)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(3, 8, 8, dtype=torch.long)
    with pytest.raises(NonFiniteError, match=rf"{name}: the loss or its input gradient turned non-finite for "
                                             r"image\(s\) \[1\]") as info:
        atk(x, y)
    assert info.value.images == [1]
    atk(x[:1], y[:1])  # image 0 alone is fine


def test_evaluation_names_the_dataset_images_of_a_non_finite_attack():
    from engine.attacks import AttackSpec
    from engine.evaluation import evaluate
    from engine.protocols.full import Full
    from util.config import load_config
    protocol = Full(Exploding(), {"mode": "whole", "crop": (8, 8), "stride_rate": 1.0, "mean": (0.5,) * 3,
                                  "base_size": 0})
    cfg = load_config(ROOT / "config/demo/demo_pspnet18.yaml")
    attack = protocol.build_attack(AttackSpec("pgd", "pgd", {"steps": 2}), cfg)
    g = torch.Generator().manual_seed(0)
    loader = [(list(torch.rand(2, 3, 8, 8, generator=g)), list(torch.zeros(2, 8, 8, dtype=torch.long)), [40, 41])]
    with pytest.raises(RunStopped, match=r"pgd: the attack's loss or input gradient turned non-finite on dataset "
                                         r"image\(s\) \[41\]") as info:
        evaluate(protocol, loader, single_process(torch.device("cpu")), 7, attack=attack, desc="pgd")
    assert info.value.exit_code == EXIT_NON_FINITE
