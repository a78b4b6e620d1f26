"""The recurrent models: one class over nn.RNN / nn.LSTM / nn.GRU, architectures as data, and one over a
registered cell.

Example: rnnbench train --task mnist --arch bigru --hidden-size 128 --num-layers 2

Readouts: ``last`` classifies from the final hidden state ``h_n`` of the top
layer (both directions concatenated for bidirectional models, never
``output[:, -1]``, which for the backward direction has seen one step only);
``per_step`` emits one output per time step. Initial states are zeros sized
from the input, so any batch size and sequence length works. A cell a plugin registered
(``benchmark.registry``) runs in ``CellModel``: the cell, then the same dropout and readout head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import fused, kernel_choice
from .catalog import ARCHITECTURES, IMPLS, READOUTS
from .loop import loop_forward
from .registry import CELLS as REGISTERED_CELLS

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

class RecurrentModel(nn.Module):
    def __init__(self, arch: str, input_size: int, hidden_size: int, output_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, readout: str = "last", impl: str = "auto"):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if impl == "fused" and not fused.available():
            raise ValueError(f"impl 'fused' is unavailable: {fused.unavailable_reason()}; use --impl aten or loop")
        spec = ARCHITECTURES[arch]
        self.arch = arch
        self.readout = readout
        self.impl = impl
        # Measured once before training (prepare_kernels), not per forward: every step runs one kernel.
        self.auto_choice: str | None = None
        self.cell = spec["cell"]
        self.bidirectional = spec["bidirectional"]
        self.directions = 2 if self.bidirectional else 1
        self.is_lstm = spec["cell"] == "lstm"
        self.rnn = CELLS[spec["cell"]](
            input_size, hidden_size, num_layers, batch_first=True, bidirectional=self.bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x [B, T, F] -> logits [B, C] (``last``) or [B, T, C] (``per_step``).

        ``lengths`` (CPU int64 [B]) marks right padding. Packing is needed only where padding
        would leak into real steps: the backward direction, and the final state.
        """
        impl = self.resolved_impl(x.device, self.training and torch.is_grad_enabled())
        if impl == "fused" and not fused.supports(x, self.rnn.weight_hh_l0):
            if self.impl == "fused":
                raise ValueError(f"impl 'fused' takes float32 CPU tensors, not {x.dtype} with "
                                 f"{self.rnn.weight_hh_l0.dtype} weights; use --impl loop or aten")
            impl = "aten"  # auto: a float64 or bf16 model runs ATen's kernels
        if impl in ("loop", "fused"):
            output, h_n = loop_forward(self.rnn, x, lengths, fused=impl == "fused")
            if self.readout == "last":
                return self.head(self.dropout(torch.cat(list(h_n[-self.directions:]), dim=-1)))
            return self.head(self.dropout(output))
        steps = x.size(1)
        packed = lengths is not None and (self.bidirectional or self.readout == "last")
        if packed:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        if impl == "aten":
            output, state = self._without_onednn(x)
        else:
            output, state = self.rnn(x)
        if self.readout == "last":
            h_n = state[0] if self.is_lstm else state
            # h_n is [layers * directions, B, H]; the top layer's directions are the last rows.
            features = torch.cat(list(h_n[-self.directions:]), dim=-1)
            return self.head(self.dropout(features))
        if packed:
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=steps)
        return self.head(self.dropout(output))

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
        """``native``, ``aten``, ``loop`` or ``fused``: the explicit choice; for ``auto``, the kernel
        ``prepare_kernels`` measured fastest when training on the CPU, and ``native`` otherwise (inference, CUDA,
        or a model never prepared). ``forward`` runs ``aten`` in place of an automatic ``fused`` for a model that is
        not float32."""
        if self.impl == "fused" and device.type != "cpu":
            raise ValueError(f"impl 'fused' runs on the CPU only, not {device.type}; use --impl auto or native")
        if self.impl != "auto":
            return self.impl
        if training and device.type == "cpu" and self.auto_choice:
            return self.auto_choice
        return "native"


def prepare_kernels(model: nn.Module, device: torch.device, sample_batch=None) -> str | None:
    """Before the first epoch's clock starts: for ``--impl auto`` on the CPU, measure which kernel trains batches
    like ``sample_batch()`` fastest (``kernel_choice``; cached per machine and shape), building the fused C++ cells
    if they are a candidate (an explicit ``--impl fused`` built them in the constructor). ``sample_batch`` is a
    function, called only when
    auto measures, and inside ``fork_rng``: a task that batches from the global random stream trains as if it had
    never been called. Returns the impl training will run (None for a registered cell, which runs its own
    forward)."""
    if not isinstance(model, RecurrentModel):
        return None
    if model.impl == "auto" and device.type == "cpu" and sample_batch is not None:
        with torch.random.fork_rng(devices=[]):
            batch = sample_batch()
        model.auto_choice = kernel_choice.choose(model, batch)
    return model.resolved_impl(device, training=True)


class CellModel(nn.Module):
    """A registered cell + dropout + a Linear head: on ``last`` (readout ``last``) or on ``outputs``
    (``per_step``); the same ``forward(x, lengths) -> logits`` as ``RecurrentModel``."""

    def __init__(self, arch: str, input_size: int, hidden_size: int, output_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, readout: str = "last", impl: str = "auto"):
        super().__init__()
        if arch not in REGISTERED_CELLS:
            raise ValueError(f"unknown registered cell {arch!r}; registered: {', '.join(REGISTERED_CELLS) or 'none'}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if impl not in ("auto", "native"):
            raise ValueError(f"impl {impl!r} applies to the built-in architectures only; a registered cell runs "
                             "its own forward (--impl auto)")
        spec = REGISTERED_CELLS[arch]
        self.arch = arch
        self.readout = readout
        self.impl = impl
        self.bidirectional = spec.bidirectional
        self.directions = 2 if spec.bidirectional else 1
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.cell = spec.cls(input_size, hidden_size, num_layers=num_layers, dropout=dropout,
                             bidirectional=spec.bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outputs, last = self.cell(x, lengths)
        return self.head(self.dropout(last if self.readout == "last" else outputs))

    def resolved_impl(self, device: torch.device, training: bool = True) -> str:
        return "native"  # the cell's own forward


def build_model(config, task) -> RecurrentModel | CellModel:
    kind = CellModel if config.arch in REGISTERED_CELLS else RecurrentModel
    return kind(
        config.arch, task.input_size, config.hidden_size, task.output_size,
        num_layers=config.num_layers, dropout=config.dropout, readout=task.readout, impl=config.impl,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
