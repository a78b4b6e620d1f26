"""Optuna studies where every trial is a nested MLflow run under one parent run per study.

Example: rnnbench tune studies/mnist.toml --arch lstm --preset quick --workers 2

- Study = task x architecture (x preset): name ``<task>-<arch>-<preset>`` unless ``--study-name``.
- Storage: default a JournalStorage file ``optuna.journal`` beside the MLflow store (the folder of a
  local ``sqlite:///.../mlflow.db`` tracking URI, else ``./mlruns``); journal files take appends from
  many processes without SQLite's "database is locked". ``--storage`` takes any Optuna RDB URL
  (``sqlite:///...``, ``postgresql+psycopg://...``; these get a heartbeat) or a ``.journal`` path.
  ``RNNBENCH_STORAGE`` gives the URL when ``--storage`` is absent (keeps passwords off the process list).
- Budget: ``trials`` counts finished trials in the study (COMPLETE, PRUNED, FAIL), not per session,
  so re-running the command resumes; trials failed by Ctrl-C or lost with a killed worker do not
  count. The budget is shared by every worker of every session on every machine, exactly: see
  ``holds_slot`` (a trial beyond it is failed as "surplus" before it trains; it never counts).
- Tracking: the study's parent run is elected once, race-free, however many workers start at once
  (``elect_parent_run``); its id is in the study's user attrs. Each trial opens its own run with
  ``parent_run_id`` and the schema tags of ``benchmark.tracking``. The parent run is RUNNING while any
  session works on the study; the last session to end closes it: FINISHED, KILLED on Ctrl-C (exit 130),
  FAILED when a worker died; the next session sets the same run RUNNING again.
- Lost workers (SIGKILL, crash): each trial records host, pid and process space (kernel boot + pid
  namespace); every worker, before each trial, fails RUNNING trials whose pid is dead in its own process
  space, marks their MLflow runs FAILED and re-queues their parameters with Optuna's
  RetryHeartbeatStaleTrialCallback; RDB storages also use Optuna's heartbeat for other machines. Workers
  whose budget is used up stay while other trials run, so a lost trial's retry is picked up.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError
from .studies import StudySpec
from .tracking import (  # noqa: I001  (mask_url, REGISTRY_MARK, STORAGE_ENV re-exported)
    REGISTRY_MARK,
    STORAGE_ENV,
    TAG_ROLE,
    TAG_STUDY,
    TAG_SUITE,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
    RunTracker,
    client_for,
    default_store_dir,
    environment_tags,
    get_or_create_experiment,
    mask_url,
    resolve_tracking_uri,
)
from .train import fit

HEARTBEAT_SECONDS = 10  # RDB storages: a trial without a heartbeat for 2x this is stale
MAX_RETRY = 2  # a lost trial's parameters are re-run at most this often
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_SPEC = "spec_fingerprint"
WORKER_STORAGE_ENV = STORAGE_ENV  # how the launcher hands the storage to its worker processes
LINGER_SECONDS = 2.0  # a worker with no budget left polls this often while other trials may still be lost


class TrialFailed(Exception):
    """A trial that failed with a reason (already recorded); the study goes on."""


class BudgetUsed(TrialFailed):
    """This trial was created after the study's budget was taken by others: it ends FAIL as surplus."""


def resolve_storage_url(storage: str | None = None, tracking_uri: str | None = None) -> str:
    """``--storage``, else ``$RNNBENCH_STORAGE``, else the journal file beside the tracking store."""
    return storage or os.environ.get(STORAGE_ENV) or default_storage_url(tracking_uri)


