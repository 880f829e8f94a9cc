"""What an evaluation writes: metrics.json's entries (each attack's, SEA's figure, the worst case) and report.md with
its bar chart, panels and region strips.

report.md states the protocol and threat model in one sentence, then the table of attacks with the worst case (and a
line per SEA entry with SEA's figure), a bar chart of mIoU per attack, per-class IoU clean and worst case side by
side, the panels of the first TEST.vis images and RP-PGD's region strips. Every picture it links lies beside it.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from engine.worst_case import sea_worst_case, stacked_counts, worst_case_choice
from util.data.datasets import class_names
from util.evaluation.metrics import SegMetric, scores_from_counts
from util.outputs import write_json
from util.visualisation.plots import miou_bars

# ---- metrics.json's entries -----------------------------------------------------------------------------------------
PER_IMAGE_RULE = ("per image the run with the lowest pixel accuracy: the adversarial images that pictures and "
                  "the per-image scores show")


def choice_scores(metrics: Sequence[SegMetric], keys: Sequence[str], choice: Sequence[int], counts: torch.Tensor,
                  indices: Sequence[int], what: str) -> dict:
    """Dataset scores when image j takes metrics[choice[j]], each image's mean IoU under its choice, and which
    candidate (an "attack" or a "run", `what`) each image takes."""
    chosen = counts[torch.as_tensor(list(choice), dtype=torch.long), torch.arange(len(indices))].sum(0)  # (3,K)
    per_image = [metrics[a].per_image[i] for a, i in zip(choice, indices)]
    return {**scores_from_counts(*chosen), "per_image_miou": [None if math.isnan(v) else v for v in per_image],
            "images": len(indices), f"per_image_{what}": [keys[a] for a in choice],
            f"images_per_{what}": {k: list(choice).count(a) for a, k in enumerate(keys)}}


SEA_RULE = ("SEA's figure (tools/worse_only.py): the dataset-level worst case over its loss runs; every image starts "
            "on MCE-Bal, rounds visit the images in a shuffled order (random.Random(225)) and a visit keeps the last "
            "run, in order from the image's own, that does not raise the dataset mIoU, until a round lowers it by "
            "at most 1e-6")


def sea_entry(runs: dict[str, SegMetric]) -> dict:
    """SEA's figure over its loss runs (run name -> metric on the same images), for metrics.json: the dataset scores
    of sea_worst_case's choice (starting on MCE-Bal, or the first run without it), which run each image takes, and
    every run's own scores."""
    keys = list(runs)
    counts, indices = stacked_counts([runs[k] for k in keys])
    choice, _ = sea_worst_case(counts, keys.index("mce-bal") if "mce-bal" in keys else 0)
    out = choice_scores([runs[k] for k in keys], keys, choice, counts, indices, "run")
    out["runs"] = {k: {s: v for s, v in runs[k].summary().items() if s in ("mIoU", "mAcc", "aAcc")} for k in keys}
    return {"rule": SEA_RULE, **out}


def worst_case_entry(metrics: dict[str, SegMetric], starts: Sequence[Sequence[str]] = ()) -> dict | None:
    """The worst case over attacks evaluated on the same images, for metrics.json (None without attacks).

    The candidates are every attack and every run of an attack that has runs (SEA's losses, named "key/run").
    starts: further starting choices, a candidate name per image (SEA's own choice), so the result is never above
    them. "per_image_miou": per image the lowest mean IoU of any candidate (never above any attack's own per-image
    score); "mIoU", "mAcc", "aAcc", "per_class_iou": the dataset scores when each image takes the candidate of the
    greedy dataset-level choice ("per_image_attack"), which is at most every single attack's mIoU.
    """
    if not metrics:
        return None
    candidates: dict[str, SegMetric] = {}
    for key, metric in metrics.items():
        candidates[key] = metric
        candidates.update({f"{key}/{run}": m for run, m in metric.runs.items()})
    keys = list(candidates)
    counts, indices = stacked_counts(list(candidates.values()))
    choice, _ = worst_case_choice(counts, [[keys.index(k) for k in start] for start in starts])
    out = choice_scores(list(candidates.values()), keys, choice, counts, indices, "attack")
    per_image = []
    for i in indices:
        values = [v for v in (m.per_image[i] for m in candidates.values()) if not math.isnan(v)]
        per_image.append(min(values) if values else None)  # None: every pixel of the image is ignored
    return {"attacks": list(metrics), "candidates": keys, **out, "per_image_miou": per_image}


MIN_NORM_RULE = ("per image, the L-inf norm of the minimal-norm attack's own result (before the clamp to the eps "
                 "ball) where it fools at least 99% of the image's valid pixels (adv_lib's success rate); null where "
                 "it fools fewer; images without a valid pixel are left out")
MIN_NORM_EPS = tuple(e / 255 for e in (1, 2, 4, 8, 12, 16))


