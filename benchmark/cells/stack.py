"""Layers and directions around a one-direction recurrence, with right padding handled once for every cell.

Example: python -c "import benchmark.cells; from benchmark import registry; print(sorted(registry.CELLS))"

A cell here supplies one-direction layers: modules mapping x [B, T, F] to outputs [B, T, H], where the output
at step t depends on steps 0..t only. ``DirectionalStack`` stacks them, runs the backward direction over each
row's real steps reversed (the row reversed within its length, not the whole padded tensor), puts dropout
between layers, and reads ``last`` at each row's own last real step. Every layer is causal, so padding after a
row's length cannot reach its real steps; its inputs there are zeroed all the same, before every layer, and so are
the outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def reversal_index(lengths: Tensor, steps: int) -> Tensor:
    """Int64 [B, T]: step t of row b reads step length_b - 1 - t for t < length_b, and itself after it.

    Its own inverse, so the same index reverses a row's real steps and puts them back.
    """
    t = torch.arange(steps)[None, :]
    lengths = lengths[:, None]
    return torch.where(t < lengths, lengths - 1 - t, t)


def gather_steps(x: Tensor, index: Tensor) -> Tensor:
    """x [B, T, F] with the steps of each row taken in the order ``index`` [B, T] gives."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(-1)))


class DirectionalStack(nn.Module):
    """``num_layers`` layers of ``make_layer(input_size)`` per direction; dropout between layers."""

    def __init__(self, make_layer: Callable[[int], nn.Module], input_size: int, hidden_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(make_layer(input_size if depth == 0 else hidden_size * self.directions)
                          for _ in range(self.directions))
            for depth in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor | None = None, method: str = "forward") -> tuple[Tensor, Tensor]:
        """(outputs [B, T, D*H], last [B, D*H]); ``method`` names the layers' method to run (e.g. a scan form)."""
        batch, steps = x.shape[:2]
        full = lengths is None or bool((lengths == steps).all())
        if full:
            lengths = torch.full((batch,), steps, dtype=torch.int64)
        lengths = lengths.cpu()
        if not full:
            reverse = reversal_index(lengths, steps).to(x.device)
            padding = (torch.arange(steps)[None, :] >= lengths[:, None]).to(x.device)[:, :, None]
        for depth, directions in enumerate(self.layers):
            if depth:
                x = self.dropout(x)
            if not full:  # whatever the padding holds, no layer sees it (an overflow there would poison gradients)
                x = x.masked_fill(padding, 0.0)
            outputs = [getattr(directions[0], method)(x)]
            if self.directions == 2:
                backward = getattr(directions[1], method)(x.flip(1) if full else gather_steps(x, reverse))
                outputs.append(backward.flip(1) if full else gather_steps(backward, reverse))
            x = torch.cat(outputs, dim=-1)
        rows = torch.arange(batch, device=x.device)
        forward_last = x[rows, (lengths - 1).to(x.device), :self.hidden_size]
        last = forward_last if self.directions == 1 else torch.cat([forward_last, x[:, 0, self.hidden_size:]], -1)
        return (x if full else x.masked_fill(padding, 0.0)), last
