"""YAML configuration with a fixed schema, `_base_` inheritance and `SECTION.key value` overrides.

Every valid key and its type is listed in DEFAULTS (util/config_schema.py); a config file only states what
differs. Unknown keys and values of the wrong type raise a UserError that names the key (and the closest valid
one); scripts turn it into exit code 2. Float keys also accept fractions written as strings, e.g. "8/255".
"""
from __future__ import annotations

import argparse
import copy
import difflib
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import yaml

from util.config_schema import CHOICES, DEFAULTS
from util.data.datasets import DATASETS
from util.errors import UserError

__all__ = ["CHOICES", "DEFAULTS", "Config", "config_from_cli", "load_config", "run_dir", "save_config"]

_FRACTION = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*$")
_EXPONENT = re.compile(r"^\s*[-+]?\d+(\.\d*)?[eE][-+]?\d+\s*$")  # 1e-4, 5E3


class Config(dict):
    """A dict whose keys are also attributes (cfg.MODEL.layers); nested sections are Configs."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config, merge its `_base_` chain over DEFAULTS, apply overrides and check it all.

    overrides: a flat list ["SECTION.key", "value", ...]; each value is parsed as a YAML scalar or list.
    """
    path = Path(path)
    merged = copy.deepcopy(DEFAULTS)
    _merge(merged, _read_with_bases(path, seen=()), source=str(path))
    overrides = list(overrides)
    if len(overrides) % 2:
        raise UserError(f"overrides come in 'SECTION.key value' pairs; '{overrides[-1]}' has no value")
    for key, text in zip(overrides[0::2], overrides[1::2]):
        section, _, name = key.partition(".")
        if not name:
            raise UserError(f"override '{key}': write it as SECTION.key, e.g. TRAIN.epochs")
        value = _parse_scalar(text)
        name, _, entry = name.partition(".")
        if section == "ADV_TRAIN" and name == "params":  # the old form: show the new one
            current = merged["ADV_TRAIN"]["attack"]
            new = (f"ADV_TRAIN.attack.{entry} {text}" if entry
                   else f"ADV_TRAIN.attack {_spec_text(current.get('name'), value)}")
            raise UserError(f"command line: ADV_TRAIN.params is gone: the training attack and its parameters are one "
                            f"attack spec; write {new}")
        if entry and name in DEFAULTS.get(section, {}):  # SECTION.key.entry value: one entry of a mapping key
            if not isinstance(DEFAULTS[section][name], dict):
                raise UserError(f"override '{key}': only mapping-typed keys take a third part "
                                f"(e.g. ADV_TRAIN.attack.steps)")
            value = {**merged[section][name], entry: value}
        _merge(merged, {section: {name: value}}, source="command line")
    cfg = Config({s: Config(v) for s, v in merged.items()})
    if not cfg.EXP.name:
        cfg.EXP.name = path.stem
    cfg.EXP.config_path = str(path)
    _check_values(cfg)
    return cfg


