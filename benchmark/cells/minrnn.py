"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t only, so training scans.

Example: rnnbench train --task pixel_mnist --arch mingru --hidden-size 128

Both are h_t = a_t * h_{t-1} + b_t with a_t, b_t computed from x_t alone (h_0 = 0):

- minGRU: z_t = sigmoid(W_z x_t), a_t = 1 - z_t, b_t = z_t * g(W_h x_t);
- minLSTM: f_t = sigmoid(W_f x_t), i_t = sigmoid(W_i x_t), normalised to f'_t = f_t / (f_t + i_t),
  i'_t = i_t / (f_t + i_t); a_t = f'_t, b_t = i'_t * g(W_h x_t),

where g(v) = v + 0.5 for v >= 0 and sigmoid(v) below keeps the candidate state positive, so that the paper's
log-space scan applies: log h_t = a*_t + logcumsumexp_k(log b_k - a*_k) with a*_t = sum_{j<=t} log a_j, every
step at once (``parallel_scan_log``, the paper's appendix code with log_g and softplus-form gate logs). The
sequential form is the same recurrence one step at a time (``sequential_scan``), which is what the paper runs
for inference. ``forward`` follows that split on an accelerator: the parallel scan while training with autograd
on, the sequential form otherwise (evaluation: no [B, T, H] log-space intermediates, and no precision lost to
a*_t, whose magnitude grows with the length: in float32 the two forms agree to about 1e-6 relative on tens of
steps, 1e-4 on 784). On a CPU it always takes the sequential form, which trains several times faster there.
Both forms are public (``forward_parallel``, ``forward_sequential``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .stack import DirectionalStack


def g(v: Tensor) -> Tensor:
    """The paper's positive activation: v + 0.5 for v >= 0, sigmoid(v) below (continuous at 0)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log g(v), without leaving log space below 0."""
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


def parallel_scan_log(log_a: Tensor, log_b: Tensor) -> Tensor:
    """h [B, T, H] of h_t = a_t h_{t-1} + b_t from h_0 = 0, given log a_t and log b_t [B, T, H]."""
    a_star = log_a.cumsum(dim=1)
    return (a_star + torch.logcumsumexp(log_b - a_star, dim=1)).exp()


def sequential_scan(a: Tensor, b: Tensor) -> Tensor:
    """The same recurrence one step at a time."""
    h = torch.zeros_like(b[:, 0])
    outputs = []
    # unbind, not b[:, t]: each indexing's backward would write a zero tensor of b's whole size, T^2 work in all
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
        h = torch.addcmul(b_t, a_t, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


class MinGRULayer(nn.Module):
    """One direction of one minGRU layer."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.gates = nn.Linear(input_size, 2 * hidden_size)  # update gate and candidate state

    def forward_parallel(self, x: Tensor) -> Tensor:
        update, candidate = self.gates(x).chunk(2, dim=-1)
        log_z, log_keep = -F.softplus(-update), -F.softplus(update)  # log z, log (1 - z)
        return parallel_scan_log(log_keep, log_z + log_g(candidate))

    def forward_sequential(self, x: Tensor) -> Tensor:
        update, candidate = self.gates(x).chunk(2, dim=-1)
        z = torch.sigmoid(update)
        return sequential_scan(1 - z, z * g(candidate))


class MinLSTMLayer(nn.Module):
    """One direction of one minLSTM layer."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.gates = nn.Linear(input_size, 3 * hidden_size)  # forget gate, input gate, candidate state

    def forward_parallel(self, x: Tensor) -> Tensor:
        forget, inputs, candidate = self.gates(x).chunk(3, dim=-1)
        # d = softplus(-f) - softplus(-i) = log(sigmoid(i) / sigmoid(f)): log f' = -softplus(d), log i' = -softplus(-d)
        diff = F.softplus(-forget) - F.softplus(-inputs)
        return parallel_scan_log(-F.softplus(diff), -F.softplus(-diff) + log_g(candidate))

    def forward_sequential(self, x: Tensor) -> Tensor:
        forget, inputs, candidate = self.gates(x).chunk(3, dim=-1)
        f, i = torch.sigmoid(forget), torch.sigmoid(inputs)
        total = f + i
        return sequential_scan(f / total, i / total * g(candidate))


class ScanCell(nn.Module):
    """Stacked layers of ``layer_class``; both scan forms, and ``forward`` choosing between them."""

    layer_class: type[nn.Module]

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        self.stack = DirectionalStack(lambda size: self.layer_class(size, hidden_size), input_size, hidden_size,
                                      num_layers=num_layers, dropout=dropout, bidirectional=bidirectional)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # On a CPU the step loop trains faster than every scan (benchmarks/scan_vs_sequential.py and
        # benchmarks/mingru_scan.py; figures in docs/performance.md); elsewhere the scan while training.
        if x.device.type != "cpu" and self.training and torch.is_grad_enabled():
            return self.forward_parallel(x, lengths)
        return self.forward_sequential(x, lengths)

    def forward_parallel(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.stack(x, lengths, method="forward_parallel")

    def forward_sequential(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.stack(x, lengths, method="forward_sequential")


class MinGRU(ScanCell):
    """Stacked minGRU layers, dropout between layers."""

    layer_class = MinGRULayer


class MinLSTM(ScanCell):
    """Stacked minLSTM layers, dropout between layers."""

    layer_class = MinLSTMLayer
