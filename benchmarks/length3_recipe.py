"""Choose the length-3 addition recipe from length-3 data alone: held-out operand pairs, never a longer string.

Example: python benchmarks/length3_recipe.py --seeds 0 1 2 --hidden 4 16 --weight-decay 0.1 0.3 --epochs 40

At length 3 the generator draws both operands below 4, so there are only 16 operand pairs and the usual
validation split repeats training strings: it measures fit, not generalisation. This script holds out a
quarter of the pairs instead (4 folds of 4), trains each candidate on the other 12 and scores it on the
held-out 4: a network that learned the adder gets them right, one that memorised its 12 strings need not.
Every task here is built with ``max_train_length = 3`` and no generalisation lengths, so no string longer
than 3 is ever generated, let alone scored.

Candidates (all LSTM, cross-entropy, AdamW, cosine schedule, batch 64) vary what the grokking literature on
small algorithmic datasets names as what decides memorising against generalising: weight decay, the number
of optimisation steps, and the size of the network. Each is ranked by its worst fold-and-seed held-out bit
accuracy, then by its mean held-out loss (a confident rule over a lucky one); the top row is the recipe.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from benchmark.config import TrainConfig
from benchmark.tasks.addition import AdditionTask
from benchmark.train import fit

LENGTH = 3
FOLDS = 4
HIDDEN_SIZES = (4, 8, 16)
WEIGHT_DECAYS = (0.0, 0.1)
EPOCHS = (8, 40)  # 125 steps each at 8,000 strings and batch 64: 1,000 against 5,000 steps
TRAIN_SIZE = 8000


def pair_ids(x: torch.Tensor) -> torch.Tensor:
    """Operand pair of each length-3 string, 0..15, from its low two bits (the top bit is always 0)."""
    a, b = x[:, :2, 0].long(), x[:, :2, 1].long()
    return a[:, 0] + 2 * a[:, 1] + 4 * b[:, 0] + 8 * b[:, 1]


def held_out_task(config: TrainConfig, fold: int) -> AdditionTask:
    """The task with fold ``fold``'s pairs removed from training, and a ``heldout`` split of just them."""
    task = AdditionTask(config, "cpu")
    held = torch.arange(fold * 4, fold * 4 + 4)
    x, y, lengths = task.splits["train"]
    out = torch.isin(pair_ids(x), held)
    task.splits["train"] = (x[~out], y[~out], lengths[~out])
    x, y, lengths = task.splits["val"]
    out = torch.isin(pair_ids(x), held)
    task.splits["val"] = (x[~out], y[~out], lengths[~out])  # fit on the 12 training pairs
    task.splits["heldout"] = pair_strings(held)
    return task


def pair_strings(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each pair once as a length-3 string: inputs [N, 3, 2], sum bits [N, 3], lengths [N]."""
    a, b = ids % 4, ids // 4
    x = torch.stack([lsb_first(a), lsb_first(b)], dim=-1).float()
    return x, lsb_first(a + b).float(), torch.full((len(ids),), LENGTH)


def lsb_first(numbers: torch.Tensor) -> torch.Tensor:
    """[N] integers below 2^LENGTH -> [N, LENGTH] bits, least significant first."""
    return torch.stack([(numbers >> i) & 1 for i in range(LENGTH)], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lr", type=float, default=0.01, help="the notebook's learning rate")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN_SIZES))
    parser.add_argument("--weight-decay", type=float, nargs="+", default=list(WEIGHT_DECAYS))
    parser.add_argument("--epochs", type=int, nargs="+", default=list(EPOCHS),
                        help=f"epochs of {TRAIN_SIZE:,} strings at batch 64 (125 steps each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for hidden, decay, epochs in itertools.product(args.hidden, args.weight_decay, args.epochs):
        started = time.perf_counter()
        accs, losses = [], []
        for seed, fold in itertools.product(args.seeds, range(FOLDS)):
            config = TrainConfig.for_task(
                "addition", "lstm", hidden_size=hidden, loss="ce", lr=args.lr, optimizer="adamw",
                weight_decay=decay, schedule="cosine", epochs=epochs, batch_size=64, train_size=TRAIN_SIZE,
                train_lengths=(LENGTH,), max_train_length=LENGTH, eval_lengths=(), seed=seed, threads=args.threads)
            task = held_out_task(config, fold)
            result = fit(config, task=task, quiet=True)
            held = task.evaluate(result.model, "heldout", "ce")
            accs.append(held["acc"])
            losses.append(held["loss"])
        rows.append((min(accs), statistics.fmean(losses), hidden, decay, epochs, statistics.fmean(accs)))
        print(f"hidden {hidden:>2}  weight_decay {decay:<4}  epochs {epochs:>2}  held-out bit acc: worst "
              f"{100 * min(accs):6.2f}%  mean {100 * statistics.fmean(accs):6.2f}%  held-out loss "
              f"{statistics.fmean(losses):.4f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    rows.sort(key=lambda row: (-row[0], row[1]))
    print("\nranked (worst held-out bit acc, then mean held-out loss):")
    for worst, loss, hidden, decay, epochs, mean in rows:
        print(f"  hidden {hidden:>2}  weight_decay {decay:<4}  epochs {epochs:>2}  worst {100 * worst:6.2f}%  "
              f"mean {100 * mean:6.2f}%  loss {loss:.4f}")


if __name__ == "__main__":
    main()
