"""The tracking store's schema: every tag, metric, artifact, role and suite name, and the one rank order.

Example: python -c "from benchmark.schema import Tag, rank_key; print(Tag.ROLE, rank_key(0.98, 0.07, 3))"

Every writer (train, tune, confirm, reproduce, the test suite's fake store) and every reader (report,
predict, the studies listing) takes its names from here, so that a name is spelled once. Torch-free and
MLflow-free: the report imports it without either.

What the store holds
--------------------
Experiments: one per task, named by the task (``mnist``, ``addition``); ``reproduce`` has its own.

Every run: tags ``task``, ``arch``, ``seed``, ``suite``, ``role`` plus the environment tags
(``git_commit``, library versions, processor, threads) and, for the built-in architectures, ``kernel`` (what
``--impl auto`` trained with); params = every ``TrainConfig`` field; metrics
below; artifacts ``checkpoint/model.pt``, ``curves/learning_curve.png`` and, for addition,
``metrics/accuracy_by_length.csv``.

- ``suite=train, role=run``: a plain ``rnnbench train`` run.
- ``suite=tune, role=study``: a study's parent run, named after the study; params ``study_file``,
  ``preset``, ``epochs``, ``trials``, ``sampler``, ``pruner``, ``space.<field>``, ``fixed.<field>``;
  after each trial the tags ``best_trial_number``, ``best_run_id``, ``best.<param>`` and the metrics
  ``best_val_acc`` (the objective), ``best_test_acc`` (never used to choose), ``best_trial_number``,
  ``n_complete``, ``n_pruned``, ``n_fail``. RUNNING only while a session runs.
- ``suite=tune, role=trial``: one trial, nested under its parent (``mlflow.parentRunId``), with
  ``study_name``, ``trial_number`` and ``optuna.state`` (COMPLETE, PRUNED, FAIL); PRUNED trials end
  KILLED with ``pruned_at_epoch``; FAIL trials end FAILED with ``error``; a re-run of a lost trial's
  parameters has ``retried_trial``.
- ``suite=confirm, role=confirm``: a fresh-seed retrain of a trial (``confirm_of`` = its run id,
  ``confirm_of_trial``, and ``confirm_train_length`` for single-length retrains).
- ``suite=reproduce, role=run``: one of the course notebook's experiments (``notebook_ref``,
  ``notebook_value``, ``reproduce_key``; metric ``notebook_acc``).

Registered models: ``<task>-<arch>`` with the alias ``champion``; each version a pyfunc model logged from its
run (``benchmark.served_model``), holding the run's checkpoint.
"""

from __future__ import annotations

import math


class Tag:
    """Run tags."""

    TASK = "task"
    ARCH = "arch"
    SEED = "seed"
    SUITE = "suite"
    ROLE = "role"
    PRESET = "preset"
    DEVICE = "device"
    KERNEL = "kernel"  # the recurrent kernel training ran: native, aten, loop, fused (--impl auto's pick), stacked
    ERROR = "error"
    PARENT_RUN = "mlflow.parentRunId"
    # The environment a run ran in, on every run (with DEVICE): what the report's provenance counts.
    GIT_COMMIT = "git_commit"
    RNNBENCH_VERSION = "rnnbench_version"
    PYTHON_VERSION = "python_version"
    TORCH_VERSION = "torch_version"
    MLFLOW_VERSION = "mlflow_version"
    OPTUNA_VERSION = "optuna_version"
    PROCESSOR = "processor"
    TORCH_THREADS = "torch_threads"
    PLUGINS = "rnnbench_plugins"  # only on runs made where plugins were loaded: file-or-module@sha256 ...
    MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
    MLFLOW_SOURCE_NAME = "mlflow.source.name"  # the runs table's Source column: "rnnbench tune" and the like
    MLFLOW_SOURCE_TYPE = "mlflow.source.type"
    STUDY = "study_name"
    TRIAL = "trial_number"
    TRIAL_STATE = "optuna.state"
    PRUNED_AT = "pruned_at_epoch"
    RETRIED_TRIAL = "retried_trial"
    OPTUNA_STORAGE = "optuna_storage"
    BEST_TRIAL = "best_trial_number"
    BEST_RUN = "best_run_id"
    BEST_PARAM_PREFIX = "best."
    CONFIRM_OF = "confirm_of"  # the MLflow run id of the trial whose configuration is retrained
    CONFIRM_OF_TRIAL = "confirm_of_trial"
    CONFIRM_LENGTH = "confirm_train_length"  # only on single-length retrains (addition)
    NOTEBOOK_REF = "notebook_ref"
    NOTEBOOK_VALUE = "notebook_value"
    REPRODUCE_KEY = "reproduce_key"


