"""One MLflow run: its params and tags, what ``fit`` reports, and at the end its checkpoint and curves.

Example: rnnbench train --task addition --arch lstm --tracking-uri sqlite:///$PWD/mlruns/mlflow.db

Names come from ``benchmark.schema``; the store itself (URIs, clients, search) from ``benchmark.store``.
A run always ends: ``tracked_run`` closes it FINISHED, FAILED with the error, or KILLED on Ctrl-C or SIGTERM;
``RunTracker.end_with`` is the one place that turns an exception into a status and a reason, for every run
(trials, seeds and the study's parent run included), and ``RunTracker.create`` the one place that opens a run.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .config import ConfigError, TrainConfig
from .plugins import LOADED
from .registry import task_record
from .schema import Artifact, DatasetTag, Metric, Role, RunStatus, Suite, Tag
from .store import MAX_METRICS_PER_CALL, client_for, end_run, get_or_create_experiment, interrupts_held, retried


@functools.cache  # constant for the process; every run and trial asks for it
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_name(argv: list[str] | None = None) -> str:
    """``rnnbench <subcommand>`` from the command line, and nothing else of it: argv may hold a storage URL."""
    args = iter(sys.argv[1:] if argv is None else argv)
    for word in args:
        if word == "--plugin":
            next(args, None)  # its value
        elif not word.startswith("-"):
            return f"rnnbench {word}" if word.isidentifier() else "rnnbench"
    return "rnnbench"


def environment_tags() -> dict[str, str]:
    import mlflow
    import torch  # a study's parent run is made by a launcher that trains nothing: torch only when tags are made

    tags = {
        Tag.GIT_COMMIT: (commit := git_commit()),
        Tag.MLFLOW_GIT_COMMIT: commit,
        Tag.MLFLOW_SOURCE_NAME: source_name(),
        Tag.MLFLOW_SOURCE_TYPE: "LOCAL",
        Tag.RNNBENCH_VERSION: __version__,
        Tag.PYTHON_VERSION: platform.python_version(),
        Tag.TORCH_VERSION: torch.__version__,
        Tag.MLFLOW_VERSION: mlflow.__version__,
        Tag.PROCESSOR: platform.processor() or platform.machine(),
        Tag.TORCH_THREADS: str(torch.get_num_threads()),
    }
    with contextlib.suppress(ImportError):
        import optuna

        tags[Tag.OPTUNA_VERSION] = optuna.__version__
    if LOADED:  # only where a plugin was loaded: runs of the built-ins keep exactly the tags they had
        tags[Tag.PLUGINS] = plugins_tag()
    return tags


def plugins_tag() -> str:
    """The loaded plugins as ``file-or-module@sha256`` joined by spaces."""
    return " ".join(f"{plugin.file or plugin.module}@{plugin.sha256 or 'no-file'}" for plugin in LOADED.values())


def check_system_metrics() -> None:
    """``--system-metrics`` needs psutil (the ``system-metrics`` extra): refuse before any run starts."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise ConfigError("--system-metrics needs psutil; install it with pip install -e \".[system-metrics]\" "
                          "or drop --system-metrics") from None


def start_system_metrics(run_id: str, tracking_uri: str):
    """MLflow's system metrics (``system/...``: CPU, memory, disk, network, GPU when present) for one run, sampled
    every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (MLflow's default: 10) on a thread of its own."""
    check_system_metrics()
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


INTERRUPTED = "interrupted (KeyboardInterrupt)"  # Ctrl-C, and SIGTERM, which rnnbench's main turns into it
DATASET_ATTEMPTS = 3  # log_inputs tries: another worker may be inserting the same dataset row


def ending(error: BaseException) -> tuple[str, str]:
    """The status and reason of a run that ``error`` stopped: KILLED when interrupted, FAILED otherwise."""
    if isinstance(error, KeyboardInterrupt):
        return RunStatus.KILLED, INTERRUPTED
    return RunStatus.FAILED, f"{type(error).__name__}: {error}"


