"""Training samples/s of the scan form against the sequential form of LRU, S6 and minGRU, side by side.

Example: PYTHONPATH=. python benchmarks/scan_vs_sequential.py --threads 1 --rounds 3

The batch has the selective-copy shape: --batch sequences of --length steps, one-hot inputs of 18 features (16 data
tokens, noise, marker), a 16-way cross-entropy at every step, read out by a linear layer on every output. One
training step is forward + backward + an Adam step. For each cell two copies of the same initial model train, one
through ``forward_parallel`` and one through ``forward_sequential``; every round times --steps steps of each
(cell, form) in an order that alternates between rounds, and the figure per form is its best round (other work on
the machine only ever slows a round down). The processor, torch's CPU capability, the threads and the load average
before and after are printed: on a shared machine the load says how far to trust the ratios. Each cell's first-step
losses in the two forms are printed too, to show that the forms compute the same thing.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmark.cells.lru import LRU  # noqa: E402
from benchmark.cells.minrnn import MinGRU  # noqa: E402
from benchmark.cells.s6 import S6  # noqa: E402
from benchmark.perf.machine import cpu_info  # noqa: E402

CELLS = {"lru": LRU, "s6": S6, "mingru": MinGRU}
FORMS = ("parallel", "sequential")
TOKENS, FEATURES = 16, 18


class Tagger(nn.Module):
    def __init__(self, cell: type[nn.Module], hidden_size: int):
        super().__init__()
        self.cell = cell(FEATURES, hidden_size)
        self.head = nn.Linear(hidden_size, TOKENS)

    def forward(self, x: torch.Tensor, form: str) -> torch.Tensor:
        run = self.cell.forward_parallel if form == "parallel" else self.cell.forward_sequential
        return self.head(run(x)[0])


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    parser.add_argument("--steps", type=int, default=2, help="training steps per form per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"before: {load()}")
    print(f"processor: {cpu_info()['name']}; torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    print(f"batch {args.batch} x {args.length} steps x {FEATURES} one-hot features, {TOKENS}-way cross-entropy per "
          f"step, hidden {args.hidden}, 1 layer; {args.rounds} rounds x {args.steps} steps per cell and form")
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, FEATURES, (args.batch, args.length), generator=generator)
    x = nn.functional.one_hot(tokens, FEATURES).float()
    y = torch.randint(0, TOKENS, (args.batch, args.length), generator=generator)
    loss_fn = nn.CrossEntropyLoss()
    models, optimizers = {}, {}
    for name in args.cells:
        torch.manual_seed(0)
        base = Tagger(CELLS[name], args.hidden)
        for form in FORMS:
            models[name, form] = copy.deepcopy(base)
            optimizers[name, form] = torch.optim.Adam(models[name, form].parameters(), lr=1e-3)

    def step(key: tuple[str, str]) -> float:
        optimizers[key].zero_grad(set_to_none=True)
        loss = loss_fn(models[key](x, key[1]).flatten(0, 1), y.flatten())
        loss.backward()
        optimizers[key].step()
        return loss.item()

    for name in args.cells:  # also the warm-up
        first = {form: step((name, form)) for form in FORMS}
        print(f"{name} first-step loss: parallel {first['parallel']:.6f}, sequential {first['sequential']:.6f} "
              f"(difference {abs(first['parallel'] - first['sequential']):.1e})")
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    order = list(models)
    for round_index in range(args.rounds):
        for key in order if round_index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(key)
            rates[key].append(args.steps * args.batch / (time.perf_counter() - start))
    print(f"{'cell':<7} {'parallel':>10} {'sequential':>11} {'ratio':>6}   (best round, samples/s)")
    for name in args.cells:
        parallel, sequential = max(rates[name, "parallel"]), max(rates[name, "sequential"])
        print(f"{name:<7} {parallel:>10.1f} {sequential:>11.1f} {parallel / sequential:>5.2f}x")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
