"""rnnbench: benchmark recurrent networks on sequential MNIST and binary addition.

Example: rnnbench train --task addition --arch lstm
"""

__version__ = "0.1.0"

PLUGIN_DECORATORS = ("register_cell", "register_task")


def __getattr__(name: str):
    # Resolved on first use so that `import benchmark` loads nothing but this file.
    if name in PLUGIN_DECORATORS:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
