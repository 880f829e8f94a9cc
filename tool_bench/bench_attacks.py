"""What does one attack step cost? Time and peak memory of one step of each attack, relative to one forward+backward.

    python tool_bench/bench_attacks.py [--device auto|cpu|cuda] [--repeats 3] [--attacks pgd,rppgd++,...]
                                      [--size 257] [--batch 2] [--threads N] [--out PATH]
                                      [--config PATH] [SECTION.key value ...]

The model is PSPNet on a dilated ResNet-50 with 21 classes, the standard 512-channel head and random weights
(config/demo/demo_pspnet18.yaml with MODEL.layers 50, MODEL.head_channels 0, DATA.classes 21, no pretrained
file), unless --config names another config; SECTION.key value pairs override either. The input is a random
batch (N,3,size,size) in [0,1] with random labels, about 10% of them ignore_index (255).

The reference is one forward+backward: the model in eval mode, the mean cross-entropy over valid pixels, and
torch.autograd.grad of it w.r.t. the input, the pass an attack step makes. Each attack is built with steps=1
(FGSM always makes one step) and seed 0, and one full `atk(images, labels)` call is measured. An APGD call
with steps=1 makes two forward passes (its start point and its one iterate) and one backward (the last iterate
needs no gradient): the table lists the forward and backward passes of each call, counted with module hooks
(engine.passes.PassCounter) during the first call, and also divides by the forward passes. SEA is left out: it
is a sequence of APGD runs, costed by the apgd-* rows.

Peak memory is measured first, in separate calls that also warm every entry up; then `repeats` timing rounds
each time every entry once (interleaved, so that a slow spell of a shared machine hits all entries alike);
the table shows medians (time.perf_counter; on CUDA with synchronisation). Peak memory:
- CPU: peak resident set size (Linux). Freed heap memory is returned to the system (glibc malloc_trim), the
  peak is reset by writing 5 to /proc/self/clear_refs, the entry runs, and its peak extra memory is VmHWM
  after the run minus VmRSS just before it. PyTorch's CPU allocations are invisible to tracemalloc.
- CUDA: torch.cuda.max_memory_allocated after the run minus torch.cuda.memory_allocated before it, with the
  peak statistics reset just before.
Run time with the defaults: about 8 minutes on a quiet 2-core CPU (one R50 pass takes 2.7 s there). Timings are
noisy (about +-10% between entries that run the same code): compare entries within one run, or use a short
--attacks list (e.g. pgd,rppgd++:described) with more --repeats for a tighter ratio.

The output is a markdown table on stdout (--out PATH also writes it to PATH and a JSON to PATH with the
suffix .json), and the two targets for RP-PGD++ (described): step time <= 1.15 x PGD's and peak memory
<= 1.2 x PGD's, each with PASS or FAIL.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from attack import attack_parameters, build_attack
from engine.passes import PassCounter
from model import build_model
from util.config import load_config
from util.errors import UserError, run_cli
from util.peak_memory import MIB, CudaPeak, RssPeak

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "demo" / "demo_pspnet18.yaml"
DEFAULT_OVERRIDES = ["MODEL.arch", "pspnet", "MODEL.layers", "50", "MODEL.head_channels", "0", "DATA.classes", "21"]
DEFAULT_ATTACKS = ("fgsm,bim,pgd,segpgd,cospgd,rppgd,rppgd++,apgd-ce,apgd-mce,apgd-mce-bal,apgd-js")
RP_ATTACKS = ("rppgd", "rppgd++")
RP_VARIANTS = ("described", "release")
TIME_TARGET, MEMORY_TARGET = 1.15, 1.2  # rppgd++ (described) relative to pgd
REFERENCE = "fwd+bwd"


@dataclass
class Entry:
    """One measured thing: a callable, and the forward and backward passes through the model one call makes
    (counted with hooks by count_passes)."""
    name: str
    run: Callable[[], object]
    params: dict = field(default_factory=dict)
    passes: int = 0                                       # forward passes of one call
    backward: int = 0                                     # backward passes of one call
    times: list[float] = field(default_factory=list)     # seconds, one per repeat
    memory: list[float] = field(default_factory=list)    # bytes of peak extra memory, one per memory repeat


# ---- what is measured ----------------------------------------------------------------------------------------
def reference_pass(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, ignore_index: int
                   ) -> Callable[[], torch.Tensor]:
    """One forward (eval mode) + torch.autograd.grad of the mean CE w.r.t. the input: (N,3,H,W) gradient."""
    def run() -> torch.Tensor:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x), labels, ignore_index=ignore_index)
            return torch.autograd.grad(loss, x)[0]
    return run


def parse_attacks(text: str) -> list[tuple[str, str | None]]:
    """'pgd,rppgd++,rppgd:release' -> [(name, variant or None)]; rppgd and rppgd++ alone give both variants."""
    chosen: list[tuple[str, str | None]] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, variant = item.partition(":")
        if name == "sea":
            raise UserError("--attacks: sea is left out of this benchmark (it is a sequence of APGD runs; see the "
                            "apgd-* rows)")
        try:
            attack_parameters(name)
        except ValueError as exc:
            raise UserError(f"--attacks: {exc}") from exc
        if variant and name not in RP_ATTACKS:
            raise UserError(f"--attacks: '{item}': only rppgd and rppgd++ take a variant (described, release)")
        if variant and variant not in RP_VARIANTS:
            raise UserError(f"--attacks: '{item}': the variant must be one of {', '.join(RP_VARIANTS)}")
        if name in RP_ATTACKS and not variant:
            chosen += [(name, v) for v in RP_VARIANTS]
        else:
            chosen.append((name, variant or None))
    if not chosen:
        raise UserError("--attacks: name at least one attack")
    return list(dict.fromkeys(chosen))


def make_entry(name: str, variant: str | None, model: torch.nn.Module, images: torch.Tensor,
               labels: torch.Tensor, cfg) -> Entry:
    """Build attack `name` for one step and wrap one full call of it."""
    allowed = attack_parameters(name)
    params: dict = {"ignore_index": cfg.DATA.ignore_index}
    if "steps" in allowed:
        params["steps"] = 1
    if "seed" in allowed:
        params["seed"] = 0
    if variant is not None:
        params["variant"] = variant
    if variant == "release":  # its random start works in normalised space
        params.update(mean=list(cfg.DATA.mean), std=list(cfg.DATA.std))
    if name == "apgd-mce-bal":
        params["class_counts"] = [1.0] * cfg.DATA.classes  # uniform: the weights do not change the cost
    atk = build_attack(name, model, **params)
    label = f"{name} ({variant})" if variant else name
    return Entry(label, lambda: atk(images, labels), params)


def count_passes(entries: list[Entry], model: torch.nn.Module) -> None:
    """Fill each entry's forward and backward passes from one call under module hooks."""
    for e in entries:
        with PassCounter(model) as counter:
            e.run()
        e.passes, e.backward = counter.forward, counter.backward
        if e.passes < 1:
            raise RuntimeError(f"{e.name}: no forward pass through the model was counted")