def config_from_cli(description: str, argv: list[str] | None = None) -> Config:
    """The scripts' command line: `--config PATH [SECTION.key value ...]` -> the loaded config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config, e.g. config/demo/demo_pspnet18.yaml")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="SECTION.key value pairs")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def run_dir(cfg: Config) -> Path:
    """The run's output folder: <EXP.root>/<DATA.name>/<EXP.name>/."""
    return Path(cfg.EXP.root) / cfg.DATA.name / cfg.EXP.name


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with load_config)."""
    data = cfg.to_dict()
    data["EXP"].pop("config_path", None)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    Path(path).write_text(f"# resolved from {cfg.EXP.config_path}\n{text}")


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: '{path}'")
    if path.resolve() in seen:
        raise UserError(f"{path}: _base_ chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    base_data = _read_with_bases(path.parent / base, seen + (path.resolve(),))
    for section, values in data.items():  # a file's key replaces its base's value whole (an attack spec too)
        if isinstance(values, dict) and isinstance(base_data.get(section), dict):
            base_data[section].update(values)
        else:
            base_data[section] = values
    return base_data


def _merge(into: dict[str, dict], new: dict[str, Any], source: str) -> None:
    """Merge sections of `new` into the schema-shaped `into`, checking keys and types."""
    for section, values in new.items():
        if section not in DEFAULTS:
            raise UserError(f"{source}: unknown section '{section}'{_suggest(section, DEFAULTS)}")
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{section}' must be a mapping of keys")
        if section == "ADV_TRAIN" and "params" in values:
            raise UserError(f"{source}: ADV_TRAIN.params is gone: the training attack and its parameters are one "
                            f"attack spec, ADV_TRAIN.attack {_spec_text(values.get('attack'), values['params'])} "
                            f"(override one entry with ADV_TRAIN.attack.steps 7)")
        for key, value in values.items():
            if f"{section}.{key}" in _GONE:
                raise UserError(f"{source}: {section}.{key} is gone: {_GONE[f'{section}.{key}']}")
            if key not in DEFAULTS[section]:
                raise UserError(
                    f"{source}: unknown key '{section}.{key}'{_suggest(key, DEFAULTS[section], section)}"
                )
            into[section][key] = _coerce(f"{section}.{key}", value, DEFAULTS[section][key], source)


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Return `value` converted to the type of `default`, or raise a UserError naming the key."""
    kind = type(default)

    def bad(expected: str) -> UserError:
        return UserError(f"{source}: {name} must be {expected}, got {value!r}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if kind is float:
        return _to_float(value, bad)
    if kind is str:
        if isinstance(value, bool) and name in CHOICES:  # YAML reads true/false as booleans
            return str(value).lower()
        if isinstance(value, str):
            return value
        raise bad("a string")
    if kind is dict:
        if name in _ATTACK_SPECS and isinstance(value, str):
            raise UserError(f"{source}: {name} is an attack spec, a mapping with the attack's name and parameters: "
                            f"write {name} {_spec_text(value, {})}")
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad("a mapping of parameter names to values")
        return {k: _numbers(v) for k, v in value.items()}
    if kind is list and name in _MAPPINGS:
        if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("name"), str)
                                                  for v in value):
            raise bad("a list of mappings, each with a 'name' (e.g. [{name: pgd, eps: 0.03, steps: 20}])")
        return [{k: _numbers(v) for k, v in item.items()} for item in value]
    if kind is list:
        if name in _SQUARE and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]  # a single crop size means a square crop
        if not isinstance(value, list):
            raise bad("a list")
        if name in _FIXED_LENGTH and len(value) != len(default):
            raise bad(f"a list of {len(default)} numbers")
        if (default and isinstance(default[0], float)) or name in _FLOAT_LISTS:
            return [_to_float(v, bad) for v in value]
        if default and isinstance(default[0], int):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise bad("a list of integers")
        return list(value)
    raise AssertionError(f"schema default of {name} has unsupported type {kind}")


# keys of earlier releases, with what replaces them
_GONE = {"ADV_TRAIN.composition": "the batch composition is part of the training recipe: ADV_TRAIN.method release "
                                  "(the RP-PGD release's composition) or ADV_TRAIN.method at (only the replaced images "
                                  "attacked)"}
_SQUARE = {"TRAIN.crop_size", "TEST.crop_size"}
_ATTACK_SPECS = {"ADV_TRAIN.attack", "ADV_TRAIN.val_attack"}  # read by engine/attacks.py like ATTACK.attacks
_MAPPINGS = {"ATTACK.attacks"}  # lists of mappings
_FLOAT_LISTS = {"ATTACK.eps_sweep"}  # lists of numbers that default to []
_FIXED_LENGTH = {
    "DATA.mean", "DATA.std", "TRAIN.crop_size", "TRAIN.scale_range", "TRAIN.rotate_range", "TEST.crop_size",
}