def process_space() -> str:
    """Where a pid means something: host, kernel boot and pid namespace (containers may share a hostname)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "|".join(parts)


# --- storage, sampler, pruner -------------------------------------------------------------------


def default_storage_url(tracking_uri: str | None = None) -> str:
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "optuna.journal")
    return str(default_store_dir() / "optuna.journal")


def make_storage(url: str, tracking_uri: str | None = None):
    """An Optuna storage for a URL or a ``.journal`` path."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.endswith(".journal") and "://" not in url:
        path = Path(url).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"storage {url!r} is neither a URL (sqlite:///..., postgresql+psycopg://...) "
                          "nor a path ending in .journal")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                              grace_period=2 * HEARTBEAT_SECONDS,
                              heartbeat_stale_trial_callback=LostTrialHandler(tracking_uri))
    except ImportError as error:
        raise ConfigError(f"storage {mask_url(url)} needs a driver: {error}; "
                          "for PostgreSQL: pip install 'psycopg[binary]'") from None
    except Exception as error:  # connection refused, bad credentials, ...
        raise ConfigError(f"cannot open storage {mask_url(url)}: {str(error).splitlines()[0]}") from None


def make_sampler(spec: StudySpec, worker: int = 0):
    """Seeded per worker: workers sharing a seed would draw the same startup trials."""
    import optuna

    settings = spec.sampler_dict
    seed = settings.get("seed")
    seed = None if seed is None else seed + worker
    if settings["type"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.get("n_startup_trials", 10),
                                          multivariate=settings.get("multivariate", False), constant_liar=True)


