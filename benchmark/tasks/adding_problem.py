"""The adding problem (Hochreiter & Schmidhuber 1997): the sum of the two marked values of a long sequence.

Example: rnnbench train --task adding_problem --arch lstm --max-train-length 100 --threads 1

Each sequence has T steps (``max_train_length``: 100, 500 or 1000 in the literature); step t is the pair
(value_t, marker_t) with value_t ~ U[0, 1] and marker_t in {0, 1}. Exactly two markers are 1: one at a uniform
position of the first half (0 .. T//2 - 1), one at a uniform position of the second half (T//2 .. T - 1). The
target is the sum of the two marked values, regressed from the final state (readout ``last``, one output).

The loss is the squared error for both loss names: a real-valued target has no cross-entropy, so ``ce`` is the
same MSE as ``mse`` (the task's default loss is ``mse``). ``evaluate`` returns ``mse`` and, as ``acc`` (what
trials and epochs rank on), the explained variance 1 - MSE / (1/6): 1/6 is the variance of the sum of two
independent U[0, 1] values, so always answering 1.0 scores 0 (MSE 1/6 = 0.167) and the pass mark MSE < 0.01
is ``acc`` > 0.94.

Splits: ``train`` (``train_size``, default 10,000) then ``val`` (1,000) drawn from ``config.seed``; ``test``
(1,000) from a fixed seed, the same for every run.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import Batch

TEST_SEED = 19_970_101
VAL_SIZE = 1000
TEST_SIZE = 1000
EVAL_BATCH = 1000
TARGET_VARIANCE = 1 / 6  # Var(U1 + U2) for independent U[0, 1]: what a constant answer of 1.0 scores


def target(x: Tensor) -> Tensor:
    """The sum of the marked values: x [N, T, 2] (value, marker) -> [N]."""
    return (x[..., 0] * x[..., 1]).sum(dim=-1)


def generate(n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n sequences of ``steps`` steps: inputs [n, steps, 2] (value, marker) and targets [n]."""
    half = steps // 2
    values = torch.rand(n, steps, generator=generator)
    first = torch.randint(0, half, (n,), generator=generator)
    second = half + torch.randint(0, steps - half, (n,), generator=generator)
    markers = torch.zeros(n, steps)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    return x, target(x)


def squared_error(logits: Tensor, y: Tensor) -> tuple[Tensor, int]:
    return (logits.squeeze(-1) - y).pow(2).sum(), y.numel()


class AddingProblemTask:
    name = "adding_problem"
    input_size = 2
    output_size = 1
    readout = "last"

    def __init__(self, config, device):
        if config.max_train_length < 2:
            raise ConfigError(f"adding_problem needs T = max_train_length >= 2, got {config.max_train_length}")
        self.device = torch.device(device)
        self.seed = config.seed
        self.length = config.max_train_length
        rng = torch.Generator().manual_seed(config.seed)
        self.splits = {
            "train": self._to_device(*generate(config.train_size or 10_000, self.length, rng)),
            "val": self._to_device(*generate(VAL_SIZE, self.length, rng)),
            "test": self._to_device(*generate(TEST_SIZE, self.length, torch.Generator().manual_seed(TEST_SEED))),
        }

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x.to(self.device), y.to(self.device)

    def dataset(self) -> dict:
        """The run's dataset input: the generator's seeds, T and the split sizes (all that fixes the data)."""
        profile = {"generator_seed": self.seed, "test_seed": TEST_SEED, "T": self.length,
                   **{split: len(y) for split, (_, y) in self.splits.items()}}
        digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:12]
        return {"name": f"{self.name}-T{self.length}", "digest": digest,
                "source": "benchmark.tasks.adding_problem.generate", "profile": profile}

    @property
    def train_size(self) -> int:
        return len(self.splits["train"][1])

    def train_batches(self, batch_size: int, generator: torch.Generator):
        x, y = self.splits["train"]
        order = torch.randperm(len(y), generator=generator).to(self.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield Batch(x[index], y[index])

    def loss(self, name: str, logits: Tensor, batch: Batch):
        return squared_error(logits, batch.y)  # "ce" too: see the module's docstring

    @torch.no_grad()
    def evaluate(self, model, split: str, loss_name: str) -> dict:
        """``loss`` and ``mse`` (the same number) and ``acc``, the explained variance 1 - MSE / (1/6)."""
        model.eval()
        x, y = self.splits[split]
        total = torch.zeros((), device=self.device)
        for start in range(0, len(y), EVAL_BATCH):
            total += squared_error(model(x[start:start + EVAL_BATCH]), y[start:start + EVAL_BATCH])[0]
        mse = float(total) / max(len(y), 1)
        return {"loss": mse, "acc": 1 - mse / TARGET_VARIANCE, "mse": mse}
