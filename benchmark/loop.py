"""An explicit cell loop over the parameters of an nn.RNN / nn.LSTM / nn.GRU.

Example: rnnbench train --task mnist --arch lstm --impl loop

``loop_forward(rnn, x, lengths)`` computes what ``rnn`` itself computes (same
parameters, same equations, same outputs and gradients within float tolerance)
with one fused input projection for every time step and both directions
(``x @ W_ih^T`` as a single matmul), then the recurrent matmul (``addmm``) and
the gate nonlinearities per step. LSTM and GRU run their steps in an autograd
Function with a hand-written backward (no graph per step, W_hh's gradient as
one GEMM over all steps). The nn module stays the parameter holder, so state
dicts and checkpoints are the same for every implementation.

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

from .fused import FusedGRULayer, FusedLSTMLayer

# One kernel each for grad * y * (1 - y) and grad * (1 - y²), where composing them would take three or four.
_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input


def _hold_finished(running: Tensor, *grads: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Backward through a step where rows with ``running`` False kept their state: their gradients pass
    straight to the previous step (second list), the step's own gradients are zero for them (first list)."""
    return [g * running for g in grads], [g * ~running for g in grads]


def loop_forward(rnn: nn.RNNBase, x: Tensor, lengths: Tensor | None = None,
                 fused: bool = False) -> tuple[Tensor, Tensor]:
    """x [B, T, F] (batch first) -> output [B, T, D*H] (zeros at padding), h_n [L*D, B, H] (as ``rnn``).

    ``fused``: LSTM/GRU layers run in the C++ kernels of benchmark/fused.py (both directions of a layer
    together) instead of the Python ones here."""
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
        # One input projection for all steps and both directions. The fused layer walks the backward half
        # backwards; the Python loop reverses it afterwards, since reverse(x) @ W = reverse(x @ W).
        w_ih = torch.cat([p["w_ih"] for p in params]) if directions == 2 else params[0]["w_ih"]
        bias = torch.cat([_input_bias(rnn.mode, p) for p in params]) if directions == 2 \
            else _input_bias(rnn.mode, params[0])
        projected = F.linear(seq, w_ih, bias)
        if fused and rnn.mode in ("LSTM", "GRU"):
            # Every direction in one C++ layer: the backward one walks time backwards in place (no reversed
            # copies, no chunk, no concatenation).
            seq, last = _run_fused(rnn.mode, projected, params, rnn.hidden_size, mask, first_partial)
            h_n.extend(last)
        else:
            # One direction: no chunk, whose backward would copy the whole gradient once more.
            projected = projected.chunk(directions, dim=-1) if directions == 2 else (projected,)
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
    """Bias folded into the input projection: b_ih + b_hh for LSTM/RNN; for GRU b_ih + b_hh's r and z parts,
    since b_hn sits inside r ⊙ (h W_hn^T + b_hn) and stays with the recurrent matmul."""
    if p["b_ih"] is None:
        return None
    if mode != "GRU":
        return p["b_ih"] + p["b_hh"]
    hidden = p["b_hh"].numel() // 3
    return p["b_ih"] + torch.cat([p["b_hh"][: 2 * hidden], p["b_hh"].new_zeros(hidden)])


