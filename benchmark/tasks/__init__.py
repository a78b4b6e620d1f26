"""The tasks the suite trains on, by name, and ``build_task``.

Example: rnnbench train --task addition --arch lstm

Every task implements ``benchmark.tasks.base.Task``; its names are ``benchmark.catalog.TASKS``. ``TASKS`` here
holds the built-in classes; a plugin's are in ``benchmark.registry.TASK_CLASSES``.
"""

from __future__ import annotations

from ..registry import TASK_CLASSES
from .addition import AdditionTask
from .base import Batch, Task
from .mnist import MnistTask

TASKS: dict[str, type[Task]] = {"mnist": MnistTask, "addition": AdditionTask}


def build_task(config, device, **data) -> Task:
    """The task named by config.task; ``data`` passes preloaded tensors (tests use synthetic ones)."""
    return task_class(config.task)(config, device, **data)


def task_class(name: str) -> type[Task]:
    return TASKS[name] if name in TASKS else TASK_CLASSES[name]


__all__ = ["Batch", "Task", "TASKS", "build_task", "task_class"]
