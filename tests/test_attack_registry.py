"""build_attack and parameter validation (docs/design.md, Attack): names, errors naming the key, config round trip."""
from __future__ import annotations

import pytest
import torch
from tiny_models import LogitsOnly, TinySeg
from torch import nn

from attack import ATTACKS, attack_parameters, build_attack

# docs/design.md, Contracts / Attack: "Registry names"
REGISTRY_NAMES = ["fgsm", "bim", "pgd", "segpgd", "cospgd", "rppgd", "rppgd++", "apgd-ce", "apgd-mce", "apgd-mce-bal",
                  "apgd-js", "apgd-segpgd", "apgd-mask-norm-corrlog", "sea", "padam-ce", "padam-cos", "dag", "pdpgd",
                  "alma-prox", "asma", "pdgd", "pirat-pgd"]
COUNTS = [500, 300, 120, 60, 30, 10, 5]  # pixel counts of TinySeg's 7 classes
NEEDS_COUNTS = {"apgd-mce-bal", "sea"}
L2_ATTACKS = {"pgd", "segpgd", "cospgd"}


@pytest.fixture(scope="module")
def model() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg(classes=7, width=8).eval()


def required(name: str) -> dict:
    """The parameters without a default: MCE-Bal's class counts, ASMA's target class (a targeted attack)."""
    if name in NEEDS_COUNTS:
        return {"class_counts": COUNTS}
    return {"target_class": 1} if name == "asma" else {}


def small(name: str) -> dict:
    """Parameters that make an attack cheap to run."""
    params = attack_parameters(name)
    out = required(name)
    if "steps" in params:
        out["steps"] = 5 if name == "sea" else 2
    if "seed" in params:
        out["seed"] = 0
    return out


def batch(model: nn.Module):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 12, 12, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:, :2] = 255
    return x, y


def test_registry_has_exactly_the_documented_names():
    assert sorted(ATTACKS) == sorted(REGISTRY_NAMES)


def test_asma_is_targeted_and_needs_its_target(model):
    with pytest.raises(TypeError, match="target_class"):
        build_attack("asma", model)
    with pytest.raises(ValueError, match="asma is a targeted attack: target_class must be a class id >= 0"):
        build_attack("asma", model, target_class=-1)


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_builds_with_defaults_and_reports_its_registry_name(name, model):
    atk = build_attack(name, model, **required(name))
    assert atk.config()["name"] == name
    assert atk.model is model


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_built_attack_keeps_the_contract(name, model):
    """Within eps and [0,1], same shape and dtype, inputs untouched, train mode restored."""
    atk = build_attack(name, model, eps=0.05, **small(name))
    x, y = batch(model)
    x0, y0 = x.clone(), y.clone()
    model.train()
    try:
        adv = atk(x, y)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(x, x0) and torch.equal(y, y0)


# ---- errors ----------------------------------------------------------------------------------------------

def test_unknown_name_lists_the_choices(model):
    with pytest.raises(ValueError) as err:
        build_attack("pgd-xx", model)
    assert "pgd-xx" in str(err.value)
    for name in REGISTRY_NAMES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="pgd-xx"):
        attack_parameters("pgd-xx")


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_unknown_parameter_lists_the_valid_ones(name, model):
    with pytest.raises(ValueError) as err:
        build_attack(name, model, stepz=3, **required(name))
    msg = str(err.value)
    assert "stepz" in msg
    for param in attack_parameters(name):
        assert param in msg


def invalid_cases():
    cases = []
    for name in REGISTRY_NAMES:
        params = attack_parameters(name)
        cases += [(name, "eps", -0.1), (name, "eps", 1.5)]
        if "steps" in params:
            cases += [(name, "steps", 0), (name, "steps", 2.5)]
        if "alpha" in params:
            cases += [(name, "alpha", 0)]
    cases += [("rppgd", "variant", "paper"), ("rppgd++", "variant", "paper"), ("rppgd", "pool", "gpu"),
              ("rppgd++", "pool", "gpu"), ("cospgd", "weight", "tanh"), ("pgd", "norm", "l1"),
              ("segpgd", "norm", "L2"), ("cospgd", "norm", "l3")]
    cases += [(name, "norm", "l2") for name in ("bim", "fgsm", "rppgd", "rppgd++", "apgd-ce", "apgd-mce",
                                                  "apgd-mce-bal", "apgd-js", "sea")]
    return cases


@pytest.mark.parametrize("name,key,value", invalid_cases())
def test_invalid_value_names_the_parameter(name, key, value, model):
    with pytest.raises(ValueError, match=key):
        build_attack(name, model, **{**required(name), key: value})