class _LSTMLayer(torch.autograd.Function):
    """One LSTM direction over projected inputs with hand-written BPTT: per step one addmm forward and
    one mm backward, no autograd graph, sigmoid/tanh backward as single kernels, and W_hh's gradient as
    a single large GEMM over all steps."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        steps, batch, width = gates_x.shape
        hidden = width // 4
        acts = torch.empty_like(gates_x)  # i, f, g, o after their nonlinearities
        hs = gates_x.new_empty(steps, batch, hidden)
        cs = gates_x.new_empty(steps, batch, hidden)
        tanh_cs = gates_x.new_empty(steps, batch, hidden)  # kept: backward needs tanh(c) again
        h = c = gates_x.new_zeros(batch, hidden)
        w_t = w_hh.t()
        for t in range(steps):
            a = torch.addmm(gates_x[t], h, w_t, out=acts[t])
            a[:, : 2 * hidden].sigmoid_()
            a[:, 2 * hidden: 3 * hidden].tanh_()
            a[:, 3 * hidden:].sigmoid_()
            i, f, g, o = a.chunk(4, 1)
            masked = mask is not None and t >= first_partial  # finished sequences keep their state
            if masked:
                torch.where(mask[t], torch.addcmul(f * c, i, g), c, out=cs[t])
            else:
                torch.addcmul(f * c, i, g, out=cs[t])
            torch.tanh(cs[t], out=tanh_cs[t])
            if masked:
                torch.where(mask[t], o * tanh_cs[t], h, out=hs[t])
            else:
                torch.mul(o, tanh_cs[t], out=hs[t])
            h, c = hs[t], cs[t]
        ctx.save_for_backward(acts, hs, cs, tanh_cs, w_hh, mask)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    def backward(ctx, d_hs: Tensor):
        acts, hs, cs, tanh_cs, w_hh, mask = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        d_gates = torch.empty_like(acts)
        dh = hs.new_zeros(batch, hidden)
        dc = hs.new_zeros(batch, hidden)
        for t in reversed(range(steps)):
            dh += d_hs[t]
            masked = mask is not None and t >= ctx.first_partial
            if masked:
                (dh, dc), (dh_pass, dc_pass) = _hold_finished(mask[t], dh, dc)
            i, f, g, o = acts[t].chunk(4, 1)
            di, df, dg, do = d_gates[t].chunk(4, 1)
            dc = dc + torch.ops.aten.tanh_backward(dh * o, tanh_cs[t])
            _sigmoid_backward(dh * tanh_cs[t], o, grad_input=do)
            _sigmoid_backward(dc * g, i, grad_input=di)
            if t > 0:
                _sigmoid_backward(dc * cs[t - 1], f, grad_input=df)
            else:
                df.zero_()
            _tanh_backward(dc * i, g, grad_input=dg)
            dc = dc * f
            dh = torch.mm(d_gates[t], w_hh)
            if masked:
                dh += dh_pass
                dc += dc_pass
        d_w = torch.mm(d_gates[1:].reshape(-1, 4 * hidden).t(), hs[:-1].reshape(-1, hidden))
        return d_gates, d_w, None, None


class _GRULayer(torch.autograd.Function):
    """One GRU direction with hand-written BPTT, as _LSTMLayer. ``gates_x`` is x W_ih^T + b_ih with b_hh's r
    and z parts folded in (see _input_bias); b_hn stays here, inside r ⊙ (h W_hn^T + b_hn):
    r, z = σ(gates_x[r, z] + h W_h[r, z]^T), n = tanh(gates_x[n] + r ⊙ (h W_hn^T + b_hn)), h' = n + z ⊙ (h − n).
    Per step two addmm forward and two backward (r, z apart from n, so no gradient is copied or concatenated)
    and sigmoid/tanh backward as single kernels."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, b_hn: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        steps, batch, width = gates_x.shape
        hidden = width // 3
        acts = torch.empty_like(gates_x)  # r, z, n after their nonlinearities
        hidden_n = gates_x.new_empty(steps, batch, hidden)  # h W_hn^T + b_hn, which r multiplies
        hs = gates_x.new_empty(steps, batch, hidden)
        h = gates_x.new_zeros(batch, hidden)
        w_rz_t, w_n_t = w_hh[: 2 * hidden].t(), w_hh[2 * hidden:].t()
        for t in range(steps):
            rz = torch.addmm(gates_x[t, :, : 2 * hidden], h, w_rz_t, out=acts[t, :, : 2 * hidden]).sigmoid_()
            torch.addmm(b_hn, h, w_n_t, out=hidden_n[t])
            n = torch.addcmul(gates_x[t, :, 2 * hidden:], rz[:, :hidden], hidden_n[t], out=acts[t, :, 2 * hidden:])
            n.tanh_()
            if mask is not None and t >= first_partial:  # finished sequences keep their state
                torch.where(mask[t], torch.addcmul(n, rz[:, hidden:], h - n), h, out=hs[t])
            else:
                torch.addcmul(n, rz[:, hidden:], h - n, out=hs[t])
            h = hs[t]
        ctx.save_for_backward(acts, hidden_n, hs, w_hh, mask)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    def backward(ctx, d_hs: Tensor):
        acts, hidden_n, hs, w_hh, mask = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        d_gates = torch.empty_like(acts)  # at the pre-activations of r, z, n: the gradient of gates_x
        d_hidden_n = torch.empty_like(hs)  # at h W_hn^T + b_hn: r ⊙ dn
        w_rz, w_n = w_hh[: 2 * hidden], w_hh[2 * hidden:]
        zeros = hs.new_zeros(batch, hidden)
        dh = hs.new_zeros(batch, hidden)
        for t in reversed(range(steps)):
            dh += d_hs[t]
            masked = mask is not None and t >= ctx.first_partial
            if masked:
                (dh,), (dh_pass,) = _hold_finished(mask[t], dh)
            r, z, n = acts[t].chunk(3, 1)
            h_prev = hs[t - 1] if t > 0 else zeros
            dh_z = dh * z
            dn = _tanh_backward(dh - dh_z, n, grad_input=d_gates[t, :, 2 * hidden:])
            _sigmoid_backward(dh * (h_prev - n), z, grad_input=d_gates[t, :, hidden: 2 * hidden])
            torch.mul(dn, r, out=d_hidden_n[t])
            _sigmoid_backward(dn * hidden_n[t], r, grad_input=d_gates[t, :, :hidden])
            dh = torch.addmm(dh_z, d_gates[t, :, : 2 * hidden], w_rz).addmm_(d_hidden_n[t], w_n)
            if masked:
                dh += dh_pass
        # W_hh's gradient as two large GEMMs over every step; h_0 = 0 adds nothing, so step 0 is left out.
        previous = hs[:-1].reshape(-1, hidden)
        d_w = torch.cat([torch.mm(d_gates[1:, :, : 2 * hidden].reshape(-1, 2 * hidden).t(), previous),
                         torch.mm(d_hidden_n[1:].reshape(-1, hidden).t(), previous)])
        return d_gates, d_w, d_hidden_n.sum((0, 1)), None, None


