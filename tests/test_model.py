"""Model contract: output stride 8, any input size, return_dict, dilations, strict backbone loading."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from model import DilatedResNet, build_model, load_backbone_weights
from util.errors import UserError


@pytest.mark.parametrize("arch", ["pspnet", "deeplabv3"])
@pytest.mark.parametrize("size", [(33, 47), (64, 64), (57, 90)])
def test_any_input_size_and_return_dict(tiny_cfg, arch, size):
    model = build_model(tiny_cfg(arch=arch)).eval()
    x = torch.rand(2, 3, *size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7, *size)
    out = model(x, return_dict=True)
    assert torch.allclose(out["out"], logits)
    assert out["aux"] is None  # the auxiliary head runs only in training mode
    assert out["feat"].shape == (2, 512, math.ceil(size[0] / 8), math.ceil(size[1] / 8))  # output stride 8
    assert out["feat"].requires_grad  # not detached: prototype losses need its gradient
    model.train()
    out = model(x, return_dict=True)
    assert out["aux"].shape == (2, 7, *size)


def test_normalisation_is_inside_the_model(tiny_cfg):
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    x = torch.rand(1, 3, 16, 16)
    normed = model.normalize(x)
    mean = torch.tensor(cfg.DATA.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.DATA.std).view(1, 3, 1, 1)
    assert torch.allclose(normed, (x - mean) / std)
    assert not any(k.startswith("normalize") for k in model.state_dict())  # statistics come from the config


@pytest.mark.parametrize("layers", [18, 50])
def test_dilation_pattern(layers):
    net = DilatedResNet(layers)
    for name, dilation in (("layer3", 2), ("layer4", 4)):
        convs = [m for m in getattr(net, name).modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(m.stride == (1, 1) for m in convs)
        assert all(m.dilation == (dilation, dilation) and m.padding == (dilation, dilation)
                   for m in convs if m.kernel_size == (3, 3))
    features = net(torch.rand(1, 3, 64, 48))
    assert [tuple(f.shape[1:]) for f in features] == [(c, 64 // s, 48 // s) for c, s in zip(net.channels, net.strides)]
    assert net.strides == (4, 8, 8, 8)


def test_torchvision_plain_stem_checkpoint_loads_strictly(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(reference.state_dict(), path)
    net = DilatedResNet(18, deep_stem=False)
    load_backbone_weights(net, path)
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(net.bn1.running_var, reference.bn1.running_var)
    with pytest.raises(UserError, match="set MODEL.deep_stem false") as info:
        load_backbone_weights(DilatedResNet(18, deep_stem=True), path)
    assert "missing keys (18)" in str(info.value) and "conv2.weight" in str(info.value)


def test_semseg_deep_stem_checkpoint_loads_strictly(tmp_path):
    # semseg's resnet50_v2.pth layout: deep stem conv1-3/bn1-3, torchvision block names, an fc classifier.
    source = DilatedResNet(50, deep_stem=True)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    path = tmp_path / "resnet50_v2.pth"
    torch.save(state, path)
    net = DilatedResNet(50, deep_stem=True)
    load_backbone_weights(net, path)
    assert torch.equal(net.conv3.weight, state["conv3.weight"])
    with pytest.raises(UserError, match="set MODEL.deep_stem true"):
        load_backbone_weights(DilatedResNet(50, deep_stem=False), path)


def test_mismatched_or_broken_files_are_errors(tmp_path):
    state = DilatedResNet(18, deep_stem=False).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer2.0.downsample.0.weight"]
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(UserError) as info:
        load_backbone_weights(DilatedResNet(18, deep_stem=False), tmp_path / "odd.pth")
    text = str(info.value)
    assert "missing keys (1): layer2.0.downsample.0.weight" in text and "unexpected keys (1): extra.weight" in text
    torch.save(DilatedResNet(34, deep_stem=False).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError, match="unexpected keys"):
        load_backbone_weights(DilatedResNet(18, deep_stem=False), tmp_path / "r34.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a checkpoint, or a damaged one"):
        load_backbone_weights(DilatedResNet(18), tmp_path / "junk.pth")
    with pytest.raises(UserError, match="initmodel/README.md"):
        load_backbone_weights(DilatedResNet(18), tmp_path / "absent.pth")


def test_build_model_uses_pretrained(tiny_cfg, tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    model = build_model(tiny_cfg("MODEL.deep_stem", "false", "MODEL.pretrained", str(tmp_path / "r18.pth")))
    ref = torch.load(tmp_path / "r18.pth", weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, ref["conv1.weight"])


@pytest.mark.parametrize("override, needle", [
    (["MODEL.arch", "unet"], "MODEL.arch must be one of pspnet, deeplabv3, pspnet_ddcat, deeplabv3_ddcat, segmenter, "
                             "upernet; got 'unet'"),
    (["MODEL.backbone", "resnt"], "MODEL.backbone must be one of convnext, resnet, vit; got 'resnt'; did you mean "
                                  "'resnet'?"),
    (["MODEL.layers", "19"], "MODEL.layers must be one of [18, 34, 50, 101]"),
    (["MODEL.style", "mmseg"], "MODEL.arch pspnet needs MODEL.style torchvision or semseg, got 'mmseg'"),
    (["MODEL.arch", "pspnet_ddcat"], "MODEL.arch pspnet_ddcat needs MODEL.style semseg, got 'torchvision'"),
])
def test_registry_names_are_checked_where_they_are_looked_up(tiny_cfg, override, needle):
    """Config choices of MODEL.arch, MODEL.backbone and MODEL.style come from the registries: an unknown name stops
    build_model with the key and the registered names."""
    with pytest.raises(UserError) as info:
        build_model(tiny_cfg(*override))
    assert needle in str(info.value)


def test_param_groups_split_backbone_and_heads(tiny_cfg):
    model = build_model(tiny_cfg())
    groups = model.param_groups()
    assert [id(p) for p in groups["backbone"]] == [id(p) for p in model.backbone.parameters()]
    assert [id(p) for p in groups["head"]] == [id(p) for m in (model.head, model.aux_head) for p in m.parameters()]
