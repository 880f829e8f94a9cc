"""YAML configuration with a fixed schema, `_base_` inheritance and `SECTION.key value` overrides.

Every valid key and its type is listed in DEFAULTS below; a config file only states what differs. Unknown
keys and values of the wrong type raise a UserError that names the key (and the closest valid one);
scripts turn it into exit code 2. Float keys also accept fractions written as strings, e.g. "8/255".
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

from util.errors import UserError

# The schema: every key the project reads, with its default. The type of the default is the key's type
# (an int default also admits nothing but ints; a float default admits ints, floats and "a/b" strings).
DEFAULTS: dict[str, dict[str, Any]] = {
    "EXP": {
        "root": "exp",  # outputs go to <root>/<DATA.name>/<name>/
        "name": "",  # empty: the config file's stem
        "seed": 0,
    },
    "DATA": {
        "name": "demo",  # demo | voc2012 | cityscapes | ade20k
        "data_root": "",
        "train_list": "list/train.txt",  # relative to data_root
        "val_list": "list/val.txt",
        "classes": 7,
        "ignore_index": 255,
        "mean": [0.485, 0.456, 0.406],  # ImageNet statistics in [0,1] RGB; applied inside the model
        "std": [0.229, 0.224, 0.225],
        "workers": 2,  # data loader processes per training process
    },
    "MODEL": {
        "arch": "pspnet",  # pspnet | deeplabv3 | pspnet_ddcat, deeplabv3_ddcat (DDC-AT's, MODEL.style semseg)
        # torchvision: this project's heads | semseg: semseg's PSPNet / the RP-PGD release's DeepLabV3 heads and
        # align_corners=True, so their checkpoints load (model/semseg.py)
        "style": "torchvision",
        "layers": 50,  # 18 | 34 | 50 | 101
        "deep_stem": True,  # semseg's 3-conv stem; false: torchvision's 7x7 stem
        "pretrained": "",  # ImageNet backbone file (initmodel/README.md); empty: random init
        "psp_bins": [1, 2, 3, 6],
        "aspp_rates": [6, 12, 18],
        "head_channels": 0,  # 0: the architecture's default (PSPNet 512, DeepLabv3 256)
        "dropout": 0.1,
        # channels-last memory layout for the network's weights and inputs (faster convolutions on recent GPUs;
        # the same results to float tolerance)
        "channels_last": False,
    },
    "TRAIN": {
        "epochs": 50,
        "batch_size": 16,  # global batch, split evenly over the processes
        "crop_size": [473, 473],  # [h, w]
        "scale_range": [0.5, 2.0],
        "rotate_range": [-10.0, 10.0],
        "rotate_prob": 0.5,
        "blur_prob": 0.5,
        "flip_prob": 0.5,
        "base_lr": 0.01,
        "head_lr_mult": 10.0,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "power": 0.9,  # poly decay per iteration
        "aux_weight": 0.4,
        "eval_freq": 1,  # validate every N epochs (0: never)
        "save_freq": 10,  # keep model/epoch_<N>.pth every N epochs (0: only last.pth)
        "save_iters": 0,  # also write model/last.pth every N iterations within an epoch (0: at epoch ends only)
        "resume": "",  # a checkpoint written by train.py; "auto": <run>/model/last.pth if present
        # start the whole network (not the optimizer) from a checkpoint: this project's, or semseg's, DDC-AT's or the
        # RP-PGD release's (with MODEL.style semseg), loaded strictly, as the release's TRAIN.weight
        "weight": "",
        "print_freq": 10,  # log a line every N iterations
        # mixed precision of the training step, its attack included: none (fp32) | bf16 (CUDA, or the CPU's
        # autocast) | fp16 (CUDA only, with a grad scaler kept in the checkpoints)
        "amp": "none",
    },
    "TEST": {
        "model_path": "",  # empty: <run>/model/last.pth
        "split": "val",  # which DATA list to evaluate: val | train
        "mode": "slide",  # whole | slide
        "base_size": 0,  # resize the long side to this before inference (0: keep the size)
        "crop_size": [473, 473],  # sliding-window crop [h, w]
        "stride_rate": 0.6666666666666666,
        # protocol legacy only (the released test scripts): multi-scale testing, the long side at
        # round(scale * base_size) for each scale, class probabilities averaged over the scales
        "scales": [1.0],
        # protocol legacy only: [h, w] to which images and labels are first resized (cv2 bilinear / nearest), as the
        # release's Cityscapes scripts do with [512, 1024]; []: keep the size
        "legacy_resize": [],
        "batch_size": 1,
        "workers": 2,
        "num_images": 0,  # evaluate only the first N images (0: all)
        "run_name": "",  # result/<run_name>/; empty: derived from the split and checkpoint
        "save_pictures": False,  # colour prediction PNGs under result/<run_name>/pictures/
        # panels (image, adversarial image, perturbation, labels, predictions, RP-PGD regions) of the first N
        # images for every attack under result/<run_name>/panels/, embedded in report.md (0: none)
        "vis": 0,
        # the dataset index of an image whose RP-PGD region map after every step is saved as a strip under
        # result/<run_name>/regions/ for each RP-PGD attack (-1: none)
        "vis_regions": -1,
    },
    "ADV_TRAIN": {
        "method": "none",  # none: clean training | at: adversarial training (METHOD.md §6)
        # the training attack, an attack spec {name: registry name, <build_attack parameters>} (absent parameters
        # take the attack's defaults); override one entry with ADV_TRAIN.attack.steps 7
        "attack": {"name": "rppgd++", "eps": 0.03, "alpha": 0.01, "steps": 3, "random_start": True},
        "adv_ratio": 0.5,  # fraction of each per-process batch replaced by its adversarial version (0, 1]
        # attacked: only the images that are replaced are attacked | release: the RP-PGD release's composition,
        # the whole per-process batch attacked (its batch-pooled terms then see every image) and the adversarial
        # second half kept (needs adv_ratio 0.5)
        "composition": "attacked",
        # robust validation, which then chooses model/best.pth: an attack spec {name: pgd, eps: 0.03, ...}; {} is off
        "val_attack": {},
        "val_images": 32,  # robust validation runs on the first N validation images (0: all)
    },
    "ATTACK": {
        "protocol": "full",  # full | legacy | center (METHOD.md §7, engine/protocols.py)
        # attacks that tool_test/test.py runs after the clean evaluation: a list of attack specs
        # {name: registry name, key: result name (default: name), any build_attack parameter}
        "attacks": [],
        "seed": 0,  # image i's random start is seeded from (seed, dataset index i)
        # precision of the evaluation attacks' forward and backward passes: none (fp32) | bf16 | fp16 (CUDA only);
        # the perturbation, its projection and the scored predictions stay fp32
        "amp": "none",
    },
    "DIST": {
        "backend": "auto",  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
        "sync_bn": "auto",  # auto (SyncBatchNorm with several GPU processes) | true | false
    },
}

CHOICES: dict[str, tuple[Any, ...]] = {
    "DATA.name": ("demo", "voc2012", "cityscapes", "ade20k"),
    "MODEL.arch": ("pspnet", "deeplabv3", "pspnet_ddcat", "deeplabv3_ddcat"),
    "MODEL.layers": (18, 34, 50, 101),
    "TEST.split": ("val", "train"),
    "TEST.mode": ("whole", "slide"),
    "ADV_TRAIN.method": ("none", "at"),
    "MODEL.style": ("torchvision", "semseg"),
    "ADV_TRAIN.composition": ("attacked", "release"),
    "TRAIN.amp": ("none", "bf16", "fp16"),
    "ATTACK.amp": ("none", "bf16", "fp16"),
    "DIST.backend": ("auto", "nccl", "gloo"),
    "DIST.sync_bn": ("auto", "true", "false"),
}

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
        if default and isinstance(default[0], float):
            return [_to_float(v, bad) for v in value]
        if default and isinstance(default[0], int):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise bad("a list of integers")
        return list(value)
    raise AssertionError(f"schema default of {name} has unsupported type {kind}")


_SQUARE = {"TRAIN.crop_size", "TEST.crop_size"}
_ATTACK_SPECS = {"ADV_TRAIN.attack", "ADV_TRAIN.val_attack"}  # read by engine/attacks.py like ATTACK.attacks
_MAPPINGS = {"ATTACK.attacks"}  # lists of mappings
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
    if cfg.ADV_TRAIN.composition == "release" and cfg.ADV_TRAIN.adv_ratio != 0.5:
        raise UserError(f"ADV_TRAIN.composition release keeps the adversarial second half of the batch: it needs "
                        f"ADV_TRAIN.adv_ratio 0.5, got {cfg.ADV_TRAIN.adv_ratio}")
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