def _run_fused(mode: str, projected: Tensor, params: list[dict], hidden: int, mask: Tensor | None,
               first_partial: int) -> tuple[Tensor, list[Tensor]]:
    """Every direction of one LSTM/GRU layer in benchmark/fused.py's kernels: projected [T, B, D*G*H] ->
    output [T, B, D*H] and each direction's last state (the backward direction's is at time 0)."""
    def per_direction(tensors: list[Tensor]) -> Tensor:  # [D, ...]; one direction as a view, not a copy
        return torch.stack(tensors) if len(tensors) == 2 else tensors[0].unsqueeze(0)

    w_hh = per_direction([p["w_hh"] for p in params])
    if mode == "GRU":
        b_hn = per_direction([p["b_hh"][2 * hidden:] if p["b_hh"] is not None else projected.new_zeros(hidden)
                              for p in params])
        hs = FusedGRULayer.apply(projected, w_hh, b_hn, mask, first_partial)
    else:
        hs = FusedLSTMLayer.apply(projected, w_hh, mask, first_partial)
    last = [hs[-1, :, :hidden]] + ([hs[0, :, hidden:]] if len(params) == 2 else [])
    return hs, last


def _run(mode: str, inputs: Tensor, p: dict, hidden: int, batch: int, mask: Tensor | None,
         first_partial: int) -> tuple[Tensor, Tensor]:
    """One direction of one layer over time-major projected inputs [T, B, G*H]."""
    if mode == "GRU":
        b_hn = p["b_hh"][2 * hidden:] if p["b_hh"] is not None else inputs.new_zeros(hidden)
        hs = _GRULayer.apply(inputs, p["w_hh"], b_hn, mask, first_partial)
        return hs, hs[-1]
    if mode == "LSTM":
        hs = _LSTMLayer.apply(inputs, p["w_hh"], mask, first_partial)
        return hs, hs[-1]
    # The plain RNN: one op per step, autograd is as fast as a hand-written backward would be.
    w_hh_t = p["w_hh"].t()
    h = inputs.new_zeros(batch, hidden)
    outputs = []
    # unbind, not inputs[t]: its backward stacks the step gradients once instead of T full-size adds.
    for t, step in enumerate(inputs.unbind(0)):
        pre = torch.addmm(step, h, w_hh_t)
        new_h = pre.tanh() if mode == "RNN_TANH" else pre.relu()
        if mask is not None and t >= first_partial:  # freeze finished sequences
            new_h = torch.where(mask[t], new_h, h)
        h = new_h
        outputs.append(h)
    return torch.stack(outputs), h
