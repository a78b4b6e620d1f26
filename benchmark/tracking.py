"""MLflow tracking: the embedded store, one experiment per task, runs, checkpoints.

Example: rnnbench train --task addition --arch lstm --tracking-uri sqlite:///$PWD/mlruns/mlflow.db

Everything goes through an explicit ``MlflowClient`` and run ids, never the
fluent "active run", which is per thread and breaks under parallel trials.
The embedded default is ``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts``; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` selects any
other store or server.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .config import TrainConfig

if TYPE_CHECKING:  # torch is imported where used: readers of the store (the report) never need it
    from .models import RecurrentModel

from .schema import CHECKPOINT_FORMAT, COORDINATION_MARK, Artifact, Role, Suite, Tag
from .store import (  # noqa: F401  (re-exported while callers move to benchmark.store)
    MAX_METRICS_PER_CALL,
    artifact_location_for,
    client_for,
    default_store_dir,
    end_run,
    get_or_create_experiment,
    mask_url,
    resolve_tracking_uri,
)

# Old names of schema entries, kept while callers move to benchmark.schema.
TAG_SUITE, TAG_ROLE, TAG_STUDY, TAG_TRIAL, TAG_TRIAL_STATE = Tag.SUITE, Tag.ROLE, Tag.STUDY, Tag.TRIAL, Tag.TRIAL_STATE
REGISTRY_MARK = COORDINATION_MARK
STORAGE_ENV = "RNNBENCH_STORAGE"  # the Optuna storage URL, from the environment: not on argv, never printed
CHECKPOINT_ARTIFACT = Artifact.CHECKPOINT


@functools.cache  # constant for the process; every run and trial asks for it
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_tags() -> dict[str, str]:
    import mlflow
    import torch

    from . import __version__

    tags = {
        "git_commit": (commit := git_commit()),
        "mlflow.source.git.commit": commit,
        "rnnbench_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "processor": platform.processor() or platform.machine(),
        "torch_threads": str(torch.get_num_threads()),
    }
    with contextlib.suppress(ImportError):
        import optuna

        tags["optuna_version"] = optuna.__version__
    return tags


class RunTracker:
    """One MLflow run: what ``fit`` reports goes here, batched to keep the store fast."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self.finished = False

    @classmethod
    def start(cls, config: TrainConfig, *, tracking_uri: str | None = None, experiment: str | None = None,
              tags: dict | None = None, parent_run_id: str | None = None, run_name: str | None = None,
              client=None) -> RunTracker:
        from mlflow.entities import Param

        client = client or client_for(tracking_uri)
        experiment_id = get_or_create_experiment(client, experiment or config.task)
        all_tags = {**environment_tags(), "task": config.task, "arch": config.arch, "seed": str(config.seed),
                    Tag.SUITE: Suite.TRAIN, Tag.ROLE: Role.RUN, **(tags or {})}
        if parent_run_id:
            all_tags[Tag.PARENT_RUN] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name or default_run_name(config), tags=all_tags)
        tracker = cls(client, run.info.run_id)
        client.log_batch(tracker.run_id, params=[Param(k, v) for k, v in config.to_params().items()])
        return tracker

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        self._log([(key, value, step) for key, value in values.items()])

    def _log(self, entries: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value, step in entries]
        for start in range(0, len(metrics), MAX_METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MAX_METRICS_PER_CALL])

    def log_model_info(self, *, n_params: int, device: str) -> None:
        self.log_metrics({"n_params": n_params})
        self.set_tags({"device": device})

    def log_epoch(self, epoch: int, first_iteration: int, train_losses: list[float], val: dict,
                  seconds: float) -> None:
        entries = [("train_loss", loss, first_iteration + i + 1) for i, loss in enumerate(train_losses)]
        entries += [("val_loss", val["loss"], epoch), ("val_acc", val["acc"], epoch),
                    ("epoch_time_s", seconds, epoch)]
        if "seq_acc" in val:
            entries.append(("val_seq_acc", val["seq_acc"], epoch))
        self._log(entries)

    def log_result(self, result, config: TrainConfig) -> None:
        test = result.test
        entries = [("test_loss", test["loss"], 0), ("test_acc", test["acc"], 0),
                   ("best_epoch", result.best_epoch, 0), ("best_val_acc", result.val["acc"], 0),
                   ("best_val_loss", result.val["loss"], 0), ("epochs_run", result.epochs_run, 0),
                   ("train_time_s", sum(result.epoch_seconds), 0)]
        if "seq_acc" in test:
            entries.append(("test_seq_acc", test["seq_acc"], 0))
            entries += [("test_bit_acc_by_len", acc, n) for n, acc in test["bit_acc_by_len"].items()]
            entries += [("test_seq_acc_by_len", acc, n) for n, acc in test["seq_acc_by_len"].items()]
        self._log(entries)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_checkpoint(tmp / "model.pt", result.model, config, best_epoch=result.best_epoch,
                            val_acc=result.val["acc"])
            self.client.log_artifact(self.run_id, str(tmp / "model.pt"), "checkpoint")
            from .plots import learning_curve, save_figure

            save_figure(learning_curve(result, config), tmp / "learning_curve.png")
            self.client.log_artifact(self.run_id, str(tmp / "learning_curve.png"), "curves")
            if "bit_acc_by_len" in test:
                path = tmp / "accuracy_by_length.csv"
                with open(path, "w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["length", "bit_acc", "seq_acc"])
                    for n, acc in test["bit_acc_by_len"].items():
                        writer.writerow([n, f"{acc:.6f}", f"{test['seq_acc_by_len'][n]:.6f}"])
                self.client.log_artifact(self.run_id, str(path), "metrics")

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        if self.finished:
            return
        end_run(self.client, self.run_id, status, error)
        self.finished = True


@contextlib.contextmanager
def tracked_run(config: TrainConfig, **start_kwargs):
    """A run that always ends: FINISHED, FAILED with the error as a tag, or KILLED on Ctrl-C."""
    tracker = RunTracker.start(config, **start_kwargs)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.finish("KILLED", error="interrupted (KeyboardInterrupt)")
        raise
    except BaseException as error:
        tracker.finish("FAILED", error=f"{type(error).__name__}: {error}")
        raise
    tracker.finish("FINISHED")


def default_run_name(config: TrainConfig) -> str:
    return f"{config.arch}-h{config.hidden_size}x{config.num_layers}-{config.loss}-seed{config.seed}"


def save_checkpoint(path: Path, model: RecurrentModel, config: TrainConfig, **extra) -> None:
    """State dict + everything needed to rebuild the model; plain types only, so weights_only loading works."""
    import torch

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


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[RecurrentModel, TrainConfig]:
    import torch

    from .models import RecurrentModel

    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an rnnbench checkpoint (format {payload.get('format')!r})")
    spec = dict(payload["model"])
    model = RecurrentModel(spec.pop("arch"), spec.pop("input_size"), spec.pop("hidden_size"),
                           spec.pop("output_size"), **spec)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model.to(device), TrainConfig.from_dict(payload["config"])


def load_run_checkpoint(run_id: str, tracking_uri: str | None = None, device: str = "cpu"):
    """Model and config of a tracked run, from the store alone."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=tmp,
                                                    tracking_uri=resolve_tracking_uri(tracking_uri))
        return load_checkpoint(Path(local), device)
