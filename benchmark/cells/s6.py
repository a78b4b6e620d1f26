"""S6, Mamba's selective state-space layer (Gu and Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces"), in plain PyTorch.

Example: rnnbench train --task addition --arch s6 --hidden-size 32

Each of the layer's H = hidden_size channels carries N = 16 real states (``STATE_SIZE``). From the channel input u_t
[H], the step size, B and C are functions of the input (the "selection"):

    Delta_t = softplus(W_up (W_down u_t) + bias)   [H], a rank ceil(H / 16) projection
    B_t = W_B u_t, C_t = W_C u_t                    [N], shared by the channels
    h_t = exp(Delta_t A) * h_{t-1} + Delta_t B_t u_t,    y_t = C_t . h_t + D u_t     (per channel)

with A [H, N] diagonal, real and negative, A = -exp(A_log), initialised S4D-real: A_n = -(n + 1); the
discretisation is zero-order hold for A and the simplified Euler step Delta B for B, as Mamba's. Delta's bias is
initialised so that softplus(bias) is log-uniform on [0.001, 0.1], D to ones, as Mamba's.

The Mamba block around the layer is on by default (``block=True``): an input projection to u and a gate z,
a causal depthwise convolution of width 4 and SiLU on u, and y_t * SiLU(z_t) on the way out, followed by an
RMSNorm as in Mamba-2 (Dao and Gu 2024): without the block's residual connection and norms, which the stack does not
have, the output's scale fell about tenfold per layer and two-layer stacks barely trained. Its output projection is
left out (the next layer and the readout begin with a linear map). With ``block=False`` the layer is a linear
projection to u and the S6 recurrence alone. A_log and D are stored as their initial values plus trained offsets:
Mamba exempts them from weight decay, and rnnbench's AdamW decays every parameter, so this way decay pulls them
towards their initialisation, not towards A = -1 and D = 0.

Two forms (``forward_parallel``, ``forward_sequential``): the sequential form runs the recurrence one step at a
time; the parallel form is a chunked scan (``chunked_scan``): a doubling scan (Hillis and Steele) within chunks of
32 steps, h_t += a_t..a_{t-d+1} h_{t-d} for d = 1, 2, 4, ..., then the state carried across chunks one chunk at a
time. It multiplies only factors of modulus at most one, so it keeps float32's precision at any length, where a
log-space scan (exp(a*_t) sum_k exp(-a*_k) b_k) loses digits as |a*_t| grows; and it holds about a dozen [B, T, H, N]
tensors for backward, where a doubling scan over the whole length holds two per pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .minrnn import ScanCell, sequential_scan

STATE_SIZE = 16
CONV_WIDTH = 4
DT_MIN, DT_MAX = 1e-3, 1e-1
CHUNK = 32  # about sqrt(T) for the lengths rnnbench runs: log2(CHUNK) doubling passes, T / CHUNK sequential steps


def doubling_scan(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(h, a*) [B, T, ...]: h_t = a_t h_{t-1} + b_t from h_0 = 0, and a*_t = a_1 ... a_t, in log2(T) passes."""
    shift = 1
    while shift < b.size(1):
        b = torch.cat([b[:, :shift], b[:, shift:] + a[:, shift:] * b[:, :-shift]], dim=1)
        a = torch.cat([a[:, :shift], a[:, shift:] * a[:, :-shift]], dim=1)
        shift *= 2
    return b, a