# ---- measurement ---------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def measure(entries: list[Entry], device: torch.device, repeats: int, memory_repeats: int, peak,
            log: Callable[[str], None]) -> None:
    """Fill each entry's memory and times. The memory rounds come first and double as the warm-up of every
    entry (the reference is called once before them, so that one-time set-up costs stay out of every peak,
    and once after them, so that the first timed call does not pay for pages the memory rounds gave back)."""
    reference = entries[0]
    timed(reference.run, device)
    for r in range(memory_repeats):
        for e in entries:
            e.memory.append(peak.measure(e.run))
        log(f"memory round {r + 1}/{memory_repeats} (also the warm-up) done")
    timed(reference.run, device)
    for r in range(repeats):
        for e in entries:
            e.times.append(timed(e.run, device))
        log(f"timing round {r + 1}/{repeats} done")


# ---- report --------------------------------------------------------------------------------------------------
def summarise(entries: list[Entry]) -> list[dict]:
    ref = entries[0]
    t_ref, m_ref = statistics.median(ref.times), statistics.median(ref.memory)
    rows = []
    for e in entries:
        t, m = statistics.median(e.times), statistics.median(e.memory)
        rows.append({"name": e.name, "passes": e.passes, "backward_passes": e.backward, "time_s": t,
                     "time_ratio": t / t_ref,
                     "time_ratio_per_pass": t / t_ref / e.passes, "peak_bytes": m,
                     "memory_ratio": m / m_ref if m_ref > 0 else float("nan"),
                     "times_s": e.times, "peaks_bytes": e.memory, "params": e.params})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| attack | passes (fwd / bwd) | time / fwd+bwd | time / fwd+bwd per pass | peak memory / fwd+bwd's | "
             "ms | MiB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['passes']} / {r['backward_passes']} | {r['time_ratio']:.2f} | "
                     f"{r['time_ratio_per_pass']:.2f} | "
                     f"{r['memory_ratio']:.2f} | {r['time_s'] * 1000:.0f} | {r['peak_bytes'] / MIB:.0f} |")
    return lines


