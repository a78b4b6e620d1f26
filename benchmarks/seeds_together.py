"""Three seeds trained together as one stacked model against three single runs of the same configuration.

Example: PYTHONPATH=. RNNBENCH_DATA=/work/data python benchmarks/seeds_together.py --threads 1

Three configurations, each run both ways in one process, side by side:

  addition  its default configuration (10 epochs, 10,000 strings, batch 100, lr 0.01), LSTM hidden 10
  mnist     MNIST rows, LSTM hidden 128, batch 500 (``--mnist-train-size`` images, ``--mnist-epochs`` epochs);
            the real images where ``$RNNBENCH_DATA`` (or ``--data-dir``) holds them, else synthetic tensors of
            the real shapes (60,000 + 10,000 images of 28 x 28)
  pixel     pixel MNIST (784 steps), LSTM hidden 64, batch 64, as the pixel tasks' standard preset confirms, on
            ``--pixel-train-size`` images for one epoch, validated on ``--pixel-val-size``; no goal of its own:
            it shows whether stacking still pays at 784 steps (``--only pixel`` runs it; the default run skips it)

"singles" is ``fit`` once per seed (seeds 1001-1003, as ``rnnbench confirm`` uses them); "stacked" is
``benchmark.stacked.fit_together`` over the same three seeds. Both include what a confirmation pays per seed:
building the task, training, validating every epoch and scoring the test split once. The ratio is the stacked
time over one seed's (the singles' mean); the goals are 1.5 (addition) and 2.5 (MNIST rows). "agree" compares
each seed's test accuracy and best epoch across the two ways. ``auto``'s kernel pick is measured before any clock
starts. The processor, threads and load average are printed with the figures: on a shared machine other work
blurs them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SEEDS = (1001, 1002, 1003)
GOALS = {"addition": 1.5, "mnist": 2.5, "pixel": None}


def mnist_data(data_dir: str | None) -> tuple[dict, str]:
    """The real MNIST tensors where they can be read, else synthetic ones of the same shapes."""
    import torch

    from benchmark.tasks import preload

    if data_dir and Path(data_dir, "MNIST", "raw").is_dir():
        try:
            return preload("mnist", data_dir), f"real MNIST from {data_dir}"
        except (OSError, RuntimeError, ValueError) as error:
            print(f"  (real MNIST unreadable: {error}; synthetic tensors instead)")
    generator = torch.Generator().manual_seed(0)

    def images(n):
        return (torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=generator))

    (train_x, train_y), (test_x, test_y) = images(60_000), images(10_000)
    return ({"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y},
            "synthetic tensors of MNIST's shapes")


def warm_kernel_pick(config, data) -> str:
    """``auto``'s timing of the candidate kernels (cached per shape) before any clock starts."""
    import torch

    from benchmark.kernel_choice import prepare_kernels
    from benchmark.train import prepare

    device, task, model = prepare(config, None, data)
    return prepare_kernels(model, device, lambda: next(iter(task.train_batches(config.batch_size,
                                                                                torch.Generator().manual_seed(0)))))


def run_case(name: str, config, data) -> dict:
    from benchmark.stacked import build_seeds, fit_together
    from benchmark.train import fit

    configs = [config.replace(seed=seed) for seed in SEEDS]
    print(f"  singles train with auto's pick: {warm_kernel_pick(configs[0], data)}", flush=True)
    singles, single_seconds = [], []
    for seed_config in configs:
        started = time.perf_counter()
        singles.append(fit(seed_config, quiet=True, task_data=data))
        single_seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    stacked = fit_together(build_seeds(configs, [None] * len(configs), data))
    stacked_seconds = time.perf_counter() - started
    failed = [str(seed.error) for seed in stacked if seed.error is not None]
    if failed:
        raise SystemExit(f"{name}: a stacked seed failed: {failed[0]}")
    one = sum(single_seconds) / len(single_seconds)
    acc_gap = max(abs(a.test["acc"] - s.result.test["acc"]) for a, s in zip(singles, stacked, strict=True))
    same_epochs = all(a.best_epoch == s.result.best_epoch for a, s in zip(singles, stacked, strict=True))
    return {"name": name, "one": one, "singles": sum(single_seconds), "stacked": stacked_seconds,
            "ratio": stacked_seconds / one, "goal": GOALS[name], "acc_gap": acc_gap, "same_epochs": same_epochs,
            "accs": [(a.test["acc"], s.result.test["acc"]) for a, s in zip(singles, stacked, strict=True)]}


