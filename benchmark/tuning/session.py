"""Sessions of a study: run what is left of its budget in this process or in worker processes, then summarise.

Example: rnnbench tune studies/mnist.toml --arch lstm --preset quick --workers 2

- Study = task x architecture (x preset): name ``<task>-<arch>-<preset>`` unless ``--study-name``.
- The parent run is RUNNING while any session works on the study; the last session to end closes it:
  FINISHED, KILLED on Ctrl-C (exit 130), FAILED when a worker died; the next session sets the same run
  RUNNING again. After each trial and at the end it carries the best trial and the counts by state.
- ``--workers N`` starts N processes ``python -m benchmark tune ... --worker I`` sharing the budget; the
  storage and tracking URLs reach them through the environment, never argv. Workers whose budget is used
  up stay while other trials run, so that a lost trial's retry is picked up.
- At the end the best trial's model is registered as a version of ``<task>-<arch>``; the alias ``champion``
  moves to it only when it ranks above the current champion (``benchmark.champion``, ``schema.rank_key``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

from ..champion import register_champion
from ..config import ConfigError
from ..plugins import PLUGINS_ENV, environment_value
from ..schema import EndedBy, Metric, RunStatus, StudyAttr, Tag, TrialState, rank_key
from ..store import ERROR_TAG_LIMIT, client_for, end_run, interrupts_held, mask_url, resolve_tracking_uri
from ..tasks import preload
from ..tracking import RunTracker, ending
from .coordination import (
    ensure_parent_run,
    is_coordination_study,
    next_step,
    register_worker,
    trial_counts,
    trials_left,
)
from .objective import Objective, TrialFailed, score_on_test
from .recovery import process_space, reconcile_runs, recover_lost_trials
from .search import open_study
from .storage import STORAGE_ENV, has_heartbeat, open_storage, resolve_storage_url
from .study_file import StudySpec

LINGER_SECONDS = 2.0  # a worker with no budget left polls this often while other trials may still be lost
INTERRUPTED = "interrupted"  # what _run_workers returns when Ctrl-C reached the workers


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
               timeout: float, *, threads: int = 0, quiet: bool = False, fit_quiet: bool = True,
               system_metrics: bool = False) -> int:
    """Run trials of an existing study until it holds ``budget`` counted trials; returns how many ran here.

    Any number of these may run at once, on any machines: the budget is shared exactly (holds_slot).
    """
    import optuna
    from optuna.storages import fail_stale_trials

    storage = open_storage(storage_url, tracking_uri)
    try:
        worker = register_worker(storage, study_name)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in {mask_url(storage_url)}") from None
    study = open_study(spec, study_name, storage, worker=worker, create=False)
    parent = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if not parent:
        raise ConfigError(f"study {study_name!r} has no parent run; start it with rnnbench tune (not --worker)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    client = client_for(tracking_uri)
    task_data = preload(spec.task)  # once per worker, not once per trial
    objective = Objective(spec, study_name, parent, resolve_tracking_uri(tracking_uri), threads=threads, quiet=quiet,
                          fit_quiet=fit_quiet, task_data=task_data, client=client, budget=budget,
                          system_metrics=system_metrics)
    ran = []

    def after_trial(study, trial) -> None:
        if trial.user_attrs.get(StudyAttr.ENDED_BY) == EndedBy.SURPLUS:
            return
        ran.append(trial.number)
        with contextlib.suppress(Exception):  # the session end writes the final summary anyway
            update_parent(client, parent, study)

    heartbeat = has_heartbeat(storage)
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


def check_device(spec: StudySpec) -> None:
    """A study file's fixed device must exist here, or every trial would fail and use up the budget."""
    device = spec.fixed_dict.get("device", "auto")
    if device != "auto":
        from ..train import resolve_device  # torch: only a study that names a device needs it now

        try:
            resolve_device(device)
        except ConfigError as error:
            raise ConfigError(f"{spec.path}: [fixed] device: {error}") from None


