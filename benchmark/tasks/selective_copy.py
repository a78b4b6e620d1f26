"""Selective copying (Gu & Dao 2023, the Mamba paper's task), scaled for a CPU: recall 16 tokens scattered in noise.

Example: rnnbench train --task selective_copy --arch lstm --max-train-length 256 --threads 1

Tokens 0..15 are data, 16 is noise, 17 is the marker. A sequence is T steps (``max_train_length``, default 256,
also 1024) of noise holding 16 data tokens, drawn uniformly (with repetition) from the 16, at 16 distinct
positions drawn uniformly among the T; then 16 marker steps. At the k-th marker step the model emits the k-th data
token in order of position: loss and ``acc`` count those 16 steps only (``benchmark.tasks.tokens``). Inputs are
one-hot over the 18 tokens; the output is 16 classes per step (readout ``per_step``). A sequence is T + 16 steps.

Splits: ``train`` (``train_size``, default 10,000) then ``val`` (1,000) drawn from ``config.seed``; ``test``
(1,000) from a fixed seed, the same for every run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .tokens import IGNORE, TokenTask

DATA_TOKENS = 16  # the vocabulary of the data, and how many are copied
NOISE, MARKER = DATA_TOKENS, DATA_TOKENS + 1
COPIES = 16


def layout(data: Tensor, positions: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Token ids and targets [n, steps + COPIES] of data tokens [n, COPIES] at sorted positions [n, COPIES]."""
    n = len(data)
    tokens = torch.full((n, steps + COPIES), NOISE, dtype=torch.int64)
    tokens.scatter_(1, positions, data)
    tokens[:, steps:] = MARKER
    targets = torch.full_like(tokens, IGNORE)
    targets[:, steps:] = data
    return tokens, targets


def generate(n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n sequences: 16 data tokens at 16 distinct uniform positions of ``steps`` noise steps, then 16 markers."""
    positions = torch.rand(n, steps, generator=generator).argsort(dim=1)[:, :COPIES].sort(dim=1).values
    data = torch.randint(0, DATA_TOKENS, (n, COPIES), generator=generator)
    return layout(data, positions, steps)


class SelectiveCopyTask(TokenTask):
    name = "selective_copy"
    input_size = DATA_TOKENS + 2  # data, noise, marker
    output_size = DATA_TOKENS
    test_seed = 20_231_201

    def check(self) -> None:
        if self.length < COPIES:
            raise ConfigError(f"selective_copy needs T = max_train_length >= {COPIES}, got {self.length}")

    def generate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return generate(n, self.length, generator)
