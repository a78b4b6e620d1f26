"""The built-in cells: ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` under the cell contract, with a choice of kernel.

Example: rnnbench train --task mnist --arch bigru --hidden-size 128 --num-layers 2 --impl fused

``forward(x, lengths)`` returns ``(outputs [B, T, D*H], last [B, D*H])`` as every registered cell does; ``last``
is the top layer's ``h_n`` (both directions concatenated), the state after each row's own last real step, never
``outputs[:, -1]``, which for the backward direction has seen one step only. Initial states are zeros sized from
the input, so any batch size and sequence length works.

``impl`` picks the kernel: ``native`` (the nn module), ``aten`` (the same with oneDNN off), ``loop`` (an explicit
cell loop over the same weights), ``fused`` (that loop with C++ LSTM/GRU steps) or ``auto`` (what
``benchmark.kernel_choice`` measured fastest for this shape before training; ``native`` otherwise). Every kernel
runs the same parameters, so a checkpoint loads whatever kernel trained it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import fused
from ..catalog import IMPLS
from ..loop import loop_forward

MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class NativeCell(nn.Module):
    kind = "rnn"  # which nn module: set by the subclasses below

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, impl: str = "auto"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if impl == "fused" and not fused.available():
            raise ValueError(f"impl 'fused' is unavailable: {fused.unavailable_reason()}; use --impl aten or loop")
        self.impl = impl
        # Measured once before training (benchmark.kernel_choice.prepare_kernels), not per forward: every step runs one.
        self.auto_choice: str | None = None
        self.bidirectional = bidirectional
        self.directions = 2 if bidirectional else 1
        self.rnn = MODULES[self.kind](input_size, hidden_size, num_layers, batch_first=True,
                                      bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, T, F] -> (outputs [B, T, D*H], zeros at padding; last [B, D*H]).

        ``lengths`` (CPU int64 [B]) marks right padding. Packing is needed only where padding would reach real
        steps, the backward direction; one direction reads each row's last real output instead.
        """
        impl = self.resolved_impl(x.device, self.training and torch.is_grad_enabled())
        if impl == "fused" and not fused.supports(x, self.rnn.weight_hh_l0):
            if self.impl == "fused":
                raise ValueError(f"impl 'fused' takes float32 CPU tensors, not {x.dtype} with "
                                 f"{self.rnn.weight_hh_l0.dtype} weights; use --impl loop or aten")
            impl = "aten"  # auto: a float64 or bf16 model runs ATen's kernels
        if impl in ("loop", "fused"):
            output, h_n = loop_forward(self.rnn, x, lengths, fused=impl == "fused")
            return output, torch.cat(list(h_n[-self.directions:]), dim=-1)
        steps = x.size(1)
        padded = lengths is not None and int(lengths.min()) < steps
        packed = padded and self.bidirectional
        if packed:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, state = self._without_onednn(x) if impl == "aten" else self.rnn(x)
        if packed:
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=steps)
        h_n = state[0] if isinstance(state, tuple) else state
        # h_n is [layers * directions, B, H]; the top layer's directions are the last rows.
        last = torch.cat(list(h_n[-self.directions:]), dim=-1)
        if padded and not packed:
            rows = torch.arange(output.size(0), device=output.device)
            last = output[rows, (lengths - 1).to(output.device)]
            output = output.masked_fill((torch.arange(steps)[None, :] >= lengths[:, None]).to(output.device)[..., None],
                                        0.0)
        return output, last

    def _without_onednn(self, x):
        # The autograd graph records the ATen kernels chosen here, so backward runs them too. The flag is
        # process-wide: fine for rnnbench's one training thread per process, not for threaded callers.
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return self.rnn(x)
        finally:
            torch.backends.mkldnn.enabled = previous

    def resolved_impl(self, device: torch.device, training: bool = True) -> str:
        """``native``, ``aten``, ``loop`` or ``fused``: the explicit choice; for ``auto``, the kernel measured
        fastest when training on the CPU, and ``native`` otherwise (inference, CUDA, or never measured).
        ``forward`` runs ``aten`` in place of an automatic ``fused`` for a model that is not float32."""
        if self.impl == "fused" and device.type != "cpu":
            raise ValueError(f"impl 'fused' runs on the CPU only, not {device.type}; use --impl auto or native")
        if self.impl != "auto":
            return self.impl
        if training and device.type == "cpu" and self.auto_choice:
            return self.auto_choice
        return "native"


class RNN(NativeCell):
    kind = "rnn"


class LSTM(NativeCell):
    kind = "lstm"


class GRU(NativeCell):
    kind = "gru"
