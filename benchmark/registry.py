"""Every cell and task, built-in or plugin, behind one ``register_cell`` and one ``register_task``.

Example: rnnbench --plugin my_cells.py train --task addition --arch mycell

A cell is an ``nn.Module`` built as ``Cell(input_size, hidden_size, *, num_layers, dropout, bidirectional)``
whose ``forward(x, lengths)`` returns ``(outputs [B, T, D*H], last [B, D*H])``; the suite adds the readout head
(``benchmark.models.Model``). A task is a class implementing ``benchmark.tasks.base.Task``, described by a
``TaskRecord``: what it is called and shown as, its defaults, its data directory and input normalisation, the
metrics it reports (which one is the objective, which are per length) and its goals.

Both decorators take a class (a plugin: ``@register_cell("mycell")`` over the class) or the class's import path
(``register_cell("lstm", "benchmark.cells.native:LSTM")``), which is imported when the first model is built.
rnnbench declares its own cells and tasks the second way in ``benchmark/cells/__init__.py`` and
``benchmark/tasks/__init__.py``, so their names, records and labels are known without importing torch: the
CLI's help, study-file checks and the report read them here. Registering also names the cell or task in
``benchmark.catalog``. A name already taken, by a built-in or by another plugin, is refused in one line naming
who took it.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import catalog
from .errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_]*")
BUILTIN_PACKAGE = "benchmark."  # cells and tasks declared inside rnnbench: versioned with it, not as plugins


class RegistryError(ConfigError):
    """A name that is taken or malformed; one line names it and who holds it."""


@dataclass(frozen=True)
class Source:
    """Where a registered class came from: its module, the file and the sha256 of the file's bytes."""

    module: str
    file: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        return self.file or self.module

    @property
    def builtin(self) -> bool:
        return self.module.startswith(BUILTIN_PACKAGE)


def _load(target: type | str) -> type:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _source(target: type | str) -> Source:
    module = target.partition(":")[0] if isinstance(target, str) else target.__module__
    if isinstance(target, str):  # a built-in declared by path: versioned with rnnbench, no file to hash
        return Source(module)
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return Source(module)
    path = Path(file).resolve()
    return Source(module, str(path), file_sha256(path))


class Registered:
    """What a registered cell and a task record share: the class, imported on first use, and the display name."""

    name: str
    target: type | str
    label: str

    @property
    def cls(self) -> type:
        return _load(self.target)

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class CellSpec(Registered):
    """A registered cell: its name, whether it runs both directions, and the class (imported on first use).

    ``impls`` lists the kernels a cell can run (``--impl``); a cell that names none runs its own forward.
    """

    name: str
    target: type | str
    bidirectional: bool
    source: Source
    label: str = ""
    impls: tuple[str, ...] = ()
    colour: str = ""  # in every figure; a cell without one takes the next free colour


@dataclass(frozen=True)
class Goal:
    """One reference goal of a task, a percentage the report holds the store against.

    ``kind`` says what is measured: ``seed_mean`` (the mean test ``metric`` over the seeds of ``arch``'s best
    configuration), ``best_single`` (the best single run of any architecture), ``every_seed`` (every seed of every
    architecture's best configuration), ``at_length`` (every seed's ``metric`` at ``length``, for each of
    ``archs``) and ``trained_on_length`` (the best architecture's seed mean, retrained on ``length`` alone).
    """

    kind: str
    target: float
    archs: tuple[str, ...] = ()  # () = every architecture reported
    metric: str = "acc"
    length: int = 0

    KINDS = ("seed_mean", "best_single", "every_seed", "at_length", "trained_on_length")


