"""Binary addition: two numbers fed least-significant bit first, one sum bit out per step.

Example: rnnbench train --task addition --arch lstm --hidden-size 10 --lr 0.01

Generator (the notebook's): for a string of length L both operands are drawn
uniformly below 2^(L-1), so their sum fits in L bits; input step t is the pair
(a_t, b_t), target step t is s_t. A batch mixes lengths, right-padded with
zeros and masked, so padding never counts in losses or metrics.

Splits: ``train`` has ``train_size`` strings with lengths drawn uniformly from
``train_lengths`` (default 1..max_train_length); ``val`` has 50 strings per
training length (so a model trained on length 3 only is selected without seeing
any other length; at length 3 there are only 16 operand pairs, so that validation
set repeats training strings: it measures fit, not generalisation, which only the
test set does); both follow ``config.seed``. ``test`` has 1,000
strings per length 1..max_train_length plus 1,000 per generalisation length, and
uses a fixed seed so that every run is scored on the same strings.
"""

from __future__ import annotations

import functools
import hashlib
import json

import torch
from torch import Tensor

from ..losses import BIT_LOSSES, length_mask
from .base import Batch, PaddedStrings

TEST_SEED = 20_241_129
VAL_PER_LENGTH = 50
# 1,000, not 100: at 90 % whole-string accuracy a length's figure then has a sampling standard error of
# 0.95 points instead of 3.0, and "100 % at length 1000" means 1,000 strings right, not 100.
TEST_PER_LENGTH = 1000
EVAL_BATCH = 4096


