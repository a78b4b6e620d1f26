"""Every task rnnbench ships, registered through ``register_task`` as a plugin's are, and ``build_task``.

Example: python -c "from benchmark.registry import task_record; print(task_record('addition'))"

Each ``register_task`` call below is the task's record (``benchmark.registry.TaskRecord``): its label, defaults,
data directory, input normalisation, metrics and goals. Its class, in the module it names, owns the data,
batching, loss wiring and ``evaluate``; it is imported when a run first builds the task, so this module, and every
reader of the records (the CLI, study files, the report), costs no torch. A new task goes in a module of its own
here and one ``register_task`` call below; a plugin decorates its class with the same function.
"""

from __future__ import annotations

from ..catalog import ADDITION_EVAL_LENGTHS
from ..registry import Goal, register_task, task_record

# MNIST pixels scaled to [0, 1]: the 60k training images' mean and std, the standardisation torchvision's own MNIST
# examples apply (input_scale "standard").
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081
# The reference goals in percent (docs/results.md lists all 16), each over 3 seeds of the best configuration.
MNIST_GOALS = {"rnn": 97.5, "lstm": 99.0, "gru": 98.9, "birnn": 97.8, "bilstm": 99.1, "bigru": 99.0}

register_task(
    "mnist", f"{__name__}.mnist:MnistTask",
    description="MNIST read row by row: 28 steps of 28 pixels, the digit from the final state",
    label="MNIST",
    # The course notebook's settings, so that `rnnbench train --task mnist --arch lstm` reproduces it.
    defaults={"hidden_size": 128, "lr": 1e-3, "batch_size": 500, "epochs": 10},
    data_dir=True, normalisation=(PIXEL_MEAN, PIXEL_STD), pixel_rows=True,
    goals=(*(Goal("seed_mean", goal, (arch,)) for arch, goal in MNIST_GOALS.items()), Goal("best_single", 99.2)),
)
register_task(
    "addition", f"{__name__}.addition:AdditionTask",
    description="binary addition, least significant bit first: one sum bit per step, tested to length 1000",
    label="addition",
    defaults={"hidden_size": 10, "lr": 1e-2, "batch_size": 100, "epochs": 10, "train_size": 10_000,
              "eval_lengths": ADDITION_EVAL_LENGTHS},
    metrics=("acc", "seq_acc"), per_length=("bit_acc", "seq_acc"),
    metric_labels={"acc": "mean bit accuracy", "seq_acc": "whole-string accuracy", "bit_acc": "bit accuracy"},
    goals=(Goal("every_seed", 100.0), Goal("at_length", 100.0, ("lstm", "gru"), "seq_acc", 1000),
           Goal("trained_on_length", 98.0, length=3)),
)
register_task(
    "pixel_mnist", f"{__name__}.pixel_mnist:PixelMnistTask",
    description="pixel MNIST: 784 steps of one pixel in raster order (Le et al. 2015)",
    label="pixel MNIST", data_dir=True, normalisation=(PIXEL_MEAN, PIXEL_STD),
)
register_task(
    "permuted_pixel_mnist", f"{__name__}.pixel_mnist:PermutedPixelMnistTask",
    description="permuted pixel MNIST: the 784 pixels in one fixed random order (Le et al. 2015)",
    label="permuted pixel MNIST", data_dir=True, normalisation=(PIXEL_MEAN, PIXEL_STD),
)

# The research tasks: synthetic tasks that each isolate one ability (docs/tasks.md defines each exactly). The
# sequence length T of the fixed-length ones is `max_train_length`.
register_task(
    "adding_problem", f"{__name__}.adding_problem:AddingProblemTask",
    description="the adding problem (Hochreiter & Schmidhuber 1997): the sum of the two marked values of T steps, "
                "regressed from the final state; acc is the explained variance 1 - MSE / (1/6)",
    label="adding problem",
    # Batches of 50: 2,000 steps in 10 epochs, what a GRU needed to leave the plateau at MSE 1/6 on T = 100.
    defaults={"hidden_size": 64, "lr": 3e-3, "batch_size": 50, "epochs": 10, "train_size": 10_000,
              "max_train_length": 100, "loss": "mse", "clip_grad": 1.0},
    metrics=("acc", "mse"), raw_metrics=("mse",),
    metric_labels={"acc": "explained variance", "mse": "test MSE"},
    goals=(Goal("seed_mean", 94.0),),  # explained variance 94 % = MSE 0.01, the usual pass mark
)
register_task(
    "selective_copy", f"{__name__}.selective_copy:SelectiveCopyTask",
    description="selective copying (Gu & Dao 2023): 16 tokens scattered among T noise steps, emitted in order "
                "after 16 markers",
    label="selective copying",
    defaults={"hidden_size": 128, "lr": 3e-3, "batch_size": 64, "epochs": 10, "train_size": 10_000,
              "max_train_length": 256, "clip_grad": 1.0},
    metric_labels={"acc": "token accuracy"},
    goals=(Goal("seed_mean", 99.0),),
)
register_task(
    "mqar", f"{__name__}.mqar:MqarTask",
    description="multi-query associative recall (Arora et al. 2023): T // 16 key-value pairs over 256 tokens, "
                "then each key asked once",
    label="MQAR",
    defaults={"hidden_size": 128, "lr": 3e-3, "batch_size": 64, "epochs": 10, "train_size": 20_000,
              "max_train_length": 64, "clip_grad": 1.0},
    metric_labels={"acc": "recall accuracy"},
    goals=(Goal("seed_mean", 99.0),),
)
register_task(
    "parity", f"{__name__}.parity:ParityTask",
    description="running parity of a bit string (after Deletang et al. 2023): trained on lengths 1..40, "
                "tested on 41..500",
    label="parity",
    defaults={"hidden_size": 32, "lr": 1e-2, "batch_size": 100, "epochs": 10, "train_size": 10_000,
              "max_train_length": 40},
    per_length=("acc",), metric_labels={"acc": "per-step accuracy"}, test_span="{after}..500",
    goals=(Goal("seed_mean", 90.0),),
)
register_task(
    "modular_counting", f"{__name__}.modular_counting:ModularCountingTask",
    description="running sum mod 5 of digits 0..4 (after Deletang et al. 2023): trained on lengths 1..40, "
                "tested on 41..500",
    label="modular counting",
    defaults={"hidden_size": 32, "lr": 1e-2, "batch_size": 100, "epochs": 10, "train_size": 10_000,
              "max_train_length": 40},
    per_length=("acc",), metric_labels={"acc": "per-step accuracy"}, test_span="{after}..500",
    goals=(Goal("seed_mean", 90.0),),
)


def build_task(config, device, **data):
    """The task named by config.task; ``data`` passes preloaded tensors (tests use synthetic ones)."""
    return task_class(config.task)(config, device, **data)


def task_class(name: str) -> type:
    return task_record(name).cls


def preload(name: str, data_dir=None) -> dict | None:
    """The data of task ``name`` loaded once, for the many runs of a study, a confirmation or a reproduction to
    share: its class's ``load_data(data_dir)`` where its record reads a data directory; None otherwise."""
    if not task_record(name).data_dir:
        return None
    return task_class(name).load_data(data_dir)


def __getattr__(name: str):
    # The protocol the training loop sees, imported (with torch) only when asked for.
    if name in ("Batch", "Task"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Batch", "Task", "build_task", "task_class"]
