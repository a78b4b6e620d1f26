"""What the harness times on rnnbench's side: a train step, fit's epochs, batching, evaluation, a trial's memory.

Example: rnnbench perf --quick --threads 1
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import TrainConfig
from ..kernel_choice import prepare_kernels
from ..models import build_model
from ..train import fit, make_optimizer, seed_everything, train_step

PERF_VAL_IMAGES = 2000  # validation cut for fit's timing runs: epoch times exclude evaluation anyway
ADDITION_EVAL_LENGTHS = tuple(range(25, 1001, 25))  # accuracy vs length: 1..20, then every 25 up to 1000


@dataclass(frozen=True)
class Sizes:
    hidden: int
    batch: int
    batches: int  # batches per timed MNIST epoch / step run
    repeats: int  # interleaved rounds; the best round counts
    notebook_strings: int  # addition strings timed in the notebook's per-string loop
    sgemm_size: int
    eval_lengths: tuple[int, ...]  # addition generalisation lengths for the accuracy-vs-length timing
    addition_train_size: int
    addition_epochs: int
    trial_train_size: int  # 0 = all 50k


FULL = Sizes(hidden=128, batch=500, batches=10, repeats=2, notebook_strings=250, sgemm_size=2048,
             eval_lengths=ADDITION_EVAL_LENGTHS, addition_train_size=10_000, addition_epochs=10,
             trial_train_size=10_000)
QUICK = Sizes(hidden=128, batch=500, batches=2, repeats=1, notebook_strings=20, sgemm_size=256,
              eval_lengths=(1000,), addition_train_size=400, addition_epochs=2, trial_train_size=1000)


# ---------------------------------------------------------------- rnnbench's side
def synthetic_mnist(n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """uint8 digit-shaped noise for smoke runs without MNIST on disk (timings only; nothing to learn)."""
    generator = torch.Generator().manual_seed(seed)
    return {"train_images": torch.randint(0, 256, (n_train, 28, 28), generator=generator, dtype=torch.uint8),
            "train_labels": torch.randint(0, 10, (n_train,), generator=generator),
            "test_images": torch.randint(0, 256, (n_test, 28, 28), generator=generator, dtype=torch.uint8),
            "test_labels": torch.randint(0, 10, (n_test,), generator=generator)}


def step_rate(config: TrainConfig, task, batches: int) -> float:
    """Samples/s of fit's train_step alone on one fixed batch (2 warm-up steps untimed)."""
    seed_everything(config.seed)
    device = torch.device(getattr(task, "device", "cpu"))
    model = build_model(config, task).to(device)
    optimizer = make_optimizer(config, model)
    batch = next(task.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
    prepare_kernels(model, device, lambda: batch)  # as fit does: auto measures its pick before the clock
    for _ in range(2):
        train_step(model, task, config, optimizer, batch)
    started = time.perf_counter()
    for _ in range(batches):
        loss = train_step(model, task, config, optimizer, batch)
    loss.item()  # wait for the device before stopping the clock
    return batches * len(batch.y) / (time.perf_counter() - started)


def auto_pick(config: TrainConfig, task) -> str:
    """The kernel ``--impl auto`` trains a built-in ``config`` with on ``task`` here (measured once per shape, then
    cached: the pick ``step_rate`` timed)."""
    device = torch.device(getattr(task, "device", "cpu"))
    model = build_model(config.replace(impl="auto"), task).to(device)
    batch = next(task.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
    return prepare_kernels(model, device, lambda: batch)


def fit_rate(config: TrainConfig, task) -> tuple[float, object]:
    """Samples/s of fit's training epochs (evaluation excluded: fit times epochs without it); best epoch."""
    result = fit(config, task, quiet=True)
    return task.train_size / min(result.epoch_seconds[1:] or result.epoch_seconds), result


def batching_rate(task, batch_size: int) -> float:
    """Images/s of MnistTask.train_batches alone over its whole training split (batch tensors materialised)."""
    generator = torch.Generator().manual_seed(0)
    for _ in task.train_batches(batch_size, generator):  # warm-up epoch
        pass
    started = time.perf_counter()
    seen = 0
    for batch in task.train_batches(batch_size, generator):
        seen += batch.x.size(0)
    batch.x.sum().item()
    return seen / (time.perf_counter() - started)


def eval_seconds(task, model, split: str, repeats: int = 2) -> tuple[float, dict]:
    """Best wall time of task.evaluate over ``repeats`` runs, and its metrics."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        metrics = task.evaluate(model, split, "ce")
        best = min(best, time.perf_counter() - started)
    return best, metrics


# The notebook's two experiments, the ones perf times our training against: MNIST rows and binary addition.
ROWS, ADDITION = "mnist", "addition"

TRIAL_SCRIPT = """
import json, resource, sys
from benchmark.config import TrainConfig
from benchmark.perf.rates import synthetic_mnist
from benchmark.tracking import tracked_run
from benchmark.train import fit
args = json.loads(sys.argv[1])
config = TrainConfig.for_task(args["task"], args["arch"], epochs=1, hidden_size=args["hidden"],
                              batch_size=args["batch"], train_size=args["train_size"], threads=args["threads"])
data = synthetic_mnist() if args["synthetic"] else None
with tracked_run(config, tracking_uri=args["uri"]) as tracker:
    fit(config, tracker=tracker, quiet=True, task_data=data)
print(json.dumps({"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def trial_peak_rss(arch: str, sizes: Sizes, threads: int, synthetic: bool) -> float:
    """Peak resident MB of one tracked MNIST trial (1 epoch, MLflow SQLite store) in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        args = {"task": ROWS, "arch": arch, "hidden": sizes.hidden, "batch": sizes.batch,
                "train_size": sizes.trial_train_size,
                "threads": threads, "synthetic": synthetic, "uri": f"sqlite:///{tmp}/mlflow.db"}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                            os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", TRIAL_SCRIPT, json.dumps(args)], capture_output=True,
                              text=True, cwd=tmp, env=env, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"trial subprocess failed: {done.stderr.strip().splitlines()[-1:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["max_rss_mb"]
