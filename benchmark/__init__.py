"""rnnbench: benchmark recurrent networks on sequence tasks, tuned with Optuna and tracked in MLflow.

Example: rnnbench train --task addition --arch lstm

The public face for plugins is ``register_cell`` and ``register_task`` (``benchmark.registry``). Importing the
package registers rnnbench's own cells and tasks through them (``benchmark/cells/__init__.py``,
``benchmark/tasks/__init__.py``): their names and records, not their classes, so ``import benchmark`` stays free of
torch.
"""

__version__ = "0.1.0"

from . import cells, tasks  # noqa: E402  (after __version__, which the modules below may read)
from .registry import list_architectures, list_cells, list_tasks, register_cell, register_task  # noqa: E402

__all__ = ["__version__", "register_cell", "register_task", "list_cells", "list_tasks", "list_architectures",
           "cells", "tasks"]