class ExperimentTag:
    """Experiment tags. MLflow 3's UI reads the kind to choose between its model-training and GenAI views."""

    KIND = "mlflow.experimentKind"
    KIND_TRAINING = "custom_model_development"  # the UI's "machine learning" kind: runs, models, no traces


class DatasetTag:
    """Tags of a run's dataset input (``RunTracker.log_dataset``)."""

    CONTEXT = "mlflow.data.context"  # MLflow's: the runs table shows it beside the dataset's name
    ALL_SPLITS = "train/val/test"  # one input holds the three splits; their sizes are in its profile


class Suite:
    """What made a run (tag ``suite``)."""

    TRAIN = "train"
    TUNE = "tune"
    CONFIRM = "confirm"
    REPRODUCE = "reproduce"


class Role:
    """What a run is within its suite (tag ``role``)."""

    RUN = "run"
    STUDY = "study"
    TRIAL = "trial"
    CONFIRM = "confirm"


class TrialState:
    """Optuna's trial states as the tag ``optuna.state`` spells them."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"


class RunStatus:
    """MLflow's run statuses."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Metric:
    """Run metrics. ``*_by_len`` are logged with the string length as the step."""

    TRAIN_LOSS = "train_loss"  # step = iteration
    VAL_LOSS = "val_loss"  # step = epoch, as the next three
    VAL_ACC = "val_acc"
    VAL_SEQ_ACC = "val_seq_acc"
    EPOCH_TIME = "epoch_time_s"  # the epoch's training steps alone
    VAL_TIME = "val_time_s"  # the validation after it, apart, as AlgoPerf keeps evaluation time apart
    TEST_LOSS = "test_loss"
    TEST_ACC = "test_acc"
    TEST_SEQ_ACC = "test_seq_acc"
    TEST_BIT_ACC_BY_LEN = "test_bit_acc_by_len"
    TEST_SEQ_ACC_BY_LEN = "test_seq_acc_by_len"
    BEST_EPOCH = "best_epoch"
    BEST_VAL_ACC = "best_val_acc"  # the objective; on a study's parent run, its best trial's
    BEST_VAL_LOSS = "best_val_loss"
    BEST_TEST_ACC = "best_test_acc"
    BEST_TRIAL = "best_trial_number"
    EPOCHS_RUN = "epochs_run"
    TRAIN_TIME = "train_time_s"
    N_PARAMS = "n_params"
    NOTEBOOK_ACC = "notebook_acc"
    N_COMPLETE = "n_complete"  # on a study's parent run: its trials by state
    N_PRUNED = "n_pruned"
    N_FAIL = "n_fail"

    @staticmethod
    def of(split: str, metric: str) -> str:
        """A task's metric on a split, as logged: ``of("test", "seq_acc")`` is ``test_seq_acc``."""
        return f"{split}_{metric}"

    @staticmethod
    def by_length(metric: str) -> str:
        """A task's per-length metric on the test split: ``by_length("bit_acc")`` is ``test_bit_acc_by_len``."""
        return f"test_{metric}_by_len"


class Artifact:
    """Artifact paths within a run."""

    CHECKPOINT = "checkpoint/model.pt"
    CHECKPOINT_FOLDER = "checkpoint"
    LEARNING_CURVE = "curves/learning_curve.png"
    ACCURACY_BY_LENGTH = "metrics/accuracy_by_length.csv"


