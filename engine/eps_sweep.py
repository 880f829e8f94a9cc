"""Robustness curves (ATTACK.eps_sweep, docs/evaluation.md#robustness-curves): every fixed-budget attack at each eps
of the sweep, and the worst case over the attacks at each eps.

An attack is fixed-budget when it has an `eps` parameter. At a sweep eps e, an attack specified at eps e0 (its spec's
eps, else its default) runs with eps e and its step sizes (`alpha`, `step_size`) scaled by e / e0, so a preset such
as PGD's alpha = eps / 4 or PAdam's 2/255 at 8/255 keeps its ratio; APGD's step is a fraction of eps by definition.
Everything else (steps, seeds, restarts) is the spec's. An attack whose spec eps is one of the sweep's is not run
twice: its main run is the sweep's entry at that eps, so the curve at that eps equals the single run.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from attack import Attack, attack_parameters
from engine.attacks import AttackSpec
from engine.report import attack_entry, worst_case_entry
from util.evaluation.metrics import SegMetric
from util.visualisation.plots import eps_curves

STEP_SIZES = ("alpha", "step_size")  # parameters that are step sizes in the units of eps


@dataclass(frozen=True)
class SweepPoint:
    """One attack at one sweep eps: the result key it is evaluated under and the attack it belongs to."""
    eps: float
    attack: str     # the key of the attack in ATTACK.attacks
    key: str        # the result key of this run (the attack's own key where its eps equals the sweep's)


def spec_eps(spec: AttackSpec) -> float | None:
    """The eps the spec runs at (its own, else the attack's default); None for an attack without eps."""
    defaults = attack_parameters(spec.name)
    if "eps" not in defaults:
        return None
    return float(spec.params.get("eps", defaults["eps"]))


def eps_label(eps: float) -> str:
    """eps as the sweep's keys write it: 0.0314 (8/255)."""
    return f"{eps:.4g}"


def sweep_specs(specs: list[AttackSpec], sweep: list[float]) -> tuple[list[AttackSpec], list[SweepPoint]]:
    """The extra specs the sweep runs (those not already in `specs` at that eps) and every point of the sweep."""
    extra, points = [], []
    for spec in specs:
        own = spec_eps(spec)
        if own is None:
            continue
        defaults = attack_parameters(spec.name)
        for eps in sweep:
            if math.isclose(eps, own, rel_tol=0, abs_tol=1e-12):
                points.append(SweepPoint(eps, spec.key, spec.key))
                continue
            scale = eps / own if own > 0 else None
            params = {**spec.params, "eps": eps}
            for name in STEP_SIZES:
                if name in spec.params or (name in defaults and defaults[name] is not None):
                    if scale is None:
                        raise ValueError(f"{spec.where} ({spec.key}): its eps is 0, so its step size cannot be "
                                         f"scaled to the sweep's eps {eps}")
                    params[name] = float(spec.params.get(name, defaults[name])) * scale
            key = f"{spec.key}@{eps_label(eps)}"
            extra.append(AttackSpec(spec.name, key, params, f"ATTACK.eps_sweep ({spec.where})"))
            points.append(SweepPoint(eps, spec.key, key))
    return extra, points


def sweep_entries(points: list[SweepPoint], metrics: dict[str, SegMetric], attacks: dict[str, Attack]) -> dict:
    """metrics.json's "eps_sweep": per eps (eps_label), each attack's entry and the worst case over them."""
    out = {}
    for eps in sorted({p.eps for p in points}):
        at = [p for p in points if p.eps == eps]
        entries = {p.attack: attack_entry(attacks[p.key], metrics[p.key]) for p in at}
        starts = [[f"{p.attack}/{run}" for run in entries[p.attack]["per_image_run"]] for p in at
                  if "per_image_run" in entries[p.attack]]
        out[eps_label(eps)] = {"eps": eps, "attacks": entries,
                               "worst_case": worst_case_entry({p.attack: metrics[p.key] for p in at}, starts)}
    return out


def write_curves(path: Path, sweep: dict) -> Path:
    """eps_sweep.csv: one row per eps with each attack's mIoU and the worst case's (%)."""
    attacks = sorted({a for row in sweep.values() for a in row["attacks"]})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["eps", "eps_255", *attacks, "worst_case"])
        for label, row in sweep.items():
            eps = row["eps"]
            cells = [f"{100 * row['attacks'][a]['mIoU']:.2f}" if a in row["attacks"] else "" for a in attacks]
            writer.writerow([label, f"{255 * eps:.3g}", *cells, f"{100 * row['worst_case']['mIoU']:.2f}"])
    return path


def sweep_section(result_dir: Path, sweep: dict, clean: dict, title: str) -> str:
    """report.md's section: the table of mIoU against eps, eps_sweep.csv and eps_sweep.png beside it."""
    labels = list(sweep)
    attacks = list(dict.fromkeys(a for row in sweep.values() for a in row["attacks"]))
    series = {a: [sweep[lb]["attacks"][a]["mIoU"] if a in sweep[lb]["attacks"] else None for lb in labels]
              for a in attacks}
    series["worst case"] = [sweep[lb]["worst_case"]["mIoU"] for lb in labels]
    write_curves(result_dir / "eps_sweep.csv", sweep)
    plot = eps_curves([sweep[lb]["eps"] for lb in labels], series, result_dir / "eps_sweep.png", title,
                      clean["mIoU"])
    head = "| attack | " + " | ".join(f"{lb} ({255 * sweep[lb]['eps']:.3g}/255)" for lb in labels) + " |"
    lines = [head, "|---" * (len(labels) + 1) + "|"]
    for name, values in series.items():
        cells = ["-" if v is None else f"{100 * v:.2f}" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ("\n## Robustness curve: mIoU (%) against eps\n\nEach fixed-budget attack at every eps of "
            "ATTACK.eps_sweep (step sizes scaled with eps), and the worst case over the attacks at each eps "
            f"(clean {100 * clean['mIoU']:.2f}). Also in `eps_sweep.csv`.\n\n" + "\n".join(lines)
            + f"\n\n![mIoU against eps]({plot.name})\n")
