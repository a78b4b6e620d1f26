"""Re-run the course notebook's fixed experiments as tracked runs, and compare with its numbers.

Example: rnnbench reproduce --only addition --seeds 5

The experiments are data in ``benchmark.notebook``. Each one runs through ``tracked_run`` + ``fit`` into
the MLflow experiment ``reproduce`` with tags ``suite=reproduce``, ``notebook_ref=<experiment id>``,
``notebook_value=<the notebook's number>`` and ``reproduce_key`` (a hash of the full config), plus the
metric ``notebook_acc``. A configuration that already has a FINISHED run with the same key is skipped
unless ``force``, so re-running never duplicates work. The report's section on these runs is
``benchmark.report.sections.reproduction``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from dataclasses import dataclass, field

from .config import ConfigError, TrainConfig
from .notebook import BY_ID, EXPERIMENTS, TOLERANCE, NotebookExperiment, signed_points
from .registry import task_record
from .schema import REPRODUCE_EXPERIMENT, Metric, Role, RunStatus, Suite, Tag
from .store import client_for, get_or_create_experiment, search_runs
from .tracking import tracked_run

# Settings that change speed, not results: they do not make a configuration new.
_NOT_IN_KEY = {"threads", "device"}


def select(only: list[str] | None) -> list[NotebookExperiment]:
    """``only`` holds task names and/or experiment ids; None or [] = everything."""
    if not only:
        return list(EXPERIMENTS)
    unknown = [name for name in only if name not in BY_ID and name not in TOLERANCE]
    if unknown:
        raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; valid: mnist, addition, "
                          + ", ".join(BY_ID))
    return [e for e in EXPERIMENTS if e.id in only or e.task in only]


def config_key(experiment_id: str, config: TrainConfig) -> str:
    """Identifies one experiment's configuration: equal keys = the same run, whatever the process."""
    values = {k: v for k, v in config.as_dict().items() if k not in _NOT_IN_KEY}
    values[Tag.NOTEBOOK_REF] = experiment_id
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass
class Outcome:
    experiment: NotebookExperiment
    seed: int
    run_id: str
    test_acc: float  # percent
    skipped: bool


@dataclass
class Row:
    experiment: NotebookExperiment
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [o.test_acc for o in self.outcomes]

    @property
    def ours(self) -> float:
        return statistics.fmean(self.values)

    @property
    def difference(self) -> float:
        return self.ours - self.experiment.notebook

    @property
    def verdict(self) -> str:
        if abs(self.difference) <= TOLERANCE[self.experiment.task]:
            return "within noise"
        if len(self.values) > 1 and min(self.values) <= self.experiment.notebook <= max(self.values):
            return "within seed range"
        return "differs (see note)" if self.experiment.note else "differs"


def find_finished(client, experiment_id: str, key: str) -> str | None:
    found = next(search_runs(client, f"tags.{Tag.REPRODUCE_KEY} = '{key}' and "
                                     f"attributes.status = '{RunStatus.FINISHED}'", [experiment_id]), None)
    return found.info.run_id if found else None


def reproduce(only: list[str] | None = None, *, epochs: int | None = None, seeds: int = 1,
              tracking_uri: str | None = None, force: bool = False, quiet: bool = False,
              overrides: dict | None = None, task_data: dict | None = None, log=None) -> list[Row]:
    """Run (or find) every selected experiment for seeds 0..seeds-1; returns one Row per experiment.

    ``overrides`` change every config (tests shrink models with it); ``task_data`` feeds MNIST tensors.
    """
    from .train import fit  # torch

    log = log or (lambda line: print(line, file=sys.stderr))
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    chosen = select(only)
    plans = [(e, e.config(**{**(overrides or {}), "epochs": epochs, "seed": seed}))
             for e in chosen for seed in range(seeds)]  # every config validated before anything runs
    client = client_for(tracking_uri)
    experiment_id = get_or_create_experiment(client, REPRODUCE_EXPERIMENT)
    rows = {e.id: Row(e) for e in chosen}
    for number, (experiment, config) in enumerate(plans, 1):
        key = config_key(experiment.id, config)
        found = None if force else find_finished(client, experiment_id, key)
        prefix = f"[{number}/{len(plans)}] {experiment.id} seed {config.seed}"
        if found:
            acc = client.get_run(found).data.metrics[Metric.TEST_ACC]
            rows[experiment.id].outcomes.append(Outcome(experiment, config.seed, found, 100 * acc, True))
            log(f"{prefix}: already FINISHED in run {found} ({100 * acc:.2f}%), skipped (--force re-runs)")
            continue
        tags = {Tag.SUITE: Suite.REPRODUCE, Tag.ROLE: Role.RUN, Tag.NOTEBOOK_REF: experiment.id,
                Tag.NOTEBOOK_VALUE: f"{experiment.notebook:g}", Tag.REPRODUCE_KEY: key}
        with tracked_run(config, client=client, experiment=REPRODUCE_EXPERIMENT, tags=tags,
                         run_name=f"{experiment.id}-seed{config.seed}") as tracker:
            tracker.log_metrics({Metric.NOTEBOOK_ACC: experiment.notebook / 100})
            data = task_data if task_record(experiment.task).data_dir else None
            result = fit(config, tracker=tracker, quiet=quiet, task_data=data)
        acc = 100 * result.test["acc"]
        rows[experiment.id].outcomes.append(Outcome(experiment, config.seed, tracker.run_id, acc, False))
        log(f"{prefix}: {acc:.2f}% (notebook {experiment.notebook:.2f}%) run {tracker.run_id}")
    return list(rows.values())


def format_table(rows: list[Row]) -> str:
    """Plain-text comparison: experiment, notebook number, ours, difference, verdict."""
    header = ("experiment", "notebook %", "ours %", "diff", "seeds (min..max)", "verdict")
    lines = [header]
    for row in rows:
        spread = (f"{len(row.values)} ({min(row.values):.2f}..{max(row.values):.2f})" if len(row.values) > 1
                  else "1")
        lines.append((row.experiment.id, f"{row.experiment.notebook:.2f}", f"{row.ours:.2f}",
                      signed_points(row.difference), spread, row.verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    notes = [f"- {row.experiment.id}: {row.experiment.note}" for row in rows
             if row.experiment.note and row.verdict != "within noise"]
    return "\n".join(text + ([""] + notes if notes else []))
