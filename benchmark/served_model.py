"""A registered model as MLflow's pyfunc: ``mlflow.pyfunc.load_model("models:/mnist-lstm@champion")`` and serving.

Example: mlflow models serve -m models:/addition-gru@champion --env-manager local --port 5001

The pyfunc holds the run's checkpoint (state dict + config, ``benchmark.checkpoint``) as its one artifact and
rebuilds the network from it with ``load_checkpoint`` (``weights_only=True``: loading runs no code from the file).
It scores any batch size and sequence length: the signature's batch and step dimensions are -1.

- Input: float32 ``[batch, steps, features]``. A task whose record reads image rows (MNIST) takes raw pixel rows,
  0..255 (``[batch, 28, 28]``), and scales them as training did; every other task takes what its network reads
  (addition: the bit pairs).
- Output: readout ``last`` (MNIST): class probabilities ``[batch, classes]``; readout ``per_step`` with one
  output (addition): the probability of each sum bit being 1, ``[batch, steps]``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import mlflow.pyfunc
import numpy as np

CHECKPOINT_ARTIFACT = "checkpoint"  # the key of the checkpoint file among the pyfunc's artifacts


class CheckpointModel(mlflow.pyfunc.PythonModel):
    """The network of an rnnbench checkpoint, loaded once per process."""

    def load_context(self, context) -> None:
        from .checkpoint import input_normalisation, load_checkpoint
        from .registry import task_record

        self.network, self.config = load_checkpoint(Path(context.artifacts[CHECKPOINT_ARTIFACT]))
        # A task whose record says it reads image rows takes raw 0..255 pixels, scaled here as training did.
        self.pixels = input_normalisation(self.config) if task_record(self.config.task).pixel_rows else None

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if x.ndim == 2:  # one sequence
            x = x[None]
        if self.pixels is not None:
            x = x.clamp(0, 255).round().div_(255.0).sub_(self.pixels["mean"]).div_(self.pixels["std"])
        with torch.no_grad():
            out = self.network(x)
        if self.network.readout == "per_step" and out.shape[-1] == 1:
            return torch.sigmoid(out.squeeze(-1)).numpy()
        return out.softmax(-1).numpy()


def signature(config, input_size: int, output_size: int, readout: str):
    """Any batch size and sequence length (-1); the feature and class sizes are the network's."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    features = input_size
    if readout == "last":
        shape = (-1, output_size)
    elif output_size == 1:
        shape = (-1, -1)
    else:
        shape = (-1, -1, output_size)
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, features))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]))


# MLflow's "models from code": no pickle; load_model runs this file, stored with the model, which only imports
# rnnbench's class (so rnnbench must be installed where the model loads); the checkpoint loads with weights_only.
MODEL_CODE = """from mlflow.models import set_model

from benchmark.served_model import CheckpointModel

set_model(CheckpointModel())
"""


def log_pyfunc(run_id: str, checkpoint: Path, tracking_uri: str):
    """Log ``checkpoint`` as a pyfunc model of ``run_id`` (an MLflow 3 logged model, shown in the run's Models);
    returns its ModelInfo (``model_uri``, ``model_id``)."""
    import tempfile

    import torch
    from mlflow.models import Model

    from .config import TrainConfig
    from .store import artifact_bars_off

    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spec, config = payload["model"], TrainConfig.from_dict(payload["config"])
    features = spec["input_size"]
    # Pinned by hand: MLflow's inference of requirements imports the model in a subprocess, seconds per call.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy",
                    rnnbench_requirement()]
    with (tempfile.TemporaryDirectory() as tmp, using_tracking_uri(tracking_uri), _quiet("mlflow.pyfunc"),
          artifact_bars_off()):
        code = Path(tmp) / "rnnbench_model.py"
        code.write_text(MODEL_CODE)
        return Model.log(None, name="model", flavor=mlflow.pyfunc, run_id=run_id, python_model=str(code),
                         artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
                         signature=signature(config, spec["input_size"], spec["output_size"], spec["readout"]),
                         input_example=np.zeros((1, 3, features), dtype=np.float32), pip_requirements=requirements)


def rnnbench_requirement() -> str:
    """The model's code imports rnnbench: pinned at the installed version (unpinned when run from a source tree)."""
    import importlib.metadata

    try:
        return f"rnnbench=={importlib.metadata.version('rnnbench')}"
    except importlib.metadata.PackageNotFoundError:
        return "rnnbench"


def using_tracking_uri(uri: str):
    """MLflow's logged models resolve through the global tracking URI, also when the registry checks a version's
    ``models:/`` source: this sets it for the duration and restores it."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    return _use_tracking_uri(uri)


@contextlib.contextmanager
def _quiet(name: str):
    """MLflow announces at INFO that it checks the input example against the signature; registering says one line."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
