"""The tasks the suite trains on, by name, and ``build_task``.

Example: rnnbench train --task addition --arch lstm

Every task implements ``benchmark.tasks.base.Task``; its names are ``benchmark.catalog.TASKS``.
"""

from __future__ import annotations

from .addition import AdditionTask
from .base import Batch, Task
from .mnist import MnistTask

TASKS: dict[str, type[Task]] = {"mnist": MnistTask, "addition": AdditionTask}


def build_task(config, device, **data) -> Task:
    """The task named by config.task; ``data`` passes preloaded tensors (tests use synthetic ones)."""
    return TASKS[config.task](config, device, **data)


__all__ = ["Batch", "Task", "TASKS", "build_task"]
