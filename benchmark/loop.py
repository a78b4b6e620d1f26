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

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


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


def _run(mode: str, inputs: Tensor, p: dict, hidden: int, batch: int, mask: Tensor | None,
         first_partial: int) -> tuple[Tensor, Tensor]:
    """One direction of one layer over time-major projected inputs [T, B, G*H]."""
    w_hh_t = p["w_hh"].t()
    h = inputs.new_zeros(batch, hidden)
    c = inputs.new_zeros(batch, hidden) if mode == "LSTM" else None
    if mode == "GRU":
        b_hh = p["b_hh"] if p["b_hh"] is not None else inputs.new_zeros(3 * hidden)
    outputs = []
    # unbind, not inputs[t]: its backward stacks the step gradients once instead of T full-size adds.
    for t, step in enumerate(inputs.unbind(0)):
        if mode == "LSTM":
            gates = torch.addmm(step, h, w_hh_t)
            act = gates.sigmoid()  # i, f, o (the g quarter is recomputed with tanh below)
            g = gates[:, 2 * hidden: 3 * hidden].tanh()
            new_c = torch.addcmul(act[:, hidden: 2 * hidden] * c, act[:, :hidden], g)
            new_h = act[:, 3 * hidden:] * new_c.tanh()
        elif mode == "GRU":
            recurrent = torch.addmm(b_hh, h, w_hh_t)
            rz = (step[:, : 2 * hidden] + recurrent[:, : 2 * hidden]).sigmoid()
            n = torch.addcmul(step[:, 2 * hidden:], rz[:, :hidden], recurrent[:, 2 * hidden:]).tanh()
            new_h = torch.addcmul(n, rz[:, hidden:], h - n)
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
