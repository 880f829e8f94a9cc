"""Per-pixel loss maps of the attacks (docs/method.md §1-5) and their masked reductions.

Every map has shape (N,H,W), is 0 at ignored pixels, and is computed only after ignored labels are replaced by
a valid class id, so no one-hot or gather ever sees 255. Reductions divide by the number of valid pixels.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def valid_mask(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """(N,H,W) bool: pixels that take part in losses, regions and metrics."""
    return labels != ignore_index


def _safe_labels(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Labels with ignored pixels set to class 0, for one-hot/gather; callers mask those pixels out."""
    return torch.where(valid, labels, torch.zeros_like(labels))


def check_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> None:
    """Raise ValueError when a label is neither a class id of `logits` (N,K,H,W) nor ignore_index."""
    valid = valid_mask(labels, ignore_index)
    if valid.any():
        lab = labels[valid]
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"label values must be in [0, {logits.shape[1]}) or ignore_index={ignore_index}; "
                             f"found {lo if lo < 0 else hi}")


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class per pixel (N,H,W), detached. `max(1).indices` returns the first maximum like argmax but
    runs several times faster on CPU for (N,K,H,W) logits."""
    return logits.detach().max(1).indices


def ce_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel cross-entropy CE_p, (N,H,W), 0 at ignored pixels."""
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Mean of `values` (N,H,W) over `mask`: per image (N,) or over the batch (scalar). Empty masks give 0."""
    mask = mask.to(values.dtype)
    if per_image:
        return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def segpgd_weights(logits: torch.Tensor, labels: torch.Tensor, step: int, steps: int, ignore_index: int
                   ) -> torch.Tensor:
    """SegPGD's per-pixel weight at step t = `step` (1-based) of T = `steps`, (N,H,W), detached.

    lambda_t = (t-1)/(2T); correct pixels get 1 - lambda_t, wrong ones lambda_t, ignored ones 0.
    """
    lam = (step - 1) / (2 * steps)
    correct = predictions(logits) == labels
    w = torch.where(correct, torch.tensor(1.0 - lam, dtype=logits.dtype, device=logits.device),
                    torch.tensor(lam, dtype=logits.dtype, device=logits.device))
    return w * valid_mask(labels, ignore_index)


def segpgd_map(logits: torch.Tensor, labels: torch.Tensor, step: int, steps: int, ignore_index: int) -> torch.Tensor:
    """SegPGD's weighted CE map; its mean over valid pixels is L_t of docs/method.md §2."""
    return segpgd_weights(logits, labels, step, steps, ignore_index) * ce_map(logits, labels, ignore_index)


def cosine_to_onehot(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, weight: str = "softmax"
                     ) -> torch.Tensor:
    """cos(softmax(logits)_p, onehot(y_p)) (or with a sigmoid), (N,H,W), detached; 0 at ignored pixels.

    Against a one-hot vector the cosine is q_y / ||q||_2 with q the per-pixel probability vector.
    """
    z = logits.detach()
    if weight == "softmax":
        q = z.softmax(1)
    elif weight == "sigmoid":
        q = z.sigmoid()
    else:
        raise ValueError(f"weight must be 'softmax' or 'sigmoid', got {weight!r}")
    valid = valid_mask(labels, ignore_index)
    q_y = q.gather(1, _safe_labels(labels, valid).unsqueeze(1)).squeeze(1)
    return q_y / q.norm(dim=1).clamp(min=1e-12) * valid


def cospgd_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, weight: str = "softmax",
               targeted: bool = False) -> torch.Tensor:
    """CosPGD's map cos * CE_p (untargeted) or (1 - cos) * CE_p toward a target map (targeted), docs/method.md §3."""
    cos = cosine_to_onehot(logits, labels, ignore_index, weight)
    if targeted:
        cos = (1.0 - cos) * valid_mask(labels, ignore_index)
    return cos * ce_map(logits, labels, ignore_index)


def mce_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Masked CE: CE_p only at pixels that are still classified correctly (mask detached)."""
    correct = (predictions(logits) == labels).to(logits.dtype)
    return correct * ce_map(logits, labels, ignore_index)


def mce_bal_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, class_weights: torch.Tensor
                ) -> torch.Tensor:
    """MCE weighted per pixel by class_weights[y_p] (K,), e.g. 1/N_y from the training set's pixel counts."""
    valid = valid_mask(labels, ignore_index)
    w = class_weights.to(device=logits.device, dtype=logits.dtype)[_safe_labels(labels, valid)]
    return w * mce_map(logits, labels, ignore_index)


def js_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Jensen-Shannon divergence between softmax(logits)_p and onehot(y_p), (N,H,W), 0 at ignored pixels.

    With m = (p + e_y)/2: JS = 0.5 * sum_k p_k log(p_k/m_k) + 0.5 * log(1/m_y), where m_k = p_k/2 for k != y.
    """
    valid = valid_mask(labels, ignore_index)
    y = _safe_labels(labels, valid).unsqueeze(1)
    logp = logits.log_softmax(1)
    p = logp.exp()
    p_y = p.gather(1, y).squeeze(1)
    log_m_y = torch.log((p_y + 1.0) / 2.0)
    # sum over k != y of p_k log 2 (there m_k = p_k / 2), plus the k = y term p_y log(p_y / m_y)
    others = (1.0 - p_y) * torch.log(torch.tensor(2.0, dtype=logits.dtype, device=logits.device))
    own = p_y * (logp.gather(1, y).squeeze(1) - log_m_y)
    return (0.5 * (others + own) - 0.5 * log_m_y) * valid


def norm_corrlog_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The masked normalised correct-logit loss of SEA's code: -z_y / ||z||_2 (the logits z normalised over the
    classes), at pixels still classified correctly (mask detached), 0 elsewhere and at ignored pixels, (N,H,W)."""
    valid = valid_mask(labels, ignore_index)
    z = logits / logits.norm(dim=1, keepdim=True).clamp(min=1e-12)
    z_y = z.gather(1, _safe_labels(labels, valid).unsqueeze(1)).squeeze(1)
    correct = (predictions(logits) == labels) & valid
    return -z_y * correct.to(logits.dtype)


def cosine_distance_map(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - cos(z_p, onehot(y_p)) on the logits z (not the probabilities), as the rse package's PAdam-Cos computes it
    (torch's cosine_similarity), (N,H,W), 0 at ignored pixels."""
    valid = valid_mask(labels, ignore_index)
    onehot = F.one_hot(_safe_labels(labels, valid), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return (1 - F.cosine_similarity(logits, onehot, dim=1)) * valid


def class_weights_from_counts(counts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """MCE-Bal weights 1/N_y from per-class pixel counts (K,), scaled to mean 1 over the classes.

    A class with no training pixels gets the weight of the rarest class that has pixels.
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.dim() != 1 or not torch.isfinite(n).all() or (n < 0).any() or not (n > 0).any():
        raise ValueError("class_counts must be a 1-D list of finite, non-negative pixel counts with at least one > 0")
    inv = torch.where(n > 0, 1.0 / n.clamp(min=1), torch.zeros_like(n))
    inv = torch.where(n > 0, inv, inv.max())
    return (inv / inv.mean()).float()
