"""MODEL.style semseg: semseg's PSPNet and the RP-PGD release's DeepLabV3 heads, and their checkpoints."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from engine.trained_model import load_trained_model
from model import build_model
from model.semseg import from_semseg_state, semseg_key, to_semseg_state
from util.config import load_config
from util.errors import UserError


def cfg_of(arch="pspnet", deep_stem=False, *extra):
    return load_config(ROOT / "config/demo/demo_pspnet18.yaml",
                       ["MODEL.style", "semseg", "MODEL.arch", arch, "MODEL.deep_stem", str(deep_stem).lower(),
                        "MODEL.head_channels", "0", "MODEL.layers", "18", *extra])


@pytest.mark.parametrize("key,deep,ours", [
    ("layer0.0.weight", False, "backbone.conv1.weight"),
    ("layer0.1.running_var", False, "backbone.bn1.running_var"),
    ("layer0.3.weight", True, "backbone.conv2.weight"),
    ("layer0.7.bias", True, "backbone.bn3.bias"),
    ("layer3.5.conv2.weight", False, "backbone.layer3.5.conv2.weight"),
    ("ppm.features.2.1.weight", False, "head.ppm.features.2.1.weight"),
    ("aspp.convs.4.2.running_mean", False, "head.aspp.convs.4.2.running_mean"),
    ("cls.4.bias", False, "head.cls.4.bias"),
    ("aux.0.weight", False, "aux_head.0.weight"),
    ("mask1.4.weight", True, "head.mask1.4.weight"),  # DDC-AT's heads
    ("cls2.1.running_mean", True, "head.cls2.1.running_mean"),
    ("aux_cls1.0.weight", True, "aux_head.0.weight"),
    ("layer0.2.weight", False, None),  # a ReLU has no weights: such a key has no counterpart
    ("fc.weight", False, None),
])
def test_semseg_names_by_hand(key, deep, ours):
    assert semseg_key(key, deep) == ours


@pytest.mark.parametrize("arch", ["pspnet", "deeplabv3", "pspnet_ddcat", "deeplabv3_ddcat"])
@pytest.mark.parametrize("deep", [False, True])
def test_every_key_maps_both_ways(arch, deep):
    state = build_model(cfg_of(arch, deep)).state_dict()
    theirs = to_semseg_state(state, deep)
    heads = ("cls1", "mask1", "cls2", "aux_cls1") if arch.endswith("_ddcat") else ("cls", "aux")
    assert len(theirs) == len(state) and all(k.split(".")[0] in ("layer0", "layer1", "layer2", "layer3", "layer4",
                                                                  "ppm", "aspp", *heads) for k in theirs)
    back, unmapped = from_semseg_state({"module." + k: v for k, v in theirs.items()}, deep)
    assert unmapped == [] and back.keys() == state.keys()


@pytest.mark.parametrize("arch", ["pspnet", "deeplabv3", "pspnet_ddcat", "deeplabv3_ddcat"])
def test_a_release_checkpoint_loads_and_gives_the_same_logits(tmp_path, arch):
    """A file as train_sat_psp.py writes it ({'epoch', 'state_dict' with DDP's 'module.' names, 'optimizer'})."""
    torch.manual_seed(0)
    source = build_model(cfg_of(arch)).eval()
    path = tmp_path / "train_epoch_50.pth"
    torch.save({"epoch": 50, "optimizer": {},
                "state_dict": {"module." + k: v for k, v in to_semseg_state(source.state_dict(), False).items()}}, path)
    # the ImageNet file of MODEL.pretrained is not needed to evaluate a trained network (and not read)
    loaded = load_trained_model(cfg_of(arch, False, "TEST.model_path", str(path), "MODEL.pretrained",
                                       str(tmp_path / "absent_imagenet.pth")))
    assert loaded.epoch == 50
    x = torch.rand(2, 3, 41, 57)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), source(x))