def _to_float(value: Any, bad) -> float:
    if isinstance(value, bool):
        raise bad("a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _FRACTION.match(value):
        num, den = (Fraction(p.strip()) for p in value.split("/"))
        if den == 0:
            raise bad("a number (division by zero)")
        return float(num / den)
    if isinstance(value, str) and _EXPONENT.match(value):  # YAML 1.1 reads 1e-4 (no dot) as a string
        return float(value)
    raise bad("a number (or a fraction such as 8/255)")


def _numbers(value: Any) -> Any:
    """Inside mappings (attack parameters), fraction strings such as "8/255" become floats."""
    if isinstance(value, str) and _FRACTION.match(value):
        return _to_float(value, lambda expected: UserError(f"{value!r} must be {expected}"))
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _spec_text(name: Any, params: Any) -> str:
    """The attack-spec form {name: ..., params...} in YAML flow style, for messages about the old forms."""
    spec = {"name": name if isinstance(name, str) else "rppgd++", **(params if isinstance(params, dict) else {})}
    return yaml.safe_dump(spec, default_flow_style=True, sort_keys=False).strip()


def _parse_scalar(text: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, lists); anything else stays a string."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _suggest(key: str, valid: Iterable[str], section: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{section + '.' if section else ''}{close[0]}'?"
    return f"; valid: {', '.join(sorted(valid))}"


def _check_values(cfg: Config) -> None:
    DATASETS.get(cfg.DATA.name)  # a UserError naming DATA.name and the registered datasets
    if cfg.DATA.classes < 1:
        raise UserError(f"DATA.classes must be at least 1 (the number of classes the model predicts), "
                        f"got {cfg.DATA.classes}")
    if not 0 <= cfg.DATA.ignore_index <= 255:
        raise UserError(f"DATA.ignore_index must be an 8-bit label value in [0, 255], got {cfg.DATA.ignore_index}")
    if cfg.DATA.ignore_index < cfg.DATA.classes:
        raise UserError(f"DATA.ignore_index {cfg.DATA.ignore_index} is a class id (DATA.classes {cfg.DATA.classes}); "
                        "it must be >= DATA.classes")
    table = DATASETS.get(cfg.DATA.name).classes
    if cfg.DATA.check and table and len(table) != cfg.DATA.classes:
        raise UserError(f"DATA.classes {cfg.DATA.classes} disagrees with dataset {cfg.DATA.name}'s class table of "
                        f"{len(table)} classes ({', '.join(table[:3])}, ...): set DATA.classes {len(table)}, or "
                        "register your variant of the data as a dataset of its own (docs/datasets.md); DATA.check "
                        "false skips this check")
    _check_eps(cfg)
    surrogate = cfg.ATTACK.surrogate
    if surrogate and (set(surrogate) - {"config", "model_path"} or not isinstance(surrogate.get("config"), str)
                      or not isinstance(surrogate.get("model_path", ""), str)):
        raise UserError(f"ATTACK.surrogate must be {{}} or {{config: <the surrogate's config file>, model_path: <its "
                        f"checkpoint>}}, got {surrogate}")
    for name, choices in CHOICES.items():
        section, key = name.split(".")
        if cfg[section][key] not in choices:
            raise UserError(f"{name} must be one of {list(choices)}, got {cfg[section][key]!r}")
    for name in ("TRAIN.crop_size", "TEST.crop_size"):
        section, key = name.split(".")
        if any(v < 1 for v in cfg[section][key]):
            raise UserError(f"{name} must hold positive sizes, got {cfg[section][key]}")
    lo, hi = cfg.TRAIN.scale_range
    if not 0 < lo <= hi:
        raise UserError(f"TRAIN.scale_range must be [min, max] with 0 < min <= max, got {cfg.TRAIN.scale_range}")
    if cfg.TRAIN.batch_size < 1 or cfg.TRAIN.epochs < 1:
        raise UserError("TRAIN.batch_size and TRAIN.epochs must be at least 1")
    if not 0 < cfg.TEST.stride_rate <= 1:
        raise UserError(f"TEST.stride_rate must be in (0, 1], got {cfg.TEST.stride_rate}")
    if not cfg.TEST.scales or not all(isinstance(v, float) and v > 0 for v in cfg.TEST.scales):
        raise UserError(f"TEST.scales must be a non-empty list of positive numbers, got {cfg.TEST.scales}")
    size = cfg.TEST.legacy_resize
    if size and not (len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise UserError(f"TEST.legacy_resize must be [] or [h, w] with positive integers (e.g. [512, 1024]), "
                        f"got {size}")
    if not 0 < cfg.ADV_TRAIN.adv_ratio <= 1:
        raise UserError(f"ADV_TRAIN.adv_ratio must be in (0, 1], got {cfg.ADV_TRAIN.adv_ratio}")
    if cfg.ADV_TRAIN.val_images < 0 or cfg.TEST.num_images < 0 or cfg.TEST.vis < 0:
        raise UserError("ADV_TRAIN.val_images, TEST.num_images and TEST.vis must be >= 0")
    if cfg.TEST.vis_regions < -1:
        raise UserError(f"TEST.vis_regions must be a dataset index or -1 (none), got {cfg.TEST.vis_regions}")
    for name in ("TRAIN.save_freq", "TRAIN.save_iters", "TRAIN.eval_freq"):
        section, key = name.split(".")
        if cfg[section][key] < 0:
            raise UserError(f"{name} must be >= 0 (0: off), got {cfg[section][key]}")
    if cfg.TRAIN.print_freq < 1:
        raise UserError(f"TRAIN.print_freq must be >= 1, got {cfg.TRAIN.print_freq}")


def _check_eps(cfg: Config) -> None:
    """Every eps (an L-inf radius on [0,1] images) of an attack spec or of the eps sweep lies in [0, 1]."""
    values = [(f"ATTACK.attacks[{i}].eps", spec.get("eps")) for i, spec in enumerate(cfg.ATTACK.attacks)]
    for name in sorted(_ATTACK_SPECS):
        section, key = name.split(".")
        values.append((f"{name}.eps", cfg[section][key].get("eps")))
    values += [(f"ATTACK.eps_sweep[{i}]", eps) for i, eps in enumerate(cfg.ATTACK.eps_sweep)]
    values.append(("ATTACK.suite_eps", cfg.ATTACK.suite_eps))
    for where, eps in values:
        if isinstance(eps, (int, float)) and not isinstance(eps, bool) and not 0 <= eps <= 1:
            raise UserError(f"{where} must be in [0, 1] (an L-inf radius on images in [0, 1], e.g. 8/255 = 0.0314), "
                            f"got {eps}")
