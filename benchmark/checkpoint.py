"""Self-describing checkpoints: a state dict plus everything that rebuilds the model, in plain types.

Example: python -c "from benchmark.checkpoint import load_run_checkpoint; print(load_run_checkpoint('RUN_ID')[1])"

A checkpoint holds the format tag, the full ``TrainConfig``, the model's constructor arguments and its
weights as CPU tensors, so it loads with ``torch.load(weights_only=True)`` (no code runs) and rebuilds
at any batch size and sequence length.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig
from .models import RecurrentModel
from .schema import CHECKPOINT_FORMAT, Artifact
from .store import resolve_tracking_uri


def save_checkpoint(path: Path, model: RecurrentModel, config: TrainConfig, **extra) -> None:
    """State dict + everything needed to rebuild the model; plain types only, so weights_only loading works."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.as_dict(),
        "model": {"arch": model.arch, "input_size": model.rnn.input_size, "hidden_size": model.rnn.hidden_size,
                  "output_size": model.head.out_features, "num_layers": model.rnn.num_layers,
                  "dropout": config.dropout, "readout": model.readout},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    partial = Path(path).with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


class CheckpointError(ConfigError):
    """A file that is not an rnnbench checkpoint, or one that would run code to load; one line says which."""


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[RecurrentModel, TrainConfig]:
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
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rnnbench checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); pass a run whose checkpoint rnnbench wrote")
    try:
        spec = dict(payload["model"])
        model = RecurrentModel(spec.pop("arch"), spec.pop("input_size"), spec.pop("hidden_size"),
                               spec.pop("output_size"), **spec)
        model.load_state_dict(payload["state_dict"])
        config = TrainConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: a damaged rnnbench checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    model.eval()
    return model.to(device), config


def load_run_checkpoint(run_id: str, tracking_uri: str | None = None, device: str = "cpu"):
    """Model and config of a tracked run, from the store alone."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=Artifact.CHECKPOINT, dst_path=tmp,
                                                    tracking_uri=resolve_tracking_uri(tracking_uri))
        return load_checkpoint(Path(local), device)
