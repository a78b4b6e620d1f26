"""An explicit cell loop over the parameters of an nn.RNN / nn.LSTM / nn.GRU.

Example: rnnbench train --task mnist --arch lstm --impl loop

``loop_forward(rnn, x, lengths)`` computes what ``rnn`` itself computes (same
parameters, same equations, same outputs and gradients within float tolerance)
with one fused input projection for every time step and both directions
(``x @ W_ih^T`` as a single matmul), then one recurrent matmul (``addmm``) and
the gate nonlinearities per step. The nn module stays the parameter holder, so
state dicts and checkpoints are the same for every implementation.

Right-padded variable lengths (``lengths``, CPU int64) follow packing's
semantics: a sequence's state stops changing after its last real step (so
``h_n`` is the state at each sequence's true end), the backward direction
starts at each sequence's true end (each sequence is reversed within its own
length), and outputs at padded steps are zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FUSED_LSTM = True  # LSTM through _LSTMLayer's hand-written backward rather than autograd per step


def loop_forward(rnn: nn.RNNBase, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x [B, T, F] (batch first) -> output [B, T, D*H] (zeros at padding), h_n [L*D, B, H] (as ``rnn``)."""
    batch, steps = x.size(0), x.size(1)
    directions = 2 if rnn.bidirectional else 1
    seq = x.transpose(0, 1)  # time-major, so each step's slice is contiguous rows
    mask, reverse_index, first_partial = None, None, steps
    if lengths is not None and int(lengths.min()) < steps:
        first_partial = int(lengths.min())  # before this step every sequence is still running
        device_lengths = lengths.to(x.device)
        positions = torch.arange(steps, device=x.device)[:, None]
        valid = positions < device_lengths[None, :]  # [T, B]
        mask = valid.unsqueeze(-1)
        # Step t of sequence b <-> step len_b-1-t; padding maps to itself (the map is its own inverse).
        reverse_index = torch.where(valid, device_lengths[None, :] - 1 - positions, positions)

    def reverse(tensor: Tensor) -> Tensor:
        if reverse_index is None:
            return tensor.flip(0)
        return tensor.gather(0, reverse_index.unsqueeze(-1).expand_as(tensor))

    h_n = []
    for layer in range(rnn.num_layers):
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:directions]
        params = [_parameters(rnn, suffix) for suffix in suffixes]
        # One input projection for all steps and both directions; the backward half is reversed
        # afterwards, since reverse(x) @ W = reverse(x @ W).
        w_ih = torch.cat([p["w_ih"] for p in params]) if directions == 2 else params[0]["w_ih"]
        bias = torch.cat([_input_bias(rnn.mode, p) for p in params]) if directions == 2 \
            else _input_bias(rnn.mode, params[0])
        projected = F.linear(seq, w_ih, bias).chunk(directions, dim=-1)
        outputs = []
        for direction, p in enumerate(params):
            inputs = projected[direction] if direction == 0 else reverse(projected[direction])
            output, last = _run(rnn.mode, inputs, p, rnn.hidden_size, batch, mask, first_partial)
            outputs.append(output if direction == 0 else reverse(output))
            h_n.append(last)
        seq = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        if layer < rnn.num_layers - 1 and rnn.dropout and rnn.training:
            seq = F.dropout(seq, rnn.dropout, training=True)
    if mask is not None:
        seq = seq * mask  # packing's zeros at padded steps
    return seq.transpose(0, 1), torch.stack(h_n)


def _parameters(rnn: nn.RNNBase, suffix: str) -> dict[str, Tensor | None]:
    return {"w_ih": getattr(rnn, "weight_ih" + suffix), "w_hh": getattr(rnn, "weight_hh" + suffix),
            "b_ih": getattr(rnn, "bias_ih" + suffix, None) if rnn.bias else None,
            "b_hh": getattr(rnn, "bias_hh" + suffix, None) if rnn.bias else None}


def _input_bias(mode: str, p: dict) -> Tensor | None:
    """Bias folded into the input projection: b_ih + b_hh for LSTM/RNN; b_ih alone for GRU, whose b_hh
    rides on the recurrent matmul because r gates h W_hn + b_hn."""
    if p["b_ih"] is None:
        return None
    return p["b_ih"] if mode == "GRU" else p["b_ih"] + p["b_hh"]


