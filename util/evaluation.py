"""Clean evaluation of a model over a (sharded) loader: inference, metrics, merge across processes."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from util.distributed import DistEnv, all_gather_objects, all_reduce_sum
from util.inference import infer
from util.metrics import SegMetric


def same_size_groups(images: list[torch.Tensor], labels: list[torch.Tensor], indices: list[int]
                     ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[int]]]:
    """Split an evaluation batch into stacks of equally sized images: (N,3,H,W), labels, indices."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for members in groups.values():
        yield torch.stack([images[i] for i in members]), [labels[i] for i in members], [indices[i] for i in members]


def inference_settings(cfg) -> dict:
    """The keyword arguments of util.inference.infer that the config's TEST section selects."""
    t = cfg.TEST
    return {"mode": t.mode, "crop": tuple(t.crop_size), "stride_rate": t.stride_rate, "mean": tuple(cfg.DATA.mean),
            "base_size": t.base_size}


@torch.no_grad()
def evaluate(model: nn.Module, loader, cfg, env: DistEnv, desc: str = "eval",
             on_prediction: Callable[[int, torch.Tensor], None] | None = None) -> SegMetric:
    """Clean metrics of `model` over every process's shard of `loader`, merged on all processes.

    on_prediction(index, pred (H,W) long) is called for each image of this process (e.g. to save pictures).
    """
    was_training = model.training
    model.eval()
    metric = SegMetric(cfg.DATA.classes, cfg.DATA.ignore_index)
    settings = inference_settings(cfg)
    for images, labels, indices in tqdm(loader, desc=desc, disable=not env.is_main, leave=False):
        for x, ys, idx in same_size_groups(images, labels, indices):
            pred = infer(model, x.to(env.device), **settings).argmax(1).cpu()
            for p, y, i in zip(pred, ys, idx):
                metric.update(p, y, i)
                if on_prediction is not None:
                    on_prediction(i, p)
    model.train(was_training)
    metric.cm = all_reduce_sum(metric.cm.to(env.device), env).cpu()  # nccl reduces GPU tensors only
    for part in all_gather_objects(metric.per_image, env):
        metric.per_image.update(part)
    return metric
