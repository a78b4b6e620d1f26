"""Plugins: recurrent cells and tasks added by name through two decorators, torch-free.

Example: python -c "import benchmark.cells; from benchmark import registry; print(sorted(registry.CELLS))"

``register_cell(name)`` records a cell class (bidirectional variants: ``bidirectional=True``) and
``register_task(name)`` a class implementing ``benchmark.tasks.base.Task``; both return the class unchanged.
"""

from __future__ import annotations

CELLS: dict[str, tuple[type, bool]] = {}  # name -> (cell class, runs both directions)
TASK_CLASSES: dict[str, type] = {}


def register_cell(name: str, *, bidirectional: bool = False):
    def record(cls: type) -> type:
        CELLS[name] = (cls, bidirectional)
        return cls

    return record


def register_task(name: str):
    def record(cls: type) -> type:
        TASK_CLASSES[name] = cls
        return cls

    return record
