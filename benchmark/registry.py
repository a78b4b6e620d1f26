"""The cells and tasks plugins add: plain dicts behind ``register_cell`` and ``register_task``.

Example: rnnbench --plugin my_cells.py train --task addition --arch mycell

A registered cell is an ``nn.Module`` built as ``Cell(input_size, hidden_size, *, num_layers, dropout,
bidirectional)`` whose ``forward(x, lengths)`` returns ``(outputs [B, T, D*H], last [B, D*H])``; the suite adds
the readout head (``benchmark.models.CellModel``). The module imports no torch: the CLI's help and the report
read the catalog only. A registered task is a class implementing
``benchmark.tasks.base.Task``. Registering also names the cell or task in ``benchmark.catalog``, so the CLI's
choices, ``TrainConfig`` and the report's order know it without importing the plugin. A name already taken,
by a built-in or by another plugin, is refused in one line naming who took it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import catalog
from .config import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_]*")
# Cells and tasks shipped inside rnnbench but written as plugins: registered when present.
BUILTIN_PLUGINS = ("benchmark.cells", "benchmark.tasks.pixel_mnist")


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


@dataclass(frozen=True)
class CellSpec:
    name: str
    cls: type
    bidirectional: bool
    source: Source


CELLS: dict[str, CellSpec] = {}
TASK_CLASSES: dict[str, type] = {}  # registered tasks only; benchmark.tasks.TASKS holds the built-ins
TASK_SOURCES: dict[str, Source] = {}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_of(cls: type) -> Source:
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file:
        return Source(cls.__module__)
    path = Path(file).resolve()
    return Source(cls.__module__, str(path), file_sha256(path))


def _holder(kind: str, name: str) -> str:
    if kind == "cell":
        if name in CELLS:
            return f"registered by {CELLS[name].source.describe()}"
        return "a built-in architecture"
    if name in TASK_SOURCES:
        return f"registered by {TASK_SOURCES[name].describe()}"
    return "a built-in task"


def _check_name(kind: str, name: str, taken) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RegistryError(f"{kind} name {name!r} is not lowercase letters, digits and underscores")
    if name in taken:
        raise RegistryError(f"{kind} name {name!r} is taken ({_holder(kind, name)})")


def register_cell(name: str, *, bidirectional: bool = False):
    """Class decorator: make the cell ``name`` an architecture of every command (``--arch name``)."""

    def register(cls: type) -> type:
        _check_name("cell", name, catalog.ARCHITECTURES)
        source = source_of(cls)
        CELLS[name] = CellSpec(name, cls, bool(bidirectional), source)
        catalog.ARCHITECTURES[name] = {"cell": name, "bidirectional": bool(bidirectional),
                                       "plugin": source.describe()}
        return cls

    return register


def register_task(name: str):
    """Class decorator: make the task class ``name`` a task of every command (``--task name``)."""

    def register(cls: type) -> type:
        _check_name("task", name, catalog.TASKS)
        TASK_SOURCES[name] = source_of(cls)
        TASK_CLASSES[name] = cls
        catalog.TASKS.append(name)
        return cls

    return register


def list_cells() -> list[str]:
    """The registered cells (built-in plugins first), in registration order."""
    return list(CELLS)


def list_tasks() -> list[str]:
    """Every task: the built-ins, then registered ones in registration order."""
    return list(catalog.TASKS)


def list_architectures() -> list[str]:
    """Every architecture: the built-ins, then registered cells in registration order."""
    return list(catalog.ARCHITECTURES)


def load_builtin_plugins() -> None:
    """Import the cells and tasks rnnbench ships as plugins, those that exist (``benchmark.plugins`` and the
    CLI call it before any command that trains)."""
    for module in BUILTIN_PLUGINS:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)

