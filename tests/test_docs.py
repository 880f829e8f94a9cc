"""The manual: README.md is a front page, every relative link of README.md and docs/ resolves (files and the headings
anchors name), nothing in the repository points at notes outside it, and the worked examples of docs/design.md run."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from engine.protocols import PROTOCOLS, build_protocol
from engine.recipes import RECIPES
from util.config import load_config
from util.data.datasets import DATASETS

README_LIMIT = 350
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def outside_code(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces as '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in outside_code(path.read_text()) if re.match(r"#{1,6} ", line)}


def broken_links(path: Path) -> list[str]:
    bad = []
    for line in outside_code(path.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                bad.append(f"{path.relative_to(ROOT)}: {target} (no heading '#{anchor}')")
    return bad


def test_helpers_on_synthetic_text(tmp_path):
    assert slug("The `legacy` protocol, point by point") == "the-legacy-protocol-point-by-point"
    assert slug("SEA's figure") == "seas-figure" and slug("`make demo`") == "make-demo"
    page = tmp_path / "a.md"
    page.write_text("# Title\n## Two words\n```\n# not a heading [x](missing.md)\n```\n[ok](a.md#two-words) "
                    "[web](https://x.org) [gone](b.md) [anchor](#nope) ![pic](a.md)\n")
    found = [b.split(": ", 1)[1] for b in broken_links_at(page, tmp_path)]
    assert found == ["b.md (no such file)", "#nope (no heading '#nope')"]


def broken_links_at(path: Path, root: Path) -> list[str]:
    """broken_links with paths shown relative to `root` (for the synthetic test)."""
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return broken_links(path)
    finally:
        ROOT = saved


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_LIMIT, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_every_relative_link_resolves():
    bad = [b for page in pages() for b in broken_links(page)]
    assert not bad, "broken links:\n  " + "\n  ".join(bad)


def test_nothing_points_outside_the_repository():
    """The notes the project was built from are not part of it: no tracked file refers to them."""
    needles = ["shared" + "/", "METHOD" + ".md", "DESIGN" + ".md"]
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = []
    for name in files.splitlines():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".pt", ".pth"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            bad += [f"{name}:{number}: {needle}" for needle in needles if needle in line]
    assert not bad, "references to files outside the repository:\n  " + "\n  ".join(bad)


def design_examples() -> dict[str, str]:
    """The Python code block of each 'Adding ...' section of docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text()
    out = {}
    for section in re.split(r"^## ", text, flags=re.M):
        title = section.splitlines()[0] if section else ""
        blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
        if title.startswith("Adding") and blocks:
            out[title] = blocks[0]
    return out


def test_the_worked_examples_of_the_design_run(tiny_cfg):
    """Each example registers its entry; the entries work and are removed again."""
    examples = design_examples()
    assert set(examples) == {"Adding a model family", "Adding a training recipe", "Adding an attack",
                             "Adding a protocol", "Adding a dataset"}
    from attack import ATTACKS, build_attack
    from model import ARCHITECTURES, BACKBONES, HEADS, build_model
    added = [(BACKBONES, "two-stage"), (HEADS, "conv1x1"), (ARCHITECTURES, "tinynet"), (RECIPES, "whole-batch"),
             (PROTOCOLS, "resized"), (DATASETS, "camvid")]
    try:
        for code in examples.values():
            exec(compile(code, "docs/design.md", "exec"), {})
        cfg = tiny_cfg("MODEL.arch", "tinynet", "MODEL.backbone", "two-stage", "MODEL.head_channels", "8",
                       "ADV_TRAIN.method", "whole-batch", "ADV_TRAIN.attack", "{name: margin-pgd, steps: 2}",
                       "ATTACK.protocol", "resized", "TEST.crop_size", "40")
        model = build_model(cfg).eval()
        x, y = torch.rand(2, 3, 33, 45), torch.randint(0, 7, (2, 33, 45))
        assert model(x).shape == (2, 7, 33, 45) and model(x, return_dict=True)["feat"].shape[1] == 16
        recipe = RECIPES.get("whole-batch")(cfg, model)
        images, labels, n_adv = recipe.batch(x, y)
        assert n_adv == 2 and (images - x).abs().max() <= 8 / 255 + 1e-6 and recipe.attack.name == "margin-pgd"
        assert recipe.attack_passes() == 2.0  # 2 steps for every image
        trace = build_attack("margin-pgd", model, steps=3).run(x, y).trace
        assert trace[-1].loss > trace[0].loss
        prediction = build_protocol(cfg, model).predict(x, y, [0, 1])
        assert prediction.logits.shape == (2, 7, 40, 40) and prediction.labels.shape == (2, 40, 40)
        assert load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["DATA.name", "camvid", "DATA.classes", "11"])
    finally:
        for registry, name in added:
            if name in registry:
                registry.remove(name)
        ATTACKS.pop("margin-pgd", None)
