"""SEA's UperNet-ConvNeXt and Segmenter (MODEL.style sea): SEA's checkpoint names both ways, strict loading, output
and feat sizes for odd inputs, Segmenter's pad-and-crop, and the robust ImageNet files (revisiting-at's ConvNeXt,
RobustBench's Salman2020Do ResNets) in their publishers' layouts. The names SEA's code gives are written out here
by hand from its modules, independently of model/sea.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

from attack import build_attack
from conftest import ROOT
from engine.trained_model import load_trained_model
from model import DilatedResNet, build_model, load_backbone_weights
from model.convnext import ConvNeXt, load_convnext_imagenet
from model.sea import from_sea_state, to_sea_state
from util.config import load_config
from util.errors import UserError

UPERNET = ["MODEL.arch", "upernet", "MODEL.style", "sea", "MODEL.backbone", "convnext", "MODEL.variant", "t",
           "MODEL.widths", "[8, 16, 24, 32]", "MODEL.depths", "[1, 2, 1, 1]", "MODEL.head_channels", "16",
           "DATA.mean", "[0, 0, 0]", "DATA.std", "[1, 1, 1]"]
SEGMENTER = ["MODEL.arch", "segmenter", "MODEL.style", "sea", "MODEL.backbone", "vit", "MODEL.variant", "s",
             "MODEL.widths", "[16, 2]", "MODEL.depths", "[2, 1]", "TRAIN.crop_size", "[64, 64]",
             "DATA.mean", "[0, 0, 0]", "DATA.std", "[1, 1, 1]"]
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def cfg_of(*overrides):
    return load_config(ROOT / "config/demo/demo_pspnet18.yaml", [*overrides])


def sea_upernet_names(depths, stem, bins=4, levels=4):
    """The state-dict keys of SEA's UperNetForSemanticSegmentation (uperforseg.py, convnext_orig.py)."""
    stem_layers = ("stem.0", "stem.1", "stem.3", "stem.4") if stem == "conv" else ("0", "1")
    names = [f"backbone.downsample_layers.0.{i}.{p}" for i in stem_layers for p in ("weight", "bias")]
    names += [f"backbone.downsample_layers.{i}.{j}.{p}" for i in (1, 2, 3) for j in (0, 1) for p in ("weight", "bias")]
    for i, depth in enumerate(depths):
        for k in range(depth):
            names += [f"backbone.stages.{i}.{k}.gamma"]
            names += [f"backbone.stages.{i}.{k}.{m}.{p}" for m in ("dwconv", "norm", "pwconv1", "pwconv2")
                      for p in ("weight", "bias")]
        names += [f"backbone.norm{i}.{p}" for p in ("weight", "bias")]

    def unit(prefix):
        return [f"{prefix}.conv.weight"] + [f"{prefix}.batch_norm.{p}" for p in BN]
    for j in range(bins):
        names += unit(f"decode_head.psp_modules.{j}.1")
    names += unit("decode_head.bottleneck") + unit("decode_head.fpn_bottleneck")
    for j in range(levels - 1):
        names += unit(f"decode_head.lateral_convs.{j}") + unit(f"decode_head.fpn_convs.{j}")
    names += ["decode_head.classifier.weight", "decode_head.classifier.bias"]
    names += unit("auxiliary_head.convs.0") + ["auxiliary_head.classifier.weight", "auxiliary_head.classifier.bias"]
    return set(names)


def sea_segmenter_names(depth, dec_depth):
    """The keys of SEA's SegMenter (vit_encoder.py, segmenter_decoder.py), its unused encoder.head included."""
    def block(prefix):
        return [f"{prefix}.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                for p in ("weight", "bias")]
    names = ["encoder.cls_token", "encoder.pos_embed", "encoder.patch_embed.proj.weight",
             "encoder.patch_embed.proj.bias", "encoder.norm.weight", "encoder.norm.bias", "encoder.head.weight",
             "encoder.head.bias",
             "decoder.cls_emb", "decoder.proj_dec.weight", "decoder.proj_dec.bias", "decoder.proj_patch",
             "decoder.proj_classes", "decoder.decoder_norm.weight", "decoder.decoder_norm.bias",
             "decoder.mask_norm.weight", "decoder.mask_norm.bias"]
    for i in range(depth):
        names += block(f"encoder.blocks.{i}")
    for i in range(dec_depth):
        names += block(f"decoder.blocks.{i}")
    return set(names)


def randomised(model):
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if t.dim() == 1 else torch.randn_like(t) / t[0].numel() ** 0.5)
    return model.eval()