def test_wrong_settings_say_what_the_file_needs(tmp_path):
    source = build_model(cfg_of("deeplabv3", True))
    path = tmp_path / "m.pth"
    torch.save({"epoch": 1, "state_dict": to_semseg_state(source.state_dict(), True)}, path)
    with pytest.raises(UserError, match="semseg-style network .* needs MODEL.style semseg, MODEL.deep_stem true, "
                                        "MODEL.arch deeplabv3"):
        load_trained_model(load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["TEST.model_path", str(path),
                                                                                 "MODEL.deep_stem", "false"]))
    with pytest.raises(UserError, match="shape mismatch: .*head.cls.4"):
        load_trained_model(cfg_of("deeplabv3", True, "TEST.model_path", str(path), "DATA.classes", "5", "DATA.check",
                                  "false"))


def test_outputs_at_input_size_and_align_corners():
    """Outputs are at input resolution for any size; where the original network is defined ((H-1) % 8 == 0) the
    logits are the head's upsampled with align_corners=True from the (H-1)/8+1 grid."""
    model = build_model(cfg_of()).eval()
    for h, w in ((41, 57), (40, 50), (33, 33)):
        assert model(torch.rand(1, 3, h, w)).shape == (1, 7, h, w)
    x = torch.rand(1, 3, 41, 57)
    with torch.no_grad():
        c3, c4 = model.backbone(model.normalize(x))[-2:]
        assert c4.shape[-2:] == (6, 8)
        expected = F.interpolate(model.head(c4), size=(41, 57), mode="bilinear", align_corners=True)
        assert torch.equal(model(x), expected)
    with pytest.raises(UserError, match="head_channels is fixed"):
        build_model(cfg_of("pspnet", False, "MODEL.head_channels", "64"))


def test_ddcat_networks_evaluate_their_clean_classifier_and_refuse_training():
    """DDC-AT's networks in eval mode return cls1's logits (what its test scripts evaluate); training is refused."""
    model = build_model(cfg_of("pspnet_ddcat", True)).eval()
    x = torch.rand(1, 3, 41, 41)
    with torch.no_grad():
        c3, c4 = model.backbone(model.normalize(x))[-2:]
        cls1 = model.head.cls1(model.head.ppm(c4))
        assert torch.equal(model(x), F.interpolate(cls1, size=(41, 41), mode="bilinear", align_corners=True))
    with pytest.raises(RuntimeError, match="evaluated here, not trained"):
        model.train()(x)
    with pytest.raises(UserError, match="MODEL.arch pspnet_ddcat needs MODEL.style semseg"):
        build_model(load_config(ROOT / "config/demo/demo_pspnet18.yaml", ["MODEL.arch", "pspnet_ddcat"]))


def test_train_weight_starts_from_a_release_checkpoint(tmp_path, tiny_data, capsys):
    """TRAIN.weight (the release's initialisation) reads its {'epoch', 'state_dict'} files strictly."""
    import importlib.util

    from util.errors import run_cli
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "tool_train/train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    source = build_model(cfg_of())
    path = tmp_path / "train_epoch_50.pth"
    torch.save({"epoch": 50, "state_dict": {"module." + k: v for k, v in
                                            to_semseg_state(source.state_dict(), False).items()}}, path)
    common = ["--config", str(ROOT / "config/demo/demo_pspnet18.yaml"), "MODEL.style", "semseg", "MODEL.deep_stem",
              "false", "MODEL.head_channels", "0", "DATA.data_root", str(tiny_data), "DATA.workers", "0",
              "EXP.root", str(tmp_path / "exp"), "TRAIN.epochs", "1", "TRAIN.eval_freq", "0", "TRAIN.batch_size", "8",
              "TRAIN.crop_size", "41"]
    train.main(common + ["TRAIN.weight", str(path)])
    log = (tmp_path / "exp" / "demo" / "demo_pspnet18" / "train.log").read_text()
    assert f"network initialised from TRAIN.weight {path}" in log
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: train.main(common + ["TRAIN.weight", str(path), "MODEL.deep_stem", "true", "EXP.name", "x"]))
    assert info.value.code == 2 and "needs MODEL.deep_stem false" in capsys.readouterr().err
