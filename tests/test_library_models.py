"""The library model families (model/library/: torchvision:, smp:, hf:, python:) behind the model contract:
the same logits as the library model called directly, strict loading of each library's own weights, the
train/eval flags left alone, the hooked features, the parameter groups and the errors."""
from __future__ import annotations

import sys

import pytest
import torch
from library_models import ARCHS, MEAN, STD, TinyUserNet, library_cfg, reference_logits

from engine.optim import build_optimizer
from engine.trained_model import load_trained_model
from model import build_model
from util.checkpoint import save_checkpoint
from util.errors import UserError

SIZES = [(37, 45), (64, 64)]  # one size that is no multiple of 32


@pytest.mark.parametrize("key", list(ARCHS))
def test_logits_equal_the_library_model_called_directly(tmp_path, key):
    torch.manual_seed(0)
    model = build_model(library_cfg(tmp_path, key)).eval()
    for size in SIZES:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            out, ref = model(x), reference_logits(key, model.net, x)
        assert out.shape == (2, 7, *size)
        assert (out - ref).abs().max() < 1e-5, f"{key} at {size}"


def test_hf_normalisation_comes_from_the_preprocessor_config(tmp_path):
    pre = {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}
    model = build_model(library_cfg(tmp_path, "hf-segformer", preprocessor=pre)).eval()
    assert "preprocessor_config.json" in model.origin
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert (model(x) - reference_logits("hf-segformer", model.net, x, pre["image_mean"], pre["image_std"])
                ).abs().max() < 1e-5
    assert "DATA.mean" in build_model(library_cfg(tmp_path / "plain", "hf-segformer")).origin


@pytest.mark.parametrize("key", ["torchvision-deeplabv3", "hf-segformer", "hf-upernet_convnext", "smp-unet", "python"])
def test_the_adapter_never_changes_train_or_eval_flags(tmp_path, key):
    model = build_model(library_cfg(tmp_path, key))
    for mode in (True, False):
        model.train(mode)
        first = next(m for m in model.net.modules() if len(list(m.children())) == 0)
        first.train(not mode)  # a mixed-mode model: every flag must stay as it is
        flags = [m.training for m in model.modules()]
        x = torch.rand(2, 3, 37, 45, requires_grad=True)
        model(x, return_dict=True)["out"].sum().backward()
        assert [m.training for m in model.modules()] == flags, f"{key}: a flag changed (mode {mode})"


@pytest.mark.parametrize("key,layer", [("torchvision-deeplabv3", "backbone"), ("smp-unet", "encoder"),
                                       ("hf-segformer", "segformer"), ("hf-upernet_swin", "backbone"),
                                       ("hf-dpt", "neck")])
def test_feat_is_the_feature_layer_output_and_carries_gradient(tmp_path, key, layer):
    model = build_model(library_cfg(tmp_path, key)).eval()
    assert model.feature_layer == layer
    seen = []
    model.net.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.rand(2, 3, 37, 45, requires_grad=True)
    feat = model(x, return_dict=True)["feat"]
    maps = [t for t in (seen[0].values() if isinstance(seen[0], dict) else
                        seen[0] if isinstance(seen[0], (list, tuple)) else [seen[0]]) if torch.is_tensor(t)]
    nested = [t for v in (seen[0].values() if isinstance(seen[0], dict) else []) if isinstance(v, (list, tuple))
              for t in v]
    assert feat.dim() == 4 and feat.shape[0] == 2
    assert any(feat is t for t in maps + nested), "feat is the hooked module's own (last) map"
    (feat * torch.randn_like(feat)).sum().backward()  # (a plain sum of a LayerNorm output has no gradient)
    assert x.grad is not None and x.grad.abs().sum() > 0
    custom = build_model(library_cfg(tmp_path / "c", key, "MODEL.feature_layer", layer)).eval()
    assert custom.feature_layer == layer