def min_norm_entry(min_norm: dict[int, float], eps: float) -> dict:
    """A minimal-norm attack's own figure for metrics.json: the median over the images of the smallest L-inf norm
    that fools 99% of an image's valid pixels (null when it is not found for half of them or more), and the fraction
    of images fooled so within each eps of 1, 2, 4, 8, 12, 16 /255 and the attack's eps."""
    norms = [v for _, v in sorted(min_norm.items()) if not math.isnan(v)]
    median = statistics.median(norms) if norms else math.inf
    curve = [{"eps": e, "fooled_fraction": sum(v <= e for v in norms) / max(len(norms), 1)}
             for e in sorted({*MIN_NORM_EPS, eps})]
    return {"rule": MIN_NORM_RULE, "median": None if math.isinf(median) else median,
            "found": sum(not math.isinf(v) for v in norms), "images": len(norms), "curve": curve,
            "per_image": [None if math.isnan(v) or math.isinf(v) else v for _, v in sorted(min_norm.items())]}


def min_norm_note(key: str, entry: dict) -> str:
    """report.md's line about a minimal-norm attack's own figure."""
    median = "not found for half of the images" if entry["median"] is None else f"{255 * entry['median']:.3g}/255"
    curve = ", ".join(f"{255 * c['eps']:.3g}/255 {100 * c['fooled_fraction']:.1f}%" for c in entry["curve"])
    return (f"\n\n`{key}`: the smallest L-inf norm that fools 99% of an image's valid pixels has median {median} "
            f"(found for {entry['found']} of {entry['images']} images); images fooled so within eps: {curve}.")


def attack_entry(atk, metric: SegMetric) -> dict:
    """An attack's metrics.json entry. For an attack with separate runs (SEA) the scores are SEA's figure, the
    dataset-level worst case over its runs ("figure" says how it is computed), and "per_image_choice" holds the
    scores of the images the attack returns. A minimal-norm attack adds its own figure ("min_norm")."""
    entry = {"name": atk.name, "params": atk.params()}
    if metric.min_norm:
        entry["min_norm"] = min_norm_entry(metric.min_norm, atk.eps)
    if not metric.runs:
        return {**entry, **metric.summary()}
    sea = sea_entry(metric.runs)
    return {**entry, "figure": sea.pop("rule"), **sea, "per_image_choice": {"rule": PER_IMAGE_RULE, **metric.summary()}}


def threat_model(protocol: dict, attacks: dict, images: int, split: str) -> str:
    """One sentence: norm, eps, steps, what is attacked, under which protocol, on how many images."""
    if not attacks:
        return (f"Clean evaluation only, on {images} images of the {split} split under protocol `{protocol['name']}` "
                f"({protocol['rule']}).")
    params = [a["params"] for a in attacks.values()]
    norms = sorted({p.get("norm", "linf") for p in params})
    eps = sorted({p["eps"] for p in params})
    steps = sorted({p["steps"] for p in params if p.get("steps") is not None})
    norm_text = " and ".join("L-inf" if n == "linf" else "L2" for n in norms)
    eps_text = ", ".join(f"{e:g} ({255 * e:.3g}/255)" for e in eps)
    steps_text = "" if not steps else f", {steps[0]} steps" if len(steps) == 1 else f", {steps[0]} to {steps[-1]} steps"
    # a target_class makes an attack targeted (ASMA is targeted by definition and takes no `targeted`)
    aim = ("targeted and untargeted" if any(p.get("targeted") or p.get("target_class") is not None for p in params)
           else "untargeted")
    return (f"Threat model: {aim} white-box {norm_text} attacks in [0,1] pixel space with eps {eps_text}"
            f"{steps_text} (per attack in the table), on {images} images of the {split} split under protocol "
            f"`{protocol['name']}`: {protocol['rule']}.")