@dataclass(frozen=True)
class TaskRecord(Registered):
    """Everything the suite knows about a task without building it (no torch).

    ``metrics`` are what ``evaluate`` returns besides ``loss``; the tracker logs each as ``val_<m>`` and
    ``test_<m>``. ``objective`` is the one the search ranks on (higher is better); it must be ``acc`` for now,
    because early stopping, confirmation and the report's comparison rank on ``acc`` too, and a search that ranked
    on another metric would choose a trial the report does not compare on. ``per_length`` names metrics
    that ``evaluate`` also returns per sequence length as ``<m>_by_len`` (``{length: value}``); they are logged
    as ``test_<m>_by_len`` with the length as the step and drawn by the report's lengths section.
    Metrics are fractions shown in percent, except ``raw_metrics`` (an MSE), shown as plain numbers.
    """

    name: str
    target: type | str
    source: Source
    description: str = ""
    label: str = ""  # the task in tables and figure titles; the name where empty
    defaults: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig settings for `--task NAME`
    data_dir: bool = False  # reads `--data-dir` (a data set on disk)
    normalisation: tuple[float, float] | None = None  # (mean, std) of inputs in [0, 1], for input_scale standard
    metrics: tuple[str, ...] = ("acc",)
    objective: str = "acc"
    metric_labels: Mapping[str, str] = field(default_factory=dict)  # metric -> words; "acc" -> "test accuracy"
    per_length: tuple[str, ...] = ()
    raw_metrics: tuple[str, ...] = ()  # metrics that are not fractions: shown as numbers (4 significant digits)
    goals: tuple[Goal, ...] = ()
    pixel_rows: bool = False  # a served model takes raw 0..255 image rows [B, T, F]
    # The lengths the test metrics cover, where they are not the training lengths 1..max_train_length (the default):
    # parity scores only the unseen ones, "{after}..500" ({after}: max_train_length + 1).
    test_span: str = ""

    def scored_span(self, max_train_length) -> str:
        """The lengths a test metric of this task covers, in words: "1..20" for addition, "41..500" for parity."""
        if not self.test_span:
            return f"1..{max_train_length}"
        after = int(max_train_length) + 1 if str(max_train_length).isdigit() else "L+1"
        return self.test_span.format(after=after)

    def shown(self, metric: str, value: float | None, unit: bool = False) -> str:
        """A metric's value as tables and summary lines show it: "97.31" (with ``unit``, "97.31%") for a
        fraction, "0.003412" for a raw metric, "—" for none."""
        if value is None:
            return "—"
        if metric in self.raw_metrics:
            return f"{value:.4g}"
        return f"{100 * value:.2f}{'%' if unit else ''}"

    def metric_label(self, metric: str) -> str:
        """A metric in words, for prose and figure axes: "test accuracy", "mean bit accuracy"."""
        default = "test accuracy" if metric == "acc" else f"test {metric.replace('_', ' ')}"
        return self.metric_labels.get(metric, default)

    def short_label(self, metric: str) -> str:
        """A metric in a table header or a goal's line: "test acc", "bit acc", "string acc"."""
        return self.metric_label(metric).removeprefix("mean ").removeprefix("whole-").replace("accuracy", "acc")

    def trained_on(self, train_lengths: tuple[int, ...] = (), max_train_length: int = 0) -> str:
        """What a run was trained on, in words, for figure titles: "MNIST", "addition, lengths 1..20",
        "addition, length 3"."""
        if not self.per_length:
            return self.display
        if train_lengths:
            plural = "s" if len(train_lengths) > 1 else ""
            return f"{self.display}, length{plural} {', '.join(str(n) for n in train_lengths)}"
        return f"{self.display}, lengths 1..{max_train_length}"


RECORD_FIELDS = tuple(f.name for f in fields(TaskRecord) if f.name not in ("name", "target", "source"))
CELLS: dict[str, CellSpec] = {}
TASKS: dict[str, TaskRecord] = {}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _holder(kind: str, name: str) -> str:
    spec = CELLS.get(name) if kind == "cell" else TASKS.get(name)
    if spec is None or spec.source.builtin:
        return f"a built-in {'architecture' if kind == 'cell' else 'task'}"
    return f"registered by {spec.source.describe()}"


def _check_name(kind: str, name: str, taken) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RegistryError(f"{kind} name {name!r} is not lowercase letters, digits and underscores")
    if name in taken:
        raise RegistryError(f"{kind} name {name!r} is taken ({_holder(kind, name)})")


