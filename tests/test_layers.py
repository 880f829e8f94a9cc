"""Import layers, read with `ast` (nothing is imported): imports only point down.

    scripts (tool_train/, tool_test/, tool_bench/)  ->  engine/  ->  attack/ and model/  ->  util/

attack/ stays a standalone library (torch and the standard library only). Every import statement counts, also
those inside functions; a relative import is resolved to the absolute module it names.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT_DIRS = ("tool_train", "tool_test", "tool_bench")
LIBRARY_DIRS = ("attack", "engine", "model", "util")
MAX_LINES = 400


def py_files(folder: str) -> list[Path]:
    """The .py files under ROOT/folder (none when it does not exist), relative to ROOT."""
    return sorted(p.relative_to(ROOT) for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(source: str, rel: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, the text of the file ROOT/rel."""
    package = list(rel.parent.parts)
    found = []
    for node in ast.walk(ast.parse(source, filename=str(rel))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
    return found


def violations(folders: tuple[str, ...], allowed) -> list[str]:
    """'file:line imports X' for each import whose top-level name `allowed(name, file)` rejects."""
    bad = []
    for folder in folders:
        for rel in py_files(folder):
            for line, name in imports_of((ROOT / rel).read_text(), rel):
                if not allowed(name.split(".")[0], rel):
                    bad.append(f"{rel.as_posix()}:{line} imports {name}")
    return bad


def script_names() -> set[str]:
    """The script folders and the module names of their scripts (what `from train import ...` would use)."""
    return set(SCRIPT_DIRS) | {rel.stem for folder in SCRIPT_DIRS for rel in py_files(folder)}


def sys_path_changes(source: str, rel: Path) -> list[str]:
    """Every change of sys.path in `source` except inserting the repository root the project's way."""
    root = f"Path(__file__).resolve().parents[{len(rel.parts) - 1}]"
    bad = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == "sys.path"):
            code = ast.unparse(node)
            if code not in (f"sys.path.insert(0, str({root}))", f"sys.path.insert(0, {root})"):
                bad.append(f"{rel.as_posix()}:{node.lineno} {code}")
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any("sys.path" in ast.unparse(t) for t in targets):
                bad.append(f"{rel.as_posix()}:{node.lineno} {ast.unparse(node)}")
    return bad


def report(rule: str, bad: list[str]) -> str:
    return f"{rule}:\n  " + "\n  ".join(bad)


def test_helpers_on_synthetic_sources():
    src = ("import os, torch.nn as nn\nfrom util.x import y\nfrom . import a\nfrom ..b import c\n"
           "def f():\n import numpy\n")
    assert sorted(imports_of(src, Path("util/data/m.py"))) == [
        (1, "os"), (1, "torch.nn"), (2, "util.x"), (3, "util.data"), (4, "util.b"), (6, "numpy")]
    ok = "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))\n"
    assert sys_path_changes(ok, Path("tool_test/t.py")) == []
    assert len(sys_path_changes(ok, Path("tool_test/demo/t.py"))) == 1  # two folders deep: parents[2]
    for bad in ("sys.path.insert(0, str(Path(__file__).resolve().parent))", "sys.path.append('/x')",
                "sys.path += ['.']", "sys.path[:0] = [str(Path(__file__).parent)]"):
        assert len(sys_path_changes(bad, Path("tool_test/t.py"))) == 1, bad


def test_attack_imports_only_torch_the_standard_library_and_itself():
    """... and adv_lib, in the one module that wraps its minimal-norm attacks."""
    def allowed(top: str, rel: Path) -> bool:
        return (top in ("torch", "attack") or top in sys.stdlib_module_names
                or (top == "adv_lib" and rel.as_posix() == "attack/minimal_norm.py"))
    bad = violations(("attack",), allowed)
    assert not bad, report("attack/ may import only torch, the standard library and attack (adv_lib in "
                           "attack/minimal_norm.py)", bad)


def test_model_imports_neither_attack_engine_nor_scripts():
    forbidden = {"attack", "engine"} | script_names()
    bad = violations(("model",), lambda top, rel: top not in forbidden)
    assert not bad, report("model/ must not import attack, engine or a script", bad)