def generate(lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Strings of the given lengths: inputs [N, T, 2] and sum bits [N, T] (float, zero past each length)."""
    lengths = lengths.to(torch.int64)
    steps = int(lengths.max()) if len(lengths) else 0
    # Operands below 2^(L-1): the low L-1 bits are uniform, bit L-1 and above are zero.
    below_top = torch.arange(steps)[None, :] < (lengths[:, None] - 1)
    a = torch.randint(0, 2, (len(lengths), steps), generator=generator, dtype=torch.int64) * below_top
    b = torch.randint(0, 2, (len(lengths), steps), generator=generator, dtype=torch.int64) * below_top
    total = torch.empty_like(a)
    carry = torch.zeros(len(lengths), dtype=torch.int64)
    for t in range(steps):  # ripple-carry over positions, vectorised over strings
        column = a[:, t] + b[:, t] + carry
        total[:, t] = column & 1
        carry = column >> 1
    return torch.stack([a, b], dim=-1).float(), total.float()


@functools.lru_cache(maxsize=1)
def test_split(lengths: tuple[int, ...], device: str) -> tuple[Tensor, Tensor, Tensor]:
    """The test strings, TEST_PER_LENGTH of each length, the same for every run (seeded by TEST_SEED): made once per
    process and shared, read-only, by the tasks that score them (the seeds of one confirmation, say)."""
    counts = torch.tensor(lengths).repeat_interleave(TEST_PER_LENGTH)
    x, y = generate(counts, torch.Generator().manual_seed(TEST_SEED))
    return x.to(device), y.to(device), counts


def spans(lengths) -> str:
    """Sorted lengths with runs joined: (1, 2, 3, 5, 30) -> "1-3,5,30"."""
    values, parts = sorted(set(lengths)), []
    for value in values:
        if parts and value == parts[-1][1] + 1:
            parts[-1][1] = value
        else:
            parts.append([value, value])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def bits_to_int(bits) -> int:
    """LSB-first bits -> integer (for tests and debugging)."""
    return sum(int(bit) << i for i, bit in enumerate(bits))


class AdditionTask(PaddedStrings):
    name = "addition"
    input_size = 2
    output_size = 1
    readout = "per_step"

    def __init__(self, config, device):
        self.device = torch.device(device)
        self.max_train_length = config.max_train_length
        in_range = list(range(1, config.max_train_length + 1))
        self.train_length_choices = list(config.train_lengths) or in_range
        self.test_lengths = in_range + [n for n in config.eval_lengths if n > config.max_train_length]

        self.seed = config.seed
        rng = torch.Generator().manual_seed(config.seed)
        choices = torch.tensor(self.train_length_choices)
        train_lengths = choices[torch.randint(0, len(choices), (config.train_size or 10_000,), generator=rng)]
        val_lengths = torch.tensor(sorted(set(self.train_length_choices))).repeat_interleave(VAL_PER_LENGTH)
        self.splits = {"train": self._make(train_lengths, rng), "val": self._make(val_lengths, rng)}
        # Made when first scored: search trials never score it, and at 1,000 strings of every length up to 1000
        # it costs more to make than a short trial's epochs.
        self.test_size = len(self.test_lengths) * TEST_PER_LENGTH

    def dataset(self) -> dict:
        """The run's dataset input: the generator's seeds, the lengths and the split sizes (all that fixes the data)."""
        profile = {"generator_seed": self.seed, "test_seed": TEST_SEED,
                   "train_lengths": spans(self.train_length_choices), "test_lengths": spans(self.test_lengths),
                   **{split: len(lengths) for split, (_, _, lengths) in self.splits.items()}, "test": self.test_size}
        digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:12]
        return {"name": f"{self.name}-L{spans(self.train_length_choices)}-to{max(self.test_lengths)}",
                "digest": digest, "source": "benchmark.tasks.addition.generate", "profile": profile}

    def _make(self, lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        x, y = generate(lengths, generator)
        return x.to(self.device), y.to(self.device), lengths

    def split(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, targets, lengths) of ``name``; the test split is made on first use, always the same strings."""
        if name == "test" and "test" not in self.splits:
            self.splits["test"] = test_split(tuple(self.test_lengths), str(self.device))
        return self.splits[name]

    def loss(self, name: str, logits: Tensor, batch: Batch):
        logits = logits.squeeze(-1)
        mask = length_mask(batch.lengths, logits.size(1), logits.device)
        return BIT_LOSSES[name](logits, batch.y, mask.to(logits.dtype))

    @torch.no_grad()
    def evaluate(self, model, split: str, loss_name: str) -> dict:
        """Loss over lengths <= max_train_length; bit and whole-string accuracy per length.

        ``acc`` is bit accuracy averaged over lengths 1..max_train_length, as the notebook reports it;
        ``seq_acc`` is the fraction of those strings with every bit right.
        """
        model.eval()
        x, y, lengths = self.split(split)
        longest = int(lengths.max())
        correct_bits = torch.zeros(longest + 1, device=self.device)
        right_strings = torch.zeros(longest + 1, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        loss_count = torch.zeros((), device=self.device)
        for batch, mask in self.scoring_chunks((x, y, lengths), EVAL_BATCH):
            chunk_lengths = batch.lengths
            logits = model(batch.x, batch.lengths).squeeze(-1)
            in_range = (chunk_lengths <= self.max_train_length).to(self.device)
            train_mask = (mask & in_range[:, None]).to(logits.dtype)
            chunk_loss, chunk_count = BIT_LOSSES[loss_name](logits, batch.y, train_mask)
            loss_sum += chunk_loss
            loss_count += chunk_count
            hits = ((logits >= 0) == (batch.y >= 0.5)) & mask
            per_string = hits.sum(dim=1)
            device_lengths = chunk_lengths.to(self.device)
            correct_bits.index_add_(0, device_lengths, per_string.float())
            right_strings.index_add_(0, device_lengths, (per_string == device_lengths).float())
        # One host transfer for all lengths (no per-length tensor indexing, which costs up to 1000 syncs).
        counts = torch.bincount(lengths, minlength=longest + 1).double()
        present = counts.nonzero().flatten().tolist()
        correct_bits, right_strings = correct_bits.double().cpu(), right_strings.double().cpu()
        bits = (correct_bits / (counts * torch.arange(longest + 1)).clamp(min=1)).tolist()
        strings = (right_strings / counts.clamp(min=1)).tolist()
        bit_acc_by_len = {n: bits[n] for n in present}
        seq_acc_by_len = {n: strings[n] for n in present}
        # val holds the training lengths only, which may all lie past max_train_length (train_lengths=(30,)).
        in_range_lengths = [n for n in present if n <= self.max_train_length] or present
        return {
            "loss": float(loss_sum / loss_count.clamp(min=1)),
            "acc": sum(bit_acc_by_len[n] for n in in_range_lengths) / len(in_range_lengths),
            "seq_acc": float(right_strings[in_range_lengths].sum() / counts[in_range_lengths].sum()),
            "bit_acc_by_len": bit_acc_by_len,
            "seq_acc_by_len": seq_acc_by_len,
        }