def make_pruner(spec: StudySpec):
    import optuna

    settings = {k: v for k, v in spec.pruner_dict.items() if k != "type"}
    kind = spec.pruner_dict["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(**settings)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=spec.epochs, **settings)
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**settings)
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, name: str, storage, worker: int = 0, create: bool = True):
    """Create or load the study; a study made from a different space/fixed/epochs is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed by us
    if REGISTRY_MARK in name:
        raise ConfigError(f"study name {name!r} contains {REGISTRY_MARK!r}, which rnnbench reserves; choose another")
    if not create:
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec, worker),
                                  pruner=make_pruner(spec))
    else:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=make_sampler(spec, worker), pruner=make_pruner(spec))
    stored = study.user_attrs.get(ATTR_SPEC)
    if stored is None and create:
        for key, value in {ATTR_SPEC: spec.fingerprint(), "task": spec.task, "arch": spec.arch,
                           "preset": spec.preset, "study_file": spec.path}.items():
            study.set_user_attr(key, value)
    elif stored is not None and stored != spec.fingerprint():
        raise ConfigError(f"study {name!r} was created from a different search space, fixed settings or epochs; "
                          "start a new one with --study-name NAME (or delete it)")
    return study


# --- the objective --------------------------------------------------------------------------------


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
    seen: list = field(default_factory=list)

    def suggest(self, trial) -> dict:
        values = {}
        for p in self.spec.space:
            if p.kind == "int":
                values[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
            elif p.kind == "float":
                values[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
            else:
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        return values

    def __call__(self, trial) -> float:
        import optuna

        started = time.perf_counter()
        if self.budget is not None and not holds_slot(trial.study.get_trials(deepcopy=False), trial.number,
                                                      self.budget):
            trial.set_user_attr("ended_by", "surplus")  # before any suggestion or MLflow run: nothing to undo
            raise BudgetUsed(f"trial {trial.number}: the budget of {self.budget} trials was taken by other workers")
        values = self.suggest(trial)
        fixed_threads = {"threads": self.threads} if self.threads and "threads" not in self.spec.fixed_dict else {}
        config = self.spec.train_config({**values, **fixed_threads})
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("process_space", process_space())
        trial.set_user_attr("ended_by", None)  # retries inherit the lost trial's attrs
        tags = {TAG_SUITE: "tune", TAG_ROLE: "trial", TAG_STUDY: self.study_name, TAG_TRIAL: str(trial.number),
                TAG_TRIAL_STATE: "RUNNING", "preset": self.spec.preset}
        # Optuna 5.0: retried_trial_number() fails on a live Trial; it takes the stored FrozenTrial.
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        if retried is not None:
            tags["retried_trial"] = str(retried)
        tracker = RunTracker.start(config, tags=tags, parent_run_id=self.parent_run_id, client=self.client,
                                   run_name=f"{self.study_name}/trial-{trial.number}")
        trial.set_user_attr("mlflow_run_id", tracker.run_id)
        stopped_at = []

        def report(epoch: int, val: dict) -> None:
            trial.report(val["acc"], epoch)
            # After the last epoch there is nothing left to save: a pruned trial would only lose its test metrics
            # and checkpoint (successive halving's top rung lands there when epochs is a power of its factor).
            if epoch < config.epochs and trial.should_prune():
                stopped_at.append(epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (val_acc {val['acc']:.4f})")

        try:
            result = fit(config, tracker=tracker, epoch_callback=report, quiet=self.fit_quiet,
                         task_data=self.task_data)
        except optuna.TrialPruned:
            tracker.set_tags({TAG_TRIAL_STATE: "PRUNED", "pruned_at_epoch": stopped_at[0]})
            tracker.finish("KILLED")
            self._line(trial, values, "PRUNED", None, started, f"at epoch {stopped_at[0]}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("ended_by", "interrupt")
            tracker.set_tags({TAG_TRIAL_STATE: "FAIL"})
            tracker.finish("KILLED", error="interrupted (KeyboardInterrupt)")
            self._line(trial, values, "FAIL", None, started, "interrupted")
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message[:1000])
            tracker.set_tags({TAG_TRIAL_STATE: "FAIL"})
            tracker.finish("FAILED", error=message)
            self._line(trial, values, "FAIL", None, started, message)
            raise TrialFailed(message) from error
        value = float(result.val["acc"])
        trial.set_user_attr("test_acc", float(result.test["acc"]))
        trial.set_user_attr("val_loss", float(result.val.get("loss", math.inf)))  # ties of value, as the report
        trial.set_user_attr("best_epoch", result.best_epoch)
        tracker.set_tags({TAG_TRIAL_STATE: "COMPLETE"})
        tracker.finish("FINISHED")
        self._line(trial, values, "COMPLETE", value, started)
        return value

    def _line(self, trial, values, state, value, started, note="") -> None:
        if self.quiet:
            return
        shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
        score = f"val_acc {100 * value:6.2f}%" if value is not None else " " * 15
        print(f"{self.study_name} trial {trial.number:>3} {state:<8} {score} {time.perf_counter() - started:6.1f}s  "
              f"{shown}{'  ' + note if note else ''}", flush=True)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- lost trials and the parent run --------------------------------------------------------------


class LostTrialHandler:
    """A trial whose worker died: its MLflow run ends FAILED, its parameters are queued again."""

    def __init__(self, tracking_uri: str | None):
        self.tracking_uri = tracking_uri

    def __call__(self, study, trial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with contextlib.suppress(Exception):  # the store may be unreachable; reconcile_runs repeats this
            close_trial_runs(client_for(self.tracking_uri), study.study_name, {trial.number: "FAIL"},
                             "worker lost (killed or crashed); parameters re-queued")
        # The retry inherits user attrs: drop the dead worker's identity, or the retry, once popped and
        # RUNNING, would look lost (dead pid) to other workers until its objective sets its own.
        trial = copy.deepcopy(trial)
        for key in ("host", "pid", "process_space", "mlflow_run_id"):
            trial.user_attrs.pop(key, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def recover_lost_trials(study, storage, tracking_uri: str | None) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone; returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host, space, lost = socket.gethostname(), process_space(), []
    handler = LostTrialHandler(tracking_uri)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        here = attrs["process_space"] == space if "process_space" in attrs else attrs.get("host") == host
        if not here or _pid_alive(attrs.get("pid")):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        lost.append(trial.number)
        handler(study, storage.get_trial(trial._trial_id))
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
    """End RUNNING trial runs of ``study_name`` whose trial number is in ``states`` (number -> Optuna state)."""
    if not states:
        return 0
    closed = 0
    for run in _search(client, f"tags.{TAG_STUDY} = '{study_name}' and tags.{TAG_ROLE} = 'trial' "
                               "and attributes.status = 'RUNNING'"):
        number = int(run.data.tags.get(TAG_TRIAL, -1))
        if number in states:
            tracker = RunTracker(client, run.info.run_id)
            tracker.set_tags({TAG_TRIAL_STATE: states[number]})
            tracker.finish("FAILED", error=reason)
            closed += 1
    return closed


def reconcile_runs(study, client) -> int:
    """Trial runs left RUNNING although their Optuna trial is over (a worker died) end FAILED."""
    from optuna.trial import TrialState

    over = {t.number: t.state.name for t in study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING}
    return close_trial_runs(client, study.study_name, over, "worker lost (killed or crashed)")


def _search(client, filter_string: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=filter_string, max_results=10_000) if experiments else []


def ensure_parent_run(study, spec: StudySpec, client, storage_label: str = "") -> str:
    """The study's one parent run (elected on first use), set RUNNING for this session."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(ATTR_PARENT) or elect_parent_run(study, spec, client, storage_label)
    try:
        client.update_run(run_id, status="RUNNING")
    except MlflowException as error:
        raise ConfigError(f"parent run {run_id} of study {study.study_name} is not in tracking store "
                          f"{mask_url(client.tracking_uri)} ({str(error).splitlines()[0]}); use the tracking URI "
                          "the study was started with, or start a new study with --study-name") from None
    return run_id


