"""IndRNN (Li et al. 2018, "Independently Recurrent Neural Network"): h_t = relu(W x_t + u * h_{t-1} + b).

Example: rnnbench train --task mnist --arch indrnn --num-layers 2

Each hidden unit has one recurrent weight u_n (a vector, not a matrix), so units never mix through time and
the gradient through T steps is a product of T scalars per unit. The paper keeps it bounded by constraining
|u_n| <= gamma^(1/T) with gamma = 2 (Sec. 3): for the 784 steps of pixel MNIST that is 1.0009. We clamp to
[-1, 1] instead, a bound independent of the sequence length: the same weights then mean the same on every
length (addition is trained on lengths up to 20 and tested up to 1000, where 2^(1/T) would move from 1.035
to 1.0007), and it is within 0.1 % of the paper's bound on the long tasks. A cell cannot clip its weights after the
optimizer's step, so the clamp is applied in ``forward``, with a straight-through gradient: a weight pushed
past the bound still gets its gradient and can come back, where a plain clamp would freeze it at the bound.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .stack import DirectionalStack

RECURRENT_LIMIT = 1.0


class IndRNNLayer(nn.Module):
    """One direction of one layer; outputs [B, T, H] from x [B, T, F]."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Parameter(torch.empty(hidden_size).uniform_(0.0, RECURRENT_LIMIT))

    def recurrent_weight(self) -> Tensor:
        """u clamped to [-RECURRENT_LIMIT, RECURRENT_LIMIT], with the gradient of u itself."""
        clamped = self.recurrent.clamp(-RECURRENT_LIMIT, RECURRENT_LIMIT)
        return self.recurrent + (clamped - self.recurrent).detach()

    def forward(self, x: Tensor) -> Tensor:
        drive = self.input(x)  # W x_t + b for every step in one matrix product
        u = self.recurrent_weight()
        # unbind, not drive[:, t]: each indexing's backward would write a zero tensor of drive's whole size, T^2
        # work in all (3.7x LSTM's epoch time on pixel MNIST)
        steps = drive.unbind(1)
        h = torch.relu(steps[0])
        outputs = [h]
        for drive_t in steps[1:]:
            h = torch.relu(torch.addcmul(drive_t, u, h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class IndRNN(nn.Module):
    """Stacked IndRNN layers (ReLU), dropout between layers; see the module docstring for the weight bound."""

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        self.stack = DirectionalStack(lambda size: IndRNNLayer(size, hidden_size), input_size, hidden_size,
                                      num_layers=num_layers, dropout=dropout, bidirectional=bidirectional)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.stack(x, lengths)
