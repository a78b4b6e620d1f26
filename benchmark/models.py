"""The one model: a registered cell (``benchmark.registry``), dropout and a linear readout head.

Example: rnnbench train --task mnist --arch bigru --hidden-size 128 --num-layers 2

Every architecture, built-in or plugin, is a cell under the same contract: ``cell(x, lengths)`` returns
``(outputs [B, T, D*H], last [B, D*H])``. Readouts: ``last`` classifies from ``last``, the state after each row's
own last real step (for bidirectional cells both directions concatenated, never ``outputs[:, -1]``, which for the
backward direction has seen one step only); ``per_step`` emits one output per time step from ``outputs``.
``forward`` returns logits only; the loss is chosen outside the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .catalog import IMPLS, READOUTS
from .registry import cell_spec


class Model(nn.Module):
    def __init__(self, arch: str, input_size: int, hidden_size: int, output_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, readout: str = "last", impl: str = "auto"):
        super().__init__()
        spec = cell_spec(arch)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if impl not in ("auto", "native") and impl not in spec.impls:
            raise ValueError(f"impl {impl!r} applies to the nn.RNN / nn.LSTM / nn.GRU architectures only; {arch} "
                             "runs its own forward (--impl auto)")
        self.arch = arch
        self.readout = readout
        self._impl = impl
        self.bidirectional = spec.bidirectional
        self.directions = 2 if spec.bidirectional else 1
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        kernel = {"impl": impl} if spec.impls else {}
        self.cell = spec.cls(input_size, hidden_size, num_layers=num_layers, dropout=dropout,
                             bidirectional=spec.bidirectional, **kernel)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x [B, T, F] -> logits [B, C] (``last``) or [B, T, C] (``per_step``)."""
        outputs, last = self.cell(x, lengths)
        return self.head(self.dropout(last if self.readout == "last" else outputs))

    @property
    def impl(self) -> str:
        """The kernel asked for (``--impl``); the cell holds it where it has a choice of kernel."""
        return getattr(self.cell, "impl", self._impl)

    @impl.setter
    def impl(self, value: str) -> None:
        self._impl = value
        if hasattr(self.cell, "impl"):
            self.cell.impl = value

    def resolved_impl(self, device: torch.device, training: bool = True) -> str:
        """The kernel the cell runs (``native`` for a cell with no choice of kernel)."""
        resolve = getattr(self.cell, "resolved_impl", None)
        return resolve(device, training) if resolve else "native"


def build_model(config, task) -> Model:
    return Model(config.arch, task.input_size, config.hidden_size, task.output_size, num_layers=config.num_layers,
                 dropout=config.dropout, readout=task.readout, impl=config.impl)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
