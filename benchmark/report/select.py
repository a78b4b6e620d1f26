"""Which runs the report shows: the best run per task and architecture, its seeds, the trial counts.

Example: rnnbench report --out reports/   # every table's rows are the runs chosen here

Best trial per task x architecture: among trial runs with ``optuna.state=COMPLETE`` and status FINISHED
(never a pruned or failed one), the first in ``schema.rank_key`` (highest ``best_val_acc``, then lower
``best_val_loss``, earlier trial, smaller run id), the order of tuning's best trial, so the report shows
the trial that ``rnnbench confirm`` retrains. Where an architecture has no trials, its best finished
``rnnbench train`` run stands in. Every "best" in the report, ``predict``'s default model among them,
is chosen here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from ..catalog import BUILTIN_ARCHITECTURES, arch_colour
from ..registry import task_record
from ..schema import Metric, Role, RunStatus, Suite, Tag, TrialState, rank_key
from ..stats import mean_std
from .snapshot import RunRecord, Snapshot


def _rank(run: RunRecord) -> tuple:
    return rank_key(run.metric(Metric.BEST_VAL_ACC), run.metric(Metric.BEST_VAL_LOSS), run.trial_number, run.run_id)


def best_of(runs: Iterable[RunRecord]) -> RunRecord | None:
    """The first of ``runs`` by ``rank_key``; only finished runs count, and of trials only completed ones."""
    eligible = [r for r in runs if r.status == RunStatus.FINISHED and r.metric(Metric.BEST_VAL_ACC) is not None
                and (r.role != Role.TRIAL or r.tags.get(Tag.TRIAL_STATE) == TrialState.COMPLETE)]
    return min(eligible, key=_rank) if eligible else None


def candidates(snap: Snapshot, task: str, arch: str) -> list[RunRecord]:
    """The trials of task x arch; where it has none, its standalone `rnnbench train` runs."""
    return snap.trials(task, arch) or [r for r in snap.runs if r.role == Role.RUN and r.suite in (Suite.TRAIN, "")
                                       and r.task == task and r.arch == arch]


def best_run(snap: Snapshot, task: str, arch: str, **params: str) -> RunRecord | None:
    """Best trial for task x arch (optionally with given params); else the best standalone train run."""
    pool = candidates(snap, task, arch)
    return best_of(r for r in pool if all(r.param(k) == v for k, v in params.items()))


def tuned_best(snap: Snapshot) -> dict[tuple[str, str], RunRecord]:
    """(task, arch) -> its best tuned trial with a test accuracy (trials only: no train run stands in)."""
    best = {}
    for task, arch in sorted({(r.task, r.arch) for r in snap.runs if r.role == Role.TRIAL}):
        run = best_of(snap.trials(task, arch))
        if run is not None and run.metric(Metric.TEST_ACC) is not None:
            best[task, arch] = run
    return best


def best_digits(runs: Iterable[RunRecord]) -> RunRecord | None:
    """The best among finished trials and plain runs of tasks that read image rows (MNIST); not study parents
    (they repeat their best trial's metrics) nor seed confirmations (each validated on its own split)."""
    return best_of(r for r in runs if task_record(r.task).pixel_rows and r.role in (Role.TRIAL, Role.RUN))


def first_seen_order(snap: Snapshot) -> dict[str, int]:
    """Each architecture of the store -> the start time of its first run: the order plugin cells are shown in."""
    first_seen: dict[str, int] = {}
    for run in snap.runs:
        if run.arch:
            first_seen[run.arch] = min(first_seen.get(run.arch, run.start_time), run.start_time)
    return first_seen


def reported_archs(snap: Snapshot, task: str) -> list[str]:
    """The architectures with runs of ``task`` (the notebook's reproductions aside): the built-ins in catalogue
    order, then the others (plugin cells) in the order the store first saw them, which needs no plugin code."""
    present = {r.arch for r in snap.runs if r.task == task and r.suite != Suite.REPRODUCE} - {""}
    first_seen = first_seen_order(snap)
    builtin = [a for a in BUILTIN_ARCHITECTURES if a in present]
    return builtin + sorted(present - set(builtin), key=lambda arch: (first_seen[arch], arch))


def reported_tasks(snap: Snapshot) -> list[str]:
    """The tasks with a best run for at least one architecture, in catalogue order."""
    return [t for t in snap.tasks() if any(best_run(snap, t, a) for a in reported_archs(snap, t))]


def trial_counts(snap: Snapshot, task: str, arch: str) -> dict[str, int] | None:
    """Trials by Optuna state: from the Optuna storage for studies it holds, else from run tags."""
    trials = snap.trials(task, arch)
    names = sorted({r.study for r in trials} | {r.study for r in snap.runs if r.role == Role.STUDY and r.task == task
                                                and r.arch == arch and r.study})
    if not names:
        return None
    counts: Counter = Counter()
    for name in names:
        if name in snap.studies:
            counts.update(snap.studies[name].states)
        else:
            counts.update(r.trial_state for r in trials if r.study == name)
    return dict(counts)


def confirmations(snap: Snapshot, run: RunRecord, length: int | None = None) -> list[RunRecord]:
    """Finished fresh-seed retrains of ``run`` (``rnnbench confirm``), on its own lengths or on one length.

    Seeds trained differently (other epochs or training size) are not pooled: the largest such group
    counts (ties: more epochs). A seed run twice (two sessions racing) counts once, its latest run.
    """
    groups: dict[tuple, dict[str, RunRecord]] = defaultdict(dict)
    for r in snap.confirm_runs(run.run_id, None if length is None else str(length)):
        groups[r.param("epochs"), r.param("train_size")][r.tags.get(Tag.SEED, r.run_id)] = r
    if not groups:
        return []
    chosen = max(groups, key=lambda key: (len(groups[key]), int(key[0]) if key[0].isdigit() else 0, key))
    return [groups[chosen][seed] for seed in sorted(groups[chosen])]


def seed_accs(snap: Snapshot, run: RunRecord | None, length: int | None = None) -> list[float]:
    return [r.metric(Metric.TEST_ACC) for r in confirmations(snap, run, length)] if run else []


def headline(snap: Snapshot, task: str, archs: Iterable[str]) -> dict[str, tuple[float, list[float]]]:
    """arch -> (the number it is ranked by, its seeds). That is the seed mean when every one of ``archs``
    with a best run has seed confirmations: a short search's best trial understates what its configuration
    reaches, and seeds are compared with seeds only. Otherwise each best trial's own test accuracy, no seeds."""
    runs = {arch: run for arch in archs
            if (run := best_run(snap, task, arch)) and run.metric(Metric.TEST_ACC) is not None}
    seeded = {arch: seed_accs(snap, run) for arch, run in runs.items()}
    if runs and all(seeded.values()):
        return {arch: (mean_std(values)[0], values) for arch, values in seeded.items()}
    return {arch: (run.metric(Metric.TEST_ACC), []) for arch, run in runs.items()}


def longest_length(snap: Snapshot, run: RunRecord) -> tuple | None:
    """(length, then each of the task's per-length metrics) at the longest length tested, from the histories:
    addition's (length, bit accuracy, whole-string accuracy)."""
    metrics = task_record(run.task).per_length
    histories = [dict(snap.history(run.run_id, Metric.by_length(name))) for name in metrics]
    if not histories or not histories[0]:
        return None
    length = max(histories[0])
    return (length, *(history.get(length) for history in histories))


def arch_colours(snap: Snapshot) -> dict[str, str]:
    """Every architecture of the store -> its colour in every figure of the report (``catalog.arch_colour``;
    plugin cells in the order the store first saw them, over all tasks)."""
    first_seen = first_seen_order(snap)
    plugins = sorted((a for a in first_seen if a not in BUILTIN_ARCHITECTURES), key=lambda a: (first_seen[a], a))
    return {arch: arch_colour(arch, plugins) for arch in first_seen}


def trained_on(task: str, runs: Iterable[RunRecord]) -> str:
    """What ``runs`` were trained on, in words, for figure titles: 'MNIST', 'addition, lengths 1..20'; the task
    alone where they differ."""
    record = task_record(task)
    spans = {record.trained_on(tuple(int(n) for n in r.param("train_lengths").split(",") if n.strip()),
                               int(r.param("max_train_length"))) for r in runs if r.param("max_train_length")}
    return spans.pop() if len(spans) == 1 else record.display


def run_kind(*runs: RunRecord | None) -> str:
    """What best runs are called: tuned 'best trial', plain `rnnbench train` 'best train run', or both 'best run'."""
    kinds = {"best trial" if run.role == Role.TRIAL else "best train run" for run in runs if run is not None}
    return kinds.pop() if len(kinds) == 1 else "best run"
