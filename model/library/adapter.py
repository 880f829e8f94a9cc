"""One adapter gives every library model (torchvision, Hugging Face transformers, segmentation-models-pytorch, the
user's own) the project's model contract (docs/design.md, Model).

- Input (N,3,H,W) in [0,1]; the adapter normalises ((x - mean) / std), so attacks work in pixel space.
- `net` is called on the normalised images; `read_output` takes its output apart into (logits, auxiliary logits or
  None). Logits are brought to the input size the way the library's own post-processing does it: bilinear with
  align_corners=False (Hugging Face's `post_process_semantic_segmentation`, torchvision's segmentation models);
  logits already at the input size are returned as they are. A network that only takes sizes divisible by
  `pad_multiple` (smp's DeepLabV3+, FPN, ...) gets its normalised input padded with zeros at the bottom and right,
  and its logits cropped back. A network that only takes one input size (`resize_to`: Hugging Face's DPT, whose
  image processor resizes every image to it) gets its normalised input resized to it bilinearly, and its logits
  resized straight back to the image.
- `forward(x, return_dict=True)` gives {"out", "aux" (training mode only, when the library has one: from its
  output, or from the module `aux_layer` whose output only the library's own loss reads), "feat"}: "feat"
  is the output of the module `feature_layer` (MODEL.feature_layer), caught by a forward hook that lives only for
  that call; a module returning several maps (a dict, list or tuple, a Hugging Face ModelOutput) gives the last
  (N,C,h,w) tensor among them. It is not detached: RP-PGD's prototype terms differentiate through it.
- The adapter never changes a module's train/eval flag: the caller (trainer, attack, evaluation) decides.
- Its state_dict is the library model's own, key for key (the `net.` prefix is dropped on saving and added on
  loading), so a torchvision or smp state_dict file and a save_pretrained folder load strictly, and a checkpoint
  trained here loads back into the library's model.
- param_groups(): "head" holds the parameters of the modules `head_modules` names (MODEL.head_modules, default per
  family), "backbone" the rest.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.segmentor import Normalize, model_input
from util.errors import UserError

Output = tuple[torch.Tensor, torch.Tensor | None]
PREFIX = "net."


class LibraryModel(nn.Module):
    """A library's segmentation network `net` behind the project's model contract (module docstring)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 read_output: Callable[[Any], Output], feature_layer: str, head_modules: Sequence[str],
                 aux_layer: str = "", pad_multiple: int = 1, resize_to: tuple[int, int] | None = None,
                 channels_last: bool = False, origin: str = "") -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.read_output = read_output
        self.feature_layer = feature_layer
        self.aux_layer = aux_layer
        self.head_modules = tuple(head_modules)
        self.pad_multiple = pad_multiple
        self.resize_to = resize_to
        self.channels_last = channels_last
        self.origin = origin  # what was built, from where, with which normalisation (for logs)
        if feature_layer:
            submodule(net, feature_layer, "MODEL.feature_layer")
        if aux_layer:
            submodule(net, aux_layer, "the auxiliary head")
        for name in self.head_modules:
            submodule(net, name, "MODEL.head_modules")
        self.register_state_dict_post_hook(_drop_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        size = x.shape[-2:]
        z = self.normalize(model_input(x, self.channels_last))
        m = self.pad_multiple
        pad = ((-size[1]) % m, (-size[0]) % m)
        if any(pad):
            z = F.pad(z, (0, pad[0], 0, pad[1]))
        if self.resize_to is not None:
            z = F.interpolate(z, size=self.resize_to, mode="bilinear", align_corners=False)
        caught: dict[str, list[Any]] = {"feat": [], "aux": []}
        wanted = {"feat": self.feature_layer if return_dict else "",
                  "aux": self.aux_layer if return_dict and self.training else ""}
        handles = [self.net.get_submodule(layer).register_forward_hook(
            lambda module, args, output, found=caught[what]: found.append(output))
            for what, layer in wanted.items() if layer]
        try:
            raw = self.net(z)
        finally:
            for handle in handles:
                handle.remove()
        logits, aux = self.read_output(raw)
        # logits come back to the network's input, cropped to the image; a resized input's straight to the image
        target = size if self.resize_to is not None else z.shape[-2:]
        out = self.to_input(logits, size, target)
        if not return_dict:
            return out
        if caught["aux"]:
            aux = caught["aux"][-1]
        aux = self.to_input(aux, size, target) if self.training and aux is not None else None
        feat = feature_map(caught["feat"][-1], self.feature_layer) if caught["feat"] else user_features(raw)
        return {"out": out, "aux": aux, "feat": feat}

    @staticmethod
    def to_input(logits: torch.Tensor, size: torch.Size, padded: torch.Size) -> torch.Tensor:
        """Logits at the input size: resized bilinearly (align_corners=False) to the network's input when they are
        smaller, then the padding cropped off."""
        if logits.shape[-2:] != padded:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., :size[0], :size[1]] if padded != size else logits

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """"head": the parameters of the modules head_modules names (TRAIN.base_lr x TRAIN.head_lr_mult);
        "backbone": all others (TRAIN.base_lr)."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
        for name, p in self.net.named_parameters():
            head = any(name == h or name.startswith(h + ".") for h in self.head_modules)
            groups["head" if head else "backbone"].append(p)
        return groups

    def extra_repr(self) -> str:
        return self.origin


def submodule(net: nn.Module, name: str, key: str) -> nn.Module:
    """net's module `name`, or a UserError naming `key` and the modules at the top of net."""
    try:
        return net.get_submodule(name)
    except AttributeError:
        tops = ", ".join(n for n, _ in net.named_children())
        raise UserError(f"{key}: {type(net).__name__} has no module '{name}' (a dotted module name, as in "
                        f"named_modules(); its top-level modules: {tops})") from None


