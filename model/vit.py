"""The ViT encoder of SEA's Segmenter (its `vit_encoder.py`, after Strudel et al., ICCV 2021): MODEL.backbone vit,
MODEL.variant s (ViT-S/16: width 384, 6 heads, 12 blocks, MLP x4, stochastic depth to 0.1, no dropout).

The input is padded with zeros on the bottom and right to a multiple of the patch size 16 (Segmenter pads the
image it is given; with SEA's DATA.mean 0 / DATA.std 1 that is the same), cut into 16x16 patches by a strided
convolution, a class token is prepended and the position embedding added. The embedding is learnt for a grid of
TRAIN.crop_size / 16 and, as SEA's code does, resized bilinearly to the input's grid when the token count differs.
After the blocks and the final LayerNorm the class token is dropped: the one level returned is the patch tokens laid
out as a map (N, C, H/16, W/16), which the mask-transformer head (model/segmenter.py) reads and RP-PGD's `feat` is.

Parameter names are timm's and SEA's (patch_embed.proj, cls_token, pos_embed, blocks.<i>.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}, norm), so SEA's checkpoints map by prefix (model/sea.py). MODEL.depths
[encoder, decoder] and MODEL.widths [width, heads] replace the variant's for small models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from model.registry import BACKBONES
from util.errors import UserError

PATCH = 16
# variant: (encoder blocks, decoder blocks, width, heads), SEA's vit_small_patch16_224 and mask-transformer settings
VARIANTS = {"s": (12, 2, 384, 6)}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, t, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-5, as SEA's): x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = Mlp(dim, 4 * dim, dropout)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_linear(module: nn.Module) -> None:
    """SEA's init_weights: truncated normal (std 0.02) Linear weights, zero biases (LayerNorms start at 1 and 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(nn.Module):
    """forward(x: (N,3,H,W) normalised) -> [(N, C, ceil(H/16), ceil(W/16))], the patch tokens after the last norm."""

    def __init__(self, grid: tuple[int, int], depth: int, dim: int, heads: int, drop_path: float = 0.1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], dim))
        self.dropout = nn.Dropout(dropout)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, r) for r in rates)
        self.norm = nn.LayerNorm(dim)
        self.channels, self.strides = (dim,), (PATCH,)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linear(self)

    def position(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an h x w grid: resized (bilinear, class token kept) only when the token count
        differs from the learnt grid's, which is SEA's rule (an h x w grid of the same count keeps the learnt one)."""
        if h * w == self.grid[0] * self.grid[1]:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        grid = grid.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.pad(x, (0, -x.shape[-1] % PATCH, 0, -x.shape[-2] % PATCH))
        x = self.patch_embed(x)
        n, c, h, w = x.shape
        x = torch.cat([self.cls_token.expand(n, -1, -1), x.flatten(2).transpose(1, 2)], 1)
        x = self.dropout(x + self.position(h, w))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)[:, 1:]
        return [x.transpose(1, 2).reshape(n, c, h, w)]


def vit_settings(cfg) -> tuple[int, int, int, int]:
    """(encoder blocks, decoder blocks, width, heads) of MODEL.variant, MODEL.depths / MODEL.widths overriding."""
    m = cfg.MODEL
    if m.variant not in VARIANTS:
        raise UserError(f"MODEL.variant must be one of {sorted(VARIANTS)} for MODEL.backbone vit, got {m.variant!r}")
    depth, dec_depth, dim, heads = VARIANTS[m.variant]
    for key, value in (("depths", m.depths), ("widths", m.widths)):
        if value and (len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value)):
            raise UserError(f"MODEL.{key} must be two positive integers for MODEL.backbone vit (or [] for the "
                            f"variant's), got {value}")
    depth, dec_depth = m.depths or (depth, dec_depth)
    dim, heads = m.widths or (dim, heads)
    if dim % heads:
        raise UserError(f"MODEL.widths: the width {dim} must be a multiple of the heads {heads}")
    return depth, dec_depth, dim, heads


@BACKBONES.register("vit")
def vit(cfg, pretrained: str = "") -> VisionTransformer:
    crop = cfg.TRAIN.crop_size
    if crop[0] % PATCH or crop[1] % PATCH:
        raise UserError(f"TRAIN.crop_size must be a multiple of the patch size {PATCH} for MODEL.backbone vit (the "
                        f"position embedding's grid is TRAIN.crop_size / {PATCH}), got {list(crop)}")
    if pretrained:
        raise UserError("MODEL.pretrained: MODEL.backbone vit reads no ImageNet file here; start from a Segmenter "
                        "checkpoint with TRAIN.weight, or leave MODEL.pretrained empty")
    depth, _, dim, heads = vit_settings(cfg)
    return VisionTransformer((crop[0] // PATCH, crop[1] // PATCH), depth, dim, heads)
