"""Tiny models of every library family (model/library/) for fast tests: configs written here, random weights, and
the reference each family's logits are compared with (the library model called directly on normalised images, its
logits brought to the input size as the library does)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from conftest import write_yaml
from util.config import load_config

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLASSES = 7
SMP_UNET = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4], "encoder_weights": None}
SMP_DEEPLAB = {"encoder_name": "resnet18", "encoder_depth": 4, "encoder_output_stride": 16, "encoder_weights": None,
               "decoder_channels": 16, "decoder_atrous_rates": [2, 4, 6]}


def hf_configs() -> dict:
    """Tiny transformers configs: SegFormer, UperNet on ConvNeXt and on Swin, DPT (plain ViT)."""
    from transformers import ConvNextConfig, DPTConfig, SegformerConfig, SwinConfig, UperNetConfig
    stages = ["stage1", "stage2", "stage3", "stage4"]
    return {
        "segformer": SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                                     num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16),
        "upernet_convnext": UperNetConfig(backbone_config=ConvNextConfig(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], out_features=stages), hidden_size=16,
            auxiliary_channels=8),
        "upernet_swin": UperNetConfig(backbone_config=SwinConfig(
            embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, out_features=stages),
            hidden_size=16, auxiliary_channels=8),
        "dpt": DPTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                         image_size=32, patch_size=8, neck_hidden_sizes=[8, 16, 16, 16], fusion_hidden_size=16,
                         backbone_out_indices=[0, 1, 2, 3], use_auxiliary_head=True),
    }


def hf_folder(root: Path, name: str, preprocessor: dict | None = None) -> Path:
    """A folder holding `name`'s config.json (save_pretrained), and a preprocessor_config.json when given."""
    import json
    folder = root / name
    hf_configs()[name].save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


class TinyUserNet(nn.Module):
    """A user's own network: normalised images -> {"out": logits at 1/2 resolution}; BatchNorm and dropout, so
    the train/eval mode matters."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(16, classes, 1))

    def forward(self, x):
        return {"out": self.classifier(self.body(self.stem(x)))}


def build_tiny_user_net(cfg) -> nn.Module:
    """The builder MODEL.arch python:library_models:build_tiny_user_net names."""
    return TinyUserNet(cfg.DATA.classes)


# family -> (MODEL.arch, MODEL.kwargs) of one tiny model; hf: folders are made by library_cfg
ARCHS = {
    "torchvision-lraspp": ("torchvision:lraspp_mobilenet_v3_large", {}),
    "torchvision-deeplabv3": ("torchvision:deeplabv3_mobilenet_v3_large", {"aux_loss": True}),
    "smp-unet": ("smp:Unet", SMP_UNET),
    "smp-deeplabv3plus": ("smp:DeepLabV3Plus", SMP_DEEPLAB),
    "hf-segformer": ("hf:segformer", {}),
    "hf-upernet_convnext": ("hf:upernet_convnext", {}),
    "hf-upernet_swin": ("hf:upernet_swin", {}),
    "hf-dpt": ("hf:dpt", {}),
    "python": ("python:library_models:build_tiny_user_net", {}),
}


def library_cfg(tmp_path: Path, key: str, *overrides: str, data_root: str = "", preprocessor: dict | None = None):
    """The config of ARCHS[key] (an hf: folder written under tmp_path); DATA is the demo's."""
    arch, kwargs = ARCHS[key]
    tmp_path.mkdir(parents=True, exist_ok=True)
    if arch.startswith("hf:"):
        arch = f"hf:{hf_folder(tmp_path, arch[3:], preprocessor)}"
    path = write_yaml(tmp_path / "library.yaml", f"""
EXP: {{root: {tmp_path / 'exp'}}}
DATA: {{name: demo, data_root: '{data_root}', classes: {CLASSES}, workers: 0}}
MODEL: {{arch: '{arch}', kwargs: {kwargs if kwargs else '{}'}}}
TRAIN: {{epochs: 1, batch_size: 4, crop_size: [40, 40], scale_range: [0.8, 1.2], print_freq: 1, save_freq: 1}}
TEST: {{mode: whole, batch_size: 2, workers: 0}}
""".replace("None", "null").replace("True", "true"))
    return load_config(path, list(overrides))


def normalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def reference_logits(key: str, net: nn.Module, x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """The library model `net` called directly on normalised images, its logits at the input size as the library
    brings them there (Hugging Face: the image processor's post_process_semantic_segmentation)."""
    z, size = normalise(x, mean, std), x.shape[-2:]
    if key.startswith("torchvision"):
        return net(z)["out"]                                  # torchvision upsamples inside the model
    if key == "smp-unet":
        return net(z)                                         # any size, logits at the input size
    if key == "smp-deeplabv3plus":                            # sizes divisible by 16 only: pad, then crop
        h, w = (-size[0]) % 16, (-size[1]) % 16
        return net(F.pad(z, (0, w, 0, h)))[..., :size[0], :size[1]]
    if key.startswith("hf"):
        from transformers import DPTImageProcessor, SegformerImageProcessor
        processor = DPTImageProcessor() if key == "hf-dpt" else SegformerImageProcessor()
        if key == "hf-dpt":                                   # DPT's processor resizes to its one size
            z = F.interpolate(z, size=(32, 32), mode="bilinear", align_corners=False)
        post = processor.post_process_semantic_segmentation(
            net(pixel_values=z), target_sizes=[tuple(size)] * len(x), return_segmentation_scores=True)
        return torch.stack([p.segmentation_scores for p in post])
    return F.interpolate(net(z)["out"], size=size, mode="bilinear", align_corners=False)