def sea_file(tmp_path, model, family, stem="patch", name="sea.pth", extra=None):
    state = to_sea_state(model.state_dict(), family, stem)
    if family == "segmenter":  # SEA's ViT keeps its ImageNet classifier, which Segmenter never runs
        width = state["encoder.norm.weight"].shape[0]
        state["encoder.head.weight"], state["encoder.head.bias"] = torch.randn(1000, width), torch.randn(1000)
    state.update(extra or {})
    torch.save(state, tmp_path / name)
    return tmp_path / name, state


@pytest.mark.parametrize("stem", ["conv", "patch"])
def test_upernet_sea_names_both_ways_and_loading(tmp_path, stem):
    cfg = cfg_of(*UPERNET, "MODEL.stem", stem)
    ours = randomised(build_model(cfg))
    path, state = sea_file(tmp_path, ours, "upernet", stem)
    assert set(state) == sea_upernet_names([1, 2, 1, 1], stem)
    assert state["backbone.stages.1.1.gamma"].shape == (16,)  # SEA's layer scale is (C,), ours (C, 1, 1)
    back, unmapped = from_sea_state(state)
    assert unmapped == [] and set(back) == set(ours.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())
    loaded = load_trained_model(cfg_of(*UPERNET, "MODEL.stem", stem, "TEST.model_path", str(path))).model
    x = torch.rand(2, 3, 57, 45)
    assert not loaded.training and torch.equal(loaded(x), ours(x))


def test_segmenter_sea_names_both_ways_and_loading(tmp_path):
    cfg = cfg_of(*SEGMENTER)
    ours = randomised(build_model(cfg))
    path, state = sea_file(tmp_path, ours, "segmenter")
    assert set(state) == sea_segmenter_names(2, 1)
    back, unmapped = from_sea_state(state)
    assert unmapped == [] and set(back) == set(ours.state_dict())  # encoder.head.* dropped, nothing else
    loaded = load_trained_model(cfg_of(*SEGMENTER, "TEST.model_path", str(path))).model
    x = torch.rand(1, 3, 40, 72)
    assert torch.equal(loaded(x), ours(x))


def test_sea_files_that_do_not_fit_are_refused_with_the_keys(tmp_path):
    ours = build_model(cfg_of(*UPERNET, "MODEL.stem", "conv"))
    path, state = sea_file(tmp_path, ours, "upernet", "conv", extra={"decode_head.extra_conv.weight": torch.zeros(1)})
    with pytest.raises(UserError, match=r"1 key\(s\) of SEA's upernet have no counterpart.*decode_head.extra_conv"):
        load_trained_model(cfg_of(*UPERNET, "MODEL.stem", "conv", "TEST.model_path", str(path)))
    del state["decode_head.extra_conv.weight"], state["backbone.norm3.bias"]
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing: \['backbone.norms.3.bias'\]"):
        load_trained_model(cfg_of(*UPERNET, "MODEL.stem", "conv", "TEST.model_path", str(path)))
    # a conv-stem file in a patch-stem config, or in another architecture: the settings it needs are named
    path, _ = sea_file(tmp_path, ours, "upernet", "conv")
    with pytest.raises(UserError, match="needs MODEL.stem conv"):
        load_trained_model(cfg_of(*UPERNET, "MODEL.stem", "patch", "TEST.model_path", str(path)))
    with pytest.raises(UserError, match="needs MODEL.arch upernet, MODEL.style sea, MODEL.backbone convnext"):
        load_trained_model(cfg_of("TEST.model_path", str(path)))


