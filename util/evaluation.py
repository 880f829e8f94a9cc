"""Evaluation of a model over a (sharded) loader: prediction, metrics, merge across processes.

The prediction step is pluggable: clean inference by default, an attack under a protocol (attack/protocols.py)
for robust evaluation, so clean and attacked numbers come from one loop and one metric.
"""
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


# predict(images (N,3,H,W), labels (N,H,W) long, dataset indices) -> (logits (N,K,h,w), labels (N,h,w)):
# the labels the logits are scored against (a protocol may crop or resize both).
Predict = Callable[[torch.Tensor, torch.Tensor, list[int]], tuple[torch.Tensor, torch.Tensor]]


def evaluate(model: nn.Module, loader, cfg, env: DistEnv, desc: str = "eval",
             on_prediction: Callable[[int, torch.Tensor], None] | None = None,
             predict: Predict | None = None) -> SegMetric:
    """Metrics of `model` over every process's shard of `loader`, merged on all processes.

    predict: how a batch is predicted (default: clean inference with the TEST settings, without gradients).
    on_prediction(index, pred (h,w) long) is called for each image of this process (e.g. to save pictures).
    """
    was_training = model.training
    model.eval()
    metric = SegMetric(cfg.DATA.classes, cfg.DATA.ignore_index)
    if predict is None:
        settings = inference_settings(cfg)

        def predict(x: torch.Tensor, y: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                return infer(model, x, **settings), y
    try:
        for images, labels, indices in tqdm(loader, desc=desc, disable=not env.is_main, leave=False):
            for x, ys, idx in same_size_groups(images, labels, indices):
                logits, y = predict(x.to(env.device), torch.stack(ys).to(env.device), idx)
                pred = logits.detach().argmax(1).cpu()
                for p, yi, i in zip(pred, y.cpu(), idx):
                    metric.update(p, yi, i)
                    if on_prediction is not None:
                        on_prediction(i, p)
    finally:
        model.train(was_training)
    metric.cm = all_reduce_sum(metric.cm.to(env.device), env).cpu()  # nccl reduces GPU tensors only
    for part in all_gather_objects((metric.per_image, metric.per_image_counts), env):
        metric.per_image.update(part[0])
        metric.per_image_counts.update(part[1])
    return metric
