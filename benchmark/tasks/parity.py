"""Running parity (after Deletang et al. 2023, the Chomsky-hierarchy setup): trained short, tested long.

Example: rnnbench train --task parity --arch lstm --max-train-length 40 --threads 1

A string of L digits, each uniform in 0..m-1 (parity: m = 2, bits); input step t is the one-hot digit (m
features), target step t is the running sum mod m of digits 0..t (for bits, the running parity: [1, 0, 1, 1] ->
[1, 1, 0, 1]), one m-class output per step (readout ``per_step``; ``ce`` cross-entropy, ``mse`` the squared error
of the softmax against the one-hot answer). A batch mixes lengths, right-padded and masked as addition's, so
padding never counts.

Splits: ``train`` has ``train_size`` strings (default 10,000) with lengths uniform in 1..max_train_length
(default 40); ``val`` 50 strings per training length; both from ``config.seed``. ``test`` has 10 strings per
length max_train_length + 1 .. 500 (4,600 strings, some 1.2 million steps: seconds to score on a CPU) from a fixed
seed, the same for every run. ``acc`` is the per-step accuracy of each length averaged over the split's lengths
(test: the unseen lengths 41..500; val: the training lengths); ``acc_by_len`` gives it per length.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..losses import CLASS_LOSSES, length_mask
from .addition import spans
from .base import Batch, PaddedStrings

TEST_SEED = 20_230_501
TEST_MAX_LENGTH = 500
VAL_PER_LENGTH = 50
TEST_PER_LENGTH = 10
EVAL_BATCH = 1024  # per-step outputs of 1,024 strings of 500 steps: tens of MB at the hidden sizes used


def running_sum(digits: Tensor, modulus: int) -> Tensor:
    """Targets of digits [N, T]: the running sum mod ``modulus`` along T."""
    return digits.cumsum(dim=1) % modulus


def generate(lengths: Tensor, generator: torch.Generator, modulus: int = 2) -> tuple[Tensor, Tensor]:
    """Strings of the given lengths: one-hot inputs [N, T, modulus] (zero past each length) and targets [N, T]
    (int64, zero past each length)."""
    steps = int(lengths.max()) if len(lengths) else 0
    inside = torch.arange(steps)[None, :] < lengths[:, None]
    digits = torch.randint(0, modulus, (len(lengths), steps), generator=generator) * inside
    x = F.one_hot(digits, modulus).float() * inside[..., None]
    return x, running_sum(digits, modulus) * inside


class ParityTask(PaddedStrings):
    name = "parity"
    modulus = 2
    input_size = output_size = modulus
    readout = "per_step"
    test_seed = TEST_SEED

    def __init__(self, config, device):
        if config.max_train_length >= TEST_MAX_LENGTH:
            raise ConfigError(f"{self.name} tests on lengths max_train_length + 1 .. {TEST_MAX_LENGTH}; "
                              f"max_train_length must be below {TEST_MAX_LENGTH}, got {config.max_train_length}")
        self.device = torch.device(device)
        self.seed = config.seed
        self.max_train_length = config.max_train_length
        self.train_lengths = list(range(1, config.max_train_length + 1))
        self.test_lengths = list(range(config.max_train_length + 1, TEST_MAX_LENGTH + 1))
        rng = torch.Generator().manual_seed(config.seed)
        train = torch.randint(1, config.max_train_length + 1, (config.train_size or 10_000,), generator=rng)
        val = torch.tensor(self.train_lengths).repeat_interleave(VAL_PER_LENGTH)
        test = torch.tensor(self.test_lengths).repeat_interleave(TEST_PER_LENGTH)
        self.splits = {"train": self._make(train, rng), "val": self._make(val, rng),
                       "test": self._make(test, torch.Generator().manual_seed(self.test_seed))}

    def _make(self, lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        x, y = generate(lengths, generator, self.modulus)
        return x.to(self.device), y.to(self.device), lengths

    def dataset(self) -> dict:
        """The run's dataset input: the generator's seeds, the lengths and the split sizes (all that fixes the data)."""
        profile = {"generator_seed": self.seed, "test_seed": self.test_seed, "modulus": self.modulus,
                   "train_lengths": spans(self.train_lengths), "test_lengths": spans(self.test_lengths),
                   **{split: len(lengths) for split, (_, _, lengths) in self.splits.items()}}
        digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:12]
        return {"name": f"{self.name}-L1-{self.max_train_length}-to{TEST_MAX_LENGTH}", "digest": digest,
                "source": f"{__name__}.generate", "profile": profile}

    def loss(self, name: str, logits: Tensor, batch: Batch):
        mask = length_mask(batch.lengths, logits.size(1), logits.device)
        return CLASS_LOSSES[name](logits[mask], batch.y[mask])

    @torch.no_grad()
    def evaluate(self, model, split: str, loss_name: str) -> dict:
        """``loss`` per step, ``acc_by_len`` (per-step accuracy of each length) and ``acc``, its mean over lengths."""
        model.eval()
        x, y, lengths = self.splits[split]
        longest = int(lengths.max())
        right = torch.zeros(longest + 1, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        for batch, mask in self.scoring_chunks((x, y, lengths), EVAL_BATCH):
            logits = model(batch.x, batch.lengths)
            loss_sum += self.loss(loss_name, logits, batch)[0]
            hits = ((logits.argmax(-1) == batch.y) & mask).sum(dim=1).float()
            right.index_add_(0, batch.lengths.to(self.device), hits)
        counts = torch.bincount(lengths, minlength=longest + 1).double()
        present = counts.nonzero().flatten().tolist()
        per_step = (right.double().cpu() / (counts * torch.arange(longest + 1)).clamp(min=1)).tolist()
        acc_by_len = {n: per_step[n] for n in present}
        steps_total = float((counts * torch.arange(longest + 1)).sum())
        return {"loss": float(loss_sum) / max(steps_total, 1), "acc": sum(acc_by_len.values()) / len(acc_by_len),
                "acc_by_len": acc_by_len}
