"""Convergence study: mIoU after each step of every attack on a fixed validation subset.

    python tool_test/convergence.py --config config/demo/demo_pspnet18.yaml [--images 16] [--eps 0.03]
        [--alpha 0.01] [--steps 1,2,3,5,10,20] [--apgd-steps 100] [--sea-steps 300] [--only pgd,rppgd++]
        [SECTION.key value ...]

Loads TEST.model_path (default: the run's model/last.pth) and attacks the first --images images of DATA.val_list
under ATTACK.protocol (the demo configs: `full` with TEST.mode whole, i.e. whole images), in batches of
TEST.batch_size, on one process, through the robustness evaluation of tool_test/test.py (engine/robustness.py): random
starts are seeded per image from (ATTACK.seed, dataset index). The PGD family (BIM, PGD, SegPGD, CosPGD,
RP-PGD and RP-PGD++ in both variants, and RP-PGD++ with the region loss only) runs once per budget T in
--steps, since SegPGD's and RP-PGD's schedules depend on T; APGD with each loss and SEA run at their own budgets.
Writes <run>/result/convergence/: the evaluation's metrics.json and report.md (every run an entry), convergence.csv
(mIoU after every step of every run, each run's result and, for SEA, its own figure: the dataset-level worst case
over its loss runs), convergence.md (the tables), convergence.json (every attack's parameters and scores) and the
plots beside them: convergence.png (mIoU against the step for every attack at its largest budget, each attack's final
figure marked) and ablation_<name>.png (each RP-PGD ablation against RP-PGD++).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import Subset

from engine.attacks import AttackSpec
from engine.robustness import RobustnessEvaluation
from engine.trained_model import load_trained_model
from util.config import load_config, run_dir, save_config
from util.data.check import check_data
from util.data.dataset import build_dataset, prepare_on_first_use
from util.data.loader import make_loader
from util.distributed import single_process
from util.errors import UserError, run_cli
from util.evaluation.metrics import confusion_matrix, scores
from util.logger import make_logger
from util.outputs import write_json
from util.visualisation.plots import step_curves


@dataclass
class Row:
    """One line of the tables: an attack with fixed parameters, run at one or more budgets."""
    label: str
    name: str
    params: dict
    budgets: list[int]
    group: str                       # "pgd family", "ablation" or "apgd"
    per_step: dict = field(default_factory=dict)   # (budget, step) -> confusion matrix of the iterate
    result: dict = field(default_factory=dict)     # budget -> confusion matrix of the returned images
    configs: dict = field(default_factory=dict)    # budget -> attack.config()
    seconds: dict = field(default_factory=dict)    # budget -> attack time
    figure: dict = field(default_factory=dict)     # budget -> SEA's own figure (engine.report.sea_entry)


def study_rows(args) -> list[Row]:
    pgd = {"eps": args.eps, "alpha": args.alpha}
    steps = args.steps
    rows = [
        Row("BIM", "bim", pgd, steps, "pgd family"),
        Row("PGD", "pgd", pgd, steps, "pgd family"),
        Row("SegPGD", "segpgd", pgd, steps, "pgd family"),
        Row("CosPGD", "cospgd", pgd, steps, "pgd family"),
        Row("RP-PGD (described)", "rppgd", pgd, steps, "pgd family"),
        Row("RP-PGD (release)", "rppgd", {**pgd, "variant": "release"}, steps, "pgd family"),
        Row("RP-PGD++ (described)", "rppgd++", pgd, steps, "pgd family"),
        Row("RP-PGD++ (release)", "rppgd++", {**pgd, "variant": "release"}, steps, "pgd family"),
        Row("RP-PGD++ region loss only", "rppgd++", {**pgd, "w_inter": 0.0, "w_intra": 0.0}, steps, "ablation"),
        Row("RP-PGD++ intra term negated", "rppgd++", {**pgd, "w_intra": -0.25}, steps, "ablation"),
    ]
    for loss in ("ce", "mce", "mce-bal", "js"):  # MCE-Bal's class counts come from the training list (engine)
        rows.append(Row(f"APGD-{loss.upper()}", f"apgd-{loss}", {"eps": args.eps}, [args.apgd_steps], "apgd"))
    rows.append(Row("SEA (MCE-Bal, MCE, JS)", "sea", {"eps": args.eps}, [args.sea_steps], "apgd"))
    if args.only:
        rows = [r for r in rows if r.name in args.only]
        if not rows:
            raise UserError(f"--only {','.join(args.only)} selects no attack")
    return rows


def percent(cm: torch.Tensor) -> str:
    return f"{100 * scores(cm)['mIoU']:.2f}"


def tables(rows: list[Row], clean_cm: torch.Tensor, args, images: int, model_path: Path, protocol: str) -> str:
    steps = args.steps
    head = "| attack | " + " | ".join(f"T={t}" for t in steps) + " |"
    sep = "|---" * (len(steps) + 1) + "|"
    family = [r for r in rows if r.group in ("pgd family", "ablation")]
    lines = [f"# Convergence study: {model_path}", "",
             f"{images} validation images, protocol `{protocol}`, eps {args.eps:g}, clean mIoU {percent(clean_cm)}."]
    if family:
        lines += ["", f"## mIoU (%) after T steps (PGD family, alpha {args.alpha:g}; one run per T)", "", head, sep]
        lines += [f"| {r.label} | " + " | ".join(percent(r.result[t]) for t in steps) + " |" for r in family]
    apgd = [r for r in rows if r.group == "apgd"]
    if apgd:
        lines += ["", "## APGD and SEA at their own budgets", "", "| attack | steps | mIoU (%) |", "|---|---|---|"]
        for r in apgd:
            t = r.budgets[0]
            if t in r.figure:  # SEA: its own figure, then the images it returns (per image the lowest accuracy)
                lines.append(f"| {r.label}: SEA's worst case over its runs | {t} | {100 * r.figure[t]['mIoU']:.2f} |")
                lines.append(f"| {r.label}: per image the lowest-accuracy run | {t} | {percent(r.result[t])} |")
            else:
                lines.append(f"| {r.label} | {t} | {percent(r.result[t])} |")
    names = {r.label: r for r in family}
    ablation = [("region loss only", "RP-PGD++ region loss only"), ("+ inter-class term (= RP-PGD)",
                "RP-PGD (described)"), ("+ intra-class term (= RP-PGD++)", "RP-PGD++ (described)"),
                ("+ intra-class term negated (`w_intra -0.25`)", "RP-PGD++ intra term negated")]
    ablation = [(text, label) for text, label in ablation if label in names]
    if len(ablation) > 1:
        lines += ["", "## Ablation of RP-PGD++ (described variant), mIoU (%)", "", head.replace("attack", "terms"),
                  sep]
        lines += [f"| {text} | " + " | ".join(percent(names[label].result[t]) for t in steps) + " |"
                  for text, label in ablation]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None):
    p = argparse.ArgumentParser(description="mIoU after each step of every attack on a fixed validation subset.")
    p.add_argument("--config", required=True)
    p.add_argument("--images", type=int, default=16, help="the first N images of DATA.val_list")
    p.add_argument("--eps", type=float, default=0.03)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--steps", default="1,2,3,5,10,20", help="budgets T of the PGD family")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--sea-steps", type=int, default=300)
    p.add_argument("--only", default="", help="comma-separated registry names to run (default: all)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="SECTION.key value pairs")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(s) for s in args.steps.split(",")})
    except ValueError as exc:
        raise UserError(f"--steps must be comma-separated integers, got '{args.steps}'") from exc
    args.only = [s for s in args.only.split(",") if s]
    if args.images < 1:
        raise UserError("--images must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    cfg = load_config(args.config, args.overrides)
    env = single_process()
    trained = load_trained_model(cfg, env.device)
    logger = make_logger("convergence", None)
    prepare_on_first_use(cfg, logger)
    dataset = build_dataset(cfg, "val", train=False)
    dataset = Subset(dataset, range(min(args.images, len(dataset))))
    loader = make_loader(dataset, cfg.TEST.batch_size, cfg.TEST.workers, env.rank, env.world, train=False)
    rows = study_rows(args)
    runs = {f"{row.label} T={t}": (row, t) for row in rows for t in row.budgets}
    specs = [AttackSpec(row.name, key, {**row.params, "steps": t}, "convergence row") for key, (row, t) in runs.items()]
    evaluation = RobustnessEvaluation(cfg, trained.model, specs, env)
    check_data(cfg, [cfg.DATA.val_list], env, logger)  # last before anything is written
    k = cfg.DATA.classes

    def on_iterate(key: str):
        row, t = runs[key]
        if evaluation.attacks[key].run_names():  # separate runs (SEA's losses) are no one sequence of iterates
            return None

        def record(step: int, logits: torch.Tensor, y: torch.Tensor) -> None:
            cm = confusion_matrix(logits.argmax(1), y, k, cfg.DATA.ignore_index)
            row.per_step[(t, step)] = row.per_step.get((t, step), 0) + cm
        return record
    result = evaluation.run(loader, run_dir(cfg) / "result", "convergence", model_path=trained.path,
                            epoch=trained.epoch, on_iterate=on_iterate, logger=logger)
    for key, (row, t) in runs.items():
        row.configs[t], row.seconds[t] = evaluation.attacks[key].config(), result.seconds[key]
        row.result[t] = result.attacks[key].cm
        entry = result.entries["attacks"][key]
        if "figure" in entry:  # SEA: its own figure, the dataset-level worst case over its loss runs
            row.figure[t] = {"rule": entry["figure"], **{s: entry[s] for s in ("mIoU", "mAcc", "aAcc", "runs")}}
    try:
        write_outputs(result.result_dir, rows, result.clean.cm, args, len(dataset), trained.path, cfg,
                      evaluation.protocol.describe())
    except BaseException:
        shutil.rmtree(result.result_dir, ignore_errors=True)  # nothing half-written
        raise
    print((result.result_dir / "convergence.md").read_text())
    print(f"wrote {result.result_dir}")


def write_outputs(result_dir: Path, rows: list[Row], clean_cm, args, images: int, model_path: Path, cfg,
                  protocol: dict) -> None:
    with open(result_dir / "convergence.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attack", "name", "budget", "step", "kind", "mIoU", "mAcc", "aAcc"])
        w.writerow(["clean", "clean", 0, 0, "result", *fmt(clean_cm)])
        for r in rows:
            for (t, step), cm in sorted(r.per_step.items()):
                w.writerow([r.label, r.name, t, step, "iterate", *fmt(cm)])
            for t, cm in sorted(r.result.items()):
                w.writerow([r.label, r.name, t, t, "result", *fmt(cm)])
            for t, fig in sorted(r.figure.items()):  # SEA's own figure: its worst case over its loss runs
                w.writerow([r.label, r.name, t, t, "sea_figure", *(f"{fig[k]:.6f}" for k in ("mIoU", "mAcc", "aAcc"))])
    (result_dir / "convergence.md").write_text(tables(rows, clean_cm, args, images, model_path, protocol["name"]))
    payload = {"model_path": str(model_path), "images": images, "protocol": protocol, "clean": scores(clean_cm),
               "attacks": [{"label": r.label, "budget": t, "config": r.configs[t], "seconds": round(r.seconds[t], 1),
                            **{k: v for k, v in scores(r.result[t]).items()},
                            **({"sea_figure": {k: r.figure[t][k] for k in ("rule", "mIoU", "mAcc", "aAcc", "runs")}}
                               if t in r.figure else {})} for r in rows for t in r.budgets]}
    write_json(payload, result_dir / "convergence.json")
    save_config(cfg, result_dir / "config.yaml")
    write_plots(result_dir, rows, clean_cm, images, protocol["name"])


def curve(row: Row) -> tuple[list[int], list[float]]:
    """mIoU after every step of the row's run at its largest budget (empty for SEA, traced per run only)."""
    t = max(row.budgets)
    steps = sorted(step for budget, step in row.per_step if budget == t)
    return steps, [scores(row.per_step[(t, step)])["mIoU"] for step in steps]


