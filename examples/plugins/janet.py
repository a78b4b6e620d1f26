"""JANET, an LSTM with only a forget gate (van der Westhuizen and Lasenby, 2018), as an rnnbench plugin.

Example: rnnbench --plugin examples/plugins/janet.py train --task addition --arch janet

Copy this file to start your own cell. The contract, in short:
- the constructor takes (input_size, hidden_size, *, num_layers, dropout, bidirectional);
- forward(x, lengths) gets x [B, T, F] with padding at the end and lengths (CPU int64 [B]) or None;
- it returns (outputs [B, T, D*H], last [B, D*H]), where last is the state after each row's own last real step
  (for the backward direction: after step 0). rnnbench adds the readout head and the loss.
rnnbench probes the cell on a padded batch before it runs a command, and refuses it in one line if the shapes
are wrong or if the padding leaks into `last`.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark import register_cell


class JanetLayer(nn.Module):
    """One direction of one layer: c_t = f_t * c_{t-1} + (1 - f_t) * tanh(W_c x_t + U_c h_{t-1}); h_t = c_t."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input = nn.Linear(input_size, 2 * hidden_size)  # both gates' input projections in one matmul
        self.recurrent = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        with torch.no_grad():  # the paper's chrono initialisation would go here; a forget bias of 1 is enough
            self.input.bias[:hidden_size].fill_(1.0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        batch, steps, _ = x.shape
        projected = self.input(x)  # [B, T, 2H], for every step at once
        state = x.new_zeros(batch, self.recurrent.in_features)
        outputs = []
        for t in range(steps):
            forget, candidate = (projected[:, t] + self.recurrent(state)).chunk(2, dim=-1)
            forget = torch.sigmoid(forget)
            new_state = forget * state + (1 - forget) * torch.tanh(candidate)
            if lengths is not None:  # a finished row keeps its state: padding must not change `last`
                still_running = (t < lengths).to(x.device).unsqueeze(-1)
                new_state = torch.where(still_running, new_state, state)
            state = new_state
            outputs.append(state)
        return torch.stack(outputs, dim=1)


def reverse_each_row(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each row's real steps in reverse order, its padding left at the end (applying it twice undoes it)."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.size(1))
    index = (lengths.unsqueeze(1) - 1 - steps).where(steps < lengths.unsqueeze(1), steps)  # [B, T]
    return x.gather(1, index.to(x.device).unsqueeze(-1).expand_as(x))


@register_cell("janet")
@register_cell("bijanet", bidirectional=True)
class Janet(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(JanetLayer(input_size if i == 0 else directions * hidden_size, hidden_size)
                          for _ in range(directions))
            for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        for i, directions in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            forward = directions[0](x, lengths)
            if len(directions) == 1:
                x = forward
            else:  # the backward direction reads each row from its last real step back to step 0
                backward = reverse_each_row(directions[1](reverse_each_row(x, lengths), lengths), lengths)
                x = torch.cat([forward, backward], dim=-1)
        hidden = x.size(-1) // len(self.layers[-1])
        rows = torch.arange(x.size(0))
        last_step = (lengths - 1) if lengths is not None else torch.full((x.size(0),), x.size(1) - 1)
        last = x[rows, last_step.to(x.device)]  # forward direction: after each row's own last step
        if len(self.layers[-1]) == 2:  # backward direction: its state after step 0
            last = torch.cat([last[:, :hidden], x[:, 0, hidden:]], dim=-1)
        return x, last
