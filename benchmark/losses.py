"""Losses ``ce`` and ``mse`` for both readouts, masked so that padding never counts.

Example: rnnbench train --task addition --arch gru --loss mse

Each function returns ``(sum, count)``: the summed loss and the number of
targets it covers, so batches of different sizes and lengths aggregate exactly
(mean = sum / count) in training and evaluation alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def length_mask(lengths: Tensor, steps: int, device: torch.device | str) -> Tensor:
    """Bool [B, T]: True where step t < length of that sequence."""
    lengths = lengths.to(device, non_blocking=True)
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


def class_ce(logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Softmax cross-entropy; logits [B, C], labels [B]."""
    return F.cross_entropy(logits, labels, reduction="sum"), labels.numel()


def class_mse(logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Mean over classes of (softmax - one-hot)^2, summed over the batch."""
    probs = logits.softmax(dim=-1)
    one_hot = F.one_hot(labels, num_classes=logits.size(-1)).to(probs.dtype)
    return (probs - one_hot).pow(2).mean(dim=-1).sum(), labels.numel()


def bit_ce(logits: Tensor, bits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-bit binary cross-entropy on logits; logits, bits, mask [B, T]."""
    per_bit = F.binary_cross_entropy_with_logits(logits, bits, reduction="none")
    return (per_bit * mask).sum(), mask.sum()


def bit_mse(logits: Tensor, bits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Squared error between sigmoid outputs and bits; logits, bits, mask [B, T]."""
    per_bit = (logits.sigmoid() - bits).pow(2)
    return (per_bit * mask).sum(), mask.sum()


CLASS_LOSSES = {"ce": class_ce, "mse": class_mse}
BIT_LOSSES = {"ce": bit_ce, "mse": bit_mse}
