"""Segmenter (Strudel et al., ICCV 2021) as SEA's code builds it: MODEL.arch segmenter, MODEL.style sea, on
MODEL.backbone vit (model/vit.py).

The mask-transformer head (SEA's `segmenter_decoder.py`): the patch tokens projected (proj_dec), K learnt class
embeddings appended, two transformer blocks (dropout 0.1, as SEA's), a LayerNorm; patch and class tokens are each
projected by a learnt matrix and L2-normalised, the masks are their scalar products, LayerNorm-ed over the K
classes, laid out as (N, K, H/16, W/16). The architecture upsamples them by 16 to the padded input and crops the
input's part (`Architecture.logits_stride`), as Segmenter does. No auxiliary head.
"""
from __future__ import annotations

import torch
from torch import nn

from model.registry import ARCHITECTURES, HEADS, Architecture, Head
from model.vit import PATCH, Block, init_linear, vit_settings


class MaskTransformer(nn.Module):
    """(N, C, h, w) patch tokens -> (N, K, h, w) masks."""

    def __init__(self, in_channels: int, classes: int, depth: int = 2, dim: int = 384, heads: int = 6,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.classes = classes
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(depth))
        self.cls_emb = nn.Parameter(torch.zeros(1, classes, dim))
        self.proj_dec = nn.Linear(in_channels, dim)
        self.proj_patch = nn.Parameter(dim ** -0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim ** -0.5 * torch.randn(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(classes)
        init_linear(self)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = self.proj_dec(x.flatten(2).transpose(1, 2))
        x = torch.cat([x, self.cls_emb.expand(n, -1, -1)], 1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches, classes = x[:, :-self.classes] @ self.proj_patch, x[:, -self.classes:] @ self.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return masks.transpose(1, 2).reshape(n, self.classes, h, w)


def mask_transformer(cfg, channels: int) -> MaskTransformer:
    _, depth, dim, heads = vit_settings(cfg)
    return MaskTransformer(channels, cfg.DATA.classes, depth, dim, heads)


HEADS.register("mask_transformer", Head(mask_transformer, in_index=-1))
ARCHITECTURES.register("segmenter", {"sea": Architecture(head="mask_transformer", logits_stride=PATCH)})
