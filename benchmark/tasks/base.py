"""What a task is to the training loop: a ``Batch`` and the ``Task`` protocol.

Example: python -c "from benchmark.tasks import task_class; print(task_class('addition').readout)"

A task owns its data (already on the device), its batching, its loss wiring and its metrics; ``fit``
sees only this protocol. Losses return ``(sum, count)`` so that batches of any size and length
aggregate exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..losses import length_mask


@dataclass(frozen=True)
class Batch:
    x: Tensor  # [B, T, F] float on the device
    y: Tensor  # class labels [B] (int64) or bits [B, T] (float), on the device
    lengths: Tensor | None = None  # CPU int64 [B]; None when every sequence is full length


@runtime_checkable
class Task(Protocol):
    """A task built from a TrainConfig and a device (``TaskClass(config, device, **data)``)."""

    name: str
    input_size: int  # features per step
    output_size: int  # classes (readout "last") or outputs per step (readout "per_step")
    readout: str  # "last": one prediction per sequence from the final state; "per_step": one per step

    @property
    def train_size(self) -> int:
        """Training examples in one epoch."""
        ...

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of shuffled training batches, drawn with ``generator``."""
        ...

    def loss(self, name: str, logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor | int]:
        """The loss ``name`` ("ce" or "mse") as (sum over targets, number of targets)."""
        ...

    def evaluate(self, model: nn.Module, split: str, loss_name: str) -> dict:
        """Metrics of ``split`` ("val" or "test"): at least ``loss`` and ``acc``."""
        ...

    # Optional: ``dataset() -> dict`` with "name", "digest", "source" and "profile" (a flat dict): what the run
    # logs as its MLflow dataset input (metadata only, never the data). Tasks without it log none.


class PaddedStrings:
    """Training batches of strings of mixed lengths, for a task whose ``splits["train"]`` holds (inputs [N, T, F],
    targets [N, T], lengths [N]) right-padded to the longest: each batch is cut to its own longest string, and its
    lengths stay on the CPU for the loss mask and the model's packing."""

    @property
    def train_size(self) -> int:
        return len(self.splits["train"][2])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        x, y, lengths = self.splits["train"]
        order = torch.randperm(len(lengths), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch_lengths = lengths[index]
            steps = int(batch_lengths.max())  # CPU tensor: no device sync
            index = index.to(self.device)
            yield Batch(x[index, :steps], y[index, :steps], batch_lengths)

    def scoring_chunks(self, split: tuple[Tensor, Tensor, Tensor], size: int) -> Iterator[tuple[Batch, Tensor]]:
        """A split's strings in chunks of ``size``, sorted by length so that each chunk pads little: (batch, the
        [B, T] mask of its real steps, on the device)."""
        x, y, lengths = split
        order = torch.argsort(lengths, stable=True)
        for start in range(0, len(order), size):
            index = order[start:start + size]
            chunk_lengths = lengths[index]
            steps = int(chunk_lengths.max())
            device_index = index.to(self.device)
            yield (Batch(x[device_index, :steps], y[device_index, :steps], chunk_lengths),
                   length_mask(chunk_lengths, steps, self.device))
