"""What the report reads: every run of the tracking store in bulk, the Optuna studies, histories on demand.

Example: python -c "from benchmark.report.snapshot import load_snapshot; print(len(load_snapshot().runs))"

Runs come from one paged ``store.search_runs``; metric histories only for the few runs a figure draws.
Where an Optuna storage exists (explicit, ``$RNNBENCH_STORAGE``, or the journal beside the store) it
supplies trial counts and parameter distributions; without one, trial states come from the runs' tags.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog import task_order_key
from ..config import ConfigError
from ..schema import COORDINATION_MARK, Metric, Role, RunStatus, Suite, Tag, TrialState
from ..store import default_journal, plain_tracking_uri, search_runs, sqlite_path, store_folder
from ..tuning.storage import STORAGE_ENV, StorageNotFound, open_storage
from .markdown import plural, shown_location


class ReportError(Exception):
    """Nothing to report (no store, no finished runs); the message is one line saying what to run."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment: str
    status: str
    start_time: int
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]  # latest value of each metric, as search_runs returns it
    end_time: int = 0  # ms; 0 while running

    @classmethod
    def from_mlflow(cls, run, experiment: str) -> RunRecord:
        return cls(run_id=run.info.run_id, experiment=experiment, status=run.info.status,
                   start_time=run.info.start_time or 0, end_time=run.info.end_time or 0, tags=dict(run.data.tags),
                   params=dict(run.data.params), metrics=dict(run.data.metrics))

    @property
    def task(self) -> str:
        return self.tags.get(Tag.TASK, "")

    @property
    def arch(self) -> str:
        return self.tags.get(Tag.ARCH, "")

    @property
    def role(self) -> str:
        return self.tags.get(Tag.ROLE, Role.RUN)

    @property
    def suite(self) -> str:
        return self.tags.get(Tag.SUITE, "")

    @property
    def study(self) -> str:
        return self.tags.get(Tag.STUDY, "")

    @property
    def trial_number(self) -> int | None:
        value = self.tags.get(Tag.TRIAL)
        return int(value) if value not in (None, "") and value.lstrip("-").isdigit() else None

    @property
    def trial_state(self) -> str:
        """Optuna's state from the tag; a trial run without one counts by its run status."""
        state = self.tags.get(Tag.TRIAL_STATE)
        if state:
            return state
        return {RunStatus.FINISHED: TrialState.COMPLETE, RunStatus.FAILED: TrialState.FAIL}.get(self.status,
                                                                                                self.status)

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else value

    def param(self, key: str, default: str = "") -> str:
        return self.params.get(key, default)

    @property
    def seconds_per_epoch(self) -> float | None:
        total, epochs = self.metric(Metric.TRAIN_TIME), self.metric(Metric.EPOCHS_RUN)
        return total / epochs if total is not None and epochs else None


@dataclass
class StudyStats:
    """What the Optuna storage says about one study."""

    name: str
    states: dict[str, int]
    trials: list = field(default_factory=list)  # FrozenTrial, for importances with the true distributions