def test_feature_layer_and_aux(tmp_path):
    cfg = library_cfg(tmp_path, "torchvision-deeplabv3", "MODEL.feature_layer", "backbone.4")
    model = build_model(cfg).train()
    out = model(torch.rand(2, 3, 37, 45), return_dict=True)
    assert out["feat"].shape[:2] == (2, 40)  # MobileNetV3-large features[4]: 40 channels
    assert out["aux"].shape == (2, 7, 37, 45)
    assert model.eval()(torch.rand(1, 3, 37, 45), return_dict=True)["aux"] is None
    for key in ("hf-upernet_convnext", "hf-dpt"):  # the auxiliary head's output, which only HF's loss reads
        hf = build_model(library_cfg(tmp_path / key, key)).train()
        assert hf(torch.rand(2, 3, 37, 45), return_dict=True)["aux"].shape == (2, 7, 37, 45)
    with pytest.raises(UserError, match="MODEL.feature_layer: .* no module 'nope'"):
        build_model(library_cfg(tmp_path, "smp-unet", "MODEL.feature_layer", "nope"))
    tokens = build_model(library_cfg(tmp_path / "t", "hf-dpt", "MODEL.feature_layer", "dpt.encoder.layer.0"))
    with pytest.raises(ValueError, match="no \\(N,C,h,w\\) feature map"):
        tokens(torch.rand(1, 3, 32, 32), return_dict=True)


@pytest.mark.parametrize("key,heads", [("torchvision-deeplabv3", ("classifier", "aux_classifier")),
                                       ("smp-unet", ("decoder", "segmentation_head")),
                                       ("hf-upernet_convnext", ("decode_head", "auxiliary_head"))])
def test_parameter_groups_by_module_name(tmp_path, key, heads):
    cfg = library_cfg(tmp_path, key)
    model = build_model(cfg)
    groups = model.param_groups()
    head_ids = {id(p) for h in heads for p in model.net.get_submodule(h).parameters()}
    assert {id(p) for p in groups["head"]} == head_ids
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))
    lrs = [g["lr"] for g in build_optimizer(model, cfg).param_groups]
    assert lrs == [cfg.TRAIN.base_lr, cfg.TRAIN.base_lr * cfg.TRAIN.head_lr_mult]
    own = build_model(library_cfg(tmp_path / "own", key, "MODEL.head_modules", f"[{heads[0]}]")).param_groups()
    assert len(own["head"]) == len(list(model.net.get_submodule(heads[0]).parameters()))
    with pytest.raises(UserError, match="MODEL.head_modules"):
        build_model(library_cfg(tmp_path / "bad", key, "MODEL.head_modules", "[nope]"))


@pytest.mark.parametrize("key", ["torchvision-lraspp", "smp-deeplabv3plus", "python"])
def test_a_library_state_dict_file_loads_strictly_and_a_bad_one_is_refused(tmp_path, key):
    torch.manual_seed(1)
    source = build_model(library_cfg(tmp_path, key)).net.eval()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)  # the library's own format: a plain state_dict
    cfg = library_cfg(tmp_path, key, "TEST.model_path", str(path))
    model = load_trained_model(cfg).model
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert (model(x) - reference_logits(key, source, x)).abs().max() < 1e-6
    assert list(model.state_dict()) == list(source.state_dict()), "the adapter's keys are the library's own"

    state = source.state_dict()
    first = next(iter(state))
    torch.save({**state, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=r"unexpected: \['extra.weight'\]"):
        load_trained_model(cfg)
    torch.save({k: v for k, v in state.items() if k != first}, path)
    with pytest.raises(UserError, match=rf"missing: \['{first}'\]"):
        load_trained_model(cfg)

    # a checkpoint written here loads back into the library's own model
    save_checkpoint({"model": model.state_dict(), "epoch": 1}, tmp_path / "ours.pth")
    again = build_model(library_cfg(tmp_path, key)).net
    again.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True)["model"], strict=True)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), source.state_dict().values()))