@pytest.mark.parametrize("size", [(97, 81), (33, 47), (64, 64)])
def test_odd_inputs_give_logits_at_input_size_and_the_feat_of_the_last_level(size):
    h, w = size
    upernet = build_model(cfg_of(*UPERNET, "MODEL.stem", "conv")).eval()
    out = upernet(torch.rand(2, 3, h, w), return_dict=True)
    down = lambda n, k: (n + 2 - 3) // 2 + 1 if k else n // 2  # noqa: E731  conv 3x3 s2 p1, then 2x2 s2
    fh, fw = h, w
    for k in (1, 1, 0, 0, 0):
        fh, fw = down(fh, k), down(fw, k)
    assert out["out"].shape == (2, 7, h, w) and out["feat"].shape == (2, 32, fh, fw) and out["aux"] is None
    segmenter = build_model(cfg_of(*SEGMENTER)).eval()
    out = segmenter(torch.rand(2, 3, h, w), return_dict=True)
    assert out["out"].shape == (2, 7, h, w) and out["feat"].shape == (2, 16, -(-h // 16), -(-w // 16))


def test_segmenter_pads_to_the_patch_size_and_crops_its_logits():
    """SEA's Segmenter on a 33x47 image is its output on the image zero-padded to 48x48, cropped (same token count,
    so the same position embedding; DATA.mean 0 and std 1 make padding before and after normalisation the same)."""
    model = randomised(build_model(cfg_of(*SEGMENTER)))
    x = torch.rand(1, 3, 33, 47)
    padded = F.pad(x, (0, 1, 0, 15))
    assert torch.allclose(model(x), model(padded)[..., :33, :47], atol=1e-6)


def test_training_mode_gives_the_auxiliary_logits_and_attacks_restore_it():
    model = build_model(cfg_of(*UPERNET)).train()
    out = model(torch.rand(2, 3, 40, 40), return_dict=True)
    assert out["aux"].shape == (2, 7, 40, 40)
    x, y = torch.rand(2, 3, 40, 40), torch.randint(0, 7, (2, 40, 40))
    adv = build_attack("pgd", model, eps=4 / 255, alpha=0.01, steps=2)(x, y)
    assert model.training and (adv - x).abs().max() <= 4 / 255 + 1e-6
    segmenter = build_model(cfg_of(*SEGMENTER)).train()
    build_attack("pgd", segmenter, eps=4 / 255, alpha=0.01, steps=1)(torch.rand(1, 3, 32, 32),
                                                                     torch.randint(0, 7, (1, 32, 32)))
    assert segmenter.training


@pytest.mark.parametrize("family", ["upernet", "segmenter"])
def test_rppgd_reads_the_feat_of_both_families(family):
    model = build_model(cfg_of(*(UPERNET if family == "upernet" else SEGMENTER))).eval()
    x, y = torch.rand(2, 3, 48, 48), torch.randint(0, 7, (2, 48, 48))
    adv = build_attack("rppgd++", model, eps=0.1, alpha=0.025, steps=2, seed=0)(x, y)
    assert not model.training and 0 < (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


# ---- robust ImageNet files -------------------------------------------------------------------------------------
def timm_convnext_state(backbone: ConvNeXt) -> dict[str, torch.Tensor]:
    """revisiting-at's file for this backbone, names written out from timm's ConvNeXt with its conv stem, the way
    its training saves them (DDP's module., its wrapper's base_model., the normalize layer, the classifier)."""
    own, out = backbone.state_dict(), {}
    stem = {"conv": "stem.stem.", "patch": "stem."}[backbone.stem_kind]
    for key, value in own.items():
        parts = key.split(".")
        if parts[0] == "stem":
            out[stem + ".".join(parts[1:])] = value
        elif parts[0] == "downsample":
            out[f"stages.{int(parts[1]) + 1}.downsample.{parts[2]}.{parts[3]}"] = value
        elif parts[0] == "stages" and parts[3] == "layer_scale":
            out[f"stages.{parts[1]}.blocks.{parts[2]}.gamma"] = value.reshape(-1)
        elif parts[0] == "stages":
            timm = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}[parts[4]]
            out[f"stages.{parts[1]}.blocks.{parts[2]}.{timm}.{parts[5]}"] = value
    out["head.norm.weight"], out["head.norm.bias"] = torch.ones(32), torch.zeros(32)
    out["head.fc.weight"], out["head.fc.bias"] = torch.randn(1000, 32), torch.zeros(1000)
    state = {f"module.base_model.model.{k}": v for k, v in out.items()}
    state["module.base_model.normalize.mean"] = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    state["module.base_model.normalize.std"] = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return state


@pytest.mark.parametrize("stem", ["conv", "patch"])
def test_revisiting_at_convnext_file_loads_strictly(tmp_path, stem):
    source = randomised(ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), stem))
    state = timm_convnext_state(source)
    torch.save(state, tmp_path / "convnext.pt")
    net = ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), stem)
    norms = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("norms.")}
    load_convnext_imagenet(net, tmp_path / "convnext.pt")
    for key, value in net.state_dict().items():  # every weight from the file, the output norms as initialised
        assert torch.equal(value, norms[key] if key.startswith("norms.") else source.state_dict()[key]), key
    other = "patch" if stem == "conv" else "conv"
    with pytest.raises(UserError, match=f"set MODEL.stem {stem}"):
        load_convnext_imagenet(ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), other), tmp_path / "convnext.pt")
    del state["module.base_model.model.stages.2.blocks.0.gamma"]
    state["module.base_model.model.stages.2.blocks.0.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(UserError) as info:
        load_convnext_imagenet(ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), stem), tmp_path / "odd.pt")
    text = str(info.value)
    assert "missing keys (1): stages.2.0.layer_scale" in text and "unexpected keys (1): stages.2.blocks.0.extra" in text


