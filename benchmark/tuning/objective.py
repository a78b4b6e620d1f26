"""One trial: sample a configuration, train it as a nested MLflow run, report epochs to the pruner.

Example: rnnbench tune studies/addition.toml --arch gru --trials 5   (five calls of Objective)

Each trial opens its own run under the study's parent run (``parent_run_id``), named for what it trains
(``lstm-h128x1-t07``; a pruned one ends ``-pruned``), tagged ``suite=tune``,
``role=trial``, ``study_name``, ``trial_number`` and ``optuna.state``; it ends FINISHED (COMPLETE), KILLED
(PRUNED, with ``pruned_at_epoch``; or Ctrl-C) or FAILED with its ``error``. The value is the best
validation accuracy; ties are broken by the ``val_loss`` user attr (``schema.rank_key``). A trial is scored on
validation alone (``fit(search=True)``: no test split, no figure); ``score_on_test`` scores the trial its study
chooses, once, when the study ends.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from dataclasses import dataclass

from ..schema import PRUNED_RUN_SUFFIX, EndedBy, Metric, Role, RunStatus, StudyAttr, Suite, Tag, TrialState
from ..store import interrupts_held
from ..tracking import RunTracker, trial_run_name
from .coordination import holds_slot
from .recovery import process_space
from .study_file import StudySpec


class TrialFailed(Exception):
    """A trial that failed with a reason (already recorded); the study goes on."""


class BudgetUsed(TrialFailed):
    """This trial was created after the study's budget was taken by others: it ends FAIL as surplus."""


@dataclass
class Objective:
    spec: StudySpec
    study_name: str
    parent_run_id: str
    tracking_uri: str
    threads: int = 0
    quiet: bool = False
    fit_quiet: bool = True
    task_data: dict | None = None
    client: object = None
    budget: int | None = None  # the study's trial budget, shared with every other worker (see holds_slot)
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory, GPU) on each trial's run

    def suggest(self, trial) -> dict:
        return {p.name: p.suggest(trial) for p in self.spec.space}

    def __call__(self, trial) -> float:
        import optuna

        from .. import train  # torch: imported by the first trial, so that the tuning package loads without it

        started = time.perf_counter()
        if self.budget is not None and not holds_slot(trial.study.get_trials(deepcopy=False), trial.number,
                                                      self.budget):
            trial.set_user_attr(StudyAttr.ENDED_BY, EndedBy.SURPLUS)  # before any suggestion or run: nothing to undo
            raise BudgetUsed(f"trial {trial.number}: the budget of {self.budget} trials was taken by other workers")
        values = self.suggest(trial)
        fixed_threads = {"threads": self.threads} if self.threads and "threads" not in self.spec.fixed_dict else {}
        config = self.spec.train_config({**values, **fixed_threads})
        trial.set_user_attr(StudyAttr.HOST, socket.gethostname())
        trial.set_user_attr(StudyAttr.PID, os.getpid())
        trial.set_user_attr(StudyAttr.PROCESS_SPACE, process_space())
        trial.set_user_attr(StudyAttr.ENDED_BY, None)  # retries inherit the lost trial's attrs
        tags = {Tag.SUITE: Suite.TUNE, Tag.ROLE: Role.TRIAL, Tag.STUDY: self.study_name, Tag.TRIAL: str(trial.number),
                Tag.TRIAL_STATE: TrialState.RUNNING, Tag.PRESET: self.spec.preset}
        # Optuna 5.0: retried_trial_number() fails on a live Trial; it takes the stored FrozenTrial.
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        if retried is not None:
            tags[Tag.RETRIED_TRIAL] = str(retried)
        tracker = RunTracker.start(config, tags=tags, parent_run_id=self.parent_run_id, client=self.client,
                                   run_name=trial_run_name(config, trial.number), system_metrics=self.system_metrics)
        trial.set_user_attr(StudyAttr.RUN_ID, tracker.run_id)
        stopped_at = []

        def report(epoch: int, val: dict) -> None:
            trial.report(val["acc"], epoch)
            # After the last epoch there is nothing left to save: a pruned trial would only lose its test metrics
            # and checkpoint (successive halving's top rung lands there when epochs is a power of its factor).
            if epoch < config.epochs and trial.should_prune():
                stopped_at.append(epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (val_acc {val['acc']:.4f})")

        try:
            result = train.fit(config, tracker=tracker, epoch_callback=report, quiet=self.fit_quiet,
                               task_data=self.task_data, search=True)
        except optuna.TrialPruned:
            with interrupts_held():  # the trial's state and its run's end land together
                tracker.set_tags({Tag.TRIAL_STATE: TrialState.PRUNED, Tag.PRUNED_AT: stopped_at[0]})
                # KILLED is MLflow's nearest status; the name says it was the pruner, not a crash or Ctrl-C.
                tracker.rename(f"{trial_run_name(config, trial.number)}{PRUNED_RUN_SUFFIX}")
                tracker.finish(RunStatus.KILLED)
            self._line(trial, values, TrialState.PRUNED, None, started, f"at epoch {stopped_at[0]}")
            raise
        except BaseException as error:
            interrupted = isinstance(error, KeyboardInterrupt)
            with interrupts_held():  # the run's end and the trial's record of why land together
                tracker.set_tags({Tag.TRIAL_STATE: TrialState.FAIL})
                message = tracker.end_with(error)
                if interrupted:
                    trial.set_user_attr(StudyAttr.ENDED_BY, EndedBy.INTERRUPT)
                elif isinstance(error, Exception):
                    trial.set_user_attr(StudyAttr.ERROR, message[:1000])
            self._line(trial, values, TrialState.FAIL, None, started, "interrupted" if interrupted else message)
            if isinstance(error, Exception):
                raise TrialFailed(message) from error
            raise
        value = float(result.val["acc"])
        trial.set_user_attr(StudyAttr.VAL_LOSS, float(result.val.get("loss", math.inf)))  # ties of value
        trial.set_user_attr(StudyAttr.BEST_EPOCH, result.best_epoch)
        with interrupts_held():
            tracker.set_tags({Tag.TRIAL_STATE: TrialState.COMPLETE})
            tracker.finish(RunStatus.FINISHED)
        self._line(trial, values, TrialState.COMPLETE, value, started)
        return value

    def _line(self, trial, values, state, value, started, note="") -> None:
        if self.quiet:
            return
        shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
        score = f"val_acc {100 * value:6.2f}%" if value is not None else " " * 15
        print(f"{self.study_name} trial {trial.number:>3} {state:<8} {score} {time.perf_counter() - started:6.1f}s  "
              f"{shown}{'  ' + note if note else ''}", flush=True)


def score_on_test(client, run_id: str, tracking_uri: str, task_data: dict | None = None) -> float:
    """The test accuracy of the run of a study's chosen trial: its checkpoint scored on the test split once, and
    logged to the run as ``train`` logs it (search trials rank on validation alone); a run scored before is read,
    not scored again."""
    scored = client.get_run(run_id).data.metrics.get(Metric.TEST_ACC)
    if scored is not None:
        return scored
    from ..checkpoint import load_run_checkpoint  # torch: only a study that has a trial to score
    from ..tasks import build_task, preload
    from ..train import resolve_device

    model, config = load_run_checkpoint(run_id, tracking_uri)
    device = resolve_device(config.device)
    task = build_task(config, device, **(task_data or preload(config.task) or {}))
    test = task.evaluate(model.to(device), "test", config.loss)
    RunTracker(client, run_id).log_test(test, config.task)
    return float(test["acc"])


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