def final(row: Row) -> tuple[int, float]:
    """(budget, mIoU) of the row's largest budget: SEA's own figure for SEA, else the returned images'."""
    t = max(row.budgets)
    return t, row.figure[t]["mIoU"] if t in row.figure else scores(row.result[t])["mIoU"]


def write_plots(result_dir: Path, rows: list[Row], clean_cm, images: int, protocol: str) -> list[Path]:
    """convergence.png (every attack) and ablation_<name>.png (each ablation row beside RP-PGD++)."""
    clean = scores(clean_cm)["mIoU"]
    where = f"{images} images, protocol {protocol}"
    paths = [step_curves({r.label: curve(r) for r in rows if curve(r)[0]}, {r.label: final(r) for r in rows},
                         result_dir / "convergence.png", f"mIoU after each attack step ({where})", clean)]
    reference = [r for r in rows if r.label == "RP-PGD++ (described)"]
    for r in rows:
        if r.group == "ablation":
            pair = reference + [r]
            slug = "".join(c if c.isalnum() else "_" for c in r.label.lower()).strip("_")
            paths.append(step_curves({p.label: curve(p) for p in pair}, {p.label: final(p) for p in pair},
                                     result_dir / f"ablation_{slug}.png", f"{r.label} ({where})", clean))
    return paths


def fmt(cm: torch.Tensor) -> list[str]:
    s = scores(cm)
    return [f"{s['mIoU']:.6f}", f"{s['mAcc']:.6f}", f"{s['aAcc']:.6f}"]


if __name__ == "__main__":
    run_cli(main)
