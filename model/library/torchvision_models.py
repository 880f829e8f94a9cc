"""MODEL.arch torchvision:<builder>: the segmentation models of torchvision.models.segmentation, with random
weights (weights=None, weights_backbone=None), DATA.classes classes and the builder's other keyword arguments from
MODEL.kwargs (e.g. {aux_loss: true}). Weights come from a state_dict file (TEST.model_path, TRAIN.weight).

Their forward returns {"out": logits already upsampled to the input (bilinear, align_corners=False), "aux"}; `feat`
defaults to the output of `backbone` (its last map: layer4 of the ResNets, the last MobileNetV3 stage), and the
head group to `classifier` and `aux_classifier`.
"""
from __future__ import annotations

from torch import nn

from model.library.adapter import LibraryModel, builder_kwargs, library_model
from model.registry import FAMILIES, Family
from util.errors import UserError

BUILDERS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
            "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
REFUSED = {"weights": "weights come from a state_dict file (TEST.model_path, TRAIN.weight), never downloaded",
           "weights_backbone": "weights come from a state_dict file (TEST.model_path, TRAIN.weight), never downloaded",
           "num_classes": "DATA.classes sets the class count"}


def build_torchvision(cfg, name: str) -> LibraryModel:
    from torchvision.models import segmentation

    if name not in BUILDERS:
        raise UserError(f"MODEL.arch torchvision:{name}: the builder must be one of torchvision.models.segmentation's "
                        f"{', '.join(BUILDERS)}")
    kwargs = builder_kwargs(cfg, REFUSED)
    try:
        net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=cfg.DATA.classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"MODEL.kwargs {kwargs} for torchvision's {name}: {exc}") from None
    heads = [h for h in ("classifier", "aux_classifier") if isinstance(getattr(net, h, None), nn.Module)]
    return library_model(cfg, net, lambda out: (out["out"], out.get("aux")), feature_layer="backbone",
                         head_modules=heads, origin=f"torchvision.models.segmentation.{name}(**{kwargs})")


FAMILIES.register("torchvision", Family(build_torchvision))