def targets(rows: list[dict]) -> tuple[list[str], dict]:
    by_name = {r["name"]: r for r in rows}
    rp, pgd = by_name.get("rppgd++ (described)"), by_name.get("pgd")
    if rp is None or pgd is None:
        return ["targets: n/a (needs both pgd and rppgd++ (described) in --attacks)"], {}
    t = rp["time_s"] / pgd["time_s"]
    # The same ratio within each round, where both ran seconds apart: less exposed to slow spells.
    paired = statistics.median(a / b for a, b in zip(rp["times_s"], pgd["times_s"]))
    fastest = min(rp["times_s"]) / min(pgd["times_s"])  # noise only adds time: the minima are the least disturbed
    m = rp["peak_bytes"] / pgd["peak_bytes"] if pgd["peak_bytes"] > 0 else float("nan")
    result = {"time_ratio": t, "time_ratio_paired": paired, "time_ratio_fastest": fastest,
              "time_target": TIME_TARGET, "time_pass": t <= TIME_TARGET,
              "memory_ratio": m, "memory_target": MEMORY_TARGET, "memory_pass": m <= MEMORY_TARGET}
    return [f"target: rppgd++ (described) step time / pgd step time = {t:.3f} (<= {TIME_TARGET}): "
            f"{'PASS' if result['time_pass'] else 'FAIL'} (median of the per-round ratios {paired:.3f}, "
            f"ratio of the fastest calls {fastest:.3f})",
            f"target: rppgd++ (described) peak memory / pgd peak memory = {m:.3f} (<= {MEMORY_TARGET}): "
            f"{'PASS' if result['memory_pass'] else 'FAIL'}"], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None,
                        help=f"model config (default: {DEFAULT_CONFIG.relative_to(ROOT)} with "
                             f"{' '.join(DEFAULT_OVERRIDES)})")
    parser.add_argument("--size", type=int, default=257, help="input height and width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timing rounds (default 3: with all attacks one round costs 18 passes, about 50 s on 2 "
                             "idle cores and 3 minutes on 2 busy ones)")
    parser.add_argument("--memory-repeats", type=int, default=1, help="peak-memory rounds (median)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--attacks", default=DEFAULT_ATTACKS,
                        help="comma list of registry names; rppgd and rppgd++ run both variants unless written "
                             "as rppgd++:described or rppgd++:release")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=None, help="also write the report to PATH and a JSON to PATH.json")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="SECTION.key value pairs")
    args = parser.parse_args()
    for name in ("size", "batch", "repeats", "memory_repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix == ".json":
        raise UserError(f"--out {out}: give the report's path (e.g. bench.md); the JSON goes next to it as .json")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    chosen = parse_attacks(args.attacks)

    if args.config is None:
        cfg = load_config(DEFAULT_CONFIG, DEFAULT_OVERRIDES + list(args.overrides))
    else:
        cfg = load_config(args.config, args.overrides)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    k, ignore = cfg.DATA.classes, cfg.DATA.ignore_index
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    labels = torch.randint(0, k, (args.batch, args.size, args.size), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.1] = ignore
    labels = labels.to(device)

    peak = CudaPeak(device) if device.type == "cuda" else RssPeak()
    entries = [Entry(REFERENCE, reference_pass(model, images, labels, ignore))]
    entries += [make_entry(n, v, model, images, labels, cfg) for n, v in chosen]
    count_passes(entries, model)

    m = cfg.MODEL
    head = m.head_channels or (512 if m.arch == "pspnet" else 256)
    model_desc = (f"{m.arch} ResNet-{m.layers} ({'deep' if m.deep_stem else 'plain'} stem), {k} classes, "
                  f"{head}-channel head, weights {m.pretrained or 'random'}")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    header = (f"device {dev_name}, torch {torch.__version__}, {torch.get_num_threads()} threads, input "
              f"{args.batch}x3x{args.size}x{args.size}, {args.repeats} timing repeats (median), "
              f"{args.memory_repeats} memory repeat(s)")

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    log(header)
    check = peak.self_check()
    log(check)
    start = time.perf_counter()
    measure(entries, device, args.repeats, args.memory_repeats, peak, log)
    log(f"measured in {time.perf_counter() - start:.0f} s")

    rows = summarise(entries)
    target_lines, target_result = targets(rows)
    lines = ["# One attack step vs one forward+backward", "",
             header, f"model: {model_desc}", f"peak memory: {peak.method}; {check}",
             "one step: each attack built with steps=1 and seed 0, one full atk(images, labels) call; "
             "fwd+bwd: eval forward + autograd.grad of the mean CE w.r.t. the input",
             "passes: forward / backward passes through the model in one call, counted with module hooks (APGD with "
             "steps=1 judges its start point and one step); "
             "SEA left out (it is a sequence of APGD runs)", ""]
    lines += table(rows) + [""] + target_lines
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        report = {"device": dev_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "input": [args.batch, 3, args.size, args.size], "repeats": args.repeats,
                  "memory_repeats": args.memory_repeats, "model": model_desc, "config": cfg.to_dict(),
                  "memory_method": peak.method, "memory_self_check": check, "rows": rows, "targets": target_result}
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    run_cli(main)