def run_study(spec: StudySpec, *, study_name: str | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, quiet: bool = False,
              system_metrics: bool = False) -> StudyResult:
    """One session of a study: create/resume it and its parent run, run what is left of the budget."""
    from optuna.trial import TrialState as OptunaState

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    check_device(spec)
    started = time.perf_counter()
    tracking_uri = resolve_tracking_uri(tracking_uri)
    storage_url = resolve_storage_url(storage, tracking_uri)
    name = study_name or spec.default_study_name()
    storage_obj = open_storage(storage_url, tracking_uri)
    study = open_study(spec, name, storage_obj)
    client = client_for(tracking_uri)
    lost = recover_lost_trials(study, storage_obj, tracking_uri)
    reconcile_runs(study, client)
    parent = ensure_parent_run(study, storage_obj, spec, client, storage_url)

    trials = study.get_trials(deepcopy=False)
    running = sum(1 for t in trials if t.state == OptunaState.RUNNING)
    remaining = trials_left(trials, spec.trials)
    if not quiet:
        resumed = f", resumed at trial {len(trials)}" if trials else ""
        others = f", {running} running elsewhere" if running else ""
        print(f"study {name}: {remaining} of {spec.trials} trials to run{resumed}{others}, {workers} worker(s); "
              f"storage {mask_url(storage_url)}; tracking {mask_url(tracking_uri)}; parent run {parent}"
              + (f"; re-queued lost trial(s) {lost}" if lost else ""), flush=True)
    status, error = RunStatus.FINISHED, None
    try:
        if (remaining or running) and workers == 1:  # running elsewhere: stay to take over their trials if lost
            run_worker(spec, name, storage_url, tracking_uri, spec.trials, spec.timeout, threads=0, quiet=quiet,
                       fit_quiet=quiet, system_metrics=system_metrics)
        elif remaining or running:
            failures = _run_workers(spec, name, storage_url, tracking_uri, workers, quiet, system_metrics)
            if failures == INTERRUPTED:
                raise KeyboardInterrupt
            if failures:
                recover_lost_trials(study, storage_obj, tracking_uri)  # their trials go back to the queue
                left = trials_left(study.get_trials(deepcopy=False), spec.trials)
                if left:
                    status, error = RunStatus.FAILED, (f"worker(s) exited abnormally: {', '.join(failures)}; {left} "
                                                       f"of {spec.trials} trials left: re-run to resume")
                    print(f"study {name}: {error}", file=sys.stderr)
                elif not quiet:
                    print(f"study {name}: worker(s) exited abnormally: {', '.join(failures)}; the study holds all "
                          f"{spec.trials} trials all the same", file=sys.stderr)
    except BaseException as exc:
        status, error = ending(exc)  # the parent run ends as every run does on an error or an interruption
        if status == RunStatus.KILLED:
            error += "; re-run the command to resume"
        raise
    finally:
        with interrupts_held():  # a second Ctrl-C waits until the study's runs are squared with its trials
            recover_lost_trials(study, storage_obj, tracking_uri)
            reconcile_runs(study, client)
            summary = update_parent(client, parent, study)
            # Other sessions (other machines) still running trials: the last one to end closes the parent run.
            if study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
                if error:
                    client.set_tag(parent, Tag.ERROR, error[:ERROR_TAG_LIMIT])
            else:
                end_run(client, parent, status, error)
    best = summary["best"]
    best_run = best.user_attrs.get(StudyAttr.RUN_ID) if best is not None else None
    test_acc = None
    if best_run:
        try:
            test_acc = score_on_test(client, best_run, tracking_uri)
            tested = {**study.user_attrs.get(StudyAttr.TESTED, {}), str(best.number): test_acc}
            study.set_user_attr(StudyAttr.TESTED, tested)
            RunTracker(client, parent).log_metrics({Metric.BEST_TEST_ACC: test_acc})
        except Exception as problem:  # no checkpoint, a damaged one: the study itself still succeeded
            print(f"study {name}: best trial not scored on the test split: {type(problem).__name__}: "
                  f"{problem}".splitlines()[0], file=sys.stderr)
        try:
            info = register_champion(best_run, tracking_uri, only_if_better=True)
            if not info["moved"] and not quiet:
                print(f"study {name}: its best (version {info['version']}) does not beat {info['name']}@"
                      f"{info['alias']} (run {info['champion_run_id']}); the alias stays", flush=True)
        except Exception as problem:  # no checkpoint, a Model Registry error: the study itself still succeeded
            print(f"study {name}: best model not registered: {type(problem).__name__}: {problem}".splitlines()[0],
                  file=sys.stderr)
    return StudyResult(name, spec, parent, summary["counts"], best.value if best else None,
                       test_acc, dict(best.params) if best else {},
                       best_run, time.perf_counter() - started, status)