def write_results(cfg, result_dir: Path, model_path: Path | None, epoch: int | None, protocol: dict, results: dict,
                  seconds: float, pictures: dict[str, list[Path]] | None = None, sections: Sequence[str] = ()) -> None:
    """metrics.json and report.md of one evaluation (docs/design.md, Outputs); prints the table. pictures: "panels" and
    "strips", files under result_dir that the report embeds; sections: further markdown sections (the eps sweep's),
    placed after the per-class table. Optional entries of `results` ("eps_sweep", "surrogate") go to metrics.json."""
    payload = {
        "config": cfg.to_dict(),
        "model_path": None if model_path is None else str(model_path),  # None: a model handed over in Python
        "epoch": epoch,
        "protocol": protocol,
        "clean": results["clean"],
        "attacks": results["attacks"],
        "worst_case": results["worst_case"],
        "warnings": results["warnings"],  # engine/sanity.py: what makes the figures doubtful
        **{k: results[k] for k in ("eps_sweep", "surrogate") if k in results},
        "seconds": round(seconds, 1),
    }
    write_json(payload, result_dir / "metrics.json")
    rows = [{"name": "clean", **results["clean"]}]
    rows += [{**r, "name": key, "eps": r["params"]["eps"], "steps": r["params"].get("steps")}
             for key, r in results["attacks"].items()]
    worst = results["worst_case"]
    if worst is not None:
        rows.append({**worst, "name": "worst case over the attacks"})
    table = report_table(rows)
    chart = miou_bars([r["name"] if r["name"] != "worst case over the attacks" else "worst case" for r in rows],
                      [r["mIoU"] for r in rows], result_dir / "miou_per_attack.png",
                      f"{cfg.EXP.name}: mIoU per attack ({protocol['name']}, {results['clean']['images']} images)")
    names = class_names(cfg.DATA.name, cfg.DATA.classes)
    clean = results["clean"]
    columns = {"clean": clean["per_class_iou"]}
    if worst is not None:
        columns["worst case"] = worst["per_class_iou"]
    notes = "".join(f"\n\n`{key}`: {r['figure']} (per image by pixel accuracy: mIoU "
                    f"{100 * r['per_image_choice']['mIoU']:.2f}; runs: "
                    + ", ".join(f"{run} {100 * v['mIoU']:.2f}" for run, v in r["runs"].items()) + ")."
                    for key, r in results["attacks"].items() if "figure" in r)
    if worst is not None:
        wins = sorted(worst["images_per_attack"].items(), key=lambda kv: -kv[1])
        notes += ("\n\nThe worst case takes, per image, the attack of the greedy dataset-level choice: "
                  + ", ".join(f"`{k}` {n}" for k, n in wins if n) + f" (of {worst['images']} images).")
    notes += "".join(min_norm_note(key, r["min_norm"]) for key, r in results["attacks"].items() if "min_norm" in r)
    warnings = "".join(f"- {w}\n" for w in results["warnings"])
    warnings = f"## Sanity checks\n\n{warnings}\n" if warnings else ""
    transfer = "" if "surrogate" not in results else (
        f"Transfer (black-box): every attack ran on the surrogate `{results['surrogate']['model_path']}` (config "
        f"`{results['surrogate']['config']}`, {results['surrogate']['arch']}) and its images are scored on this "
        "model. ")
    text = (f"# {cfg.EXP.name}: evaluation of {model_path or 'a model handed over in Python'}\n\n"
            f"{threat_model(protocol, results['attacks'], clean['images'], cfg.TEST.split)} "
            f"{transfer}Inference {cfg.TEST.mode}.\n\n{table}{notes}\n\n![mIoU per attack]({chart.name})\n\n{warnings}"
            f"## Per-class IoU (%)\n\n{per_class_table(names, columns)}\n" + "".join(sections))
    text += pictures_section(result_dir, pictures or {})
    (result_dir / "report.md").write_text(text)
    print(table)
    print(f"wrote {result_dir / 'metrics.json'} and report.md in {seconds:.0f} s")


def pictures_section(result_dir: Path, pictures: dict[str, list[Path]]) -> str:
    """The report's panels (grouped by image, clean first) and region strips, as relative links."""
    text = ""
    panels = sorted(pictures.get("panels", []), key=lambda p: (p.name, p.parent.name != "clean", p.parent.name))
    if panels:
        text += "\n## Panels\n"
        image = None
        for p in panels:
            if p.name != image:
                image = p.name
                text += f"\n### {p.stem}\n"
            text += f"\n![{p.parent.name}]({p.relative_to(result_dir).as_posix()})\n"
    strips = sorted(pictures.get("strips", []))
    if strips:
        text += "\n## RP-PGD regions over the steps\n"
        text += "".join(f"\n![{p.stem}]({p.relative_to(result_dir).as_posix()})\n" for p in strips)
    return text


def report_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per evaluation (name, eps, steps, mIoU, mAcc, aAcc), scores in %."""
    lines = ["| attack | eps | steps | mIoU | mAcc | aAcc |", "|---|---|---|---|---|---|"]
    for r in rows:
        eps = "-" if r.get("eps") is None else f"{r['eps']:.4f}"
        steps = "-" if r.get("steps") is None else str(r["steps"])
        lines.append(f"| {r['name']} | {eps} | {steps} | {100 * r['mIoU']:.2f} | {100 * r['mAcc']:.2f} | "
                     f"{100 * r['aAcc']:.2f} |")
    return "\n".join(lines)


def per_class_table(names: list[str], columns: dict[str, list[float | None]]) -> str:
    """Markdown table of per-class IoU in %, one column per evaluation (e.g. clean and worst case side by side);
    '-' where a class occurs nowhere."""
    lines = ["| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for c, name in enumerate(names):
        cells = ["-" if iou[c] is None else f"{100 * iou[c]:.2f}" for iou in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