def test_util_imports_no_higher_layer():
    forbidden = {"attack", "engine", "model"} | script_names()
    bad = violations(("util",), lambda top, rel: top not in forbidden)
    assert not bad, report("util/ must not import attack, engine, model or a script", bad)


def test_engine_imports_no_script():
    if not (ROOT / "engine").is_dir():
        pytest.skip("engine/ does not exist yet")
    forbidden = script_names()
    bad = violations(("engine",), lambda top, rel: top not in forbidden)
    assert not bad, report("engine/ must not import a script", bad)


def test_scripts_import_no_other_script_and_only_put_the_root_on_sys_path():
    forbidden = script_names()
    bad = violations(SCRIPT_DIRS, lambda top, rel: top not in forbidden)
    bad += [change for folder in SCRIPT_DIRS for rel in py_files(folder)
            for change in sys_path_changes((ROOT / rel).read_text(), rel)]
    assert not bad, report("scripts must not import scripts, and may only insert "
                           "Path(__file__).resolve().parents[1] (the repository root) into sys.path", bad)


def test_modules_are_short():
    folders = LIBRARY_DIRS + SCRIPT_DIRS
    lengths = {rel: len((ROOT / rel).read_text().splitlines()) for folder in folders for rel in py_files(folder)}
    bad = [f"{rel.as_posix()}: {n} lines" for rel, n in sorted(lengths.items()) if n > MAX_LINES]
    assert not bad, report(f"modules of {', '.join(folders)} must have at most {MAX_LINES} lines", bad)


SCRIPT_LIMIT = 100  # tool_train/train.py and tool_test/test.py only wire the engine's pieces together
UTIL_TOP_LEVEL = 10


def test_the_entry_points_only_wire():
    lengths = {rel: len((ROOT / rel).read_text().splitlines()) for rel in ("tool_train/train.py", "tool_test/test.py")}
    bad = [f"{rel}: {n} lines" for rel, n in lengths.items() if n > SCRIPT_LIMIT]
    assert not bad, report(f"the training and test scripts must have at most {SCRIPT_LIMIT} lines", bad)


def test_util_top_level_holds_few_modules():
    modules = sorted(p.name for p in (ROOT / "util").glob("*.py"))
    assert len(modules) <= UTIL_TOP_LEVEL, f"util/ has {len(modules)} top-level modules: {modules}"


def attack_class_names() -> set[str]:
    """The classes attack/ defines that derive from Attack (read with ast, following the bases within attack/)."""
    bases: dict[str, set[str]] = {}
    for rel in py_files("attack"):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {ast.unparse(b).split(".")[-1] for b in node.bases}
    found, grew = {"Attack"}, True
    while grew:
        new = {name for name, b in bases.items() if b & found} - found
        found, grew = found | new, bool(new)
    return found


def isinstance_on(names: set[str], source: str, rel: Path) -> list[str]:
    """'file:line code' for every isinstance/issubclass call whose class argument names one of `names`."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
            mentioned = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.args[1])
                         if isinstance(n, (ast.Name, ast.Attribute))}
            if mentioned & names:
                bad.append(f"{rel.as_posix()}:{node.lineno} {ast.unparse(node)}")
    return bad


def test_nothing_outside_attack_tests_an_attack_class():
    """What depends on an attack's kind (its passes, separate runs, region maps) is asked of the attack: no code or
    test outside attack/ tests an attack's class."""
    names = attack_class_names()
    assert {"Attack", "PGD", "APGD", "SEA", "RPPGD", "RPPGDPlusPlus"} <= names
    assert isinstance_on(names, "isinstance(a, (int, SEA))\nisinstance(a, attack.RPPGD)\nisinstance(a, int)\n",
                         Path("x.py")) == ["x.py:1 isinstance(a, (int, SEA))", "x.py:2 isinstance(a, attack.RPPGD)"]
    folders = ("engine", "model", "util", "tests") + SCRIPT_DIRS
    bad = [hit for folder in folders for rel in py_files(folder)
           for hit in isinstance_on(names, (ROOT / rel).read_text(), rel)]
    assert not bad, report("isinstance on an attack class outside attack/", bad)