def available_cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_workers(spec: StudySpec, name: str, storage_url: str, tracking_uri: str, workers: int, quiet: bool,
                 system_metrics: bool = False):
    """Worker processes sharing the study's budget, torch threads divided; returns the failures."""
    cores = available_cores()
    threads = spec.fixed_dict.get("threads") or max(1, cores // workers)
    # URLs reach the workers through the environment, never argv: they may hold passwords.
    env = {**os.environ, STORAGE_ENV: storage_url, "MLFLOW_TRACKING_URI": tracking_uri}
    if environment_value():
        env[PLUGINS_ENV] = environment_value()  # workers load this launcher's plugins
    processes = []
    for index in range(workers):
        command = [sys.executable, "-m", "benchmark", "tune", spec.path, "--arch", spec.arch, "--preset", spec.preset,
                   "--study-name", name, "--worker", str(index), "--trials", str(spec.trials),
                   "--timeout", str(spec.timeout), "--threads", str(threads)]
        if quiet:
            command.append("--quiet")
        if system_metrics:
            command.append("--system-metrics")
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
        return INTERRUPTED
    if any(code == 130 for code in codes):
        return INTERRUPTED
    return [f"worker {i} exit {code}" for i, code in enumerate(codes) if code != 0]


def update_parent(client, parent_run_id: str, study) -> dict:
    """Best trial and state counts on the parent run (names in ``benchmark.schema``)."""
    counts = trial_counts(study)
    tracker = RunTracker(client, parent_run_id)
    metrics = {Metric.N_COMPLETE: counts.get(TrialState.COMPLETE, 0), Metric.N_PRUNED: counts.get(TrialState.PRUNED, 0),
               Metric.N_FAIL: counts.get(TrialState.FAIL, 0)}
    best = best_trial(study)
    summary = {"counts": counts, "best": None}
    if best is not None:
        metrics.update({Metric.BEST_VAL_ACC: best.value, Metric.BEST_TRIAL: best.number})
        if tested_acc(study, best) is not None:
            metrics[Metric.BEST_TEST_ACC] = tested_acc(study, best)
        tracker.set_tags({Tag.BEST_TRIAL: best.number, Tag.BEST_RUN: best.user_attrs.get(StudyAttr.RUN_ID, ""),
                          **{f"{Tag.BEST_PARAM_PREFIX}{k}": v for k, v in best.params.items()}})
        summary["best"] = best
    tracker.log_metrics(metrics)
    return summary


def best_trial(study):
    """The study's best completed trial in ``schema.rank_key``'s order (ties at 100 % go to the lower
    validation loss, then the earlier trial), as the report, the parent run, the champion and confirm."""
    from optuna.trial import TrialState as OptunaState

    complete = study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,))
    return min(complete, key=lambda t: rank_key(t.value, t.user_attrs.get(StudyAttr.VAL_LOSS), t.number),
               default=None)


def tested_acc(study, trial) -> float | None:
    """The test accuracy of a trial its study chose and scored (``score_on_test``); older studies kept it on the
    trial itself."""
    return study.user_attrs.get(StudyAttr.TESTED, {}).get(str(trial.number), trial.user_attrs.get(StudyAttr.TEST_ACC))


def list_studies(storage_url: str | None = None, tracking_uri: str | None = None) -> list[dict]:
    """One row per study (companion studies left out): counts by state and the best trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(resolve_storage_url(storage_url, tracking_uri), tracking_uri)
    rows = []
    for name in sorted(n for n in optuna.get_all_study_names(storage) if not is_coordination_study(n)):
        study = optuna.load_study(study_name=name, storage=storage)
        best = best_trial(study)
        rows.append({"study": name, **trial_counts(study), "best_value": best.value if best else None,
                     "best_trial": best.number if best else None,
                     "best_test_acc": tested_acc(study, best) if best else None})
    return rows


def format_value(value) -> str:
    """An accuracy as a percentage with two decimals; "-" for none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