def chunked_scan(a: Tensor, b: Tensor, chunk: int = CHUNK) -> Tensor:
    """h [B, T, ...] of h_t = a_t h_{t-1} + b_t from h_0 = 0: a doubling scan within chunks of ``chunk`` steps, the
    state carried from chunk to chunk one chunk at a time, then added in where each chunk's own scan left it out."""
    batch, steps = b.shape[:2]
    chunks = -(-steps // chunk)
    if chunks * chunk != steps:  # pad the end: a = 1, b = 0 there, which no real step reads
        extra = (chunks * chunk - steps, *b.shape[2:])
        a = torch.cat([a, a.new_ones(batch, *extra)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, *extra)], dim=1)
    shape = (batch * chunks, chunk, *b.shape[2:])
    local, product = doubling_scan(a.reshape(shape), b.reshape(shape))
    if chunks == 1:
        return local[:, :steps]
    local, product = local.view(batch, chunks, *local.shape[1:]), product.view(batch, chunks, *product.shape[1:])
    ends = sequential_scan(product[:, :-1, -1], local[:, :-1, -1])  # the state after each chunk but the last
    carried = torch.cat([torch.zeros_like(ends[:, :1]), ends], dim=1)[:, :, None]
    return (local + product * carried).flatten(1, 2)[:, :steps]


class S6Layer(nn.Module):
    """One direction of one S6 layer (inside the Mamba block's projection, convolution and gate if ``block``)."""

    def __init__(self, input_size: int, hidden_size: int, state_size: int = STATE_SIZE, block: bool = True):
        super().__init__()
        self.block = block
        rank = math.ceil(hidden_size / 16)
        self.input = nn.Linear(input_size, (2 if block else 1) * hidden_size)
        if block:
            self.conv = nn.Conv1d(hidden_size, hidden_size, CONV_WIDTH, groups=hidden_size, padding=CONV_WIDTH - 1)
            self.norm = nn.RMSNorm(hidden_size)
        self.select = nn.Linear(hidden_size, rank + 2 * state_size, bias=False)  # Delta's rank, B, C
        self.delta = nn.Linear(rank, hidden_size)
        nn.init.uniform_(self.delta.weight, -rank ** -0.5, rank ** -0.5)
        dt = torch.exp(torch.rand(hidden_size) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        with torch.no_grad():
            self.delta.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.register_buffer("A_log_init", torch.arange(1, state_size + 1).float().log().repeat(hidden_size, 1))
        self.A_log_shift = nn.Parameter(torch.zeros(hidden_size, state_size))
        self.register_buffer("D_init", torch.ones(hidden_size))
        self.D_shift = nn.Parameter(torch.zeros(hidden_size))
        self.rank, self.state_size = rank, state_size

    def A(self) -> Tensor:
        return -(self.A_log_init + self.A_log_shift).exp()

    def selective(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """(u [B, T, H], Delta [B, T, H], B_t [B, T, N], C_t [B, T, N], gate [B, T, H] or None)."""
        if self.block:
            u, gate = self.input(x).chunk(2, dim=-1)
            u = F.silu(self.conv(u.transpose(1, 2))[..., :x.size(1)].transpose(1, 2))  # causal: the first T outputs
        else:
            u, gate = self.input(x), None
        low, b, c = self.select(u).split([self.rank, self.state_size, self.state_size], dim=-1)
        return u, F.softplus(self.delta(low)), b, c, gate

    def readout(self, h: Tensor, u: Tensor, c: Tensor, gate: Tensor | None) -> Tensor:
        y = torch.einsum("bthn,btn->bth", h, c) + (self.D_init + self.D_shift) * u
        return y if gate is None else self.norm(y * F.silu(gate))

    def forward_parallel(self, x: Tensor) -> Tensor:
        u, delta, b, c, gate = self.selective(x)
        a = torch.exp(delta[..., None] * self.A())
        h = chunked_scan(a, (delta * u)[..., None] * b[:, :, None, :])
        return self.readout(h, u, c, gate)

    def forward_sequential(self, x: Tensor) -> Tensor:
        u, delta, b, c, gate = self.selective(x)
        a = torch.exp(delta[..., None] * self.A())
        h = sequential_scan(a, (delta * u)[..., None] * b[:, :, None, :])
        return self.readout(h, u, c, gate)


class S6(ScanCell):
    """Stacked S6 layers (each in the Mamba block's convolution and gate), dropout between layers."""

    layer_class = S6Layer