@pytest.mark.parametrize("name", sorted(L2_ATTACKS))
def test_l2_is_accepted_where_documented_and_stays_in_the_l2_ball(name, model):
    atk = build_attack(name, model, norm="l2", eps=0.5, alpha=0.3, steps=2, seed=0)
    assert atk.config()["norm"] == "l2"
    x, y = batch(model)
    adv = atk(x, y)
    assert ((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


@pytest.mark.parametrize("name", ["apgd-mce-bal", "sea"])
def test_mce_bal_needs_class_counts(name, model):
    with pytest.raises(ValueError, match="class_counts"):
        build_attack(name, model)


def test_sea_without_mce_bal_needs_no_class_counts(model):
    atk = build_attack("sea", model, losses=["mce", "js"], steps=5)
    assert atk.config()["losses"] == ["mce", "js"]


@pytest.mark.parametrize("name", ["pgd", "cospgd"])
def test_target_class_needs_targeted(name, model):
    with pytest.raises(ValueError, match="target_class"):
        build_attack(name, model, target_class=2)
    atk = build_attack(name, model, target_class=2, targeted=True)
    assert atk.config()["target_class"] == 2 and atk.config()["targeted"] is True


# ---- description and round trip --------------------------------------------------------------------------

ROUND_TRIP = [(name, required(name)) for name in REGISTRY_NAMES] + [
    ("pgd", {"norm": "l2", "eps": 0.5, "alpha": 0.1, "targeted": True, "target_class": 3, "seed": 4, "best": True}),
    ("bim", {"eps": 0.02, "steps": 4, "seed": 1}),
    ("cospgd", {"weight": "sigmoid", "targeted": True, "random_start": False}),
    ("segpgd", {"norm": "l2", "eps": 0.25, "alpha": 0.05, "steps": 7, "ignore_index": 0}),
    ("rppgd", {"variant": "release", "random_start": False}),
    ("rppgd", {"variant": "described", "pool": "batch", "w_region": 1.0, "w_inter": 0.0}),
    ("rppgd++", {"variant": "release", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}),
    ("rppgd++", {"intra_exclude": [0, 3], "tau": 0.8, "w_intra": 0.5}),
    ("apgd-ce", {"steps": 20, "random_start": False, "seed": 3}),
    ("apgd-mce-bal", {"class_weights": [1, 2, 3, 4, 5, 6, 7]}),
    ("sea", {"losses": ["mce", "js"], "steps": 30}),
]


@pytest.mark.parametrize("name,params", ROUND_TRIP, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIP)])
def test_config_round_trip(name, params, model):
    atk = build_attack(name, model, **params)
    cfg = atk.config()
    assert cfg["name"] == name
    rest = {k: v for k, v in cfg.items() if k != "name"}
    unknown = sorted(set(rest) - set(attack_parameters(name)))
    assert not unknown, f"{name}.config() reports {unknown}, which build_attack({name!r}) does not accept"
    again = build_attack(cfg["name"], model, **rest)
    assert again.config() == cfg
    assert type(again) is type(atk)


@pytest.mark.parametrize("name,params", [
    ("pgd", {"seed": 5, "steps": 2}),
    ("rppgd++", {"variant": "release", "seed": 2, "steps": 2, "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]}),
    ("apgd-mce-bal", {"class_counts": COUNTS, "steps": 3, "seed": 1}),
])
def test_rebuilt_attack_gives_the_same_result(name, params, model):
    """config() holds every hyper-parameter: the rebuilt attack reproduces the adversarial images."""
    atk = build_attack(name, model, **params)
    rest = {k: v for k, v in atk.config().items() if k != "name"}
    again = build_attack(name, model, **rest)
    x, y = batch(model)
    torch.testing.assert_close(again(x, y), atk(x, y), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,params", ROUND_TRIP, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIP)])
def test_repr_mentions_every_parameter(name, params, model):
    atk = build_attack(name, model, **params)
    text = repr(atk)
    for key, value in atk.params().items():
        assert f"{key}=" in text
        assert repr(value) in text


# ---- RP-PGD's model requirements -------------------------------------------------------------------------

class FeaturesNoNormalize(nn.Module):
    """return_dict like the project's models, but no `normalize` layer to read mean/std from."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinySeg(classes=7, width=8)

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        return self.net(x, return_dict=return_dict)


@pytest.mark.parametrize("name", ["rppgd", "rppgd++"])
def test_rppgd_on_a_model_without_return_dict_says_so(name):
    with pytest.raises(ValueError, match="return_dict"):
        build_attack(name, LogitsOnly())


@pytest.mark.parametrize("name", ["rppgd", "rppgd++"])
def test_release_random_start_needs_mean_and_std(name):
    m = FeaturesNoNormalize().eval()
    with pytest.raises(ValueError, match="mean"):
        build_attack(name, m, variant="release")
    with pytest.raises(ValueError, match="mean"):
        build_attack(name, m, variant="release", mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="mean"):
        build_attack(name, m, variant="release", mean=[0.5, 0.5], std=[0.2, 0.2])
    atk = build_attack(name, m, variant="release", mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.2], seed=0, steps=1)
    assert atk.config()["mean"] == [0.4, 0.5, 0.6] and atk.config()["std"] == [0.2, 0.2, 0.2]
    # without a random start nothing is drawn in normalised space, so no mean/std is needed
    assert build_attack(name, m, variant="release", random_start=False).config()["random_start"] is False
    # the described variant's start is in pixel space
    assert build_attack(name, m).config()["variant"] == "described"


def test_release_start_never_probes_the_model(model):
    """mean and std come from the caller (the config), even when the model has a `normalize` layer."""
    assert hasattr(model, "normalize")
    with pytest.raises(ValueError, match="DATA.mean"):
        build_attack("rppgd", model, variant="release")
