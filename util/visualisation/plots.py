"""Plots of results with matplotlib, drawn without a display (the Agg backend): bar charts of mIoU per attack, grouped
bars of models x attacks, and mIoU-against-step curves. Every function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: plots are files
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def miou_bars(names: Sequence[str], mious: Sequence[float], path: Path, title: str) -> Path:
    """One bar per evaluation (clean, each attack, the worst case), mIoU in %, the value on each bar."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6))
    bars = ax.bar(range(len(names)), [100 * v for v in mious], color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float | None]], path: Path, title: str) -> Path:
    """Bars grouped by `groups` (attacks), one colour per series (models); mIoU fractions, None leaves a gap."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 3.8))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        kept = [(x, 100 * v) for x, v in zip(xs, values) if v is not None]
        ax.bar([x for x, _ in kept], [v for _, v in kept], width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def step_curves(curves: dict[str, tuple[Sequence[int], Sequence[float]]], finals: dict[str, tuple[int, float]],
                path: Path, title: str, clean: float | None = None) -> Path:
    """mIoU (%) against the attack step, one line per attack (steps, fractions); `finals` marks each attack's final
    figure (step, fraction) with a dot and its value; `clean` draws the clean mIoU as a dashed line. Steps are on a
    symmetric log axis when they span more than 30 steps (APGD and SEA beside 20-step PGD)."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    colours = {}
    for label, (steps, values) in curves.items():
        (line,) = ax.plot(list(steps), [100 * v for v in values], label=label, linewidth=1.4)
        colours[label] = line.get_color()
    for label, (step, value) in finals.items():
        colour = colours.get(label)
        point = ax.scatter([step], [100 * value], s=22, zorder=3, color=colour,
                           label=None if label in curves else label)
        colours.setdefault(label, point.get_facecolor()[0])
        ax.annotate(f"{100 * value:.1f}", (step, 100 * value), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if clean is not None:
        ax.axhline(100 * clean, color="grey", linestyle="--", linewidth=1, label="clean")
    last = max([max(s) for s, _ in curves.values() if len(s)] + [s for s, _ in finals.values()] + [1])
    if last > 30:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("attack step")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2 if len(curves) + len(finals) > 8 else 1)
    return _save(fig, path)


def eps_curves(eps: Sequence[float], series: dict[str, Sequence[float | None]], path: Path, title: str,
               clean: float | None = None) -> Path:
    """mIoU (%) against eps (in 1/255 on the axis), one line per attack (fractions, None leaves a gap), the worst
    case drawn thick and black; `clean` as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    xs = [255 * e for e in eps]
    for label, values in series.items():
        kept = [(x, 100 * v) for x, v in zip(xs, values) if v is not None]
        worst = label == "worst case"
        ax.plot([x for x, _ in kept], [v for _, v in kept], marker="o", markersize=3, label=label,
                linewidth=2.4 if worst else 1.2, color="black" if worst else None, zorder=3 if worst else 2)
    if clean is not None:
        ax.axhline(100 * clean, color="grey", linestyle="--", linewidth=1, label="clean")
    ax.set_xlabel("eps (x 1/255, L-inf)")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)
