"""S models of one architecture as one: their parameters stacked along a leading seed dimension; one batched input
projection, then per step one batched recurrent product (or, for LSTM and GRU on the CPU, the fused C++ cells seed
by seed on the stack's slices, which measured faster there).

Example: rnnbench confirm --task addition --arch lstm --seeds 3   # the 3 seeds train as one StackedModel

``StackedModel(models)`` holds, for every parameter of S ``benchmark.models.Model`` of the same shape, one tensor
[S, ...]; its forward takes x [S, B, T, F] (each seed its own batch) and right-padding ``lengths`` [S, B] and returns
logits [S, B, C] or [S, B, T, C], the same numbers each model would compute on its own batch. The recurrence is the
cell loop of benchmark/loop.py with a seed dimension added: one input projection for all steps (``bmm``), then per
step one ``baddbmm`` (S recurrent products at once) and the gate nonlinearities; LSTM and GRU run loop.py's
hand-written backward (per step one ``bmm``, W_hh's gradient as one batched product over all steps), the plain RNN
autograd's.
Padding follows packing's semantics as loop.py's does: a row's state stops changing after its last real step, the
backward direction runs over each row's real steps reversed, outputs at padded steps are zero.

Stacked here: the ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` cells (rnn, lstm, gru and their bidirectional forms), any
layers and directions. Every other cell (indrnn, mingru, minlstm, lru, s6, slstm, their bidirectional forms,
plugins) has no stacked path: ``stackable`` says
why, and its seeds train one after the other. Dropout masks are drawn for the stack at once, so with dropout a seed
trained here sees other masks than the same seed trained alone (equal within noise, not within float tolerance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused
from .cells.native import NativeCell
from .loop import _hold_finished, _sigmoid_backward, _tanh_backward

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
        self.prefer_fused = True
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models]).clone())
            for name in self.names)

    def param(self, name: str) -> Tensor | None:
        return self.stacked[self.names.index(name)] if name in self.names else None

    def kernel(self, x: Tensor, w_hh: Tensor) -> str:
        """``fused`` (benchmark/fused.py's C++ cells, seed by seed) where they run and ``prefer_fused`` is set, else
        ``bmm`` (one batched product per step)."""
        usable = self.mode in ("LSTM", "GRU") and fused.supports(x, w_hh) and fused.available()
        return "fused" if self.prefer_fused and usable else "bmm"

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
        if gru or self.mode == "LSTM":
            b_hn = (b_hh[:, 2 * hidden:] if b_hh is not None else inputs.new_zeros(seeds, hidden)).unsqueeze(1)
            if self.kernel(projected, w_hh) == "fused":
                hs = _per_seed_fused(projected, w_hh, b_hn if gru else None, mask, first_partial)
            elif gru:
                hs = _StackedGRU.apply(projected, w_hh, b_hn, mask, first_partial)
            else:
                hs = _StackedLSTM.apply(projected, w_hh, mask, first_partial)
            return hs, hs[:, -1]
        # The plain RNN: one op per step, autograd is as fast as a hand-written backward would be.
        w_t = w_hh.transpose(1, 2)
        h = inputs.new_zeros(seeds, batch, hidden)
        states = []
        # unbind, not projected[:, t]: each step's backward would otherwise add into a zero tensor of all steps.
        for t, gates_x in enumerate(projected.unbind(1)):
            pre = torch.baddbmm(gates_x, h, w_t)
            new_h = pre.tanh() if self.mode == "RNN_TANH" else pre.relu()
            if mask is not None and t >= first_partial:  # finished rows keep their state
                new_h = torch.where(mask[:, t], new_h, h)
            h = new_h
            states.append(h)
        return torch.stack(states, dim=1), h


class _StackedLSTM(torch.autograd.Function):
    """loop.py's LSTM direction with a seed dimension: gates_x [S, T, B, 4H], w_hh [S, 4H, H] -> hs [S, T, B, H].
    Per step one baddbmm forward and one bmm backward, no autograd graph per step, and W_hh's gradient as one
    batched product over all steps."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        seeds, steps, batch, width = gates_x.shape
        hidden = width // 4
        acts = torch.empty_like(gates_x)  # i, f, g, o after their nonlinearities
        hs, cs, tanh_cs = (gates_x.new_empty(seeds, steps, batch, hidden) for _ in range(3))
        h = c = gates_x.new_zeros(seeds, batch, hidden)
        w_t = w_hh.transpose(1, 2)
        for t in range(steps):
            a = torch.baddbmm(gates_x[:, t], h, w_t, out=acts[:, t])
            a[..., : 2 * hidden].sigmoid_()
            a[..., 2 * hidden: 3 * hidden].tanh_()
            a[..., 3 * hidden:].sigmoid_()
            i, f, g, o = a.chunk(4, -1)
            masked = mask is not None and t >= first_partial  # finished rows keep their state
            if masked:
                torch.where(mask[:, t], torch.addcmul(f * c, i, g), c, out=cs[:, t])
            else:
                torch.addcmul(f * c, i, g, out=cs[:, t])
            torch.tanh(cs[:, t], out=tanh_cs[:, t])
            if masked:
                torch.where(mask[:, t], o * tanh_cs[:, t], h, out=hs[:, t])
            else:
                torch.mul(o, tanh_cs[:, t], out=hs[:, t])
            h, c = hs[:, t], cs[:, t]
        ctx.save_for_backward(acts, hs, cs, tanh_cs, w_hh, mask)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    def backward(ctx, d_hs: Tensor):
        acts, hs, cs, tanh_cs, w_hh, mask = ctx.saved_tensors
        seeds, steps, batch, hidden = hs.shape
        d_gates = torch.empty_like(acts)
        dh = hs.new_zeros(seeds, batch, hidden)
        dc = hs.new_zeros(seeds, batch, hidden)
        for t in reversed(range(steps)):
            dh += d_hs[:, t]
            masked = mask is not None and t >= ctx.first_partial
            if masked:
                (dh, dc), (dh_pass, dc_pass) = _hold_finished(mask[:, t], dh, dc)
            i, f, g, o = acts[:, t].chunk(4, -1)
            di, df, dg, do = d_gates[:, t].chunk(4, -1)
            dc = dc + torch.ops.aten.tanh_backward(dh * o, tanh_cs[:, t])
            _sigmoid_backward(dh * tanh_cs[:, t], o, grad_input=do)
            _sigmoid_backward(dc * g, i, grad_input=di)
            if t > 0:
                _sigmoid_backward(dc * cs[:, t - 1], f, grad_input=df)
            else:
                df.zero_()
            _tanh_backward(dc * i, g, grad_input=dg)
            dc = dc * f
            dh = torch.bmm(d_gates[:, t], w_hh)
            if masked:
                dh += dh_pass
                dc += dc_pass
        d_w = torch.bmm(_seed_major(d_gates[:, 1:]).transpose(1, 2), _seed_major(hs[:, :-1]))
        return d_gates, d_w, None, None


class _StackedGRU(torch.autograd.Function):
    """loop.py's GRU direction with a seed dimension: gates_x [S, T, B, 3H] (b_hh's r and z parts folded in),
    w_hh [S, 3H, H], b_hn [S, 1, H] -> hs [S, T, B, H]."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, b_hn: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        seeds, steps, batch, width = gates_x.shape
        hidden = width // 3
        acts = torch.empty_like(gates_x)  # r, z, n after their nonlinearities
        hidden_n = gates_x.new_empty(seeds, steps, batch, hidden)  # h W_hn^T + b_hn, which r multiplies
        hs = gates_x.new_empty(seeds, steps, batch, hidden)
        h = gates_x.new_zeros(seeds, batch, hidden)
        w_rz_t, w_n_t = w_hh[:, : 2 * hidden].transpose(1, 2), w_hh[:, 2 * hidden:].transpose(1, 2)
        for t in range(steps):
            rz = torch.baddbmm(gates_x[:, t, :, : 2 * hidden], h, w_rz_t, out=acts[:, t, :, : 2 * hidden])
            rz.sigmoid_()
            torch.baddbmm(b_hn, h, w_n_t, out=hidden_n[:, t])
            n = torch.addcmul(gates_x[:, t, :, 2 * hidden:], rz[..., :hidden], hidden_n[:, t],
                              out=acts[:, t, :, 2 * hidden:])
            n.tanh_()
            if mask is not None and t >= first_partial:  # finished rows keep their state
                torch.where(mask[:, t], torch.addcmul(n, rz[..., hidden:], h - n), h, out=hs[:, t])
            else:
                torch.addcmul(n, rz[..., hidden:], h - n, out=hs[:, t])
            h = hs[:, t]
        ctx.save_for_backward(acts, hidden_n, hs, w_hh, mask)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    def backward(ctx, d_hs: Tensor):
        acts, hidden_n, hs, w_hh, mask = ctx.saved_tensors
        seeds, steps, batch, hidden = hs.shape
        d_gates = torch.empty_like(acts)  # at the pre-activations of r, z, n: the gradient of gates_x
        d_hidden_n = torch.empty_like(hs)  # at h W_hn^T + b_hn: r ⊙ dn
        w_rz, w_n = w_hh[:, : 2 * hidden], w_hh[:, 2 * hidden:]
        zeros = hs.new_zeros(seeds, batch, hidden)
        dh = hs.new_zeros(seeds, batch, hidden)
        for t in reversed(range(steps)):
            dh += d_hs[:, t]
            masked = mask is not None and t >= ctx.first_partial
            if masked:
                (dh,), (dh_pass,) = _hold_finished(mask[:, t], dh)
            r, z, n = acts[:, t].chunk(3, -1)
            h_prev = hs[:, t - 1] if t > 0 else zeros
            dh_z = dh * z
            dn = _tanh_backward(dh - dh_z, n, grad_input=d_gates[:, t, :, 2 * hidden:])
            _sigmoid_backward(dh * (h_prev - n), z, grad_input=d_gates[:, t, :, hidden: 2 * hidden])
            torch.mul(dn, r, out=d_hidden_n[:, t])
            _sigmoid_backward(dn * hidden_n[:, t], r, grad_input=d_gates[:, t, :, :hidden])
            dh = torch.baddbmm(dh_z, d_gates[:, t, :, : 2 * hidden], w_rz).baddbmm_(d_hidden_n[:, t], w_n)
            if masked:
                dh += dh_pass
        previous = _seed_major(hs[:, :-1])  # h_0 = 0 adds nothing to W_hh's gradient: step 0 is left out
        d_w = torch.cat([torch.bmm(_seed_major(d_gates[:, 1:, :, : 2 * hidden]).transpose(1, 2), previous),
                         torch.bmm(_seed_major(d_hidden_n[:, 1:]).transpose(1, 2), previous)], dim=1)
        return d_gates, d_w, d_hidden_n.sum((1, 2)).unsqueeze(1), None, None


def _seed_major(tensor: Tensor) -> Tensor:
    """[S, T, B, X] -> [S, T*B, X]: every step of one seed as rows of one matrix (a copy only where the slice is
    not contiguous)."""
    return tensor.reshape(tensor.size(0), -1, tensor.size(-1))



def _per_seed_fused(projected: Tensor, w_hh: Tensor, b_hn: Tensor | None, mask: Tensor | None,
                    first_partial: int) -> Tensor:
    """Each seed's LSTM or GRU direction in benchmark/fused.py's C++ cells, one call per seed on its slice of the
    stacked tensors (so the gradients land in the stack): projected [S, T, B, G*H] -> hs [S, T, B, H]."""
    # unbind, not [seed]: each select's backward would write into a zero tensor the size of the whole stack.
    rows = mask.unbind(0) if mask is not None else [None] * projected.size(0)
    b_hns = b_hn.unbind(0) if b_hn is not None else [None] * projected.size(0)
    hs = []
    for gates_x, w, b, running in zip(projected.unbind(0), w_hh.unbind(0), b_hns, rows, strict=True):
        # each seed's slice is time-major [T, B, G*H] already, as the cells take it
        if b is not None:
            hs.append(fused.FusedGRULayer.apply(gates_x, w.unsqueeze(0), b, running, first_partial))
        else:
            hs.append(fused.FusedLSTMLayer.apply(gates_x, w.unsqueeze(0), running, first_partial))
    return torch.stack(hs)
