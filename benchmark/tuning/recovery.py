"""Lost workers (SIGKILL, crash): their trials end FAIL, their MLflow runs FAILED, their parameters run again.

Example: rnnbench tune studies/addition.toml --arch gru   (after a worker was killed: its trial is retried)

Each trial records host, pid and process space (kernel boot + pid namespace). Every worker, before each
trial, fails RUNNING trials whose pid is dead in its own process space (``recover_lost_trials``), marks
their MLflow runs FAILED and re-queues their parameters with Optuna's RetryHeartbeatStaleTrialCallback;
RDB storages also use Optuna's heartbeat for other machines, with ``LostTrialHandler`` as its callback.
``reconcile_runs``, on every session start and end, fails trial runs that disagree with their trial: left
RUNNING, or ended COMPLETE by a worker that died before Optuna heard of it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import warnings
from pathlib import Path

from ..schema import Role, RunStatus, StudyAttr, Tag, TrialState
from ..store import client_for, end_run, interrupts_held, search_runs

MAX_RETRY = 2  # a lost trial's parameters are re-run at most this often
LOST_REASON = "worker lost (killed or crashed)"
# The identity of the worker that ran a trial: a retry inherits user attrs and must not inherit these.
WORKER_IDENTITY = (StudyAttr.HOST, StudyAttr.PID, StudyAttr.PROCESS_SPACE, StudyAttr.RUN_ID)


def process_space() -> str:
    """Where a pid means something: host, kernel boot and pid namespace (containers may share a hostname)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "|".join(parts)


class LostTrialHandler:
    """A trial whose worker died: its MLflow run ends FAILED, its parameters are queued again."""

    def __init__(self, tracking_uri: str | None):
        self.tracking_uri = tracking_uri

    def __call__(self, study, trial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with contextlib.suppress(Exception):  # the store may be unreachable; reconcile_runs repeats this
            close_trial_runs(client_for(self.tracking_uri), study.study_name, {trial.number: TrialState.FAIL},
                             f"{LOST_REASON}; parameters re-queued")
        # Without this, the retry, once popped and RUNNING, would look lost (dead pid) to other workers
        # until its objective sets its own identity.
        trial = copy.deepcopy(trial)
        for key in WORKER_IDENTITY:
            trial.user_attrs.pop(key, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def recover_lost_trials(study, storage, tracking_uri: str | None) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone; returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState as OptunaState

    host, space, lost = socket.gethostname(), process_space(), []
    handler = LostTrialHandler(tracking_uri)
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
        attrs = trial.user_attrs
        here = (attrs[StudyAttr.PROCESS_SPACE] == space if StudyAttr.PROCESS_SPACE in attrs
                else attrs.get(StudyAttr.HOST) == host)
        if not here or _pid_alive(attrs.get(StudyAttr.PID)):
            continue
        if study_id is None:
            study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, state=OptunaState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        lost.append(trial.number)
        handler(study, storage.get_trial(trial_id))
    return lost


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # an unreaped zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def close_trial_runs(client, study_name: str, states: dict[int, str], reason: str) -> int:
    """Make the trial runs of ``study_name`` agree with their trials' Optuna states (number -> state).

    A run still RUNNING ends FAILED. So does a run that ended COMPLETE although Optuna failed its trial: its
    worker died between ending the run and telling Optuna, and the parameters run again, so the report must not
    count the first run as well. Returns how many runs changed.
    """
    if not states:
        return 0
    changed = 0
    for run in search_runs(client, f"tags.{Tag.STUDY} = '{study_name}' and tags.{Tag.ROLE} = '{Role.TRIAL}'"):
        state = states.get(int(run.data.tags.get(Tag.TRIAL, -1)))
        if state is None:
            continue
        if run.info.status == RunStatus.RUNNING:
            why = reason
        elif state == TrialState.FAIL and run.data.tags.get(Tag.TRIAL_STATE) == TrialState.COMPLETE:
            why = f"{reason} after its run ended, before Optuna recorded the result"
        else:
            continue
        with interrupts_held():
            client.set_tag(run.info.run_id, Tag.TRIAL_STATE, state)
            end_run(client, run.info.run_id, RunStatus.FAILED, why)
        changed += 1
    return changed


def reconcile_runs(study, client) -> int:
    """Trial runs that disagree with their finished Optuna trials (a worker died) end FAILED."""
    from optuna.trial import TrialState as OptunaState

    over = {t.number: t.state.name for t in study.get_trials(deepcopy=False) if t.state != OptunaState.RUNNING}
    return close_trial_runs(client, study.study_name, over, LOST_REASON)
