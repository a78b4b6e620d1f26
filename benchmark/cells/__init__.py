"""Every cell rnnbench ships, registered through ``register_cell`` as a plugin's are: the one list of them.

Example: python -c "import benchmark; print(benchmark.list_architectures())"

Each line names the cell, its class (imported when a model is first built, so this list costs no torch) and
its direction; the order here is the order of every table and legend. ``rnn``, ``lstm``, ``gru`` and their
bidirectional forms run ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with a choice of kernel (``native.py``);
``indrnn`` is IndRNN (Li et al. 2018), ``mingru`` and ``minlstm`` are minGRU and minLSTM (Feng et al. 2024),
``lru`` the Linear Recurrent Unit (Orvieto et al. 2023), ``s6`` Mamba's selective state-space layer (Gu and Dao
2023), ``slstm`` xLSTM's scalar-memory LSTM (Beck et al. 2024).
A new cell goes in a module of its own here, and one line below. Every cell takes ``(input_size, hidden_size,
*, num_layers, dropout, bidirectional)`` and maps ``(x [B, T, F], lengths)`` to ``(outputs [B, T, D*H],
last [B, D*H])``, honouring right padding.
"""

from __future__ import annotations

from ..catalog import IMPLS
from ..registry import register_cell

# name, class, bidirectional, label in tables and figures, colour in figures: matplotlib's tab10, then tab20b's
# darker shades and teal. Each cell has its own, so a report over all 18 draws no two alike.
BUILTIN_CELLS = (
    ("rnn", "native:RNN", False, "RNN", "#1f77b4"),
    ("lstm", "native:LSTM", False, "LSTM", "#ff7f0e"),
    ("gru", "native:GRU", False, "GRU", "#2ca02c"),
    ("birnn", "native:RNN", True, "BiRNN", "#d62728"),
    ("bilstm", "native:LSTM", True, "BiLSTM", "#9467bd"),
    ("bigru", "native:GRU", True, "BiGRU", "#8c564b"),
    ("indrnn", "indrnn:IndRNN", False, "IndRNN", "#7f7f7f"),
    ("biindrnn", "indrnn:IndRNN", True, "BiIndRNN", "#393b79"),
    ("mingru", "minrnn:MinGRU", False, "minGRU", "#17becf"),
    ("bimingru", "minrnn:MinGRU", True, "BiminGRU", "#637939"),
    ("minlstm", "minrnn:MinLSTM", False, "minLSTM", "#bcbd22"),
    ("biminlstm", "minrnn:MinLSTM", True, "BiminLSTM", "#8c6d31"),
    ("lru", "lru:LRU", False, "LRU", "#e377c2"),
    ("bilru", "lru:LRU", True, "BiLRU", "#008080"),
    ("s6", "s6:S6", False, "S6", "#000000"),
    ("bis6", "s6:S6", True, "BiS6", "#7b4173"),
    ("slstm", "slstm:SLSTM", False, "sLSTM", "#e7ba52"),
    ("bislstm", "slstm:SLSTM", True, "BisLSTM", "#6b6ecf"),
)

for _name, _target, _bidirectional, _label, _colour in BUILTIN_CELLS:
    register_cell(_name, f"{__name__}.{_target}", bidirectional=_bidirectional, label=_label, colour=_colour,
                  impls=IMPLS if _target.startswith("native:") else ())