class ModelTag:
    """Tags of a registered model. One only: the UI's model list runs a model's tags together on one line."""

    TRAINED = "trained"  # "<arch> on <task>"


class ModelVersionTag:
    """Tags of a registered model version (besides the run's metrics ``test_acc``, ``best_val_acc``, ``n_params``)."""

    FORMAT = "format"  # CHECKPOINT_FORMAT
    CHECKPOINT = "checkpoint"  # PYFUNC_CHECKPOINT, the checkpoint file within the version's pyfunc model


class StudyAttr:
    """User attributes of an Optuna study and its trials."""

    PARENT_RUN = "mlflow_parent_run_id"
    SPEC = "spec_fingerprint"
    RUN_ID = "mlflow_run_id"
    TEST_ACC = "test_acc"  # a trial's, from before search trials skipped the test split
    TESTED = "test_acc_by_trial"  # the study's: {trial number: test accuracy} of the trials it chose and tested
    VAL_LOSS = "val_loss"
    BEST_EPOCH = "best_epoch"
    ENDED_BY = "ended_by"  # an EndedBy value, or None while the trial runs
    ERROR = "error"
    HOST = "host"  # where the trial's worker runs: a dead pid there means a lost trial
    PID = "pid"
    PROCESS_SPACE = "process_space"
    TASK = "task"  # the study's own attrs, beside SPEC
    ARCH = "arch"
    PRESET = "preset"
    STUDY_FILE = "study_file"


class EndedBy:
    """Values of ``StudyAttr.ENDED_BY``: trials that end FAIL without using up the study's budget."""

    INTERRUPT = "interrupt"  # Ctrl-C
    SURPLUS = "surplus"  # the budget was taken by other workers before it trained


class CompanionAttr:
    """User attributes of the companion study's trials (parent-run candidates and worker numbers)."""

    RUN_ID = "run_id"  # a candidate parent run
    FINGERPRINT = "fingerprint"  # the StudySpec fingerprint the candidate was made from
    ROLE = "role"
    WORKER = "worker"  # the ROLE value of a trial that hands out a worker number
    HOST = "host"
    PID = "pid"


class StudyParam:
    """Params of a study's parent run."""

    STUDY_FILE = "study_file"
    PRESET = "preset"
    EPOCHS = "epochs"
    TRIALS = "trials"
    SAMPLER = "sampler"
    PRUNER = "pruner"
    SPACE_PREFIX = "space."
    FIXED_PREFIX = "fixed."


CHECKPOINT_FORMAT = "rnnbench-checkpoint/2"  # /2 adds the input normalisation and the plugin record
CHECKPOINT_FORMATS_READ = ("rnnbench-checkpoint/1", CHECKPOINT_FORMAT)
PRUNED_RUN_SUFFIX = "-pruned"  # ends a pruned trial's run name: the runs table shows KILLED for both kinds of stop
REPRODUCE_EXPERIMENT = "reproduce"
CHAMPION_ALIAS = "champion"
PYFUNC_CHECKPOINT = "artifacts/model.pt"  # where a registered version's pyfunc model keeps the run's checkpoint
# Companion Optuna studies "<study>#registry#<study id>" hold the parent-run election and worker numbers.
# The spelling is part of stored studies: it stays, though the module that uses it calls it coordination.
COORDINATION_MARK = "#registry#"
OPTUNA_JOURNAL = "optuna.journal"
MLFLOW_DATABASE = "mlflow.db"


def registered_model_name(task: str, arch: str) -> str:
    return f"{task}-{arch}"


def rank_key(val_acc: float, val_loss: float | None = None, trial_number: int | None = None,
             tiebreak: str = "") -> tuple:
    """The one order for "best", smallest first: the highest validation accuracy, then the lower validation
    loss (many trials tie at 100 %), then the earlier trial, then ``tiebreak`` (a run id, across studies).

    Tuning's best trial, the champion, ``confirm``, ``reproduce``'s tuned column, ``predict``'s default
    model and every report table use it, so they all name the same run.
    """
    return (-val_acc, math.inf if val_loss is None else val_loss,
            math.inf if trial_number is None else trial_number, tiebreak)
