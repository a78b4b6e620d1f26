"""Loading plugins: ``--plugin FILE_OR_MODULE``, ``$RNNBENCH_PLUGINS`` and the entry points ``rnnbench.plugins``.

Example: rnnbench --plugin my_cells.py train --task addition --arch mycell

A plugin is a Python file or an importable module that registers cells or tasks (``benchmark.register_cell``,
``benchmark.register_task``). Each cell it registers is probed on a small padded batch before anything runs:
the shapes of ``(outputs, last)``, that changing the padding changes neither ``last`` nor ``outputs`` at
real steps, and that ``last`` is the output where each direction ends: forward at each row's last real step,
backward at step 0. A plugin that fails to import, takes a taken name or breaks the contract is refused with one
``PluginError`` line naming it. What was loaded (module, file, sha256 of its bytes) is kept in ``LOADED``, and
``environment_value()`` hands the same plugins to worker processes through ``$RNNBENCH_PLUGINS``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .catalog import READOUTS
from .errors import ConfigError

PLUGINS_ENV = "RNNBENCH_PLUGINS"
ENTRY_POINT_GROUP = "rnnbench.plugins"
PROBE_FEATURES, PROBE_HIDDEN, PROBE_LENGTHS = 4, 3, (5, 3, 1)
TASK_METHODS = ("train_size", "train_batches", "loss", "evaluate")  # name, sizes, readout may be set per instance


class PluginError(ConfigError):
    """A plugin refused: it did not import, took a taken name, or broke the cell or task contract."""


@dataclass(frozen=True)
class LoadedPlugin:
    spec: str  # as given: a file path, a module name, or an entry point's name
    origin: str  # "--plugin", PLUGINS_ENV or "entry point"
    module: str
    file: str | None
    sha256: str | None
    cells: tuple[str, ...]
    tasks: tuple[str, ...]


LOADED: dict[str, LoadedPlugin] = {}  # by identity: the resolved file path, or the module name


def is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec


def identity(spec: str) -> str:
    return str(Path(spec).resolve()) if is_file_spec(spec) else spec


def load_plugins(specs: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                 entry_points: bool = True) -> list[LoadedPlugin]:
    """The plugins of ``--plugin`` (``specs``), ``$RNNBENCH_PLUGINS`` and the installed entry points (rnnbench's
    own cells and tasks are registered with the package)."""
    environ = os.environ if environ is None else environ
    loaded = [load_plugin(spec, "--plugin") for spec in specs]
    loaded += [load_plugin(spec, PLUGINS_ENV) for spec in environ.get(PLUGINS_ENV, "").split(":") if spec.strip()]
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            loaded.append(_load(point.name, "entry point", lambda point=point: _run_entry_point(point),
                                point.value.split(":")[0]))
    return loaded


def load_plugin(spec: str, origin: str = "--plugin") -> LoadedPlugin:
    spec = spec.strip()
    if is_file_spec(spec):
        path = Path(spec).resolve()
        if not path.is_file():
            raise PluginError(f"plugin {spec}: no such file")
        return _load(spec, origin, lambda: _import_file(path), str(path))
    return _load(spec, origin, lambda: importlib.import_module(spec), spec)


def _load(spec: str, origin: str, do_import, key: str) -> LoadedPlugin:
    if key in LOADED:
        return LOADED[key]
    cells_before, tasks_before = set(registry.CELLS), set(registry.TASKS)
    try:
        module = do_import()
    except registry.RegistryError as error:
        raise PluginError(f"plugin {spec}: {error}") from None
    except Exception as error:  # whatever the plugin's own code raises
        text = str(error).splitlines()[0] if str(error) else ""
        raise PluginError(f"plugin {spec}: failed to import: {type(error).__name__}: {text}".rstrip(": ")) from None
    cells = tuple(name for name in registry.CELLS if name not in cells_before)
    tasks = tuple(name for name in registry.TASKS if name not in tasks_before)
    for name in cells:
        problem = cell_contract_problem(registry.CELLS[name])
        if problem:
            raise PluginError(f"plugin {spec}: cell {name!r} breaks the contract: {problem}")
    for name in tasks:
        problem = task_contract_problem(registry.TASKS[name].cls)
        if problem:
            raise PluginError(f"plugin {spec}: task {name!r} breaks the contract: {problem}")
    file = getattr(module, "__file__", None) if module is not None else None
    file = str(Path(file).resolve()) if file else None
    name = getattr(module, "__name__", key)
    LOADED[key] = LoadedPlugin(spec, origin, name, file, registry.file_sha256(file) if file else None, cells, tasks)
    return LOADED[key]


def _import_file(path: Path):
    # A file gets a module name of its own, kept in sys.modules so that its classes resolve their module.
    name = f"rnnbench_plugin_{path.stem}_{registry.file_sha256(path)[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _run_entry_point(point):
    # An entry point names a module (imported: its decorators register) or a function (called to register).
    target = point.load()
    if callable(target) and not isinstance(target, type):
        target()
    return sys.modules.get(point.value.split(":")[0])


def environment_value(environ: Mapping[str, str] | None = None) -> str:
    """``$RNNBENCH_PLUGINS`` for a worker: what it holds here plus the ``--plugin`` files and modules loaded."""
    environ = os.environ if environ is None else environ
    specs = [spec for spec in environ.get(PLUGINS_ENV, "").split(":") if spec.strip()]
    for key, plugin in LOADED.items():
        if plugin.origin == "--plugin" and key not in {identity(spec) for spec in specs}:
            specs.append(key)
    return ":".join(specs)


def cell_contract_problem(spec: registry.CellSpec) -> str | None:
    """What is wrong with the cell on a probe batch of lengths 5, 3, 1, or None; the global RNG is left alone."""
    import torch

    directions = 2 if spec.bidirectional else 1
    width = directions * PROBE_HIDDEN
    lengths = torch.tensor(PROBE_LENGTHS, dtype=torch.int64)
    batch, steps = len(PROBE_LENGTHS), max(PROBE_LENGTHS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            cell = spec.cls(PROBE_FEATURES, PROBE_HIDDEN, num_layers=1, dropout=0.0,
                            bidirectional=spec.bidirectional).eval()
        except Exception as error:
            return f"{spec.cls.__name__}({PROBE_FEATURES}, {PROBE_HIDDEN}, num_layers=1, dropout=0.0, " \
                   f"bidirectional={spec.bidirectional}) raised {type(error).__name__}: {error}".splitlines()[0]
        x = torch.randn(batch, steps, PROBE_FEATURES)
        padding = torch.arange(steps)[None, :] >= lengths[:, None]
        changed = x.clone()
        changed[padding] = 10 * torch.randn(int(padding.sum()), PROBE_FEATURES)
        try:
            with torch.no_grad():
                results = [cell(x, lengths), cell(changed, lengths), cell(x, None)]
        except Exception as error:
            return f"forward on x [{batch}, {steps}, {PROBE_FEATURES}] raised {type(error).__name__}: " \
                   f"{error}".splitlines()[0]
    for result in results:
        if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result)):
            return f"forward must return (outputs, last), got {type(result).__name__}"
        outputs, last = result
        if tuple(outputs.shape) != (batch, steps, width) or tuple(last.shape) != (batch, width):
            return (f"outputs {list(outputs.shape)} and last {list(last.shape)} for x [{batch}, {steps}, "
                    f"{PROBE_FEATURES}] and hidden {PROBE_HIDDEN}; expected [{batch}, {steps}, {width}] and "
                    f"[{batch}, {width}]")
    (outputs, last), (outputs_changed, last_changed) = results[0], results[1]
    if not torch.allclose(last, last_changed, atol=1e-5):
        return "changing the padding changes `last`: it must be the state after each row's own last real step"
    real = ~padding
    if not torch.allclose(outputs[real], outputs_changed[real], atol=1e-5):
        return "changing the padding changes `outputs` at real steps: padding is at the end"
    for (outputs, last), ends in ((results[0], lengths - 1), (results[2], torch.full_like(lengths, steps - 1))):
        problem = last_state_problem(outputs, last, ends, spec.bidirectional)
        if problem:
            return problem
    return None


def last_state_problem(outputs, last, ends, bidirectional: bool) -> str | None:
    """``last`` must be the outputs where each direction ends: forward at each row's last real step (``ends``),
    backward at step 0; a bidirectional ``last`` is [forward, backward]."""
    import torch

    hidden = PROBE_HIDDEN
    forward = outputs[torch.arange(outputs.size(0)), ends, :hidden]
    if not torch.allclose(last[:, :hidden], forward, atol=1e-5):
        return ("`last` is not `outputs` at each row's last real step (outputs[b, length_b - 1, :hidden]): it must "
                "be the state after each row's own last real step")
    if bidirectional and not torch.allclose(last[:, hidden:], outputs[:, 0, hidden:], atol=1e-5):
        return ("the backward half of `last` is not `outputs` at step 0 (outputs[b, 0, hidden:]): the backward "
                "direction ends at step 0")
    return None


def task_contract_problem(cls: type) -> str | None:
    missing = [member for member in TASK_METHODS if not hasattr(cls, member)]
    if missing:
        return f"{cls.__name__} lacks {', '.join(missing)} (see benchmark.tasks.base.Task)"
    readout = getattr(cls, "readout", None)
    if isinstance(readout, str) and readout not in READOUTS:
        return f"readout {readout!r}; valid: {', '.join(READOUTS)}"
    return None
