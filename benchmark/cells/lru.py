"""LRU, the Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

Example: rnnbench train --task pixel_mnist --arch lru --hidden-size 64

One layer is a complex diagonal linear recurrence over N = hidden_size states, read out per step:

    h_t = lambda * h_{t-1} + gamma * (B x_t),    y_t = Re(C h_t) + D x_t,    out_t = GLU(GELU(y_t))

with lambda = exp(-exp(nu_log) + i exp(theta_log)) (the paper's exponential parameterisation: |lambda| < 1 for any
parameter value) and the normalisation gamma = sqrt(1 - |lambda|^2), computed from lambda at every call, so that a
white-noise input gives a state of the same variance as B x_t whatever |lambda| is. The paper's code trains gamma
as a parameter of its own initialised to that value; here it stays tied to lambda.

Initialisation as the paper's: lambda uniform on the ring r_min <= |lambda| <= r_max (uniform in area, so |lambda|^2
is uniform on [r_min^2, r_max^2]) with phase uniform on [0, max_phase]; the defaults r_min = 0.9, r_max = 0.999,
max_phase = 2 pi are its sequential CIFAR setting, a raster-scan image task like pixel MNIST. B and C are complex
Gaussian with variance 1/F and 1/N (F the layer's input width).

What the layer includes of the paper's block: the GELU and the gated linear unit after y_t (without a nonlinearity
a stack of LRU layers and the linear readout would be one linear map of the inputs). Left out: the block's norm
and residual connection (the stack changes width between layers and puts its own dropout there). The paper's D is
diagonal because its layers keep their width; here D is a dense map from the layer's input width (with a bias).

nu_log and theta_log are stored as their initial values (buffers) plus trained offsets: the paper exempts the
recurrence from weight decay, and rnnbench's AdamW decays every parameter, so this way weight decay pulls lambda
back towards its initialisation rather than towards |lambda| = exp(-1).

Two forms, the same numbers (``forward_parallel``, ``forward_sequential``): the sequential form runs the recurrence
one step at a time; the parallel form is a doubling scan (Hillis and Steele): log2(T) passes of
h_t += lambda^d h_{t-d} for d = 1, 2, 4, ..., which needs only powers of the constant lambda (each of modulus below
one, so nothing overflows or loses precision as a log-space product over the whole length would).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .minrnn import ScanCell, sequential_scan

R_MIN, R_MAX, MAX_PHASE = 0.9, 0.999, 2 * math.pi


def ring_init(size: int, r_min: float = R_MIN, r_max: float = R_MAX, max_phase: float = MAX_PHASE,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(nu_log, theta_log) [size] of lambdas uniform on the ring r_min <= |lambda| <= r_max, phase in [0, max_phase]."""
    u1, u2 = torch.rand(2, size, generator=generator, dtype=torch.float64)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    theta_log = torch.log(max_phase * u2.clamp_min(1e-12))
    return nu_log.float(), theta_log.float()


def doubling_scan(lam: Tensor, u: Tensor) -> Tensor:
    """h [B, T, N] of h_t = lam h_{t-1} + u_t from h_0 = 0, for a constant diagonal lam [N], in log2(T) passes."""
    h, power, shift = u, lam, 1
    while shift < u.size(1):
        h = torch.cat([h[:, :shift], h[:, shift:] + power * h[:, :-shift]], dim=1)
        power, shift = power * power, 2 * shift
    return h


class LRULayer(nn.Module):
    """One direction of one LRU layer: the recurrence, its readout, GELU and a GLU."""

    def __init__(self, input_size: int, hidden_size: int, r_min: float = R_MIN, r_max: float = R_MAX,
                 max_phase: float = MAX_PHASE):
        super().__init__()
        nu_log, theta_log = ring_init(hidden_size, r_min, r_max, max_phase)
        self.register_buffer("nu_log_init", nu_log)
        self.register_buffer("theta_log_init", theta_log)
        self.nu_log_shift = nn.Parameter(torch.zeros(hidden_size))
        self.theta_log_shift = nn.Parameter(torch.zeros(hidden_size))
        # complex B [N, F] and C [N(out), N]: real and imaginary parts each of variance 1/(2 fan-in)
        self.B = nn.Parameter(torch.randn(2, hidden_size, input_size) / math.sqrt(2 * input_size))
        self.C = nn.Parameter(torch.randn(2, hidden_size, hidden_size) / math.sqrt(2 * hidden_size))
        self.D = nn.Linear(input_size, hidden_size)
        self.glu = nn.Linear(hidden_size, 2 * hidden_size)

    def eigenvalues(self) -> tuple[Tensor, Tensor]:
        """(lambda, gamma) [N]: the complex diagonal and its normalisation sqrt(1 - |lambda|^2)."""
        nu = (self.nu_log_init + self.nu_log_shift).exp()
        theta = (self.theta_log_init + self.theta_log_shift).exp()
        lam = torch.polar(torch.exp(-nu), theta)
        # 1 - |lambda|^2 = 1 - exp(-2 nu), written as -expm1 so that |lambda| near 1 keeps its digits
        return lam, torch.sqrt(-torch.expm1(-2 * nu))

    def driven(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(lambda [N], gamma * B x_t [B, T, N] complex)."""
        lam, gamma = self.eigenvalues()
        return lam, torch.complex(F.linear(x, self.B[0]), F.linear(x, self.B[1])) * gamma

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        # Re(C h) = C_re h_re - C_im h_im
        y = F.linear(h.real, self.C[0]) - F.linear(h.imag, self.C[1]) + self.D(x)
        return F.glu(self.glu(F.gelu(y)), dim=-1)

    def forward_parallel(self, x: Tensor) -> Tensor:
        lam, u = self.driven(x)
        return self.readout(doubling_scan(lam, u), x)

    def forward_sequential(self, x: Tensor) -> Tensor:
        lam, u = self.driven(x)
        return self.readout(sequential_scan(lam.expand_as(u), u), x)


class LRU(ScanCell):
    """Stacked LRU layers, dropout between layers."""

    layer_class = LRULayer