@pytest.mark.parametrize("layout", ["plain", "model.", "module.model."])
def test_robustbench_salman_resnet_loads_strictly(tmp_path, layout):
    reference = randomised(torchvision.models.resnet18(weights=None))
    state = reference.state_dict()
    if layout != "plain":
        state = {f"{layout}{k}": v for k, v in state.items()}
        state["normalize.mean"], state["normalize.std"] = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    torch.save({"state_dict": state} if layout.startswith("module") else state, tmp_path / "Salman2020Do_R18.pt")
    net = DilatedResNet(18, deep_stem=False)
    load_backbone_weights(net, tmp_path / "Salman2020Do_R18.pt")
    own = net.state_dict()
    assert set(own) == {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert all(torch.equal(own[k], v) for k, v in reference.state_dict().items() if k in own)
    with pytest.raises(UserError, match="set MODEL.deep_stem false"):
        load_backbone_weights(DilatedResNet(18, deep_stem=True), tmp_path / "Salman2020Do_R18.pt")


def test_bad_variants_and_sizes_are_named():
    with pytest.raises(UserError, match="MODEL.variant must be one of"):
        build_model(cfg_of(*UPERNET, "MODEL.variant", "b"))
    with pytest.raises(UserError, match="MODEL.widths must be four positive integers"):
        build_model(cfg_of(*UPERNET, "MODEL.widths", "[8, 16]"))
    with pytest.raises(UserError, match="TRAIN.crop_size must be a multiple of the patch size"):
        build_model(cfg_of(*SEGMENTER, "TRAIN.crop_size", "[50, 50]"))


@pytest.mark.slow
@pytest.mark.parametrize("config,family,depths", [
    ("config/voc2012/voc2012_upernet_convnext_t_pirat.yaml", "upernet", [3, 3, 9, 3]),
    ("config/ade20k/ade20k_upernet_convnext_s_pirat.yaml", "upernet", [3, 3, 27, 3]),
    ("config/ade20k/ade20k_segmenter_vit_s_pirat.yaml", "segmenter", (12, 2)),
])
def test_full_width_models_have_seas_names(config, family, depths):
    cfg = load_config(ROOT / config, ["MODEL.pretrained", ""])
    model = build_model(cfg)
    state = to_sea_state(model.state_dict(), family, cfg.MODEL.stem)
    expected = (sea_upernet_names(depths, "conv") if family == "upernet"
                else sea_segmenter_names(*depths) - {"encoder.head.weight", "encoder.head.bias"})
    assert set(state) == expected
    assert set(from_sea_state(state)[0]) == set(model.state_dict())
    if family == "segmenter":
        assert state["encoder.pos_embed"].shape == (1, 1 + 32 * 32, 384)
        assert state["decoder.cls_emb"].shape == (1, 151, 384)


@pytest.mark.slow
@pytest.mark.parametrize("recipe, attack", [("pirat", "PIRATPGD("), ("rpat", "RPPGDPlusPlus(")])
def test_demo_upernet_convnext_trains_one_pirat_epoch_and_is_evaluated_with_sea_under_center(tmp_path, tiny_data,
                                                                                               recipe, attack):
    """PIR-AT, and RP-PGD++ inside it, for one epoch of the demo UperNet-ConvNeXt; then SEA under `center`."""
    config = str(ROOT / f"config/demo/demo_upernet_convnext_{recipe}.yaml")
    common = ["DATA.data_root", str(tiny_data), "DATA.workers", "0", "EXP.root", str(tmp_path / "exp"),
              "TRAIN.batch_size", "4", "TRAIN.crop_size", "48", "TEST.batch_size", "2", "TEST.workers", "0",
              "TEST.crop_size", "48"]
    for script, extra in (("tool_train/train.py", ["TRAIN.epochs", "1"]),
                          ("tool_test/test.py", ["ATTACK.attacks", "[{name: sea, eps: 0.1, steps: 6}]"])):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", config, *common, *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "exp" / "demo" / f"demo_upernet_convnext_{recipe}"
    log = (run_dir / "train.log").read_text()
    assert "PIR-AT: all 4 images per process and step attacked by" in log and attack in log, log[:2000]
    metrics = json.loads(next((run_dir / "result").glob("*center*/metrics.json")).read_text())
    assert metrics["protocol"]["name"] == "center" and list(metrics["attacks"]) == ["sea"]
    assert metrics["attacks"]["sea"]["mIoU"] <= metrics["clean"]["mIoU"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["upernet", "segmenter"])
def test_the_benchmark_runs_on_the_sea_families_with_the_pirat_recipe(tmp_path, tiny_data, family):
    """tool_bench/bench.py on tiny UperNet-ConvNeXt and Segmenter networks with the PIR-AT demo config: attack steps
    with their passes counted (SEA's training PGD among them) and the PIR-AT training step beside a clean one."""
    out = tmp_path / "bench.json"
    tiny = UPERNET if family == "upernet" else [*SEGMENTER, "TEST.crop_size", "[64, 64]"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tool_bench/bench.py"), "--config",
         str(ROOT / "config/demo/demo_upernet_convnext_pirat.yaml"), "--size", "64", "--batch", "1", "--repeats", "1",
         "--steps", "2", "--attacks", "pgd,pirat-pgd,rppgd++,padam-ce", "--train-batch", "2", "--train-size", "64",
         "--eval-size", "64x64", "--loader-batches", "0", "--out", str(out), "DATA.data_root", str(tiny_data),
         "EXP.root", str(tmp_path / "exp"), *tiny],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert {name: tuple(r["passes"]) for name, r in rows.items() if r["passes"]} == {
        "pgd step": (2, 2), "pirat-pgd step": (2, 2), "rppgd++ step": (2, 2), "padam-ce step": (2, 2)}
    assert rows["AT training step"]["seconds"] > 0 and rows["AT training step"]["reference"] == "clean training step"
    at = [(t["what"], t["limit"]) for t in json.loads(out.read_text())["targets"] if t["what"].startswith("AT ")]
    # every image attacked with 5 steps, and iterate_grads' fwd+bwd at each: 10 passes, the target scaled to 13x
    assert at == [("AT training step / clean training step (10 attack passes per image)", pytest.approx(13.0))]
    network = "upernet convnext-t (sea)" if family == "upernet" else "segmenter vit-s (sea)"
    assert f"; {network}, 7 classes;" in proc.stdout, "the header names the network"