@dataclass
class Snapshot:
    """Everything the sections read: the runs (bulk), Optuna study statistics, histories on demand."""

    tracking_uri: str
    experiments: list[str]
    runs: list[RunRecord]
    studies: dict[str, StudyStats]
    storage_note: str
    generated_at: str | None = None
    client: Any = None
    _histories: dict = field(default_factory=dict)
    _confirm_groups: dict | None = None

    def _confirm_index(self) -> dict[tuple, list[RunRecord]]:
        """(trial run id, training length or None) -> its finished confirm runs, oldest first; built once."""
        if self._confirm_groups is None:
            self._confirm_groups = defaultdict(list)
            for r in sorted(self.runs, key=lambda r: (r.start_time, r.run_id)):
                if (r.suite == Suite.CONFIRM and r.status == RunStatus.FINISHED
                        and r.metric(Metric.TEST_ACC) is not None):
                    self._confirm_groups[r.tags.get(Tag.CONFIRM_OF), r.tags.get(Tag.CONFIRM_LENGTH)].append(r)
        return self._confirm_groups

    def confirm_runs(self, trial_run_id: str, length: str | None) -> list[RunRecord]:
        return self._confirm_index().get((trial_run_id, length), [])

    def confirm_lengths(self, trial_run_id: str) -> list[int]:
        """The single training lengths this trial was also retrained on (addition)."""
        return sorted(int(length) for of, length in self._confirm_index() if of == trial_run_id
                      and length is not None and length.isdigit())

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) sorted by step; the last value logged at a step wins. Cached."""
        if (run_id, key) not in self._histories:
            if self.client is None:
                raise RuntimeError(f"history {key!r} of run {run_id} was not prefetched for an offline section")
            points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            self._histories[run_id, key] = sorted({m.step: m.value for m in points}.items())
        return self._histories[run_id, key]

    def tasks(self) -> list[str]:
        """The tasks of the runs, in catalogue order."""
        return sorted({r.task for r in self.runs if r.task}, key=task_order_key)

    def trials(self, task: str, arch: str | None = None) -> list[RunRecord]:
        return [r for r in self.runs if r.role == Role.TRIAL and r.task == task and (arch is None or r.arch == arch)]


def load_snapshot(tracking_uri: str | None = None, experiments: Iterable[str] | None = None,
                  storage: str | None = None, timestamp: bool = True) -> Snapshot:
    from mlflow import MlflowClient

    uri = plain_tracking_uri(tracking_uri)
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        raise ReportError(f"no tracking store at {database}; run `rnnbench train` or "
                          "`rnnbench bench --preset quick` first, or pass --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    found = {e.name: e.experiment_id for e in client.search_experiments()}
    if experiments:
        unknown = sorted(set(experiments) - set(found))
        if unknown:
            raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; the store has: "
                              f"{', '.join(sorted(found)) or 'none'}")
        names = sorted(set(experiments))
    else:
        names = sorted(found)
    by_id = {found[name]: name for name in names}
    runs = [RunRecord.from_mlflow(r, by_id[r.info.experiment_id])
            for r in search_runs(client, experiment_ids=list(by_id))]
    runs.sort(key=lambda r: (r.experiment, r.task, r.arch, r.run_id))
    names = sorted({r.experiment for r in runs}) or names  # leave out empty ones (MLflow's "Default")
    if not any(r.status == RunStatus.FINISHED for r in runs):
        where = f"experiment(s) {', '.join(names)}" if names else "the store"
        raise ReportError(f"no finished runs in {where} at {uri}; run `rnnbench train` or "
                          "`rnnbench bench --preset quick` first")
    studies, note = load_studies(storage, uri)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()) if timestamp else None
    return Snapshot(tracking_uri=uri, experiments=names, runs=runs, studies=studies, storage_note=note,
                    generated_at=stamp, client=client)


def load_studies(storage: str | None, tracking_uri: str) -> tuple[dict[str, StudyStats], str]:
    """Studies in the Optuna storage (explicit URL or journal file, else the journal beside the store), and
    one line saying where they came from."""
    import optuna

    missing = "no Optuna storage at {}; trial states are counted from run tags"
    storage = storage or os.environ.get(STORAGE_ENV)
    folder = store_folder(tracking_uri) if sqlite_path(tracking_uri) else None
    if storage is None:
        journal = default_journal(tracking_uri)
        if not journal.exists():
            return {}, missing.format(shown_location(journal, folder))
        storage = str(journal)
    shown = shown_location(storage, folder)
    try:
        backend = open_storage(storage, create=False)
    except StorageNotFound:
        return {}, missing.format(shown)
    except ConfigError as error:
        return {}, f"{error}; trial states are counted from run tags"
    try:
        studies = {}
        for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
            if COORDINATION_MARK in summary.study_name:  # bookkeeping of the scale-out election, not a study
                continue
            trials = optuna.load_study(study_name=summary.study_name, storage=backend).get_trials(deepcopy=False)
            states = Counter(t.state.name for t in trials)
            studies[summary.study_name] = StudyStats(summary.study_name, dict(states), list(trials))
    except Exception as error:  # an unreadable storage must not sink the report
        detail = str(error).replace(str(storage), shown)
        return {}, (f"Optuna storage {shown} unreadable ({type(error).__name__}: {detail}); "
                    "trial states are counted from run tags")
    return studies, f"Optuna storage {shown}: {plural(len(studies), 'study', 'studies')}"
