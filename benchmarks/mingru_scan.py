"""minGRU's parallel log-space scan against its sequential form, training on pixel MNIST shapes, side by side.

Example: PYTHONPATH=. python benchmarks/mingru_scan.py --hidden 128 --rounds 5

One training step is forward + backward + an Adam step of a minGRU with a linear readout on its final state, on
a batch of --batch sequences of 784 steps x 1 feature (pixel MNIST) with random inputs and labels. Two copies of
the same initial model train, one through ``forward_parallel`` and one through ``forward_sequential``; each round
times --steps steps of each, in alternating order, and the figure per form is its best round (other work on the
machine only ever slows a round down). The load average is printed before and after: on a shared machine it says
how far to trust the ratio. The first step's losses of the two forms are printed too, to show they compute the
same thing.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmark.cells.minrnn import MinGRU  # noqa: E402

FORMS = ("parallel", "sequential")


class Classifier(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.cell = MinGRU(1, hidden_size, num_layers=num_layers)
        self.head = nn.Linear(hidden_size, 10)

    def forward(self, x: torch.Tensor, form: str) -> torch.Tensor:
        run = self.cell.forward_parallel if form == "parallel" else self.cell.forward_sequential
        return self.head(run(x)[1])


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="training steps per form per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"before: {load()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.length} steps "
          f"x 1 feature, minGRU hidden {args.hidden}, {args.layers} layer(s); {args.rounds} rounds x {args.steps} "
          "steps per form")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, 1, generator=generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)
    torch.manual_seed(0)
    base = Classifier(args.hidden, args.layers)
    models = {form: copy.deepcopy(base) for form in FORMS}
    optimizers = {form: torch.optim.Adam(models[form].parameters(), lr=1e-3) for form in FORMS}
    loss_fn = nn.CrossEntropyLoss()

    def step(form: str) -> float:
        optimizers[form].zero_grad(set_to_none=True)
        loss = loss_fn(models[form](x, form), y)
        loss.backward()
        optimizers[form].step()
        return loss.item()

    first = {form: step(form) for form in FORMS}  # also the warm-up
    print(f"first-step loss: parallel {first['parallel']:.6f}, sequential {first['sequential']:.6f} "
          f"(difference {abs(first['parallel'] - first['sequential']):.1e})")
    rates: dict[str, list[float]] = {form: [] for form in FORMS}
    for round_index in range(args.rounds):
        for form in FORMS if round_index % 2 == 0 else FORMS[::-1]:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(form)
            rates[form].append(args.steps * args.batch / (time.perf_counter() - start))
    print(f"{'form':<11} {'best samples/s':>15} {'median':>8} {'worst':>8}")
    for form in FORMS:
        print(f"{form:<11} {max(rates[form]):>15.1f} {statistics.median(rates[form]):>8.1f} {min(rates[form]):>8.1f}")
    print(f"parallel / sequential (best rounds): {max(rates['parallel']) / max(rates['sequential']):.2f}x")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
