"""sLSTM, the scalar-memory LSTM of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory").

Example: rnnbench train --task parity --arch slstm --hidden-size 32

One layer, per step, from its four gates' pre-activations (z~, i~, f~, o~) = W x_t + R h_{t-1} + b:

    z_t = tanh(z~),  i_t = exp(i~),  f_t = sigmoid(f~),  o_t = sigmoid(o~)
    c_t = f_t c_{t-1} + i_t z_t,    n_t = f_t n_{t-1} + i_t,    h_t = o_t c_t / n_t

The exponential input gate can outweigh everything stored so far in one step, which a sigmoid gate (at most 1)
cannot: the paper's "revising storage decisions". The normaliser n_t keeps c_t / n_t a weighted mean of past z.
The recurrent R h_{t-1} feeds every gate (the paper's memory mixing), which is also why sLSTM has no parallel form:
each step needs the last h, so it runs one step at a time, as the paper says.

exp overflows, so the paper carries a stabiliser m_t = max(log f_t + m_{t-1}, i~_t) and keeps c and n scaled by
exp(-m_t): i'_t = exp(i~_t - m_t), f'_t = exp(log f_t + m_{t-1} - m_t). c and n carry the same factor, so h_t is
the same function of the inputs whatever m is; m is therefore detached (a constant to autograd), which leaves the
gradient exact. The first step takes m_1 = i~_1, so that c_1 = z_1 and n_1 = 1 (the paper's zero states give the
same h_1); from then on one of i'_t and f'_t equals 1 at every step, so n_t >= 1 and the division is safe.

Choices, with why:
- the forget gate is the sigmoid, one of the paper's two (the other is exp), and the one the authors' plain
  PyTorch sLSTM step uses;
- R is one dense matrix: the paper's block-diagonal R with several heads mixes memory within a head only, and one
  head is its special case;
- the forget-gate biases are spaced evenly from 3 to 6 over the units (sigmoid 0.95 to 0.998: the cell starts by
  remembering, over tens to hundreds of steps), as the authors' code initialises its mLSTM forget gates; every
  other weight keeps PyTorch's ``nn.Linear`` initialisation.
Left out of the paper's sLSTM block: its pre-norm, causal convolution, head-wise group norm, gated MLP and residual
connection (the stack changes width between layers and puts its own dropout there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .stack import DirectionalStack

FORGET_BIAS = (3.0, 6.0)


class SLSTMLayer(nn.Module):
    """One direction of one sLSTM layer; outputs h [B, T, H] from x [B, T, F]."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, 4 * hidden_size)  # W x_t + b, gates in the order z, i, f, o
        self.recurrent = nn.Linear(hidden_size, 4 * hidden_size, bias=False)  # R h_{t-1}
        with torch.no_grad():
            self.input.bias[2 * hidden_size:3 * hidden_size] = torch.linspace(*FORGET_BIAS, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        drive = self.input(x)  # every step's W x_t + b in one product
        outputs = []
        h = c = n = m = None
        # unbind, not drive[:, t]: each indexing's backward would write a zero tensor of the whole drive
        for d in drive.unbind(1):
            pre = d if h is None else d + self.recurrent(h)
            z, i, f, o = pre.chunk(4, dim=-1)
            z, o = torch.tanh(z), torch.sigmoid(o)
            if h is None:
                m = i.detach()
                c, n = torch.exp(i - m) * z, torch.exp(i - m)
            else:
                log_f = F.logsigmoid(f)
                m_next = torch.maximum(log_f + m, i).detach()
                i_s, f_s = torch.exp(i - m_next), torch.exp(log_f + m - m_next)
                c, n, m = f_s * c + i_s * z, f_s * n + i_s, m_next
            h = o * c / n
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class SLSTM(nn.Module):
    """Stacked sLSTM layers, dropout between layers; see the module docstring for the stabiliser."""

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        self.stack = DirectionalStack(lambda size: SLSTMLayer(size, hidden_size), input_size, hidden_size,
                                      num_layers=num_layers, dropout=dropout, bidirectional=bidirectional)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.stack(x, lengths)
