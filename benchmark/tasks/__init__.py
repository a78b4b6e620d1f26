"""Tasks behind one small interface, and the TASKS registry.

Example: rnnbench train --task addition --arch lstm

A task owns its data (already on the device), its batching, its loss wiring and
its metrics. The training loop sees only this interface:

- ``input_size``, ``output_size``, ``readout`` (``last`` or ``per_step``)
- ``train_size`` and ``train_batches(batch_size, generator)`` -> iterator of Batch
- ``loss(name, logits, batch)`` -> (sum, count)
- ``evaluate(model, split, loss_name)`` -> dict with at least ``loss`` and ``acc``
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Batch:
    x: Tensor  # [B, T, F] float on the device
    y: Tensor  # class labels [B] (int64) or bits [B, T] (float), on the device
    lengths: Tensor | None = None  # CPU int64 [B]; None when every sequence is full length


def build_task(config, device, **data):
    """The task named by config.task; ``data`` passes preloaded tensors (tests use synthetic ones)."""
    return TASKS[config.task](config, device, **data)


from .addition import AdditionTask  # noqa: E402  (after Batch, which they import)
from .mnist import MnistTask  # noqa: E402

TASKS = {"mnist": MnistTask, "addition": AdditionTask}
