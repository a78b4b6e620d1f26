"""rnnbench: benchmark recurrent networks on sequential MNIST and binary addition.

Example: rnnbench train --task addition --arch lstm

The public face for plugins is ``register_cell`` and ``register_task`` (``benchmark.registry``). They are
looked up on first use, so ``import benchmark`` stays free of torch.
"""

import importlib

__version__ = "0.1.0"
_REGISTRY_NAMES = ("register_cell", "register_task", "list_cells", "list_tasks", "list_architectures")


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        return getattr(importlib.import_module("benchmark.registry"), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")


__all__ = ["__version__", *_REGISTRY_NAMES]
