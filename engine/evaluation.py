"""The one evaluation loop: a protocol's predictions over every process's shard of a loader, one metric.

Clean validation during training, clean testing, robust validation and robust testing all run
`evaluate(protocol, loader, env, num_classes, attack=...)`, so clean and attacked figures come from one route.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from attack import Attack, NonFiniteError
from engine.pictures import ImageView
from engine.protocols import OnIterate, Protocol
from engine.result_store import ShardStore
from engine.sanity import mode_warnings, output_warnings, randomness_warnings, zero_gradient_warning
from util.distributed import DistEnv, all_gather_objects, all_reduce_sum
from util.errors import EXIT_NON_FINITE, RunStopped
from util.evaluation.metrics import SegMetric, confusion_matrices


def same_size_groups(images: list[torch.Tensor], labels: list[torch.Tensor], indices: list[int]
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """Split an evaluation batch into stacks of equally sized images: (N,3,H,W), labels (N,H,W), indices."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for members in groups.values():
        yield (torch.stack([images[i] for i in members]), torch.stack([labels[i] for i in members]),
               [indices[i] for i in members])


def evaluate(protocol: Protocol, loader, env: DistEnv, num_classes: int, attack: Attack | None = None,
             desc: str = "eval", on_prediction: Callable[[ImageView], None] | None = None,
             on_iterate: OnIterate | None = None, shard: tuple[ShardStore, Path] | None = None) -> SegMetric:
    """Metrics of the protocol's model, clean or under `attack` (built with protocol.build_attack), over every
    process's shard of `loader`, merged on all processes.

    on_prediction(ImageView) is called for each image of this process (its prediction and labels, and the view's
    clean and adversarial images and RP-PGD regions, for pictures; tensors on the evaluation's device);
    on_iterate is passed to protocol.predict (convergence curves). shard = (store, path): this process's result is
    loaded from path when an earlier run finished it, and saved there when this one does (engine/result_store.py).
    """
    metric = shard[0].load(shard[1], num_classes, protocol.ignore_index) if shard is not None else None
    if metric is None:
        metric = evaluate_shard(protocol, loader, env, num_classes, attack, desc, on_prediction, on_iterate)
        if shard is not None:
            shard[0].save(shard[1], metric)
    # every process knows the run names (the attack's), even one whose shard is empty
    names = attack.run_names() if attack is not None else []
    for run in names:
        metric.runs.setdefault(run, SegMetric(num_classes, protocol.ignore_index))
    for m in [metric, *(metric.runs[run] for run in names)]:
        merge(m, env)
    if metric.zero_gradient:
        metric.warnings.append(zero_gradient_warning(desc, metric.zero_gradient))
    return metric


def evaluate_shard(protocol: Protocol, loader, env: DistEnv, num_classes: int, attack: Attack | None, desc: str,
                   on_prediction: Callable[[ImageView], None] | None, on_iterate: OnIterate | None
                   ) -> SegMetric:
    """This process's metric over its shard of `loader` (evaluate without the merge)."""
    model = protocol.model
    was_training = model.training
    model.eval()
    metric = SegMetric(num_classes, protocol.ignore_index)
    try:
        for images, labels, indices in tqdm(loader, desc=desc, disable=not env.is_main, leave=False):
            for x, y, idx in same_size_groups(images, labels, indices):
                try:
                    prediction = protocol.predict(x.to(env.device), y.to(env.device), idx, attack, on_iterate)
                except NonFiniteError as exc:
                    where = [idx[i] for i in exc.images] if len(exc.images) and max(exc.images) < len(idx) else \
                        f"crops {exc.images} of images {idx}"
                    raise RunStopped(f"{desc}: the attack's loss or input gradient turned non-finite on dataset "
                                     f"image(s) {where} ({exc})", EXIT_NON_FINITE) from exc
                if attack is None and not metric.per_image:  # the first clean batch: is the model what it seems?
                    metric.warnings += first_batch_warnings(protocol, x[:1].to(env.device), y[:1].to(env.device),
                                                            idx[:1])
                metric.zero_gradient += [idx[i] for i in prediction.zero_gradient]
                if prediction.min_norm is not None:
                    metric.min_norm.update({i: float(v) for i, v in zip(idx, prediction.min_norm.tolist())})
                # confusion matrices per image on the device; the host gets N x K x K counts. on_prediction gets the
                # device tensors and copies to the host only what it keeps (pictures)
                pred = prediction.logits.detach().argmax(1)
                cms = confusion_matrices(pred, prediction.labels, num_classes, protocol.ignore_index).cpu()
                for j, i in enumerate(idx):
                    metric.add(cms[j], i)
                    if on_prediction is not None:
                        on_prediction(ImageView(i, pred[j], prediction.labels[j], *(
                            None if t is None else t[j] for t in (prediction.images, prediction.adv,
                                                                  prediction.regions))))
                for run, logits in prediction.runs.items():  # SEA's loss runs, each scored on its own
                    run_metric = metric.runs.setdefault(run, SegMetric(num_classes, protocol.ignore_index))
                    cms = confusion_matrices(logits.detach().argmax(1), prediction.labels, num_classes,
                                             protocol.ignore_index).cpu()
                    for j, i in enumerate(idx):
                        run_metric.add(cms[j], i)
    finally:
        model.train(was_training)
    return metric


def first_batch_warnings(protocol: Protocol, x: torch.Tensor, y: torch.Tensor, idx: list[int]) -> list[str]:
    """engine.sanity's checks of the model on the first clean batch (x, y: its first image). The outputs are the
    model's own on the image's corner of at most the crop size (a protocol's prediction may be probabilities by
    definition: legacy averages softmax)."""
    crop = protocol.settings["crop"]
    with torch.no_grad():
        outputs = protocol.model(x[..., :crop[0], :crop[1]])
    return (mode_warnings(protocol.model) + output_warnings(outputs)
            + randomness_warnings(lambda: protocol.predict(x, y, idx).logits))


def merge(metric: SegMetric, env: DistEnv) -> None:
    """Sum the confusion matrices of every process and gather every image's scores and counts, and the sanity
    checks' findings, on all of them."""
    metric.cm = all_reduce_sum(metric.cm.to(env.device), env).cpu()  # nccl reduces GPU tensors only
    warnings, zero = [], set()
    for part in all_gather_objects((metric.per_image, metric.per_image_counts, metric.warnings,
                                    metric.zero_gradient, metric.min_norm), env):
        metric.per_image.update(part[0])
        metric.per_image_counts.update(part[1])
        warnings += [w for w in part[2] if w not in warnings]
        zero.update(part[3])
        metric.min_norm.update(part[4])
    metric.warnings, metric.zero_gradient = warnings, sorted(zero)
