"""Self-describing checkpoints: a state dict plus everything that rebuilds the model, in plain types.

Example: python -c "from benchmark.checkpoint import load_run_checkpoint; print(load_run_checkpoint('RUN_ID')[1])"

A checkpoint holds the format tag, the full ``TrainConfig``, the model's constructor arguments (its readout
included), the input normalisation the task applied (for MNIST the pixel mean and std, not only the
``input_scale`` word) and its weights as CPU tensors, so it loads with ``torch.load(weights_only=True)`` (no
code runs) and rebuilds at any batch size and sequence length. A plugin cell's checkpoint also names the cell,
the plugin's module or file and the file's sha256: it loads only where that same plugin is loaded (rnnbench's
own cells and tasks, ``benchmark.cells`` and pixel MNIST, are loaded by ``load_checkpoint`` itself). Checkpoints
of the first format (no input or plugin record) still load.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig
from .models import Model
from .registry import CELLS, TASKS, cell_spec, task_record
from .schema import CHECKPOINT_FORMAT, CHECKPOINT_FORMATS_READ, Artifact
from .store import download_artifact


def input_normalisation(config: TrainConfig) -> dict:
    """What the task did to its inputs: ``(x - mean) / std`` on inputs in [0, 1] where its record names a
    normalisation and ``input_scale`` is ``standard``; otherwise it feeds them as made."""
    normalisation = task_record(config.task).normalisation
    applied = normalisation is not None and config.input_scale == "standard"
    mean, std = normalisation if applied else (0.0, 1.0)
    return {"input_scale": config.input_scale, "mean": mean, "std": std, "applied": applied}


def _plugin_sources(kind: str) -> dict:
    """The loaded plugins' cells or tasks -> their sources; rnnbench's own are versioned with it, not recorded."""
    registered = CELLS if kind == "cell" else TASKS
    return {name: spec.source for name, spec in registered.items() if not spec.source.builtin}


def plugin_record(config: TrainConfig) -> dict:
    """The plugin cell's and plugin task's names, modules, files and sha256s; empty for rnnbench's own."""
    record = {}
    for kind, name in (("cell", config.arch), ("task", config.task)):
        sources = _plugin_sources(kind)
        if name in sources:
            source = sources[name]
            record[kind] = {"name": name, "module": source.module, "file": source.file, "sha256": source.sha256}
    return record


def save_checkpoint(path: Path, model: Model, config: TrainConfig, **extra) -> None:
    """State dict + everything needed to rebuild the model; plain types only, so weights_only loading works."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.as_dict(),
        "model": {"arch": model.arch, "input_size": model.input_size, "hidden_size": model.hidden_size,
                  "output_size": model.head.out_features, "num_layers": model.num_layers,
                  "dropout": config.dropout, "readout": model.readout},
        "input": input_normalisation(config),
        "plugin": plugin_record(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    partial = Path(path).with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


class CheckpointError(ConfigError):
    """A file that is not an rnnbench checkpoint, or one that would run code to load; one line says which."""


def check_plugins(path: Path, record: dict) -> None:
    """Refuse a plugin's checkpoint where its plugin is not loaded, or is loaded from a changed file."""
    for kind in ("cell", "task"):
        wanted, loaded = record.get(kind), _plugin_sources(kind)
        if not wanted or wanted.get("module", "").startswith("benchmark."):
            continue  # none, or one of rnnbench's own that an earlier version recorded as a plugin
        where = wanted.get("file") or wanted.get("module")
        if wanted["name"] not in loaded:
            raise CheckpointError(f"{path}: needs the plugin {kind} {wanted['name']!r} from {where}; load it with "
                                  f"rnnbench --plugin {where} (or $RNNBENCH_PLUGINS)")
        found = loaded[wanted["name"]].sha256
        if wanted.get("sha256") and found != wanted["sha256"]:
            raise CheckpointError(f"{path}: the plugin {kind} {wanted['name']!r} was saved from {where} with sha256 "
                                  f"{wanted['sha256'][:12]}, but the loaded one has {str(found)[:12]}: the file "
                                  "changed; load the plugin file the checkpoint was trained with")


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[Model, TrainConfig]:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            # torch's own message advises weights_only=False, which would run whatever code the file holds.
            raise CheckpointError(f"{path}: refused: loading it would run code it contains; rnnbench checkpoints "
                                  "hold plain tensors and settings only") from None
        raise CheckpointError(f"{path}: not a readable torch file (neither a torch archive nor plain data)") from None
    except (RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable torch file ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found not in CHECKPOINT_FORMATS_READ:
        raise CheckpointError(f"{path}: not an rnnbench checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); pass a run whose checkpoint rnnbench wrote")
    check_plugins(path, payload.get("plugin") or {})
    try:
        spec = dict(payload["model"])
        model = Model(spec.pop("arch"), spec.pop("input_size"), spec.pop("hidden_size"), spec.pop("output_size"),
                      **spec)
        model.load_state_dict(_current_keys(payload["state_dict"], model.arch))
        config = TrainConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: a damaged rnnbench checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    model.eval()
    return model.to(device), config


def _current_keys(state_dict: dict, arch: str) -> dict:
    """Checkpoints written before the built-in architectures became cells hold ``rnn.*`` where the model now has
    ``cell.rnn.*``: the same tensors under their present names."""
    if not cell_spec(arch).impls:
        return state_dict
    return {f"cell.{key}" if key.startswith("rnn.") else key: value for key, value in state_dict.items()}


def load_run_checkpoint(run_id: str, tracking_uri: str | None = None, device: str = "cpu"):
    """Model and config of a tracked run, from the store alone."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_checkpoint(Path(download_artifact(run_id, Artifact.CHECKPOINT, tmp, tracking_uri)), device)
