"""Robust evaluation shared by training (robust validation) and testing: attacks and the protocol from the
config. An attacked evaluation is util.evaluation.evaluate(..., predict=protocol.predict(attack))."""
from __future__ import annotations

import math

import torch
from torch import nn

from attack.base import Attack
from attack.protocols import Protocol
from attack.registry import attack_parameters, build_attack
from attack.worst_case import worst_case_choice
from util.class_counts import class_pixel_counts
from util.errors import UserError
from util.evaluation import inference_settings
from util.metrics import SegMetric, scores_from_counts

NEEDS_CLASS_COUNTS = ("apgd-mce-bal", "sea")  # MCE-Bal weights come from the training set's class frequencies


def attack_from_config(name: str, params: dict, model: nn.Module, key: str, cfg=None) -> Attack:
    """build_attack(name, model, **params) for a config entry; any error becomes a UserError naming `key`.

    With cfg, MCE-Bal (apgd-mce-bal, sea) gets the training list's class pixel counts unless params set them.
    """
    params = dict(params)
    try:
        allowed = attack_parameters(name)
        if cfg is not None:
            if name in NEEDS_CLASS_COUNTS and "class_counts" not in params and "class_weights" not in params:
                params["class_counts"] = class_pixel_counts(cfg)
            if "ignore_index" in allowed:
                params.setdefault("ignore_index", cfg.DATA.ignore_index)
        return build_attack(name, model, **params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{key}: {exc}") from exc


def attack_entries(cfg) -> list[tuple[str, str, dict]]:
    """(result key, registry name, parameters) of every ATTACK.attacks entry; keys must be unique."""
    entries, seen = [], set()
    for i, item in enumerate(cfg.ATTACK.attacks):
        params = {k: v for k, v in item.items() if k not in ("name", "key")}
        key = str(item.get("key", item["name"]))
        if key in seen or key == "clean":
            raise UserError(f"ATTACK.attacks[{i}]: result name '{key}' is taken; give this entry its own 'key'")
        seen.add(key)
        entries.append((key, item["name"], params))
    return entries


def protocol_from_config(cfg, model: nn.Module) -> Protocol:
    """The protocol ATTACK.protocol with the TEST inference settings and ATTACK.seed."""
    try:
        return Protocol(cfg.ATTACK.protocol, model, inference_settings(cfg), cfg.ATTACK.seed, cfg.DATA.ignore_index)
    except ValueError as exc:
        raise UserError(f"ATTACK.protocol: {exc}") from exc


def worst_case_summary(metrics: dict[str, SegMetric]) -> dict | None:
    """The worst case over attacks evaluated on the same images (attack/worst_case.py).

    "per_image_miou": per image the lowest mean IoU of any attack (never above any attack's own per-image score);
    "mIoU", "mAcc", "aAcc", "per_class_iou": the dataset scores when each image takes the attack of the greedy
    dataset-level choice ("per_image_attack"), which is at most every single attack's mIoU.
    """
    if not metrics:
        return None
    keys = list(metrics)
    indices = sorted(metrics[keys[0]].per_image_counts)
    counts = torch.stack([torch.stack([metrics[k].per_image_counts[i] for i in indices]) for k in keys])
    choice, _ = worst_case_choice(counts)  # counts (A,N,3,K) -> an attack index per image
    chosen = counts[torch.tensor(choice, dtype=torch.long), torch.arange(len(indices))].sum(0)  # (3,K)
    per_image = []
    for i in indices:
        values = [v for v in (metrics[k].per_image[i] for k in keys) if not math.isnan(v)]
        per_image.append(min(values) if values else None)  # None: every pixel of the image is ignored
    return {"attacks": keys, **scores_from_counts(*chosen), "per_image_miou": per_image,
            "per_image_attack": [keys[a] for a in choice],
            "images_per_attack": {k: choice.count(a) for a, k in enumerate(keys)}, "images": len(indices)}
