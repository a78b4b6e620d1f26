"""Workers of one study on any number of machines: the shared trial budget, one parent run, worker numbers.

Example: rnnbench tune studies/mnist.toml --arch lstm --preset quick --workers 2   (on every machine at once)

No lock of our own: everything rests on the Optuna storage numbering trials in creation order.

- Budget: ``trials`` counts finished trials in the study (COMPLETE, PRUNED, FAIL), not per session, so
  re-running the command resumes; trials failed by Ctrl-C, surplus, or lost with a killed worker and
  re-queued do not count. ``holds_slot`` keeps the budget exact for every worker of every session.
- Parent run: elected once, race-free, however many workers start at once (``elect_parent_run``), in a
  companion study ``<study>#registry#<study id>`` (``coordination_study_name``; the ``#registry#``
  spelling is ``schema.COORDINATION_MARK``, kept for existing stores). Its id is in the study's user attrs.
- Worker numbers: one trial each in the same companion study (``register_worker``); they offset the
  sampler seed.
- Companion studies are bookkeeping: every listing leaves them out (``is_coordination_study``), and
  ``without_coordination`` gives optuna-dashboard a storage that lists the real studies only.
"""

from __future__ import annotations

import os
import socket
import warnings

from ..config import ConfigError
from ..schema import (
    COORDINATION_MARK,
    CompanionAttr,
    EndedBy,
    Role,
    RunStatus,
    StudyAttr,
    StudyParam,
    Suite,
    Tag,
)
from ..store import mask_url
from ..tracking import RunTracker, environment_tags
from .study_file import StudySpec, spec_mismatch

SURPLUS = "SURPLUS"  # trial_counts' key for surplus trials (their Optuna state is FAIL)
PARAM_LIMIT = 6000  # characters of a parent-run param value kept


# --- the budget -----------------------------------------------------------------------------------


def _requeued(trials) -> set[int]:
    """Numbers of trials that were lost and whose parameters a later trial re-runs."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def _discounted(trial, requeued: set[int]) -> bool:
    """A trial that does not use up the budget: lost and re-queued, interrupted by Ctrl-C, or surplus."""
    from optuna.trial import TrialState as OptunaState

    return trial.number in requeued or (trial.state == OptunaState.FAIL and trial.user_attrs.get(StudyAttr.ENDED_BY)
                                        in (EndedBy.INTERRUPT, EndedBy.SURPLUS))


def counted_trials(study) -> int:
    """Finished trials that use up the budget: not those interrupted by Ctrl-C, lost and re-queued, or surplus."""
    trials = study.get_trials(deepcopy=False)
    requeued = _requeued(trials)
    return sum(1 for t in trials if t.state.is_finished() and not _discounted(t, requeued))


def slots_held(trials, below: int | None = None) -> int:
    """Trials (numbered below ``below``, if given) that hold a slot of the budget, whatever their state."""
    requeued = _requeued(trials)  # from every trial: a retry numbered above ``below`` still discounts
    return sum(1 for t in trials if (below is None or t.number < below) and not _discounted(t, requeued))


def trials_left(trials, budget: int) -> int:
    """Trials still to run for the budget: free slots plus re-queued (WAITING) trials."""
    from optuna.trial import TrialState as OptunaState

    return max(0, budget - slots_held(trials)) + sum(1 for t in trials if t.state == OptunaState.WAITING)


def holds_slot(trials, number: int, budget: int) -> bool:
    """May trial ``number`` run? Only if fewer than ``budget`` trials numbered below it hold a slot.

    Every trial that is not discounted holds a slot, whatever its state (WAITING retries included).
    This keeps the budget exact with any number of workers, without a lock of our own: the storage
    numbers trials in creation order and a trial is visible only after all lower-numbered ones (see
    elect_parent_run), so when trial N checks, every trial that could ever be counted ahead of it already
    exists; and a trial only ever goes from holding a slot to discounted (lost, interrupted), never back.
    So the trials below N that end up counted are at most those holding a slot at N's check, fewer than
    the budget, and at most ``budget`` trials are ever counted. Losing this check costs one cheap FAIL
    (ended_by=surplus, no MLflow run), which happens only when workers race for the last slots.
    """
    return slots_held(trials, below=number) < budget


def next_step(trials, budget: int, heartbeat: bool, space: str) -> str:
    """What a worker does next: "run" a trial, "wait" for trials that may still be lost, or stop ("done")."""
    from optuna.trial import TrialState as OptunaState

    if any(t.state == OptunaState.WAITING for t in trials):
        return "run"  # a re-queued trial; holds_slot decides whether it may still run
    if slots_held(trials) < budget:
        return "run"
    running = [t for t in trials if t.state == OptunaState.RUNNING]
    # A running trial may still die and come back as a retry: wait for it if its loss can be noticed
    # from here (heartbeat storages: any trial; otherwise: a pid in this process space).
    if any(heartbeat or t.user_attrs.get(StudyAttr.PROCESS_SPACE) == space for t in running):
        return "wait"
    return "done"


def trial_counts(study) -> dict[str, int]:
    """Trials by state; surplus trials (see holds_slot) are counted as SURPLUS, not FAIL."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        state = SURPLUS if trial.user_attrs.get(StudyAttr.ENDED_BY) == EndedBy.SURPLUS else trial.state.name
        counts[state] = counts.get(state, 0) + 1
    return counts


# --- the companion study: parent-run election and worker numbers -----------------------------------


def is_coordination_study(name: str) -> bool:
    return COORDINATION_MARK in name


