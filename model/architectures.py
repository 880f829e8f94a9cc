"""The architectures of MODEL.arch, per MODEL.style: which registered heads sit on the backbone.

MODEL.style torchvision is this project's heads (torchvision's blocks); MODEL.style semseg is the exact network of
semseg, DDC-AT and the RP-PGD release (model/semseg.py), whose published checkpoints load strictly. DDC-AT's own
networks exist in the semseg style only.
"""
from __future__ import annotations

from model.registry import ARCHITECTURES, Architecture

ARCHITECTURES.register("pspnet", {
    "torchvision": Architecture(head="psp", aux_head="fcn"),
    "semseg": Architecture(head="semseg_psp", aux_head="semseg_psp_aux", align_corners=True),
})
ARCHITECTURES.register("deeplabv3", {
    "torchvision": Architecture(head="aspp", aux_head="fcn"),
    "semseg": Architecture(head="semseg_aspp", aux_head="semseg_aspp_aux", align_corners=True),
})
# DDC-AT's PSPNet_DDCAT and DeepLabV3_DDCAT: three heads, evaluated through cls1 (training them is refused)
ARCHITECTURES.register("pspnet_ddcat", {
    "semseg": Architecture(head="ddcat_psp", aux_head="semseg_psp_aux", align_corners=True)})
ARCHITECTURES.register("deeplabv3_ddcat", {
    "semseg": Architecture(head="ddcat_aspp", aux_head="semseg_aspp_aux", align_corners=True)})
