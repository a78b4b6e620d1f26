"""Multi-query associative recall (Arora et al. 2023, the zoology suite's MQAR): recall the value of each key asked.

Example: rnnbench train --task mqar --arch lstm --max-train-length 64 --threads 1

Vocabulary V = 256, inputs one-hot over it, output V classes per step (readout ``per_step``). A sequence has
T steps (``max_train_length``: 64, 128 or 256) and P = T // 16 key-value pairs (4, 8, 16: zoology's settings).
As in zoology, keys come from 1..V/2 - 1 and values from V/2..V - 1, each drawn without replacement within a
sequence. Steps 0..2P-1 are k1 v1 k2 v2 ... kP vP. In the rest (steps 2P..T-1) each key is asked once, at P
distinct even offsets 2P + 2s drawn uniformly among the (T - 2P) / 2 slots s (zoology draws the gaps from a power
law instead), in random order; every other step is the blank token 0, never a key or value (zoology fills them
with random tokens). At the step that reads a query key the model emits that key's value: loss and ``acc`` count
those P steps only (``benchmark.tasks.tokens``).

Splits: ``train`` (``train_size``, default 20,000) then ``val`` (1,000) drawn from ``config.seed``; ``test``
(1,000) from a fixed seed, the same for every run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .tokens import IGNORE, TokenTask

VOCABULARY = 256
STEPS_PER_PAIR = 16  # P = T // 16


def layout(keys: Tensor, values: Tensor, slots: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Token ids and targets [n, steps]: keys, values [n, P] as pairs, then key i asked at step 2P + 2 slots[i]."""
    n, pairs = keys.shape
    tokens = torch.zeros(n, steps, dtype=torch.int64)
    tokens[:, 0:2 * pairs:2], tokens[:, 1:2 * pairs:2] = keys, values
    asked = 2 * pairs + 2 * slots
    tokens.scatter_(1, asked, keys)
    targets = torch.full_like(tokens, IGNORE).scatter_(1, asked, values)
    return tokens, targets


def generate(n: int, steps: int, generator: torch.Generator, vocabulary: int = VOCABULARY) -> tuple[Tensor, Tensor]:
    """n sequences of ``steps`` steps with ``steps // 16`` pairs."""
    pairs, half = steps // STEPS_PER_PAIR, vocabulary // 2

    def without_replacement(size: int, offset: int) -> Tensor:  # pairs distinct draws from offset..offset+size-1
        return offset + torch.rand(n, size, generator=generator).argsort(dim=1)[:, :pairs]

    keys, values = without_replacement(half - 1, 1), without_replacement(half, half)
    slots = without_replacement((steps - 2 * pairs) // 2, 0)
    return layout(keys, values, slots, steps)


class MqarTask(TokenTask):
    name = "mqar"
    input_size = VOCABULARY
    output_size = VOCABULARY
    test_seed = 20_231_208
    default_train_size = 20_000

    def check(self) -> None:
        if self.length < STEPS_PER_PAIR:
            raise ConfigError(f"mqar needs T = max_train_length >= {STEPS_PER_PAIR} (T // 16 key-value pairs), "
                              f"got {self.length}")

    def settings(self) -> dict:
        return {"T": self.length, "pairs": self.length // STEPS_PER_PAIR, "V": VOCABULARY}

    def generate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return generate(n, self.length, generator)
