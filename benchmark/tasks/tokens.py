"""What the token tasks share (selective copying, multi-query associative recall): one-hot inputs built per batch,
targets at a few positions only, per-token accuracy there.

Example: rnnbench train --task selective_copy --arch lstm --max-train-length 256

A split is stored as token ids ``[N, T]`` (int64) and targets ``[N, T]`` holding the answer token where one is
asked for and ``IGNORE`` elsewhere; inputs are one-hot ``[B, T, vocabulary]`` floats made per batch, so a long
sequence over a large vocabulary never sits in memory as floats. Losses (``ce``: cross-entropy; ``mse``: the
squared error of the softmax against the one-hot answer) and ``acc`` (the fraction of answer tokens whose
largest logit is the answer) count the answer positions only.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import CLASS_LOSSES
from .base import Batch

IGNORE = -1  # target at a position where nothing is asked
EVAL_BATCH = 500
VAL_SIZE = 1000
TEST_SIZE = 1000


class TokenTask:
    """A task of fixed-length token sequences, answered at the positions whose target is not ``IGNORE``.

    Subclasses set ``name``, ``input_size`` (the input vocabulary), ``output_size`` and ``test_seed``, and
    implement ``generate(n, generator) -> (tokens [n, T], targets [n, T])`` and ``settings() -> dict``."""

    readout = "per_step"
    test_seed = 0
    default_train_size = 10_000

    def __init__(self, config, device):
        self.device = torch.device(device)
        self.seed = config.seed
        self.length = config.max_train_length
        self.check()
        rng = torch.Generator().manual_seed(config.seed)
        self.splits = {
            "train": self._to_device(*self.generate(config.train_size or self.default_train_size, rng)),
            "val": self._to_device(*self.generate(VAL_SIZE, rng)),
            "test": self._to_device(*self.generate(TEST_SIZE, torch.Generator().manual_seed(self.test_seed))),
        }

    def check(self) -> None:
        """Refuse settings the generator cannot honour (a ConfigError)."""

    def generate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def settings(self) -> dict:
        """The task's settings beyond the seeds and split sizes, for the dataset record."""
        return {"T": self.length}

    def _to_device(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        return tokens.to(self.device), targets.to(self.device)

    def dataset(self) -> dict:
        """The run's dataset input: the generator's seeds, settings and split sizes (all that fixes the data)."""
        settings = self.settings()
        profile = {"generator_seed": self.seed, "test_seed": self.test_seed, **settings,
                   **{split: len(tokens) for split, (tokens, _) in self.splits.items()}}
        digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:12]
        tag = "-".join(f"{key}{value}" for key, value in settings.items())
        return {"name": f"{self.name}-{tag}", "digest": digest, "source": f"{type(self).__module__}.generate",
                "profile": profile}

    def as_input(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens, self.input_size).float()

    @property
    def train_size(self) -> int:
        return len(self.splits["train"][0])

    def train_batches(self, batch_size: int, generator: torch.Generator):
        tokens, targets = self.splits["train"]
        order = torch.randperm(len(tokens), generator=generator).to(self.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield Batch(self.as_input(tokens[index]), targets[index])

    def loss(self, name: str, logits: Tensor, batch: Batch):
        asked = batch.y != IGNORE
        return CLASS_LOSSES[name](logits[asked], batch.y[asked])

    @torch.no_grad()
    def evaluate(self, model, split: str, loss_name: str) -> dict:
        """``loss`` per answer token and ``acc``, the fraction of answer tokens right."""
        model.eval()
        tokens, targets = self.splits[split]
        loss_sum = torch.zeros((), device=self.device)
        right = torch.zeros((), device=self.device)
        count = 0
        for start in range(0, len(tokens), EVAL_BATCH):
            batch = Batch(self.as_input(tokens[start:start + EVAL_BATCH]), targets[start:start + EVAL_BATCH])
            logits = model(batch.x)
            chunk_loss, chunk_count = self.loss(loss_name, logits, batch)
            asked = batch.y != IGNORE
            loss_sum += chunk_loss
            right += (logits[asked].argmax(-1) == batch.y[asked]).sum()
            count += chunk_count
        return {"loss": float(loss_sum) / max(count, 1), "acc": float(right) / max(count, 1)}
