"""S models of one architecture as one: their parameters stacked along a leading seed dimension, one batched product
per step.

Example: rnnbench confirm --task addition --arch lstm --seeds 3   # the 3 seeds train as one StackedModel

``StackedModel(models)`` holds, for every parameter of S ``benchmark.models.Model`` of the same shape, one tensor
[S, ...]; its forward takes x [S, B, T, F] (each seed its own batch) and right-padding ``lengths`` [S, B] and returns
logits [S, B, C] or [S, B, T, C], the same numbers each model would compute on its own batch. The recurrence is the
cell loop of benchmark/loop.py with a seed dimension added: one input projection for all steps (``bmm``), then per
step one ``baddbmm`` (S recurrent products at once) and the gate nonlinearities, autograd doing the backward.
Padding follows packing's semantics as loop.py's does: a row's state stops changing after its last real step, the
backward direction runs over each row's real steps reversed, outputs at padded steps are zero.

Stacked here: the ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` cells (rnn, lstm, gru and their bidirectional forms), any
layers and directions. Every other cell (indrnn, mingru, minlstm, plugins) has no stacked path: ``stackable`` says
why, and its seeds train one after the other. Dropout masks are drawn for the stack at once, so with dropout a seed
trained here sees other masks than the same seed trained alone (equal within noise, not within float tolerance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells.native import NativeCell

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


def stackable(models: list) -> str:
    """Why ``models`` cannot train as one StackedModel ("" when they can)."""
    cell = models[0].cell
    if not isinstance(cell, NativeCell) or cell.rnn.mode not in MODES:
        return f"{models[0].arch} has no stacked kernel (only the nn.RNN / nn.LSTM / nn.GRU cells have one)"
    shapes = {tuple((name, tuple(p.shape)) for name, p in m.named_parameters()) for m in models}
    if len(shapes) > 1 or len({m.readout for m in models}) > 1:
        return "the seeds' models differ in shape"
    return ""


class StackedModel(nn.Module):
    """The parameters of ``models`` stacked ([S, ...] each, in ``named_parameters`` order); see the module doc."""

    def __init__(self, models: list):
        super().__init__()
        first = models[0]
        rnn = first.cell.rnn
        self.mode, self.readout = rnn.mode, first.readout
        self.num_layers, self.hidden, self.directions = rnn.num_layers, rnn.hidden_size, first.directions
        self.rnn_dropout, self.head_dropout = rnn.dropout, first.dropout.p
        self.names = [name for name, _ in first.named_parameters()]
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models]).clone())
            for name in self.names)

    def param(self, name: str) -> Tensor | None:
        return self.stacked[self.names.index(name)] if name in self.names else None

    @torch.no_grad()
    def copy_into(self, model, seed_index: int) -> None:
        """Write seed ``seed_index``'s slice of every parameter into ``model`` (a plain single-seed Model)."""
        for name, stacked in zip(self.names, self.stacked, strict=True):
            model.get_parameter(name).copy_(stacked[seed_index])

    @torch.no_grad()
    def load_slice(self, model, seed_index: int) -> None:
        """The inverse of ``copy_into``: ``model``'s parameters into slice ``seed_index``."""
        for name, stacked in zip(self.names, self.stacked, strict=True):
            stacked[seed_index].copy_(model.get_parameter(name))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x [S, B, T, F], lengths CPU int64 [S, B] or None -> logits [S, B, C] (``last``) or [S, B, T, C]."""
        outputs, last = self.recurrence(x, lengths)
        features = last if self.readout == "last" else outputs
        if self.head_dropout and self.training:
            features = F.dropout(features, self.head_dropout, training=True)
        shape = features.shape
        flat = features.reshape(shape[0], -1, shape[-1])
        logits = torch.baddbmm(self.param("head.bias").unsqueeze(1), flat, self.param("head.weight").transpose(1, 2))
        return logits.reshape(*shape[:-1], -1)

    def recurrence(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> outputs [S, B, T, D*H] (zeros at padding), last [S, B, D*H] (each direction's final state)."""
        seeds, batch, steps = x.shape[:3]
        seq = x.transpose(1, 2)  # [S, T, B, F]: each step's slice is contiguous rows
        mask, reverse_index, first_partial = None, None, steps
        if lengths is not None and int(lengths.min()) < steps:
            first_partial = int(lengths.min())  # before this step every row of every seed is still running
            device_lengths = lengths.to(x.device)
            positions = torch.arange(steps, device=x.device)[None, :, None]
            valid = positions < device_lengths[:, None, :]  # [S, T, B]
            mask = valid.unsqueeze(-1)
            reverse_index = torch.where(valid, device_lengths[:, None, :] - 1 - positions, positions)

        def reverse(tensor: Tensor) -> Tensor:  # [S, T, B, X], each row reversed within its own length
            if reverse_index is None:
                return tensor.flip(1)
            return tensor.gather(1, reverse_index.unsqueeze(-1).expand_as(tensor))

        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                inputs = seq if direction == 0 else reverse(seq)
                output, final = self._direction(inputs, suffix, mask, first_partial)
                outputs.append(output if direction == 0 else reverse(output))
                finals.append(final)
            seq = torch.cat(outputs, dim=-1) if self.directions == 2 else outputs[0]
            if layer < self.num_layers - 1 and self.rnn_dropout and self.training:
                seq = F.dropout(seq, self.rnn_dropout, training=True)
        if mask is not None:
            seq = seq * mask  # packing's zeros at padded steps
        return seq.transpose(1, 2), torch.cat(finals[-self.directions:], dim=-1)

    def _direction(self, inputs: Tensor, suffix: str, mask: Tensor | None,
                   first_partial: int) -> tuple[Tensor, Tensor]:
        """One direction of one layer: inputs [S, T, B, F] -> hidden states [S, T, B, H] and the last [S, B, H]."""
        seeds, steps, batch, _ = inputs.shape
        w_ih, w_hh = self.param("cell.rnn.weight_ih" + suffix), self.param("cell.rnn.weight_hh" + suffix)
        b_ih, b_hh = self.param("cell.rnn.bias_ih" + suffix), self.param("cell.rnn.bias_hh" + suffix)
        hidden = self.hidden
        gru = self.mode == "GRU"
        bias = None
        if b_ih is not None:  # folded into the input projection; GRU's b_hn stays inside r ⊙ (h W_hn + b_hn)
            bias = b_ih + (torch.cat([b_hh[:, : 2 * hidden], torch.zeros_like(b_hh[:, 2 * hidden:])], 1) if gru
                           else b_hh)
        flat = inputs.reshape(seeds, steps * batch, -1)
        projected = (torch.baddbmm(bias.unsqueeze(1), flat, w_ih.transpose(1, 2)) if bias is not None
                     else torch.bmm(flat, w_ih.transpose(1, 2))).reshape(seeds, steps, batch, -1)
        w_t = w_hh.transpose(1, 2)  # [S, H, G*H]
        h = inputs.new_zeros(seeds, batch, hidden)
        c = h
        if gru:
            w_rz_t, w_n_t = w_t[..., : 2 * hidden], w_t[..., 2 * hidden:]
            b_hn = (b_hh[:, 2 * hidden:] if b_hh is not None else h.new_zeros(seeds, hidden)).unsqueeze(1)
        states = []
        # unbind, not projected[:, t]: each step's backward would otherwise add into a zero tensor of all steps.
        for t, gates_x in enumerate(projected.unbind(1)):
            if self.mode == "LSTM":
                gates = torch.baddbmm(gates_x, h, w_t)
                i, f, g, o = gates.chunk(4, -1)
                new_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                new_h = torch.sigmoid(o) * torch.tanh(new_c)
            elif gru:
                rz = torch.sigmoid(torch.baddbmm(gates_x[..., : 2 * hidden], h, w_rz_t))
                r, z = rz.chunk(2, -1)
                n = torch.tanh(gates_x[..., 2 * hidden:] + r * torch.baddbmm(b_hn, h, w_n_t))
                new_h = n + z * (h - n)
            else:
                pre = torch.baddbmm(gates_x, h, w_t)
                new_h = pre.tanh() if self.mode == "RNN_TANH" else pre.relu()
            if mask is not None and t >= first_partial:  # finished rows keep their state
                new_h = torch.where(mask[:, t], new_h, h)
                if self.mode == "LSTM":
                    new_c = torch.where(mask[:, t], new_c, c)
            h = new_h
            if self.mode == "LSTM":
                c = new_c
            states.append(h)
        return torch.stack(states, dim=1), h