def feature_map(output: Any, layer: str) -> torch.Tensor:
    """The last (N,C,h,w) tensor of a hooked module's output (a tensor, or a mapping/list/tuple of them)."""
    found = [t for t in _tensors(output) if t.dim() == 4]
    if not found:
        shapes = [tuple(t.shape) for t in _tensors(output)]
        raise ValueError(f"MODEL.feature_layer '{layer}' gives no (N,C,h,w) feature map (its output holds tensors of "
                         f"shapes {shapes}): name a module whose output is a spatial map")
    return found[-1]


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _tensors(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in _tensors(v)]
    return []


def user_features(raw: Any) -> torch.Tensor | None:
    """The "feat" a network's own output dict holds (the `python:` family's builders may return one), else None."""
    return raw.get("feat") if isinstance(raw, dict) else None


def _drop_prefix(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict hook: `<prefix>net.<key>` -> `<prefix><key>`, in order."""
    inner = prefix + PREFIX
    items = list(state.items())
    state.clear()
    for key, value in items:
        state[prefix + key[len(inner):] if key.startswith(inner) else key] = value


def _add_prefix(module: nn.Module, state: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: `<prefix><key>` -> `<prefix>net.<key>` for every key under this module."""
    for key in [k for k in state if k.startswith(prefix)]:
        state[prefix + PREFIX + key[len(prefix):]] = state.pop(key)


def library_model(cfg, net: nn.Module, read_output: Callable[[Any], Output], *, feature_layer: str,
                  head_modules: Sequence[str], aux_layer: str = "", pad_multiple: int = 1,
                  resize_to: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, origin: str = "") -> LibraryModel:
    """A family's network behind the contract: MODEL.feature_layer and MODEL.head_modules replace the family's
    defaults when set; normalisation is DATA.mean/DATA.std unless the family passes its own (an hf: folder's)."""
    m = cfg.MODEL
    if m.pretrained:
        raise UserError(f"MODEL.pretrained '{m.pretrained}' is an ImageNet file for MODEL.backbone; MODEL.arch "
                        f"{m.arch} starts from a weights file of its library with TRAIN.weight (leave MODEL.pretrained "
                        "empty)")
    model = LibraryModel(net, cfg.DATA.mean if mean is None else mean, cfg.DATA.std if std is None else std,
                         read_output, m.feature_layer or feature_layer, m.head_modules or head_modules, aux_layer,
                         pad_multiple, resize_to, m.channels_last, origin)
    return model.to(memory_format=torch.channels_last) if m.channels_last else model


def builder_kwargs(cfg, refused: dict[str, str]) -> dict[str, Any]:
    """MODEL.kwargs as a dict; a key the family sets itself (`refused`: key -> what sets it) is a UserError."""
    kwargs = dict(cfg.MODEL.kwargs)
    for key, why in refused.items():
        if key in kwargs:
            raise UserError(f"MODEL.kwargs.{key}: {why}; remove it from MODEL.kwargs (MODEL.arch {cfg.MODEL.arch})")
    return kwargs


def any_output(out: Any) -> Output:
    """Logits from what a network returns: a tensor, a dict with "out" (and "aux"), or a Hugging Face output's
    `logits`."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, Mapping) and "out" in out:
        return out["out"], out.get("aux")
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits, None
    raise ValueError(f"cannot find logits in a {type(out).__name__}: return a tensor, a dict with 'out' or an "
                     "object with `logits`, or pass read_output")


def wrap_model(net: nn.Module, mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225), feature_layer: str = "", head_modules: Sequence[str] = (),
               aux_layer: str = "", read_output: Callable[[Any], Output] = any_output) -> LibraryModel:
    """A network built in Python (a library's or your own) behind the model contract, for the robustness evaluation,
    the attacks and the trainer: `net` maps normalised images to logits (a tensor, a dict with "out", a Hugging
    Face output); mean/std normalise [0,1] images (ImageNet's by default); feature_layer names the module whose
    output is RP-PGD's `feat`; head_modules the modules of the head learning-rate group; aux_layer a module whose
    output is auxiliary logits (Hugging Face's auxiliary_head). The adapter never changes net's train/eval mode."""
    return LibraryModel(net, mean, std, read_output, feature_layer, head_modules, aux_layer,
                        origin=f"{type(net).__name__} wrapped in Python")