class RunTracker:
    """One MLflow run: what ``fit`` reports goes here, batched to keep the store fast."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self.finished = False
        self.monitor = None  # MLflow's system-metrics thread, with --system-metrics

    @classmethod
    def create(cls, client, experiment: str, run_name: str, tags: dict, params: dict | None = None) -> RunTracker:
        """Open a run in ``experiment`` (created if absent) with ``tags`` and ``params``: every run rnnbench
        writes, a study's parent run included, starts here."""
        from mlflow.entities import Param

        experiment_id = get_or_create_experiment(client, experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        tracker = cls(client, run.info.run_id)
        if params:
            client.log_batch(tracker.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return tracker

    @classmethod
    def start(cls, config: TrainConfig, *, tracking_uri: str | None = None, experiment: str | None = None,
              tags: dict | None = None, parent_run_id: str | None = None, run_name: str | None = None,
              client=None, system_metrics: bool = False) -> RunTracker:
        """A run that trains ``config``: its environment, task, architecture and seed as tags, the config as
        params."""
        all_tags = {**environment_tags(), Tag.TASK: config.task, Tag.ARCH: config.arch, Tag.SEED: str(config.seed),
                    Tag.SUITE: Suite.TRAIN, Tag.ROLE: Role.RUN, **(tags or {})}
        if parent_run_id:
            all_tags[Tag.PARENT_RUN] = parent_run_id
        tracker = cls.create(client or client_for(tracking_uri), experiment or config.task,
                             run_name or default_run_name(config), all_tags, config.to_params())
        if system_metrics:
            tracker.monitor = start_system_metrics(tracker.run_id, tracker.client.tracking_uri)
        return tracker

    def rename(self, name: str) -> None:
        self.client.update_run(self.run_id, name=name)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_dataset(self, info: dict) -> None:
        """The task's data as the run's dataset input (metadata only: name, digest, source, profile)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(name=info["name"], digest=info["digest"], source_type="code",
                          source=json.dumps({"tags": {"mlflow.source.name": info["source"]}}),
                          profile=json.dumps(info.get("profile", {})))
        tags = [InputTag(DatasetTag.CONTEXT, DatasetTag.ALL_SPLITS)]
        # MLflow looks the dataset up, then inserts it: workers starting together can race to insert the same
        # one (PostgreSQL: UniqueViolation, seen with three workers on one server). Again, it is found.
        retried(lambda: self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)]),
                attempts=DATASET_ATTEMPTS, errors=MlflowException, pause=0.1)

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        self._log([(key, value, step) for key, value in values.items()])

    def _log(self, entries: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value, step in entries]
        for start in range(0, len(metrics), MAX_METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MAX_METRICS_PER_CALL])

    def log_model_info(self, *, n_params: int, device: str, kernel: str | None = None) -> None:
        self.log_metrics({Metric.N_PARAMS: n_params})
        self.set_tags({Tag.DEVICE: device, **({Tag.KERNEL: kernel} if kernel else {})})

    def log_epoch(self, epoch: int, first_iteration: int, train_losses: list[float], val: dict,
                  seconds: float, val_seconds: float, task: str) -> None:
        entries = [(Metric.TRAIN_LOSS, loss, first_iteration + i + 1) for i, loss in enumerate(train_losses)]
        entries += [(Metric.VAL_LOSS, val["loss"], epoch), (Metric.EPOCH_TIME, seconds, epoch),
                    (Metric.VAL_TIME, val_seconds, epoch)]
        entries += [(Metric.of("val", name), value, epoch) for name, value in task_metrics(task, val).items()]
        self._log(entries)

    def log_result(self, result, config: TrainConfig, figure: bool = True) -> None:
        """Best-epoch metrics, the test metrics where the test split was scored, then the checkpoint and (with
        ``figure``) the learning curve. A search trial draws none: the report and the MLflow UI draw its curves
        from the metrics."""
        from .checkpoint import save_checkpoint  # torch: only a run that trained a model saves one

        self._log([(Metric.BEST_EPOCH, result.best_epoch, 0), (Metric.BEST_VAL_ACC, result.val["acc"], 0),
                   (Metric.BEST_VAL_LOSS, result.val["loss"], 0), (Metric.EPOCHS_RUN, result.epochs_run, 0),
                   (Metric.TRAIN_TIME, sum(result.epoch_seconds), 0)])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            save_checkpoint(self._local(folder, Artifact.CHECKPOINT), result.model, config,
                            best_epoch=result.best_epoch, val_acc=result.val["acc"])
            if figure:
                from .plots import learning_curve, save_figure  # matplotlib: only where a figure is drawn

                save_figure(learning_curve(result, config), self._local(folder, Artifact.LEARNING_CURVE))
            self.client.log_artifacts(self.run_id, str(folder))
        if result.test:
            self.log_test(result.test, config.task)

    def log_test(self, test: dict, task: str) -> None:
        """The test split's metrics (the task record's), any per-length ones, and those as a CSV artifact."""
        lengths = per_length(task, test)
        entries = [(Metric.TEST_LOSS, test["loss"], 0)]
        entries += [(Metric.of("test", name), value, 0) for name, value in task_metrics(task, test).items()]
        entries += [(Metric.by_length(name), value, n)
                    for name, values in lengths.items() for n, value in values.items()]
        self._log(entries)
        if lengths:
            with tempfile.TemporaryDirectory() as tmp:
                path = self._local(Path(tmp), Artifact.ACCURACY_BY_LENGTH)
                with open(path, "w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["length", *lengths])
                    for n in next(iter(lengths.values())):
                        writer.writerow([n, *(f"{values[n]:.6f}" for values in lengths.values())])
                self.client.log_artifact(self.run_id, str(path), str(Path(Artifact.ACCURACY_BY_LENGTH).parent))

    @staticmethod
    def _local(folder: Path, artifact: str) -> Path:
        """Where ``artifact`` (a path inside the run) is written before the folder is logged whole."""
        path = folder / artifact
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finish(self, status: str = RunStatus.FINISHED, error: str | None = None) -> None:
        if self.finished:
            return
        with interrupts_held():
            if self.monitor is not None:
                self.monitor.finish()  # its last samples are flushed while the run is still open
                self.monitor = None
            end_run(self.client, self.run_id, status, error)
        self.finished = True

    def end_with(self, error: BaseException, resume: str = "") -> str:
        """End the run as ``error`` decides (``ending``); ``resume`` is added to an interruption's reason (how to
        pick up where it stopped). Returns the reason."""
        status, reason = ending(error)
        self.finish(status, error=f"{reason}; {resume}" if resume and status == RunStatus.KILLED else reason)
        return reason


@contextlib.contextmanager
def tracked_run(config: TrainConfig, **start_kwargs):
    """A run that always ends: FINISHED, FAILED with the error as a tag, or KILLED on Ctrl-C or SIGTERM."""
    tracker = RunTracker.start(config, **start_kwargs)
    try:
        yield tracker
    except BaseException as error:
        tracker.end_with(error)
        raise
    tracker.finish(RunStatus.FINISHED)


def task_metrics(task: str, scores: dict) -> dict[str, float]:
    """The metrics task ``task``'s record names, as ``evaluate`` returned them (those it did not return left out)."""
    return {name: scores[name] for name in task_record(task).metrics if name in scores}


def per_length(task: str, scores: dict) -> dict[str, dict[int, float]]:
    """The record's per-length metrics, ``{metric: {length: value}}``, as ``evaluate`` returned them."""
    return {name: scores[f"{name}_by_len"] for name in task_record(task).per_length if f"{name}_by_len" in scores}


def default_run_name(config: TrainConfig) -> str:
    """A plain run: what it trains and with which loss and seed, e.g. ``lstm-h128x1-ce-seed0``."""
    return f"{config.arch}-h{config.hidden_size}x{config.num_layers}-{config.loss}-seed{config.seed}"


def trial_run_name(config: TrainConfig, number: int) -> str:
    """A trial under its study's parent run (named after the study): ``lstm-h128x1-t07``."""
    return f"{config.arch}-h{config.hidden_size}x{config.num_layers}-t{number:02d}"