def verdict(row: dict) -> str:
    if row["goal"] is None:
        return "none (faster than 3 singles)" if row["stacked"] < row["singles"] else "none (slower than 3 singles)"
    return f"{'met' if row['ratio'] <= row['goal'] else 'missed'} ({row['goal']}x)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--mnist-train-size", type=int, default=10_000, help="MNIST training images (default: "
                        "10,000 of the 50,000, to keep the run to minutes; 0 = all)")
    parser.add_argument("--mnist-epochs", type=int, default=1, help="MNIST epochs (default: 1)")
    parser.add_argument("--pixel-train-size", type=int, default=2_000, help="pixel MNIST training images "
                        "(default: 2,000)")
    parser.add_argument("--pixel-val-size", type=int, default=1_000, help="pixel MNIST validation images "
                        "(default: 1,000)")
    parser.add_argument("--data-dir", default=os.environ.get("RNNBENCH_DATA"), help="where MNIST/raw is "
                        "(default: $RNNBENCH_DATA)")
    parser.add_argument("--only", choices=sorted(GOALS), help="run one configuration only")
    args = parser.parse_args(argv)

    import torch

    from benchmark import fused
    from benchmark.config import TrainConfig
    from benchmark.kernel_choice import load_average, processor

    torch.set_num_threads(args.threads)
    cases = []
    if args.only in (None, "addition"):
        cases.append(("addition", TrainConfig.for_task("addition", "lstm", hidden_size=10, threads=args.threads),
                      None, "generated strings"))
    if args.only in (None, "mnist", "pixel"):
        data, source = mnist_data(args.data_dir)
    if args.only in (None, "mnist"):
        cases.append(("mnist", TrainConfig.for_task("mnist", "lstm", hidden_size=128, threads=args.threads,
                                                    train_size=args.mnist_train_size, epochs=args.mnist_epochs),
                      data, source))
    if args.only == "pixel":
        cases.append(("pixel", TrainConfig.for_task("pixel_mnist", "lstm", hidden_size=64, batch_size=64, epochs=1,
                                                    threads=args.threads, train_size=args.pixel_train_size,
                                                    val_size=args.pixel_val_size), data, source))
    print(f"processor: {processor()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"load average before: {load_average():.2f} on {os.cpu_count()} cores; stacked kernel: "
          f"{'the fused C++ cells seed by seed' if fused.available() else 'one batched product per step'}")
    rows = []
    for name, config, data, source in cases:
        print(f"{name}: lstm hidden {config.hidden_size}, batch {config.batch_size}, {config.epochs} epoch(s), "
              f"train size {config.train_size or 'all'}, {source}; seeds {', '.join(map(str, SEEDS))}", flush=True)
        rows.append(run_case(name, config, data))
        print(f"  done; load average {load_average():.2f}", flush=True)
    print()
    print("| task | one seed (s) | 3 singles (s) | 3 stacked (s) | stacked / one seed | goal | test acc single vs "
          "stacked | agree |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        accs = ", ".join(f"{100 * a:.2f}/{100 * b:.2f}" for a, b in row["accs"])
        agree = f"max |Δ acc| {100 * row['acc_gap']:.2f} pt, best epochs {'equal' if row['same_epochs'] else 'differ'}"
        print(f"| {row['name']} | {row['one']:.1f} | {row['singles']:.1f} | {row['stacked']:.1f} | "
              f"{row['ratio']:.2f}x | {verdict(row)} | "
              f"{accs} | {agree} |")
    print(f"\nload average after: {load_average():.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
