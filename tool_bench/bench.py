"""One benchmark of everything that costs time: the floor, each attack step, training steps, robust evaluation, data.

    python tool_bench/bench.py --config CFG [--device auto|cpu|cuda] [--amp none|bf16|fp16] [--channels-last]
        [--batch 2] [--size 257] [--steps 3] [--attacks pgd,rppgd++,...] [--train-batch N] [--train-size S]
        [--eval-size HxW] [--repeats 5] [--loader-batches 10] [--threads N] [--out FILE.json] [SECTION.key value ...]

Every attack step costs at least one forward and one backward pass of the model: that pass is the floor
("fwd+bwd": eval mode, the mean cross-entropy over valid pixels, autograd.grad w.r.t. the input). In one process
and interleaved (every entry once per round, so a slow spell of a shared machine hits all alike), after a
warm-up that also measures each entry's peak memory, it times:
- the floor on a random batch (--batch, --size; labels with 10% ignored pixels);
- each attack on that batch, per step: a --steps call against a 1-step call, (t_steps - t_1) / (steps - 1), so the
  start of a call (a random start, APGD's judgement of its start point) is its own column ("fixed s"); the
  forward and backward passes of the --steps call are counted with module hooks (engine.passes) and a call that
  makes more than its definition needs stops the benchmark;
- one clean training step and one adversarial training step (the recipes none and, with the config's ADV_TRAIN attack
  and adv_ratio, ADV_TRAIN.method or else at; the config's optimizer) on a random batch of --train-batch x
  --train-size (default: TRAIN.batch_size per process and TRAIN.crop_size);
- one image of --eval-size evaluated under ATTACK.protocol: clean, and under PGD with --steps steps, against one
  forward+backward of that image through the same inference (the protocol's attack target);
- a batch of the training data loader (DATA.workers workers), and the pre-flight check of its list into an empty
  cache against the cached check (util/data/check.py), when the dataset is there.
Medians are printed with their ratio to the floor (or to the clean training step, or to the one-image pass), peak
memory (CPU: the resident set's peak, Linux; CUDA: the allocator's, after synchronisation) and the targets of the
issue "Speed and memory at the floor", with PASS or FAIL; its AT target (2.8x a clean step for 3 attack steps on half
the batch) is scaled to the recipe's attack passes per image (at_target). --out writes everything as JSON.
--amp runs the floor, the attacks, the training steps and the evaluation under autocast (engine/precision.py);
--channels-last sets MODEL.channels_last. MODEL.pretrained is not read (weights do not change the cost).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from attack import attack_parameters, build_attack
from engine.attacks import AttackSpec, uses_mce_bal
from engine.optim import build_optimizer, build_scheduler
from engine.passes import PassCounter, check_passes
from engine.precision import autocast, check_amp
from engine.protocols import build_protocol
from engine.recipes import RECIPES
from model import build_model
from util.config import load_config
from util.data.check import check_list
from util.data.dataset import build_dataset
from util.data.loader import make_loader
from util.errors import UserError, run_cli
from util.peak_memory import MIB, CudaPeak, RssPeak

DEFAULT_ATTACKS = "fgsm,bim,pgd,segpgd,cospgd,rppgd,rppgd++,rppgd++:release,apgd-ce,apgd-mce,apgd-mce-bal,apgd-js"
STEP_TARGET, RP_TIME_TARGET, RP_MEMORY_TARGET, AT_TARGET, EVAL_MARGIN = 1.15, 1.15, 1.2, 2.8, 0.5
AT_TARGET_PASSES = 1.5  # AT_TARGET is set for RP-PGD++ with 3 steps on half the batch: 1.5 attack passes per image


def at_target(passes: float) -> float:
    """The AT step's limit against a clean step for a recipe making `passes` attack fwd+bwd passes per training image
    (Recipe.attack_passes): AT_TARGET scaled, 1 + (AT_TARGET - 1) * passes / AT_TARGET_PASSES (PIR-AT attacks every
    image, and with ADV_TRAIN.iterate_grads makes a fwd+bwd through the parameters per attack iterate besides)."""
    return 1 + (AT_TARGET - 1) * passes / AT_TARGET_PASSES


@dataclass
class Entry:
    name: str
    run: Callable[[], object]
    unit: float = 1.0                 # the call's time is divided by this (an attack's steps)
    reference: str = "fwd+bwd"        # what its ratio is taken to
    times: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    passes: tuple[int, int] | None = None
    attack: bool = False              # an attack step (its ratio to the floor is a target)
    images: int = 0                   # images one call processes (for images per second)
    base: "Entry | None" = None       # an attack's 1-step call: a step's cost is the difference, per extra step
    hidden: bool = False              # measured, but only as another entry's base


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del result
    return time.perf_counter() - start


def random_batch(n: int, h: int, w: int, classes: int, ignore: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, h, w, generator=g)
    labels = torch.randint(0, classes, (n, h, w), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.1] = ignore
    return images.to(device), labels.to(device)


def floor_pass(model, images, labels, ignore: int, amp: str) -> Callable[[], torch.Tensor]:
    """One forward (eval mode) and autograd.grad of the mean CE w.r.t. the input: what an attack step needs."""
    def run() -> torch.Tensor:
        with torch.enable_grad(), autocast(amp, images.device):
            x = images.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x).float(), labels, ignore_index=ignore)
            return torch.autograd.grad(loss, x)[0]
    return run


def attack_entries(names: str, model, images, labels, cfg, steps: int, amp: str) -> list[Entry]:
    """A --steps call of each attack (rppgd/rppgd++ 'name:release' for the release variant) and, for an attack
    with steps, a 1-step call: the cost of a step is (t_steps - t_1) / (steps - 1), what each further step adds, and
    what a call costs besides its steps (a random start, APGD's judgement of its start point) is t_1 minus one
    step."""
    entries = []
    for item in [s.strip() for s in names.split(",") if s.strip()]:
        name, _, variant = item.partition(":")
        try:
            allowed = attack_parameters(name)
        except ValueError as exc:
            raise UserError(f"--attacks: {exc}") from exc
        params = {k: v for k, v in {"eps": 0.03, "alpha": 0.01, "steps": steps, "seed": 0,
                                    "ignore_index": cfg.DATA.ignore_index}.items() if k in allowed}
        if variant:
            params["variant"] = variant
        if variant == "release":
            params.update(mean=list(cfg.DATA.mean), std=list(cfg.DATA.std))
        if uses_mce_bal(name, params):
            params["class_counts"] = [1.0] * cfg.DATA.classes  # the weights do not change the cost
        try:
            atk = build_attack(name, model, **params)
        except (TypeError, ValueError) as exc:
            raise UserError(f"--attacks {item}: {exc}") from exc
        if atk.run_names():
            raise UserError(f"--attacks: {name} is a sequence of separate runs ({', '.join(atk.run_names())}); its "
                            "cost per step is that of the attacks it runs (for SEA the apgd-* rows)")

        def run(atk=atk):
            with autocast(amp, images.device):
                return atk(images, labels)
        entry = Entry(f"{item} step", run, unit=float(params.get("steps", 1)), attack=True, images=len(images))
        with PassCounter(model) as counter:
            run()
        check_passes(atk, counter, len(images))  # stops the benchmark when a step does more than its loss needs
        entry.passes = (counter.forward, counter.backward)
        entries.append(entry)
        if "steps" in params and steps > 1:
            one = build_attack(name, model, **{**params, "steps": 1})

            def run_one(one=one):
                with autocast(amp, images.device):
                    return one(images, labels)
            entry.base = Entry(f"{item} 1-step call", run_one, hidden=True)
            entries.append(entry.base)
    return entries


def training_entries(cfg, device: torch.device, batch: int, size: tuple[int, int]) -> tuple[list[Entry], float]:
    """A clean and an adversarial training step (the recipes' step, under TRAIN.amp) on one random batch, with a model
    of their own; the adversarial one is ADV_TRAIN.method's recipe, or at when the config trains clean. Also its
    attack passes per training image (Recipe.attack_passes)."""
    torch.manual_seed(cfg.EXP.seed)
    model = build_model(cfg, backbone_weights=False).to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_iter=10 ** 6)
    clean_cfg = copy.deepcopy(cfg)  # a PIR-AT config's ADV_TRAIN.iterate_grads belongs to its adversarial step only
    clean_cfg.ADV_TRAIN.iterate_grads = False
    clean = RECIPES.get("none")(clean_cfg, model)
    adversarial = RECIPES.get(cfg.ADV_TRAIN.method if cfg.ADV_TRAIN.method != "none" else "at")(cfg, model)
    images, labels = random_batch(batch, *size, cfg.DATA.classes, cfg.DATA.ignore_index, device, seed=1)
    return [Entry("clean training step", lambda: clean.step(model, images, labels, optimizer, scheduler),
                  images=batch),
            Entry("AT training step", lambda: adversarial.step(model, images, labels, optimizer, scheduler),
                  reference="clean training step", images=batch)], adversarial.attack_passes()


def evaluation_entries(cfg, model, device: torch.device, size: tuple[int, int], steps: int, amp: str
                       ) -> list[Entry]:
    """One image under ATTACK.protocol: its fwd+bwd through the protocol's inference, clean and PGD-attacked (the
    attack's passes under ATTACK.amp)."""
    protocol = build_protocol(cfg, model)
    x, y = random_batch(1, *size, cfg.DATA.classes, cfg.DATA.ignore_index, device, seed=2)
    pgd = protocol.build_attack(AttackSpec("pgd", "pgd", {"eps": 0.03, "alpha": 0.01, "steps": steps}, "bench"), cfg)
    target = pgd.model  # the protocol's attack target: full's sliding-window inference
    return [Entry("one image: fwd+bwd through the inference", floor_pass(target, x, y, cfg.DATA.ignore_index, amp),
                  reference="one image: fwd+bwd through the inference"),
            Entry("one image: clean prediction", lambda: protocol.predict(x, y, [0]),
                  reference="one image: fwd+bwd through the inference"),
            Entry(f"one image: PGD-{steps} robust prediction", lambda: protocol.predict(x, y, [0], pgd),
                  reference="one image: fwd+bwd through the inference")]


def loader_seconds(cfg, batches: int, repeats: int) -> dict | None:
    """Median seconds per batch of the training loader (DATA.workers workers) and of the pre-flight check of its
    list, first and cached; {"skipped": why} without the dataset."""
    try:
        dataset = build_dataset(cfg, "train", train=True)
    except UserError as exc:
        return {"skipped": str(exc)}
    check = data_check_seconds(cfg, repeats)  # a bad line stops the benchmark (exit 2) rather than its loader
    loader = make_loader(dataset, cfg.TRAIN.batch_size, cfg.DATA.workers, 0, 1, True, cfg.EXP.seed)
    times, start = [], time.perf_counter()
    for i, _ in enumerate(loader):
        times.append(time.perf_counter() - start)
        if i + 1 == batches:
            break
        start = time.perf_counter()
    return {"seconds_per_batch": statistics.median(times[1:]) if len(times) > 1 else times[0],
            "batch": cfg.TRAIN.batch_size, "workers": cfg.DATA.workers, "batches": len(times), "data_check": check}


def data_check_seconds(cfg, repeats: int) -> dict:
    """Medians of the pre-flight check of DATA.train_list, first (into an empty cache) and cached, side by side."""
    first, cached = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            a = check_list(cfg, cfg.DATA.train_list, progress=False, cache_dir=Path(cache))
            b = check_list(cfg, cfg.DATA.train_list, progress=False, cache_dir=Path(cache))
        assert not a.cached and b.cached
        first.append(a.seconds)
        cached.append(b.seconds)
    return {"list": str(a.list_file), "samples": a.samples, "first_seconds": statistics.median(first),
            "cached_seconds": statistics.median(cached), "workers": cfg.DATA.workers, "repeats": repeats}


def summarise(entries: list[Entry]) -> list[dict]:
    by_name = {e.name: e for e in entries}
    rows = []
    def seconds(e: Entry) -> float:
        if e.base is None:
            return statistics.median(e.times) / e.unit
        return (statistics.median(e.times) - statistics.median(e.base.times)) / (e.unit - 1)

    for e in (e for e in entries if not e.hidden):
        t, t_ref = seconds(e), seconds(by_name[e.reference])
        m, m_ref = statistics.median(e.memory), statistics.median(by_name[e.reference].memory)
        fixed = None if e.base is None else statistics.median(e.base.times) - t
        rows.append({"name": e.name, "attack": e.attack, "seconds": t, "fixed_seconds": fixed,
                     "reference": e.reference, "ratio": t / t_ref,
                     "images_per_s": e.images / t if e.images else None,
                     "peak_mib": m / MIB, "memory_ratio": m / m_ref if m_ref > 0 else None,
                     "passes": e.passes, "times": e.times})
    return rows


def targets(rows: list[dict], steps: int, at_passes: float) -> list[dict]:
    by = {r["name"]: r for r in rows}
    out = [{"what": f"{r['name']} / fwd+bwd", "value": r["ratio"], "limit": STEP_TARGET}
           for r in rows if r["attack"]]
    rp, pgd = by.get("rppgd++ step"), by.get("pgd step")
    if rp and pgd:
        out.append({"what": "rppgd++ step / pgd step (time)", "value": rp["seconds"] / pgd["seconds"],
                    "limit": RP_TIME_TARGET})
        out.append({"what": "rppgd++ step / pgd step (peak memory)", "value": rp["peak_mib"] / pgd["peak_mib"],
                    "limit": RP_MEMORY_TARGET})
    if "AT training step" in by:
        out.append({"what": f"AT training step / clean training step ({at_passes:g} attack passes per image)",
                    "value": by["AT training step"]["ratio"], "limit": at_target(at_passes)})
    robust = by.get(f"one image: PGD-{steps} robust prediction")
    if robust:
        out.append({"what": f"robust evaluation of one image (PGD-{steps}) / its fwd+bwd through the inference",
                    "value": robust["ratio"], "limit": steps + EVAL_MARGIN})
    for t in out:
        t["pass"] = t["value"] <= t["limit"]
    return out


def parse(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batch", type=int, default=2, help="images of the floor and attack-step batch")
    p.add_argument("--size", type=int, default=0, help="their height and width (default: TRAIN.crop_size)")
    p.add_argument("--steps", type=int, default=3,
                   help="steps of the long attack call (a step costs (t_steps - t_1) / (steps - 1))")
    p.add_argument("--attacks", default=DEFAULT_ATTACKS)
    p.add_argument("--train-batch", type=int, default=0, help="default: TRAIN.batch_size")
    p.add_argument("--train-size", type=int, default=0, help="default: TRAIN.crop_size")
    p.add_argument("--eval-size", default="", help="HxW of the evaluated image (default: 1.5 x TEST.crop_size "
                                                     "under slide inference, else the --size square)")
    p.add_argument("--repeats", type=int, default=5, help="timing rounds (medians)")
    p.add_argument("--loader-batches", type=int, default=10, help="0: skip the data loader")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="SECTION.key value pairs")
    args = p.parse_args(argv)
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1; got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    check_amp(args.amp, device, "--amp")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    overrides = [*args.overrides, "TRAIN.amp", args.amp, "ATTACK.amp", args.amp]
    overrides += ["MODEL.channels_last", "true"] if args.channels_last else []
    cfg = load_config(args.config, overrides)
    k, ignore = cfg.DATA.classes, cfg.DATA.ignore_index
    size = args.size or cfg.TRAIN.crop_size[0]
    train_size = (args.train_size,) * 2 if args.train_size else tuple(cfg.TRAIN.crop_size)
    train_batch = args.train_batch or cfg.TRAIN.batch_size  # one process: the whole global batch
    if args.eval_size:
        try:
            eval_size = tuple(int(v) for v in args.eval_size.lower().split("x"))
            assert len(eval_size) == 2
        except (ValueError, AssertionError) as exc:
            raise UserError(f"--eval-size must be HxW, e.g. 480x640; got {args.eval_size!r}") from exc
    elif cfg.TEST.mode == "slide":
        eval_size = tuple(int(1.5 * c) for c in cfg.TEST.crop_size)
    else:
        eval_size = (size, size)

    torch.manual_seed(0)
    model = build_model(cfg, backbone_weights=False).to(device).eval()
    images, labels = random_batch(args.batch, size, size, k, ignore, device)
    entries = [Entry("fwd+bwd", floor_pass(model, images, labels, ignore, args.amp), images=args.batch)]
    entries += attack_entries(args.attacks, model, images, labels, cfg, args.steps, args.amp)
    training, at_passes = training_entries(cfg, device, train_batch, train_size)
    entries += training
    entries += evaluation_entries(cfg, model, device, eval_size, args.steps, args.amp)

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    peak = CudaPeak(device) if device.type == "cuda" else RssPeak()
    log(peak.self_check())
    for e in entries:  # warm-up and peak memory, one call each
        e.memory.append(peak.measure(e.run))
    log("warm-up and peak memory done")
    for r in range(args.repeats):
        for e in entries:
            e.times.append(timed(e.run, device))
        log(f"timing round {r + 1}/{args.repeats} done")
    rows = summarise(entries)
    checks = targets(rows, args.steps, at_passes)
    loader = loader_seconds(cfg, args.loader_batches, args.repeats) if args.loader_batches else None

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    m = cfg.MODEL
    backbone = f"ResNet-{m.layers}" if m.backbone == "resnet" else f"{m.backbone}-{m.variant}"
    network = m.arch if ":" in m.arch else f"{m.arch} {backbone} ({m.style})"  # a library family: its arch
    header = (f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads, amp {args.amp}, "
              f"channels_last {m.channels_last}; {network}, {k} classes; attack batch "
              f"{args.batch}x3x{size}x{size}, {args.steps} steps per call; training batch {train_batch}x"
              f"{train_size[0]}x{train_size[1]}; one image {eval_size[0]}x{eval_size[1]} under "
              f"{cfg.ATTACK.protocol} ({cfg.TEST.mode}); medians of {args.repeats} interleaved rounds")
    lines = [header, "", "| entry | passes (fwd / bwd) | seconds | images/s | ratio | to | peak MiB | memory ratio | "
                         "fixed s |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        passes = "-" if r["passes"] is None else f"{r['passes'][0]} / {r['passes'][1]}"
        mem = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        speed = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.2f}"
        fixed = "-" if r["fixed_seconds"] is None else f"{r['fixed_seconds']:.3f}"
        lines.append(f"| {r['name']} | {passes} | {r['seconds']:.3f} | {speed} | {r['ratio']:.2f} | "
                     f"{r['reference']} | {r['peak_mib']:.0f} | {mem} | {fixed} |")
    if loader and "seconds_per_batch" in loader:
        lines.append(f"\ndata loader: {loader['seconds_per_batch']:.3f} s per batch of {loader['batch']} "
                     f"({loader['workers']} workers); the clean training step takes "
                     f"{[r for r in rows if r['name'] == 'clean training step'][0]['seconds']:.3f} s on "
                     f"{train_batch} images")
        c = loader["data_check"]
        lines.append(f"pre-flight data check of {c['list']} ({c['samples']} lines, {c['workers']} threads): "
                     f"{c['first_seconds']:.3f} s, cached {c['cached_seconds']:.4f} s "
                     f"({c['first_seconds'] / c['cached_seconds']:.0f}x less)")
    elif loader:
        lines.append(f"\ndata loader: skipped ({loader['skipped']})")
    lines += [""] + [f"target: {t['what']} = {t['value']:.2f} (<= {t['limit']:.2f}): "
                     f"{'PASS' if t['pass'] else 'FAIL'}" for t in checks]
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"header": header, "device": name, "torch": torch.__version__,
                                              "threads": torch.get_num_threads(), "amp": args.amp,
                                              "config": cfg.to_dict(), "rows": rows, "targets": checks,
                                              "loader": loader, "memory_method": peak.method}, indent=2) + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
