"""The recurrent model: one class over nn.RNN / nn.LSTM / nn.GRU, architectures as data.

Example: rnnbench train --task mnist --arch bigru --hidden-size 128 --num-layers 2

Readouts: ``last`` classifies from the final hidden state ``h_n`` of the top
layer (both directions concatenated for bidirectional models, never
``output[:, -1]``, which for the backward direction has seen one step only);
``per_step`` emits one output per time step. Initial states are zeros sized
from the input, so any batch size and sequence length works.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .loop import loop_forward

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

ARCHITECTURES = {
    "rnn": {"cell": "rnn", "bidirectional": False},
    "lstm": {"cell": "lstm", "bidirectional": False},
    "gru": {"cell": "gru", "bidirectional": False},
    "birnn": {"cell": "rnn", "bidirectional": True},
    "bilstm": {"cell": "lstm", "bidirectional": True},
    "bigru": {"cell": "gru", "bidirectional": True},
}

READOUTS = ("last", "per_step")
IMPLS = ("auto", "native", "loop")

# What `--impl auto` runs when training (autograd on), per device type and cell; inference always runs
# native. Evidence, measured here side by side (AMD EPYC Zen 3, torch 2.14.1, hidden 128, batch 500,
# 28 steps; samples/s of one train step, 1 thread, process CPU time because 3 other jobs shared the
# 2 cores; `rnnbench perf` prints the same comparison at any thread count, README "Performance"):
#   LSTM  native 2,471 | oneDNN off 2,469 | loop 2,549 (autograd loop 2,501)    -> within noise
#   GRU   native 3,457 | oneDNN off 3,536 | loop 3,071                           -> native
#   RNN   native 8,228 | oneDNN off 8,745 | loop 9,522 (nn.RNN: 12,048 unloaded)  -> native
#   LSTM inference (test set, batch 5,000): native 5,774 | loop 3,861             -> native
#   addition (LSTM hidden 10, batch 100, padded): native 26,785 | loop 10,064     -> native below AUTO_MIN_HIDDEN
# Caveat: at 2 threads on cores busy with other jobs (load ~10 on 2 cores) the loop fell to a third of
# nn.LSTM (68 vs 191 samples/s): each of its per-step ops synchronises the threads, the fused kernel
# does not. Run one thread per worker on shared machines (the tuner's default).
# Unloaded, DESIGN.md measured a cell loop at 1.36x nn.LSTM (oneDNN runs its reference `rnn,ref`
# kernel for LSTM training on this processor). oneDNN off never won by more than noise: not used.
# torch.compile is not used: it captures nothing inside nn.LSTM and costs 30-80 s to compile a loop.
# On CUDA cuDNN's fused kernels win (not measured here: no GPU on these machines).
# Decision: native everywhere. The loop's 3 % edge for LSTM at 1 thread is noise, and it loses badly when
# threads contend: benchmarks/epoch_vs_notebook.py, 2 threads, load ~3.5, MNIST batch 500 (samples/s):
#   LSTM native 1,337 vs loop 1,031; BiLSTM native 728 vs loop 482 (GRU and RNN run native either way).
# Re-measure on an idle machine before switching `lstm` back to "loop" here: the table is the only switch.
AUTO_IMPL = {
    "cpu": {"rnn": "native", "lstm": "native", "gru": "native"},
    "cuda": {"rnn": "native", "lstm": "native", "gru": "native"},
}
AUTO_MIN_HIDDEN = 64  # below it the loop's per-step Python overhead dominates (the addition row above)


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
        spec = ARCHITECTURES[arch]
        self.arch = arch
        self.readout = readout
        self.impl = impl
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
        if self.resolved_impl(x.device, self.training and torch.is_grad_enabled()) == "loop":
            output, h_n = loop_forward(self.rnn, x, lengths)
            if self.readout == "last":
                return self.head(self.dropout(torch.cat(list(h_n[-self.directions:]), dim=-1)))
            return self.head(self.dropout(output))
        steps = x.size(1)
        packed = lengths is not None and (self.bidirectional or self.readout == "last")
        if packed:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, state = self.rnn(x)
        if self.readout == "last":
            h_n = state[0] if self.is_lstm else state
            # h_n is [layers * directions, B, H]; the top layer's directions are the last rows.
            features = torch.cat(list(h_n[-self.directions:]), dim=-1)
            return self.head(self.dropout(features))
        if packed:
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=steps)
        return self.head(self.dropout(output))


    def resolved_impl(self, device: torch.device, training: bool = True) -> str:
        """``native`` or ``loop``: the explicit choice, else AUTO_IMPL's pick for training on this device."""
        if self.impl != "auto":
            return self.impl
        if not training or self.rnn.hidden_size < AUTO_MIN_HIDDEN:
            return "native"
        return AUTO_IMPL.get(device.type, AUTO_IMPL["cuda"])[self.cell]


def build_model(config, task) -> RecurrentModel:
    return RecurrentModel(
        config.arch, task.input_size, config.hidden_size, task.output_size,
        num_layers=config.num_layers, dropout=config.dropout, readout=task.readout, impl=config.impl,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
