"""MODEL.arch hf:<folder>: a Hugging Face transformers semantic-segmentation model (SegFormer, UperNet with a
ConvNeXt or Swin backbone, DPT, ...) built from the folder's config.json (as save_pretrained writes it) with
AutoModelForSemanticSegmentation.from_config: random weights, DATA.classes labels, MODEL.kwargs as config
attributes (e.g. {use_auxiliary_head: false}). trust_remote_code stays off and nothing is downloaded: a config
that needs code from the Hub is refused. Weights come from a save_pretrained folder (TEST.model_path, TRAIN.weight,
which may be the same folder).

Normalisation: the folder's preprocessor_config.json image_mean/image_std when it has them (the statistics the
model was trained with), else DATA.mean/DATA.std; the log says which. Logits are upsampled to the input as the
image processors' post_process_semantic_segmentation does (bilinear, align_corners=False: SegFormer's are at 1/4).
`aux` is the output of the model's auxiliary_head (UperNet, DPT with use_auxiliary_head), upsampled as the
model's own loss does (bilinear, align_corners=False). Defaults per model type: `feat` and
the head group below; other types need MODEL.feature_layer for RP-PGD and MODEL.head_modules for a head group.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.library.adapter import LibraryModel, builder_kwargs, library_model
from model.library.packages import require
from model.registry import FAMILIES, Family
from util.errors import UserError

LOG = logging.getLogger("rppgd.model")
# model_type -> (the module whose output is `feat`, the modules of the head group)
DEFAULTS = {
    "segformer": ("segformer", ("decode_head",)),                    # the last stage's map, stride 32
    "upernet": ("backbone", ("decode_head", "auxiliary_head")),     # the backbone's last feature map
    "dpt": ("neck", ("neck", "head", "auxiliary_head")),            # the neck's last fused map, the head's input
}
REFUSED = {k: "DATA.classes sets the class count" for k in ("num_labels", "id2label", "label2id")}


def read_output(out: Any) -> tuple[torch.Tensor, None]:
    """The logits; the auxiliary head's logits, which only the model's own loss reads, are hooked (`aux_layer`)."""
    return out.logits, None


def preprocessor(folder: Path) -> dict:
    """The folder's preprocessor_config.json, or {} when it has none."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"MODEL.arch hf:{folder}: '{path}' is not valid JSON: {exc}") from None


def normalisation(folder: Path, pre: dict, cfg) -> tuple[list[float], list[float], str]:
    """(mean, std, which) from preprocessor_config.json's image_mean/image_std, else DATA.mean/DATA.std."""
    path = folder / "preprocessor_config.json"
    if pre:
        mean, std = pre.get("image_mean"), pre.get("image_std")
        if mean is not None and std is not None:
            if not all(isinstance(v, list) and len(v) == 3 for v in (mean, std)):
                raise UserError(f"'{path}': image_mean and image_std must be lists of 3 numbers, got {mean}, {std}")
            return [float(v) for v in mean], [float(v) for v in std], f"image_mean/image_std of '{path}'"
    return list(cfg.DATA.mean), list(cfg.DATA.std), f"DATA.mean/DATA.std ('{folder}' has no image_mean/image_std)"


def fixed_size(config, pre: dict) -> tuple[int, int] | None:
    """The one input size of a plain-ViT DPT (its position embeddings take square inputs only): the image
    processor's size {height, width} when the folder has one, else config.image_size; None for other models."""
    if config.model_type != "dpt" or config.is_hybrid or getattr(config, "backbone_config", None) is not None:
        return None
    size = pre.get("size")
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        return int(size["height"]), int(size["width"])
    side = config.image_size
    return (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))


def model_class(cfg, folder: str):
    """(transformers, the folder's config with DATA.classes labels and MODEL.kwargs, the model class for it)."""
    arch = f"hf:{folder}"
    transformers = require("transformers", arch)
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING as MODELS
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UserError(f"MODEL.arch {arch}: '{path / 'config.json'}' does not exist (hf: names a folder that "
                        "save_pretrained wrote)")
    kwargs = builder_kwargs(cfg, REFUSED)
    try:
        config, unused = transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, return_unused_kwargs=True, **kwargs)
    except (ValueError, OSError, KeyError) as exc:
        raise UserError(f"MODEL.arch {arch}: '{path / 'config.json'}' is no config transformers knows: {exc}") from None
    if unused:
        raise UserError(f"MODEL.kwargs {sorted(unused)}: no attribute of the {config.model_type} config in "
                        f"'{path / 'config.json'}'")
    if type(config) not in MODELS:
        raise UserError(f"MODEL.arch {arch}: transformers has no semantic-segmentation model for model_type "
                        f"'{config.model_type}' ('{path / 'config.json'}'); its semantic-segmentation types: "
                        f"{', '.join(sorted(c.model_type for c in MODELS.keys()))}")
    config.num_labels = cfg.DATA.classes
    return transformers, config, MODELS[type(config)]


def build_hf(cfg, folder: str) -> LibraryModel:
    path = Path(folder)
    _, config, cls = model_class(cfg, folder)
    net = cls(config)  # AutoModelForSemanticSegmentation.from_config's class, with random weights
    pre = preprocessor(path)
    mean, std, which = normalisation(path, pre, cfg)
    LOG.info(f"MODEL.arch hf:{folder}: {cls.__name__}; normalisation {which}: mean {mean}, std {std}")
    feature, heads = DEFAULTS.get(config.model_type, ("", ()))
    heads = [h for h in heads if isinstance(getattr(net, h, None), nn.Module)]
    return library_model(cfg, net, read_output, feature_layer=feature, head_modules=heads, mean=mean, std=std,
                         aux_layer="auxiliary_head" if "auxiliary_head" in heads else "",
                         resize_to=fixed_size(config, pre),
                         origin=f"{cls.__name__} from '{path}'; normalisation {which}")


def hf_weights(state: dict[str, torch.Tensor], cfg, where: str) -> dict[str, torch.Tensor]:
    """A save_pretrained folder's tensors (transformers' checkpoint layout, which may name keys differently from
    the module, e.g. SegFormer's linear_c/linear_projections in transformers 5) or a checkpoint written here,
    loaded by transformers' own from_pretrained; every key checked, then returned under the module's keys."""
    _, config, cls = model_class(cfg, cfg.MODEL.arch[3:])
    try:
        net, info = cls.from_pretrained(None, config=config, state_dict=dict(state), output_loading_info=True)
    except (RuntimeError, ValueError) as exc:  # e.g. a tensor of another shape
        raise UserError(f"{where} does not fit {cls.__name__} ({cfg.MODEL.arch}, DATA.classes): {exc}") from None
    wrong = {k: sorted(v)[:10] for k, v in info.items() if v}
    if wrong:
        raise UserError(f"{where} does not match {cls.__name__} built from the config ({cfg.MODEL.arch}, "
                        f"DATA.classes): " + "; ".join(f"{k.replace('_keys', '')}: {v}" for k, v in wrong.items()))
    return net.state_dict()


FAMILIES.register("hf", Family(build_hf, hf_weights))
