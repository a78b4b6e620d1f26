"""Recent recurrent cells, added through the public plugin API: importing this package registers them.

Example: rnnbench train --task mnist --arch mingru

``indrnn`` / ``biindrnn`` (IndRNN, Li et al. 2018), ``mingru`` / ``bimingru`` and ``minlstm`` / ``biminlstm``
(Feng et al. 2024). Each cell takes ``(input_size, hidden_size, *, num_layers, dropout, bidirectional)`` and maps
``(x [B, T, F], lengths)`` to ``(outputs [B, T, D*H], last [B, D*H])``, honouring right padding.
"""

from __future__ import annotations

from .indrnn import IndRNN
from .minrnn import MinGRU, MinLSTM

__all__ = ["IndRNN", "MinGRU", "MinLSTM"]
