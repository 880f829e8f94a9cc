"""What an evaluation writes: metrics.json, and report.md with its bar chart, panels and region strips.

report.md states the protocol and threat model in one sentence, then the table of attacks with the worst case (and a
line per SEA entry with SEA's figure), a bar chart of mIoU per attack, per-class IoU clean and worst case side by
side, the panels of the first TEST.vis images and RP-PGD's region strips. Every picture it links lies beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from util.data.datasets import class_names
from util.outputs import write_json
from util.visualisation.plots import miou_bars


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
    aim = "targeted and untargeted" if any(p.get("targeted") for p in params) else "untargeted"
    return (f"Threat model: {aim} white-box {norm_text} attacks in [0,1] pixel space with eps {eps_text}"
            f"{steps_text} (per attack in the table), on {images} images of the {split} split under protocol "
            f"`{protocol['name']}`: {protocol['rule']}.")


def write_results(cfg, result_dir: Path, model_path: Path, epoch: int | None, protocol: dict, results: dict,
                  seconds: float, pictures: dict[str, list[Path]] | None = None) -> None:
    """metrics.json and report.md of one evaluation (DESIGN.md, Outputs); prints the table. pictures: "panels" and
    "strips", files under result_dir that the report embeds."""
    payload = {
        "config": cfg.to_dict(),
        "model_path": str(model_path),
        "epoch": epoch,
        "protocol": protocol,
        "clean": results["clean"],
        "attacks": results["attacks"],
        "worst_case": results["worst_case"],
        "warnings": results["warnings"],  # engine/sanity.py: what makes the figures doubtful
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
    warnings = "".join(f"- {w}\n" for w in results["warnings"])
    warnings = f"## Sanity checks\n\n{warnings}\n" if warnings else ""
    text = (f"# {cfg.EXP.name}: evaluation of {model_path}\n\n"
            f"{threat_model(protocol, results['attacks'], clean['images'], cfg.TEST.split)} "
            f"Inference {cfg.TEST.mode}.\n\n{table}{notes}\n\n![mIoU per attack]({chart.name})\n\n{warnings}"
            f"## Per-class IoU (%)\n\n{per_class_table(names, columns)}\n")
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