def registry_name(study_name: str, study_id: int) -> str:
    return f"{study_name}{REGISTRY_MARK}{study_id}"  # the id: a re-created study gets a new registry


def _registry(study):
    import optuna

    return optuna.create_study(study_name=registry_name(study.study_name, study._study_id), storage=study._storage,
                               load_if_exists=True)


def register_worker(storage, study_name: str) -> int:
    """A number no other worker of the study ever gets, on any machine: its trial number in the registry.

    It offsets the sampler seed: sessions started alike on many machines would otherwise all draw the
    same parameters (and a resumed study would repeat its first session's draws).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study_id = storage.get_study_id_from_name(study_name)
    registry = optuna.create_study(study_name=registry_name(study_name, study_id), storage=storage,
                                   load_if_exists=True)
    trial_id = storage.create_new_trial(registry._study_id, template_trial=optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=0.0,
        user_attrs={"role": "worker", "host": socket.gethostname(), "pid": os.getpid()}))
    return storage.get_trial_number_from_id(trial_id)


def elect_parent_run(study, spec: StudySpec, client, storage_label: str = "") -> str:
    """Create the study's parent run exactly once, however many workers on however many machines ask at once.

    MLflow has no atomic "create if absent", so the election runs in the Optuna storage, which every
    worker shares. Each worker that finds no candidate yet creates a *candidate* parent run, then
    records it as one trial of a companion study, the registry (``<study>#registry#<study id>``), with a
    single ``add_trial`` (trial and attrs in one transaction). The storage serialises trial creation
    within a study (RDB: the study row is locked FOR UPDATE while the trial's number is computed;
    SQLite: one writer; journal: one ordered log), so registry numbers are unique, and once a registry
    trial is visible, every lower-numbered one is visible too. So every worker that reads any candidate
    (its own included) reads the lowest-numbered one: the parent run. Losers delete their candidate
    (soft delete: it drops out of searches at once). Workers arriving later find a candidate and create
    nothing. The winner's spec fingerprint rides along, so workers started from a different study file
    are refused.
    """
    import optuna
    from mlflow.entities import Param

    registry = _registry(study)
    candidates = [t for t in registry.get_trials(deepcopy=False) if "run_id" in t.user_attrs]
    mine = None
    if not candidates:
        experiment_id = get_or_create_experiment(client, spec.task)
        tags = {**environment_tags(), "task": spec.task, "arch": spec.arch, TAG_SUITE: "tune", TAG_ROLE: "study",
                TAG_STUDY: study.study_name, "preset": spec.preset}
        if storage_label:
            tags["optuna_storage"] = mask_url(storage_label)
        mine = client.create_run(experiment_id, run_name=study.study_name, tags=tags).info.run_id
        params = {"study_file": spec.path, "preset": spec.preset, "epochs": spec.epochs, "trials": spec.trials,
                  "sampler": _compact(spec.sampler_dict), "pruner": _compact(spec.pruner_dict),
                  **{f"space.{p.name}": p.describe() for p in spec.space},
                  **{f"fixed.{k}": v for k, v in spec.fixed}}
        client.log_batch(mine, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        registry.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=0.0,
            user_attrs={"run_id": mine, "fingerprint": spec.fingerprint(), "host": socket.gethostname(),
                        "pid": os.getpid()}))
        candidates = [t for t in registry.get_trials(deepcopy=False) if "run_id" in t.user_attrs]
    winner = min(candidates, key=lambda t: t.number).user_attrs
    if mine is not None and mine != winner["run_id"]:
        client.delete_run(mine)
    if winner["fingerprint"] != spec.fingerprint():
        raise ConfigError(f"study {study.study_name!r} was created from a different search space, fixed settings "
                          "or epochs; start a new one with --study-name NAME (or delete it)")
    study.set_user_attr(ATTR_PARENT, winner["run_id"])  # every worker writes the same value
    return winner["run_id"]


def _compact(values: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def update_parent(client, parent_run_id: str, study) -> dict:
    """Best trial and state counts on the parent run (names in the tracking schema)."""
    counts = trial_counts(study)
    tracker = RunTracker(client, parent_run_id)
    metrics = {f"n_{state.lower()}": counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")}
    best = best_trial(study)
    summary = {"counts": counts, "best": None}
    if best is not None:
        metrics.update({"best_val_acc": best.value, "best_trial_number": best.number})
        if "test_acc" in best.user_attrs:
            metrics["best_test_acc"] = best.user_attrs["test_acc"]
        tracker.set_tags({"best_trial_number": best.number, "best_run_id": best.user_attrs.get("mlflow_run_id", ""),
                          **{f"best.{k}": v for k, v in best.params.items()}})
        summary["best"] = best
    tracker.log_metrics(metrics)
    return summary


def best_trial(study):
    """Highest value; ties (common: many trials at 100 %) go to the lower validation loss, then the earlier
    trial. The report, the parent run, the champion and ``rnnbench confirm`` all use this order."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: (-t.value, t.user_attrs.get("val_loss", math.inf), t.number)) \
        if complete else None


def trial_counts(study) -> dict[str, int]:
    """Trials by state; surplus trials (see holds_slot) are counted as SURPLUS, not FAIL."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        state = "SURPLUS" if trial.user_attrs.get("ended_by") == "surplus" else trial.state.name
        counts[state] = counts.get(state, 0) + 1
    return counts


def _requeued(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _discounted(trial, requeued: set[int]) -> bool:
    """A trial that does not use up the budget: lost and re-queued, interrupted by Ctrl-C, or surplus."""
    from optuna.trial import TrialState

    return trial.number in requeued or (trial.state == TrialState.FAIL
                                        and trial.user_attrs.get("ended_by") in ("interrupt", "surplus"))


def counted_trials(study) -> int:
    """Finished trials that use up the budget: not those interrupted by Ctrl-C, lost and re-queued, or surplus."""
    trials = study.get_trials(deepcopy=False)
    requeued = _requeued(trials)
    return sum(1 for t in trials if t.state.is_finished() and not _discounted(t, requeued))


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
    requeued = _requeued(trials)
    return sum(1 for t in trials if t.number < number and not _discounted(t, requeued)) < budget


def next_step(trials, budget: int, heartbeat: bool, space: str) -> str:
    """What a worker does next: "run" a trial, "wait" for trials that may still be lost, or stop ("done")."""
    from optuna.trial import TrialState

    requeued = _requeued(trials)
    if any(t.state == TrialState.WAITING for t in trials):
        return "run"  # a re-queued trial; holds_slot decides whether it may still run
    if sum(1 for t in trials if not _discounted(t, requeued)) < budget:
        return "run"
    running = [t for t in trials if t.state == TrialState.RUNNING]
    # A running trial may still die and come back as a retry: wait for it if its loss can be noticed
    # from here (heartbeat storages: any trial; otherwise: a pid in this process space).
    if any(heartbeat or t.user_attrs.get("process_space") == space for t in running):
        return "wait"
    return "done"


# --- sessions --------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    study_name: str
    spec: StudySpec
    parent_run_id: str
    counts: dict
    best_value: float | None
    best_test_acc: float | None
    best_params: dict
    best_run_id: str | None
    seconds: float
    status: str  # FINISHED | KILLED | FAILED


def run_worker(spec: StudySpec, study_name: str, storage_url: str, tracking_uri: str | None, budget: int,
               timeout: float, *, threads: int = 0, quiet: bool = False, fit_quiet: bool = True) -> int:
    """Run trials of an existing study until it holds ``budget`` counted trials; returns how many ran here.

    Any number of these may run at once, on any machines: the budget is shared exactly (holds_slot).
    """
    import optuna
    from optuna.storages import fail_stale_trials

    storage = make_storage(storage_url, tracking_uri)
    try:
        worker = register_worker(storage, study_name)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in {mask_url(storage_url)}") from None
    study = open_study(spec, study_name, storage, worker=worker, create=False)
    parent = study.user_attrs.get(ATTR_PARENT)
    if not parent:
        raise ConfigError(f"study {study_name!r} has no parent run; start it with rnnbench tune (not --worker)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    client = client_for(tracking_uri)
    task_data = None
    if spec.task == "mnist":
        from .data import load_mnist

        task_data = load_mnist()  # once per worker, not once per trial
    objective = Objective(spec, study_name, parent, resolve_tracking_uri(tracking_uri), threads=threads, quiet=quiet,
                          fit_quiet=fit_quiet, task_data=task_data, client=client, budget=budget)
    ran = []

    def after_trial(study, trial) -> None:
        if trial.user_attrs.get("ended_by") == "surplus":
            return
        ran.append(trial.number)
        with contextlib.suppress(Exception):  # the session end writes the final summary anyway
            update_parent(client, parent, study)

    heartbeat = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
    space = process_space()
    deadline = time.monotonic() + timeout if timeout else math.inf
    while time.monotonic() < deadline:
        recover_lost_trials(study, storage, tracking_uri)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # other machines' dead workers (no-op without a heartbeat)
        step = next_step(study.get_trials(deepcopy=False), budget, heartbeat, space)
        if step == "done":
            break
        if step == "wait":
            time.sleep(LINGER_SECONDS)
            continue
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[after_trial], gc_after_trial=False)
    return len(ran)


def run_study(spec: StudySpec, *, study_name: str | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, quiet: bool = False) -> StudyResult:
    """One session of a study: create/resume it and its parent run, run what is left of the budget."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    started = time.perf_counter()
    tracking_uri = resolve_tracking_uri(tracking_uri)
    storage_url = resolve_storage_url(storage, tracking_uri)
    name = study_name or spec.default_study_name()
    storage_obj = make_storage(storage_url, tracking_uri)
    study = open_study(spec, name, storage_obj)
    client = client_for(tracking_uri)
    lost = recover_lost_trials(study, storage_obj, tracking_uri)
    reconcile_runs(study, client)
    parent = ensure_parent_run(study, spec, client, storage_url)
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    requeued = _requeued(trials)
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)  # re-queued or enqueued trials
    held = sum(1 for t in trials if not _discounted(t, requeued))
    remaining = max(0, spec.trials - held) + waiting
    if not quiet:
        resumed = f", resumed at trial {len(trials)}" if trials else ""
        others = f", {running} running elsewhere" if running else ""
        print(f"study {name}: {remaining} of {spec.trials} trials to run{resumed}{others}, {workers} worker(s); "
              f"storage {mask_url(storage_url)}; tracking {mask_url(tracking_uri)}; parent run {parent}"
              + (f"; re-queued lost trial(s) {lost}" if lost else ""), flush=True)
    status, error = "FINISHED", None
    try:
        if (remaining or running) and workers == 1:  # running elsewhere: stay to take over their trials if lost
            run_worker(spec, name, storage_url, tracking_uri, spec.trials, spec.timeout, threads=0, quiet=quiet,
                       fit_quiet=quiet)
        elif remaining or running:
            failures = _run_workers(spec, name, storage_url, tracking_uri, workers, quiet)
            if failures == "interrupted":
                raise KeyboardInterrupt
            if failures:
                status, error = "FAILED", f"worker(s) exited abnormally: {failures}; re-run to resume"
                print(f"study {name}: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as exc:
        status, error = "FAILED", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recover_lost_trials(study, storage_obj, tracking_uri)
        reconcile_runs(study, client)
        summary = update_parent(client, parent, study)
        if status == "KILLED":
            error = "interrupted (KeyboardInterrupt); re-run the command to resume"
        # Other sessions (other machines) still running trials: the last one to end closes the parent run.
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if error:
                RunTracker(client, parent).set_tags({"error": error[:5000]})
        else:
            RunTracker(client, parent).finish(status, error=error)
    best = summary["best"]
    if best is not None and best.user_attrs.get("mlflow_run_id"):
        from .champion import register_champion  # the study's best model becomes <task>-<arch>@champion

        try:
            register_champion(best.user_attrs["mlflow_run_id"], tracking_uri)
        except Exception as problem:  # no checkpoint, a registry error: the study itself still succeeded
            print(f"study {name}: best model not registered: {type(problem).__name__}: {problem}".splitlines()[0],
                  file=sys.stderr)
    return StudyResult(name, spec, parent, summary["counts"], best.value if best else None,
                       best.user_attrs.get("test_acc") if best else None, dict(best.params) if best else {},
                       best.user_attrs.get("mlflow_run_id") if best else None, time.perf_counter() - started, status)


def _run_workers(spec: StudySpec, name: str, storage_url: str, tracking_uri: str, workers: int, quiet: bool):
    """Worker processes sharing the study's budget, torch threads divided; returns the failures."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = spec.fixed_dict.get("threads") or max(1, cores // workers)
    # URLs reach the workers through the environment, never argv: they may hold passwords.
    env = {**os.environ, STORAGE_ENV: storage_url, "MLFLOW_TRACKING_URI": tracking_uri}
    processes = []
    for index in range(workers):
        command = [sys.executable, "-m", "benchmark", "tune", spec.path, "--arch", spec.arch, "--preset", spec.preset,
                   "--study-name", name, "--worker", str(index), "--trials", str(spec.trials),
                   "--timeout", str(spec.timeout), "--threads", str(threads)]
        if quiet:
            command.append("--quiet")
        # Own session: a terminal Ctrl-C reaches the launcher only, which forwards exactly one SIGINT.
        processes.append(subprocess.Popen(command, env=env, start_new_session=True))
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in processes:
            p.wait()
        return "interrupted"
    if any(code == 130 for code in codes):
        return "interrupted"
    return [f"worker {i} exit {code}" for i, code in enumerate(codes) if code != 0]


def list_studies(storage_url: str | None = None, tracking_uri: str | None = None) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(resolve_storage_url(storage_url, tracking_uri), tracking_uri)
    rows = []
    for name in sorted(n for n in optuna.get_all_study_names(storage) if REGISTRY_MARK not in n):
        study = optuna.load_study(study_name=name, storage=storage)
        best = best_trial(study)
        rows.append({"study": name, **trial_counts(study), "best_value": best.value if best else None,
                     "best_trial": best.number if best else None,
                     "best_test_acc": best.user_attrs.get("test_acc") if best else None})
    return rows


def format_value(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


__all__ = ["Objective", "StudyResult", "default_storage_url", "elect_parent_run", "holds_slot", "list_studies",
           "make_storage", "mask_url", "register_worker", "resolve_storage_url", "run_study", "run_worker"]