class _LSTMLayer(torch.autograd.Function):
    """One LSTM direction over projected inputs with hand-written BPTT: per step one addmm forward and
    one mm backward, no autograd graph, and W_hh's gradient as a single large GEMM over all steps."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        steps, batch, width = gates_x.shape
        hidden = width // 4
        acts = torch.empty_like(gates_x)  # i, f, g, o after their nonlinearities
        hs = gates_x.new_empty(steps, batch, hidden)
        cs = gates_x.new_empty(steps, batch, hidden)
        h = c = gates_x.new_zeros(batch, hidden)
        w_t = w_hh.t()
        for t in range(steps):
            a = torch.addmm(gates_x[t], h, w_t, out=acts[t])
            a[:, : 2 * hidden].sigmoid_()
            a[:, 2 * hidden: 3 * hidden].tanh_()
            a[:, 3 * hidden:].sigmoid_()
            i, f, g, o = a.chunk(4, 1)
            if mask is not None and t >= first_partial:  # finished sequences keep their state
                torch.where(mask[t], torch.addcmul(f * c, i, g), c, out=cs[t])
                torch.where(mask[t], o * cs[t].tanh(), h, out=hs[t])
            else:
                torch.addcmul(f * c, i, g, out=cs[t])
                torch.mul(o, cs[t].tanh(), out=hs[t])
            h, c = hs[t], cs[t]
        ctx.save_for_backward(acts, hs, cs, w_hh, mask)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    def backward(ctx, d_hs: Tensor):
        acts, hs, cs, w_hh, mask = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        d_gates = torch.empty_like(acts)
        dh = hs.new_zeros(batch, hidden)
        dc = hs.new_zeros(batch, hidden)
        for t in reversed(range(steps)):
            dh = dh + d_hs[t]
            masked = mask is not None and t >= ctx.first_partial
            if masked:  # rows past their end pass the gradient straight to the previous step
                keep = ~mask[t]
                dh_pass, dc_pass = dh * keep, dc * keep
                dh, dc = dh * mask[t], dc * mask[t]
            i, f, g, o = acts[t].chunk(4, 1)
            di, df, dg, do = d_gates[t].chunk(4, 1)
            tanh_c = cs[t].tanh()
            dc = torch.addcmul(dc, dh * o, 1 - tanh_c * tanh_c)
            torch.mul(dh * tanh_c, o * (1 - o), out=do)
            torch.mul(dc * g, i * (1 - i), out=di)
            if t > 0:
                torch.mul(dc * cs[t - 1], f * (1 - f), out=df)
            else:
                df.zero_()
            torch.mul(dc * i, 1 - g * g, out=dg)
            dc = dc * f
            dh = torch.mm(d_gates[t], w_hh)
            if masked:
                dh += dh_pass
                dc += dc_pass
        d_w = torch.mm(d_gates[1:].reshape(-1, 4 * hidden).t(), hs[:-1].reshape(-1, hidden))
        return d_gates, d_w, None, None


def _run(mode: str, inputs: Tensor, p: dict, hidden: int, batch: int, mask: Tensor | None,
         first_partial: int) -> tuple[Tensor, Tensor]:
    """One direction of one layer over time-major projected inputs [T, B, G*H]."""
    w_hh_t = p["w_hh"].t()
    h = inputs.new_zeros(batch, hidden)
    c = inputs.new_zeros(batch, hidden) if mode == "LSTM" else None
    if mode == "GRU":
        b_hh = p["b_hh"] if p["b_hh"] is not None else inputs.new_zeros(3 * hidden)
    if mode == "LSTM" and FUSED_LSTM:
        hs = _LSTMLayer.apply(inputs, p["w_hh"], mask, first_partial)
        return hs, hs[-1]
    outputs = []
    # unbind, not inputs[t]: its backward stacks the step gradients once instead of T full-size adds.
    for t, step in enumerate(inputs.unbind(0)):
        if mode == "LSTM":
            # chunk, not slicing: its backward is one cat, where each slice's backward zero-fills a
            # full-width gradient and adds it up (measured: a fifth of the step).
            i, f, g, o = torch.addmm(step, h, w_hh_t).chunk(4, 1)
            new_c = torch.addcmul(f.sigmoid() * c, i.sigmoid(), g.tanh())
            new_h = o.sigmoid() * new_c.tanh()
        elif mode == "GRU":
            x_rz, x_n = step.split([2 * hidden, hidden], 1)
            h_rz, h_n = torch.addmm(b_hh, h, w_hh_t).split([2 * hidden, hidden], 1)
            r, z = (x_rz + h_rz).sigmoid().chunk(2, 1)
            n = torch.addcmul(x_n, r, h_n).tanh()
            new_h = torch.addcmul(n, z, h - n)
        else:
            pre = torch.addmm(step, h, w_hh_t)
            new_h = pre.tanh() if mode == "RNN_TANH" else pre.relu()
        if mask is not None and t >= first_partial:  # freeze finished sequences
            new_h = torch.where(mask[t], new_h, h)
            if c is not None:
                new_c = torch.where(mask[t], new_c, c)
        h = new_h
        if c is not None:
            c = new_c
        outputs.append(h)
    return torch.stack(outputs), h