def without_coordination(storage):
    """``storage`` as a browser of studies (optuna-dashboard) should list it: the companion studies left out.

    Every other call goes to ``storage`` itself, so that the studies read and write as through it.
    """
    from optuna.storages import BaseStorage

    def forward(name):
        return lambda self, *args, **kwargs: getattr(self.inner, name)(*args, **kwargs)

    members = {name: forward(name) for name, member in vars(BaseStorage).items()
               if callable(member) and not name.startswith("_")}

    def get_all_studies(self):
        return [s for s in self.inner.get_all_studies() if not is_coordination_study(s.study_name)]

    def init(self, inner):
        self.inner = inner

    view = type("WithoutCoordination", (BaseStorage,), {**members, "__init__": init,
                                                         "get_all_studies": get_all_studies})
    return view(storage)


def coordination_study_name(study_name: str, study_id: int) -> str:
    return f"{study_name}{COORDINATION_MARK}{study_id}"  # the id: a re-created study gets a new companion


def coordination_study(storage, study_name: str):
    """The companion study of ``study_name`` (created on first use); KeyError when there is no such study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = coordination_study_name(study_name, storage.get_study_id_from_name(study_name))
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def _companion_trial(**user_attrs):
    import optuna

    return optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.0,
                                     user_attrs={**user_attrs, CompanionAttr.HOST: socket.gethostname(),
                                                 CompanionAttr.PID: os.getpid()})


def register_worker(storage, study_name: str) -> int:
    """A number no other worker of the study ever gets, on any machine: its trial number in the companion study.

    It offsets the sampler seed: sessions started alike on many machines would otherwise all draw the
    same parameters (and a resumed study would repeat its first session's draws).
    """
    companion = coordination_study(storage, study_name)
    trial_id = storage.create_new_trial(storage.get_study_id_from_name(companion.study_name),
                                        template_trial=_companion_trial(**{CompanionAttr.ROLE: CompanionAttr.WORKER}))
    return storage.get_trial_number_from_id(trial_id)


def ensure_parent_run(study, storage, spec: StudySpec, client, storage_label: str = "") -> str:
    """The study's one parent run (elected on first use), set RUNNING for this session."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(StudyAttr.PARENT_RUN) or elect_parent_run(study, storage, spec, client,
                                                                           storage_label)
    try:
        client.update_run(run_id, status=RunStatus.RUNNING)
    except MlflowException as error:
        raise ConfigError(f"parent run {run_id} of study {study.study_name} is not in tracking store "
                          f"{mask_url(client.tracking_uri)} ({str(error).splitlines()[0]}); use the tracking URI "
                          "the study was started with, or start a new study with --study-name") from None
    return run_id


def elect_parent_run(study, storage, spec: StudySpec, client, storage_label: str = "") -> str:
    """Create the study's parent run exactly once, however many workers on however many machines ask at once.

    MLflow has no atomic "create if absent", so the election runs in the Optuna storage, which every
    worker shares. Each worker that finds no candidate yet creates a *candidate* parent run, then
    records it as one trial of the companion study (``coordination_study``) with a single ``add_trial``
    (trial and attrs in one transaction). The storage serialises trial creation within a study (RDB: the
    study row is locked FOR UPDATE while the trial's number is computed; SQLite: one writer; journal: one
    ordered log), so companion trial numbers are unique, and once a companion trial is visible, every
    lower-numbered one is visible too. So every worker that reads any candidate (its own included) reads
    the lowest-numbered one: the parent run. Losers delete their candidate (soft delete: it drops out of
    searches at once). Workers arriving later find a candidate and create nothing. The winner's spec
    fingerprint rides along, so workers started from a different study file are refused.
    """
    companion = coordination_study(storage, study.study_name)

    def candidates():
        return [t for t in companion.get_trials(deepcopy=False) if CompanionAttr.RUN_ID in t.user_attrs]

    found, mine = candidates(), None
    if not found:
        mine = _create_candidate(study.study_name, spec, client, storage_label)
        companion.add_trial(_companion_trial(**{CompanionAttr.RUN_ID: mine,
                                                CompanionAttr.FINGERPRINT: spec.fingerprint()}))
        found = candidates()
    winner = min(found, key=lambda t: t.number).user_attrs
    if mine is not None and mine != winner[CompanionAttr.RUN_ID]:
        client.delete_run(mine)
    if winner[CompanionAttr.FINGERPRINT] != spec.fingerprint():
        raise spec_mismatch(study.study_name)
    study.set_user_attr(StudyAttr.PARENT_RUN, winner[CompanionAttr.RUN_ID])  # every worker writes the same value
    return winner[CompanionAttr.RUN_ID]


def _create_candidate(study_name: str, spec: StudySpec, client, storage_label: str) -> str:
    """A parent run for the study, with its tags and the study's definition as params."""
    tags = {**environment_tags(), Tag.TASK: spec.task, Tag.ARCH: spec.arch, Tag.SUITE: Suite.TUNE,
            Tag.ROLE: Role.STUDY, Tag.STUDY: study_name, Tag.PRESET: spec.preset}
    if storage_label:
        tags[Tag.OPTUNA_STORAGE] = mask_url(storage_label)
    params = {StudyParam.STUDY_FILE: spec.path, StudyParam.PRESET: spec.preset, StudyParam.EPOCHS: spec.epochs,
              StudyParam.TRIALS: spec.trials, StudyParam.SAMPLER: _compact(spec.sampler_dict),
              StudyParam.PRUNER: _compact(spec.pruner_dict),
              **{f"{StudyParam.SPACE_PREFIX}{p.name}": p.describe() for p in spec.space},
              **{f"{StudyParam.FIXED_PREFIX}{k}": v for k, v in spec.fixed}}
    params = {key: str(value)[:PARAM_LIMIT] for key, value in params.items()}
    return RunTracker.create(client, spec.task, study_name, tags, params).run_id


def _compact(values: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))
