"""Torch-free names of what the suite knows: architectures, tasks, losses, presets and training choices.

Example: python -c "from benchmark import catalog; print(list(catalog.ARCHITECTURES))"

The CLI's choices, ``TrainConfig``'s validation and the report's row order read these without importing
torch. An architecture is data: which recurrent cell and whether it runs both directions, and for a cell a
plugin registered (``benchmark.registry``), the file or module it came from. Registering appends to
``ARCHITECTURES`` and ``TASKS``, so their order is the built-ins, then registered names in registration order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

# Filled by ``benchmark.registry``: rnnbench's own cells and tasks (``benchmark/cells/__init__.py``,
# ``benchmark/tasks/__init__.py``, imported with the package) and then plugins', in registration order.
ARCHITECTURES: dict[str, dict] = {}
TASKS: list[str] = []
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
# Generalisation lengths of a task trained on lengths (addition), tested beyond max_train_length by train, every
# study and confirm alike, so that ``test_bit_acc_by_len`` compares the same lengths across runs.
ADDITION_EVAL_LENGTHS: tuple[int, ...] = (30, 50, 100, 200, 500, 1000)


def __getattr__(name: str):
    # Views of the registered names, computed when asked: the registry fills ARCHITECTURES after this module loads.
    if name == "BUILTIN_ARCHITECTURES":  # the nn.RNN / nn.LSTM / nn.GRU architectures: those with kernels to pick
        return tuple(arch for arch, spec in ARCHITECTURES.items() if spec.get("kernels"))
    if name == "ARCH_COLOURS":
        return {arch: spec["colour"] for arch, spec in ARCHITECTURES.items() if spec.get("colour")}
    if name == "BUILTIN_TASKS":  # the tasks rnnbench trains by default
        return ("mnist", "addition")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def arch_order_key(arch: str) -> tuple[int, str]:
    """Catalogue order, then unknown names alphabetically: the order of every table and legend."""
    names = list(ARCHITECTURES)
    return (names.index(arch) if arch in names else len(names), arch)


def task_order_key(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)


# A cell's colour in every figure is the one it was registered with; cells without one take the next of these in
# the order given (the report: the order the store first saw them), else one by name hash.
PLUGIN_COLOURS: tuple[str, ...] = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
                                   "#dbdb8d")  # tab20's light shades: none is a shipped cell's


def arch_colour(arch: str, plugins: Sequence[str] = ()) -> str:
    """The colour of ``arch`` in every figure: fixed for the built-ins; a plugin's from its place in
    ``plugins`` (built-ins in it are skipped), or, when it is not there, from a hash of its name."""
    fixed = __getattr__("ARCH_COLOURS")
    if arch in fixed:
        return fixed[arch]
    others = [name for name in dict.fromkeys(plugins) if name not in fixed]
    index = others.index(arch) if arch in others else zlib.crc32(arch.encode())
    return PLUGIN_COLOURS[index % len(PLUGIN_COLOURS)]
