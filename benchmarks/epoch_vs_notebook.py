"""MNIST training speed: rnnbench's epoch path against the notebook's DataLoader + ToTensor loop, side by side.

Example: RNNBENCH_DATA=data python benchmarks/epoch_vs_notebook.py --archs rnn lstm gru bilstm --batches 20

For each architecture (hidden 128, batch 500) it times, interleaved in one process and best of --repeats:
the notebook's loop (torchvision MNIST + ToTensor through DataLoader(batch_size=500), seq-first model +
permute, loss.item() per step) and rnnbench's (MnistTask batching from the in-memory uint8 tensor + fit's
train_step), each with --impl native and auto. Prints samples/s and the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from benchmark.config import TrainConfig
from benchmark.data import load_mnist
from benchmark.models import build_model
from benchmark.perf import notebook_mnist_dataset, notebook_mnist_rate
from benchmark.tasks import build_task
from benchmark.train import make_optimizer, seed_everything, train_step


def rnnbench_rate(arch: str, impl: str, data: dict, batches: int) -> float:
    config = TrainConfig.for_task("mnist", arch, impl=impl)
    seed_everything(0)
    task = build_task(config, "cpu", **data)
    model = build_model(config, task)
    optimizer = make_optimizer(config, model)
    stream = task.train_batches(config.batch_size, torch.Generator().manual_seed(0))
    train_step(model, task, config, optimizer, next(stream))  # warm-up, untimed
    started, seen = time.perf_counter(), 0
    for batch in itertools.islice(stream, batches):  # batching is inside the clock, as in an epoch
        train_step(model, task, config, optimizer, batch)
        seen += len(batch.y)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["rnn", "lstm", "gru", "bilstm"])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist()
    loader = torch.utils.data.DataLoader(notebook_mnist_dataset(data["train_images"], data["train_labels"]),
                                         batch_size=500)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.batches} batches of 500, best of {args.repeats}")
    print(f"{'arch':<7} {'notebook':>9} {'native':>9} {'auto':>9} {'native/nb':>9} {'auto/nb':>8}")
    for arch in args.archs:
        best = {"notebook": 0.0, "native": 0.0, "auto": 0.0}
        for _ in range(args.repeats):
            best["notebook"] = max(best["notebook"], notebook_mnist_rate(arch, loader, 128, args.batches))
            for impl in ("native", "auto"):
                best[impl] = max(best[impl], rnnbench_rate(arch, impl, data, args.batches))
        print(f"{arch:<7} {best['notebook']:>9.0f} {best['native']:>9.0f} {best['auto']:>9.0f} "
              f"{best['native'] / best['notebook']:>8.2f}x {best['auto'] / best['notebook']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