@pytest.mark.parametrize("key", ["hf-segformer", "hf-upernet_convnext"])
def test_a_save_pretrained_folder_loads_strictly(tmp_path, key):
    from safetensors.torch import load_file, save_file
    torch.manual_seed(2)
    source = build_model(library_cfg(tmp_path, key)).net.eval()
    folder = tmp_path / "trained"
    source.save_pretrained(folder)
    model = load_trained_model(library_cfg(tmp_path, key, "TEST.model_path", str(folder))).model
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert (model(x) - reference_logits(key, source, x)).abs().max() < 1e-6
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "decode_head.extra": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"unexpected: \['decode_head.extra'\]"):
        load_trained_model(library_cfg(tmp_path, key, "TEST.model_path", str(folder)))
    save_file({k: v for k, v in weights.items() if k != "decode_head.classifier.bias"}, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"missing: \['decode_head.classifier.bias'\]"):
        load_trained_model(library_cfg(tmp_path, key, "TEST.model_path", str(folder)))
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="without model.safetensors"):
        load_trained_model(library_cfg(tmp_path, key, "TEST.model_path", str(folder)))


def test_bad_input_is_named(tmp_path, monkeypatch):
    cases = [
        ("torchvision-lraspp", ["MODEL.arch", "torchvision:resnet50"], "must be one of torchvision.models"),
        ("torchvision-lraspp", ["MODEL.kwargs.weights", "DEFAULT"], "MODEL.kwargs.weights: weights come from"),
        ("torchvision-lraspp", ["MODEL.kwargs.num_classes", "3"], "DATA.classes sets the class count"),
        ("smp-unet", ["MODEL.kwargs.encoder_weights", "imagenet"], "would download"),
        ("smp-unet", ["MODEL.arch", "smp:Unetz"], "must be one of .*Unet"),
        ("hf-segformer", ["MODEL.kwargs.not_a_key", "1"], r"MODEL.kwargs \['not_a_key'\]"),
        ("hf-segformer", ["MODEL.arch", f"hf:{tmp_path}/none"], "config.json' does not exist"),
        ("python", ["MODEL.arch", "python:library_models:nothing"], "has no function 'nothing'"),
        ("python", ["MODEL.arch", "python:no_such_module:f"], "cannot import 'no_such_module'"),
        ("python", ["MODEL.arch", "foo:bar"], "MODEL.arch <family>:<name> must be one of .*torchvision"),
        ("smp-unet", ["MODEL.pretrained", "x.pth"], "MODEL.pretrained .* TRAIN.weight"),
    ]
    for key, overrides, message in cases:
        with pytest.raises(UserError, match=message):
            build_model(library_cfg(tmp_path, key, *overrides))
    cfg = library_cfg(tmp_path, "hf-segformer")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(UserError, match="needs the package 'transformers'.*pip install transformers==5.25.0"):
        build_model(cfg)


def test_the_libraries_are_imported_only_when_a_family_needs_them():
    import subprocess
    code = ("import sys; import model, engine.training, engine.robustness; "
            "print(sorted(m for m in ('transformers', 'segmentation_models_pytorch', 'timm') if m in sys.modules))")
    from conftest import ROOT
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_python_family_upsamples_and_reads_the_users_dict(tmp_path):
    model = build_model(library_cfg(tmp_path, "python")).eval()
    assert isinstance(model.net, TinyUserNet) and model.feature_layer == ""
    out = model(torch.rand(2, 3, 37, 45), return_dict=True)
    assert out["out"].shape == (2, 7, 37, 45) and out["feat"] is None and out["aux"] is None
    feat = build_model(library_cfg(tmp_path, "python", "MODEL.feature_layer", "body"))(
        torch.rand(2, 3, 37, 45), return_dict=True)["feat"]
    assert feat.shape == (2, 16, 19, 23)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(MEAN))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(STD))
