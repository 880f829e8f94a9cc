"""MODEL.arch smp:<Architecture>: a segmentation_models_pytorch model (smp:Unet, smp:DeepLabV3Plus, smp:FPN, ...)
with DATA.classes classes and MODEL.kwargs as its keyword arguments (e.g. {encoder_name: resnet18, encoder_depth:
4, decoder_channels: [64, 32, 16, 8]}); encoder_weights must stay null (weights come from a state_dict file).

smp returns logits at the input size. An architecture that needs sizes divisible by its encoder's output stride
(requires_divisible_input_shape: DeepLabV3+, FPN, ...) gets its normalised input padded with zeros at the bottom
and right and its logits cropped back, so any size works. `feat` defaults to the output of `encoder` (its deepest
map), the head group to `decoder` and `segmentation_head`.
"""
from __future__ import annotations

from model.library.adapter import LibraryModel, builder_kwargs, library_model
from model.library.packages import require
from model.registry import FAMILIES, Family
from util.errors import UserError

REFUSED = {"classes": "DATA.classes sets the class count", "in_channels": "the images have 3 channels",
           "aux_params": "smp's auxiliary output is an image classifier, which no loss here trains"}


def build_smp(cfg, name: str) -> LibraryModel:
    smp = require("segmentation_models_pytorch", f"smp:{name}")
    archs = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if name not in archs:
        raise UserError(f"MODEL.arch smp:{name}: the architecture must be one of {', '.join(archs)}")
    kwargs = builder_kwargs(cfg, REFUSED)
    if kwargs.setdefault("encoder_weights", None) is not None:
        raise UserError(f"MODEL.kwargs.encoder_weights {kwargs['encoder_weights']!r}: smp would download them; set it "
                        "null and start from a state_dict file with TRAIN.weight")
    try:
        net = archs[name](classes=cfg.DATA.classes, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"MODEL.kwargs {kwargs} for smp.{name}: {exc}") from None
    pad = net.encoder.output_stride if net.requires_divisible_input_shape else 1
    return library_model(cfg, net, lambda out: (out, None), feature_layer="encoder",
                         head_modules=["decoder", "segmentation_head"], pad_multiple=pad,
                         origin=f"segmentation_models_pytorch.{name}(**{kwargs})")


FAMILIES.register("smp", Family(build_smp))
