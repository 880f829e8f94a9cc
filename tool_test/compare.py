"""Compare evaluations of several runs: one table of mIoU per model and attack (clean, attacks, worst case).

    python tool_test/compare.py --out exp/demo/compare --result compare \\
        "clean=exp/demo/demo_pspnet18" "RP-PGD++-AT=exp/demo/demo_pspnet18_sat" "PGD-AT=exp/demo/demo_pspnet18_pgdat"

Each LABEL=RUN_DIR names a run folder; its newest result/<result> (or <result>_N) evaluation is read. All runs
must have been evaluated under the same protocol, images and attacks. Writes <out>.json (rows of model, attack,
mIoU, plus each model's difference to the first), <out>.png (grouped bars: mIoU per attack, one bar per model) and
<out>.md, which embeds it, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util.errors import UserError, run_cli
from util.outputs import write_json
from util.visualisation.plots import grouped_bars


def newest_result(run: Path, name: str) -> Path:
    """run/result/<name> or <name>_N with the highest N (util.outputs.new_result_dir numbering)."""
    found = []
    for folder in (run / "result").glob(f"{name}*"):
        m = re.fullmatch(re.escape(name) + r"(?:_(\d+))?", folder.name)
        if m and (folder / "metrics.json").is_file():
            found.append((int(m.group(1) or 1), folder))
    if not found:
        raise UserError(f"no evaluation '{name}' with a metrics.json under {run / 'result'}: run tool_test/test.py "
                        f"with TEST.run_name {name} first")
    return max(found)[1] / "metrics.json"


def load_runs(specs: list[str], name: str) -> list[tuple[str, Path, dict]]:
    runs = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise UserError(f"'{spec}': write each run as LABEL=RUN_DIR")
        metrics_path = newest_result(Path(path), name)
        runs.append((label, metrics_path, json.loads(metrics_path.read_text())))
    first = runs[0][2]
    for _, path, m in runs[1:]:
        if m["protocol"] != first["protocol"]:
            raise UserError(f"{path}: evaluated under a different protocol than {runs[0][1]}: not comparable")
        if {k: a["params"] for k, a in m["attacks"].items()} != {k: a["params"] for k, a in first["attacks"].items()}:
            raise UserError(f"{path}: its attacks differ from those of {runs[0][1]}: not comparable")
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare the evaluations of several runs.")
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, the first one is the baseline")
    parser.add_argument("--result", default="compare", help="the evaluations' TEST.run_name (default: compare)")
    parser.add_argument("--out", required=True, help="output path without suffix: writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    runs = load_runs(args.runs, args.result)
    columns = ["clean", *runs[0][2]["attacks"], "worst_case"]

    def miou(m: dict, column: str) -> float | None:
        entry = m["clean"] if column == "clean" else m["worst_case"] if column == "worst_case" else m["attacks"][column]
        return None if entry is None else entry["mIoU"]

    rows = [{"model": label, "attack": c, "mIoU": miou(m, c)} for label, _, m in runs for c in columns]
    base_label, _, base = runs[0]
    gains = {label: {c: miou(m, c) - miou(base, c) for c in columns
                     if miou(m, c) is not None and miou(base, c) is not None} for label, _, m in runs[1:]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = runs[0][2]
    attacks = {k: {"name": a["name"], **a["params"]} for k, a in first["attacks"].items()}
    write_json({"protocol": first["protocol"], "attacks": attacks, "rows": rows,
                "difference_to_" + base_label: gains,
                "metrics": {label: str(path) for label, path, _ in runs}}, out.with_suffix(".json"))
    head = "| model | " + " | ".join(columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for label, _, m in runs:
        cells = ["-" if miou(m, c) is None else f"{100 * miou(m, c):.2f}" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    diff = "\n".join(f"- {label}: " + ", ".join(f"{c} {100 * v:+.2f}" for c, v in g.items())
                     for label, g in gains.items())
    p = first["protocol"]
    chart = grouped_bars([c.replace("_", " ") for c in columns], {label: [miou(m, c) for c in columns]
                                                                  for label, _, m in runs},
                         out.with_suffix(".png"), f"mIoU per attack and model ({p['images']} images, {p['name']})")
    text = (f"# mIoU (%) of each model, clean and under attack\n\n{p['images']} images of the {p['split']} split, "
            f"protocol `{p['name']}`; the attacks' parameters are in {out.with_suffix('.json').name}.\n\n{table}\n\n"
            f"![mIoU per attack and model]({chart.name})\n\nDifference to {base_label} (mIoU points):\n\n{diff}\n")
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    run_cli(main)