def register_cell(name: str, target: type | str | None = None, *, bidirectional: bool = False, label: str = "",
                  impls: tuple[str, ...] = (), colour: str = ""):
    """Make the cell ``name`` an architecture of every command (``--arch name``).

    With ``target`` (a class or ``"module:Class"``) it registers at once; without, it is a class decorator.
    """

    def register(cls: type | str) -> type | str:
        _check_name("cell", name, catalog.ARCHITECTURES)
        source = _source(cls)
        CELLS[name] = CellSpec(name, cls, bool(bidirectional), source, label, tuple(impls), colour)
        # "cell": the recurrence both directions of it share ("lstm" for bilstm): the class a path names.
        cell = cls.rpartition(":")[2].lower() if isinstance(cls, str) else name
        catalog.ARCHITECTURES[name] = {"cell": cell, "bidirectional": bool(bidirectional), "label": label or name,
                                       "colour": colour, "kernels": bool(impls),
                                       **({} if source.builtin else {"plugin": source.describe()})}
        return cls

    return register if target is None else register(target)


def register_task(name: str, target: type | str | None = None, **record: Any):
    """Make the task ``name`` a task of every command (``--task name``), described by ``record``'s fields
    (``TaskRecord``; each has a default). With ``target`` it registers at once; without, it decorates the class."""
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        raise RegistryError(f"task {name!r}: unknown record field(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(RECORD_FIELDS)}")

    def register(cls: type | str) -> type | str:
        _check_name("task", name, catalog.TASKS)
        values = dict(record)
        for key in ("metrics", "per_length", "raw_metrics", "goals"):
            if key in values:
                values[key] = tuple(values[key])
        for key in ("defaults", "metric_labels"):
            values[key] = MappingProxyType(dict(values.get(key, {})))
        if "normalisation" in values and values["normalisation"] is not None:
            values["normalisation"] = tuple(float(v) for v in values["normalisation"])
        task = TaskRecord(name, cls, _source(cls), **values)
        if task.objective not in task.metrics:
            raise RegistryError(f"task {name!r}: objective {task.objective!r} is not among its metrics "
                                f"({', '.join(task.metrics)})")
        if task.objective != "acc":
            raise RegistryError(f"task {name!r}: objective {task.objective!r} is not supported: searches, early "
                                f"stopping and reports rank on 'acc'; return 'acc' from evaluate and list "
                                f"{task.objective!r} in metrics beside it")
        if task.objective in task.raw_metrics or not set(task.raw_metrics) <= set(task.metrics):
            raise RegistryError(f"task {name!r}: raw_metrics must be among its metrics and exclude the objective "
                                f"{task.objective!r}")
        bad = [goal.kind for goal in task.goals if goal.kind not in Goal.KINDS]
        if bad:
            raise RegistryError(f"task {name!r}: unknown goal kind(s) {', '.join(bad)}; valid: {', '.join(Goal.KINDS)}")
        TASKS[name] = task
        catalog.TASKS.append(name)
        return cls

    return register if target is None else register(target)


def task_record(name: str) -> TaskRecord:
    """The record of task ``name``; a name never registered (a store's run of an unloaded plugin) gets a plain
    record with every default, so readers such as the report need no special case."""
    return TASKS.get(name) or TaskRecord(name, "", Source("unknown"))


def cell_spec(name: str) -> CellSpec:
    if name not in CELLS:
        raise RegistryError(f"unknown architecture {name!r}; valid: {', '.join(CELLS)}")
    return CELLS[name]


def list_cells() -> list[str]:
    """Every registered cell, built-ins first, then plugins in registration order."""
    return list(CELLS)


def list_tasks() -> list[str]:
    """Every task: the built-ins, then registered ones in registration order."""
    return list(catalog.TASKS)


def list_architectures() -> list[str]:
    """Every architecture: the built-ins, then registered cells in registration order."""
    return list(catalog.ARCHITECTURES)
