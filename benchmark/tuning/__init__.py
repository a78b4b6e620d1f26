"""Optuna studies where every trial is a nested MLflow run under one parent run per study.

Example: rnnbench tune studies/mnist.toml --arch lstm --preset quick --workers 2

Modules, lowest first: ``study_checks`` and ``study_file`` (the TOML study files), ``recovery`` (lost
workers), ``storage`` (the Optuna storage), ``coordination`` (the shared budget, the parent-run election,
worker numbers), ``search`` (sampler, pruner, the study), ``objective`` (one trial), ``session``
(``run_study``, ``run_worker``, listings). Torch-free until a trial trains.
"""

from .coordination import (
    coordination_study_name,
    counted_trials,
    holds_slot,
    is_coordination_study,
    next_step,
    trial_counts,
    without_coordination,
)
from .objective import BudgetUsed, Objective, TrialFailed
from .search import make_pruner, make_sampler, open_study
from .session import (
           StudyResult,
           best_trial,
           check_device,
           format_value,
           list_studies,
           run_study,
           run_worker,
           update_parent,
)
from .storage import STORAGE_ENV, StorageNotFound, open_storage, resolve_storage_url
from .study_file import PRESETS, StudyFileError, StudySpec, load_study, parse_study_file, studies_dir

__all__ = ["BudgetUsed", "Objective", "PRESETS", "STORAGE_ENV", "StorageNotFound", "StudyFileError", "StudyResult",
           "StudySpec", "TrialFailed", "best_trial", "check_device", "coordination_study_name", "counted_trials",
           "format_value", "holds_slot", "is_coordination_study", "list_studies", "load_study", "make_pruner",
           "make_sampler", "next_step", "open_storage", "open_study", "parse_study_file", "resolve_storage_url",
           "run_study", "run_worker", "studies_dir", "trial_counts", "update_parent", "without_coordination"]
