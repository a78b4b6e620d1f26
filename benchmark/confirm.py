"""Seed confirmation: retrain a study's best configuration with fresh seeds, to tell results from luck.

Example: rnnbench confirm --task mnist --arch lstm --seeds 3

- The configuration is the best completed trial's (by validation), read back from its MLflow run's
  params, so a study file edited since does not change what is confirmed.
- Seed ``CONFIRM_SEED_BASE + i`` (i = 1..N) changes the data split and the initialisation; the
  trials all use the study's seed, so a confirmation never repeats one of them.
- ``--epochs E`` / ``--train-size N`` train the seeds longer / on more data than the trials were (a
  short tuning budget, then the chosen configuration in full; the learning-rate schedule stretches
  with it). ``--train-size 0`` is the whole training set.
- The best trial is ``tuning.best_trial``'s (``schema.rank_key``): highest validation accuracy, ties to
  the lower validation loss, then the earlier trial; the report picks the same one.
- The seeds train together in this one process as one stacked model (``benchmark.stacked``: parameters stacked
  along a seed dimension, one batched product per step), each with its own data, split, batches, optimizer
  state, best epoch and early stop, and its own run and checkpoint as if trained alone. Only rnn, lstm, gru and
  their bidirectional forms have a stacked kernel; every other cell (indrnn, mingru, minlstm, their
  bidirectional forms and plugin cells) trains its seeds one after the other through ``fit``, and so does
  ``--one-at-a-time``. The first output line says which.
- ``--train-length L`` (addition) retrains the same configuration on strings of length L only and
  still tests on 1..20 plus the generalisation lengths: the notebook's fixed-length experiments.
- Runs: in the study's experiment, nested under its parent run, tagged ``suite=confirm``,
  ``role=confirm``, ``confirm_of=<trial run id>``. Re-running skips seeds that already have a
  finished run for the same trial, length, epochs and training size, so an interrupted confirmation resumes; a run that
  crashes ends FAILED with its reason (Ctrl-C: KILLED, exit 130), never RUNNING.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .config import ConfigError, TrainConfig
from .registry import task_record
from .schema import Metric, Role, RunStatus, StudyAttr, Suite, Tag
from .stats import mean_std
from .store import client_for, interrupts_held, mask_url, resolve_tracking_uri, search_runs
from .tasks import preload
from .tracking import RunTracker
from .tuning import best_trial, is_coordination_study, open_storage, resolve_storage_url

CONFIRM_SEED_BASE = 1000
SKIPPED = "SKIPPED"  # a ConfirmRun status: the seed had finished in an earlier session


@dataclass(frozen=True)
class ConfirmRun:
    seed: int
    run_id: str
    status: str  # FINISHED | FAILED | SKIPPED (already finished earlier)
    test_acc: float | None
    val_acc: float | None
    error: str = ""


def confirm_seeds(count: int) -> list[int]:
    return [CONFIRM_SEED_BASE + i for i in range(1, count + 1)]


def find_study(storage, task: str, arch: str, preset: str | None = None, study_name: str | None = None) -> str:
    """The study to confirm: ``study_name``, else ``<task>-<arch>-<preset>``, else the only ``<task>-<arch>-*``."""
    import optuna

    names = [n for n in optuna.get_all_study_names(storage) if not is_coordination_study(n)]
    if study_name:
        if study_name not in names:
            raise ConfigError(f"no study {study_name!r} in the storage; it has: {', '.join(sorted(names)) or 'none'}")
        return study_name
    if preset:
        wanted = f"{task}-{arch}-{preset}"
        if wanted not in names:
            raise ConfigError(f"no study {wanted!r} in the storage; run `rnnbench tune studies/{task}.toml "
                              f"--arch {arch} --preset {preset}` first")
        return wanted
    matches = sorted(n for n in names if n.startswith(f"{task}-{arch}-"))
    if not matches:
        raise ConfigError(f"no {task} study for {arch} in the storage; run `rnnbench tune studies/{task}.toml "
                          f"--arch {arch}` first, or pass --study-name")
    if len(matches) > 1:
        raise ConfigError(f"several {task} studies for {arch} ({', '.join(matches)}); choose one with --preset or "
                          "--study-name")
    return matches[0]


def confirm(task: str, arch: str, *, seeds: int = 3, preset: str | None = None, study_name: str | None = None,
            storage: str | None = None, tracking_uri: str | None = None, train_length: int | None = None,
            epochs: int | None = None, train_size: int | None = None, threads: int = 0, quiet: bool = False,
            task_data: dict | None = None, together: bool = True) -> list[ConfirmRun]:
    """Retrain the study's best trial with ``seeds`` fresh seeds (optionally on one length); one run each.
    ``together``: the seeds train as one stacked model where the architecture has a stacked kernel."""
    import optuna

    from .stacked import why_not_together  # torch

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if train_size is not None and train_size < 0:
        raise ConfigError(f"--train-size must be >= 0 (0 = the whole training set), got {train_size}")
    if train_length is not None and (not task_record(task).per_length or train_length < 1):
        raise ConfigError(f"--train-length needs a task scored per length (addition) and a length >= 1, got {task} / "
                          f"{train_length}")
    tracking_uri = resolve_tracking_uri(tracking_uri)
    storage_url = resolve_storage_url(storage, tracking_uri)
    storage_obj = open_storage(storage_url, tracking_uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = find_study(storage_obj, task, arch, preset, study_name)
    study = optuna.load_study(study_name=name, storage=storage_obj)
    best = best_trial(study)
    if best is None or not best.user_attrs.get(StudyAttr.RUN_ID):
        raise ConfigError(f"study {name!r} has no completed trial with a run to confirm; let it finish a trial first")
    client = client_for(tracking_uri)
    trial_run = client.get_run(best.user_attrs[StudyAttr.RUN_ID])
    base = TrainConfig.from_params(trial_run.data.params)
    if train_length is not None:
        base = base.replace(train_lengths=(train_length,))
    if epochs:
        base = base.replace(epochs=epochs)
    if train_size is not None:
        base = base.replace(train_size=train_size)
    # Not the trial's threads: a worker of N had cores // N; the seeds run in this one process.
    # The whole validation split: a search may validate on part of it to keep its trials cheap; a seed is no search.
    base = base.replace(threads=threads, val_size=0)
    parent = study.user_attrs.get(StudyAttr.PARENT_RUN)
    experiment = client.get_experiment(trial_run.info.experiment_id).name  # the study's: seeds sit beside it
    done = finished_confirmations(client, trial_run.info.experiment_id, trial_run.info.run_id, train_length,
                                  base)
    size = f", {base.train_size} examples" if base.train_size else ", all training examples"
    where = (f" on length {train_length} only" if train_length else "") + f", {base.epochs} epochs{size}"
    if not quiet:
        print(f"confirm {name} trial {best.number} (val {100 * best.value:.2f}%){where}: seeds "
              f"{', '.join(map(str, confirm_seeds(seeds)))}; storage {mask_url(storage_url)}", flush=True)
    if task_data is None:
        task_data = preload(task)  # once for every seed
    tags = {Tag.SUITE: Suite.CONFIRM, Tag.ROLE: Role.CONFIRM, Tag.STUDY: name,
            Tag.CONFIRM_OF: trial_run.info.run_id, Tag.CONFIRM_OF_TRIAL: str(best.number)}
    if train_length is not None:
        tags[Tag.CONFIRM_LENGTH] = str(train_length)
    suffix = f"-len{train_length}" if train_length else ""

    def start(seed: int) -> RunTracker:
        return RunTracker.start(base.replace(seed=seed), experiment=experiment, tags=tags, parent_run_id=parent,
                                run_name=f"{name}/confirm{suffix}-seed{seed}", client=client)

    pending = [seed for seed in confirm_seeds(seeds) if seed not in done]
    apart = ("one seed" if len(pending) < 2 else "" if together else "--one-at-a-time") or why_not_together(base)
    if not quiet and pending:
        print(f"  {len(pending)} seed(s) " + (f"one after the other ({apart})" if apart else
                                              "trained together as one stacked model"), flush=True)
    trained = {} if apart else _train_together(base, pending, start, task_data, quiet)
    for seed in pending:
        if seed not in trained:  # no stack, or one that could not be built: fit, seed after seed
            trained[seed] = _train_alone(base.replace(seed=seed), start(seed), task_data, quiet)
    results = []
    for seed in confirm_seeds(seeds):
        if seed in done:
            run = done[seed]
            results.append(ConfirmRun(seed, run.info.run_id, SKIPPED, run.data.metrics.get(Metric.TEST_ACC),
                                      run.data.metrics.get(Metric.BEST_VAL_ACC)))
        else:
            results.append(trained[seed])
    if not quiet:
        print(f"confirm {name}{where}: {summary_line(results)}", flush=True)
    return results


def _train_alone(config: TrainConfig, tracker: RunTracker, task_data, quiet: bool) -> ConfirmRun:
    """One seed through ``fit``: its run ends FINISHED, or FAILED with the reason (an interruption propagates)."""
    from .train import fit  # torch

    try:
        result = fit(config, tracker=tracker, quiet=True, task_data=task_data)
    except BaseException as error:
        if not isinstance(error, Exception):
            tracker.end_with(error, resume="re-run to resume")
            raise
        # one bad seed (a diverged loss) is a result too; the others still run
        return _ended(config.seed, tracker, None, error, quiet)
    return _ended(config.seed, tracker, result, None, quiet)


def _train_together(base: TrainConfig, pending: list[int], start, task_data, quiet: bool) -> dict[int, ConfirmRun]:
    """Every pending seed in one stacked model (``benchmark.stacked``); {} when the models turn out not to stack."""
    from .stacked import build_seeds, fit_together  # torch

    trackers = [start(seed) for seed in pending]
    try:
        stack = fit_together(build_seeds([base.replace(seed=seed) for seed in pending], trackers, task_data),
                             quiet=quiet)
    except ValueError as error:  # nothing was logged yet: the same runs train one after the other
        if not quiet:
            print(f"  not stacked ({error}): one after the other", flush=True)
        return {seed: _train_alone(base.replace(seed=seed), tracker, task_data, quiet)
                for seed, tracker in zip(pending, trackers, strict=True)}
    except Exception as error:  # building a seed's task or model failed: every seed of the stack with it
        return {seed: _ended(seed, tracker, None, error, quiet)
                for seed, tracker in zip(pending, trackers, strict=True)}
    except BaseException as error:
        with interrupts_held():  # every seed's run ends, even when a second Ctrl-C lands in the loop
            for tracker in trackers:
                tracker.end_with(error, resume="re-run to resume")
        raise
    return {seed.config.seed: _ended(seed.config.seed, seed.tracker, None if seed.error else seed.result, seed.error,
                                     quiet) for seed in stack}


def _ended(seed: int, tracker: RunTracker, result, error: Exception | None, quiet: bool) -> ConfirmRun:
    """End the seed's run as its training ended and say so."""
    if error is not None:
        message = tracker.end_with(error, resume="re-run to resume")
        if not quiet:
            print(f"  seed {seed}: FAILED {message}", file=sys.stderr, flush=True)
        return ConfirmRun(seed, tracker.run_id, RunStatus.FAILED, None, None, message)
    tracker.finish(RunStatus.FINISHED)
    if not quiet:
        print(f"  seed {seed}: test {100 * result.test['acc']:.2f}%  val {100 * result.val['acc']:.2f}%  "
              f"run {tracker.run_id}", flush=True)
    return ConfirmRun(seed, tracker.run_id, RunStatus.FINISHED, result.test["acc"], result.val["acc"])


