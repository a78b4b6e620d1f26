"""Torch-free names of what the suite knows: architectures, tasks, losses, presets and training choices.

Example: python -c "from benchmark import catalog; print(list(catalog.ARCHITECTURES))"

The CLI's choices, ``TrainConfig``'s validation and the report's row order read these without importing
torch. An architecture is data: which recurrent cell and whether it runs both directions, and for a cell a
plugin registered (``benchmark.registry``), the file or module it came from. Registering appends to
``ARCHITECTURES`` and ``TASKS``, so their order is the built-ins, then registered names in registration order.
"""

from __future__ import annotations

ARCHITECTURES: dict[str, dict] = {
    "rnn": {"cell": "rnn", "bidirectional": False},
    "lstm": {"cell": "lstm", "bidirectional": False},
    "gru": {"cell": "gru", "bidirectional": False},
    "birnn": {"cell": "rnn", "bidirectional": True},
    "bilstm": {"cell": "lstm", "bidirectional": True},
    "bigru": {"cell": "gru", "bidirectional": True},
}
BUILTIN_ARCHITECTURES: tuple[str, ...] = tuple(ARCHITECTURES)
TASKS: list[str] = ["mnist", "addition"]
BUILTIN_TASKS: tuple[str, ...] = tuple(TASKS)
LOSSES: tuple[str, ...] = ("ce", "mse")
PRESETS: tuple[str, ...] = ("quick", "standard", "full")
READOUTS: tuple[str, ...] = ("last", "per_step")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "onecycle")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
INPUT_SCALES: tuple[str, ...] = ("standard", "unit")
# native: the nn module; aten: the same with oneDNN off (CPU); loop: an explicit cell loop over the same
# weights; fused: that loop with C++ LSTM/GRU steps; auto: what benchmark.models picks for the device.
IMPLS: tuple[str, ...] = ("auto", "native", "aten", "loop", "fused")
# Addition's generalisation lengths, tested beyond max_train_length by train, every study and confirm alike, so
# that ``test_bit_acc_by_len`` compares the same lengths across runs. The test is batched across lengths: ~1 s.
ADDITION_EVAL_LENGTHS: tuple[int, ...] = (30, 50, 100, 200, 500, 1000)


def arch_order_key(arch: str) -> tuple[int, str]:
    """Catalogue order, then unknown names alphabetically: the order of every table and legend."""
    names = list(ARCHITECTURES)
    return (names.index(arch) if arch in names else len(names), arch)


def task_order_key(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)