def finished_confirmations(client, experiment_id: str, trial_run_id: str, train_length: int | None,
                           config: TrainConfig) -> dict:
    """Seed -> FINISHED confirmation run of this trial, length, epochs and training size, for resuming."""
    filters = [f"tags.{Tag.CONFIRM_OF} = '{trial_run_id}'", f"attributes.status = '{RunStatus.FINISHED}'"]
    runs = search_runs(client, " and ".join(filters), [experiment_id])
    wanted = str(train_length) if train_length is not None else None
    return {int(r.data.tags.get(Tag.SEED, -1)): r for r in runs if r.data.tags.get(Tag.CONFIRM_LENGTH) == wanted
            and r.data.params.get("epochs") == str(config.epochs)
            and r.data.params.get("train_size") == str(config.train_size)}


def summary_line(results: list[ConfirmRun]) -> str:
    accs = [r.test_acc for r in results if r.test_acc is not None]
    failed = sum(r.status == RunStatus.FAILED for r in results)
    if not accs:
        return f"no finished seed ({failed} failed)"
    mean, std = mean_std(accs)
    return (f"test {100 * mean:.2f} ± {100 * std:.2f}% over {len(accs)} seed(s)"
            + (f", {failed} failed" if failed else ""))


__all__ = ["CONFIRM_SEED_BASE", "ConfirmRun", "confirm", "confirm_seeds", "find_study", "finished_confirmations",
           "summary_line"]
