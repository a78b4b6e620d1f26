"""The reference goals against what the store holds: met or missed, the number reached, what was tried.

Each task's goals are in its record (``benchmark.registry.Goal``); this section only measures them.

Example: rnnbench report --out reports/   # the "## Goals" section
"""

from __future__ import annotations

from ...registry import Goal, task_record
from ...schema import Metric, Tag
from ...stats import mean_std
from ..markdown import Figures, lr_text, mean_pm, pct, plural, table
from ..select import best_run, confirmations, reported_archs, reported_tasks, run_kind, seed_accs, trial_counts
from ..snapshot import RunRecord, Snapshot

GOAL_SEEDS = 3  # each goal is met by a mean (or every one) of this many seeds of the best configuration


def _tried(snap: Snapshot, task: str, arch: str, run: RunRecord) -> str:
    counts = trial_counts(snap, task, arch) or {}
    seeds = confirmations(snap, run)
    epochs = {r.param("epochs") for r in seeds}
    seed_text = (f"; {plural(len(seeds), 'seed')} x {', '.join(sorted(epochs))} epochs" if seeds
                 else "; no seed confirmation")
    preset = run.tags.get(Tag.PRESET)
    tried = plural(sum(counts.values()), "trial") if counts else "`rnnbench train` runs only"
    return (f"{tried}{f' ({preset})' if preset else ''}, {run_kind(run)} h{run.param('hidden_size')}"
            f"x{run.param('num_layers')} {run.param('loss')} lr {lr_text(run.param('lr'))} "
            f"{run.param('epochs')} epochs{seed_text}")


def _verdict(ok: bool | None, seeds: int) -> str:
    if ok is None:
        return "not measured"
    if seeds < GOAL_SEEDS:
        return f"{'yes' if ok else 'no'} ({seeds} of {plural(GOAL_SEEDS, 'seed')})"
    return "**yes**" if ok else "**no**"


def _seed_mean(snap: Snapshot, task: str, goal: Goal, singles: list) -> list[list[str]]:
    rows = []
    for arch in goal.archs or reported_archs(snap, task):
        text = f"{task} {arch}: mean test {goal.metric.replace('_', ' ')} ≥ {goal.target:.1f} %"
        run = best_run(snap, task, arch)
        if run is None:
            rows.append([text, "—", "not measured", "no run"])
            continue
        values = [r.metric(Metric.of("test", goal.metric)) for r in confirmations(snap, run)]
        values = [v for v in values if v is not None]
        singles += [(v, arch) for v in values] + [(run.metric(Metric.of("test", goal.metric)) or 0.0, arch)]
        mean = mean_std(values)[0] if values else None
        reached = (mean_pm(values) if values
                   else f"{run_kind(run)} {pct(run.metric(Metric.of('test', goal.metric)))} (no seeds)")
        rows.append([text, reached, _verdict(None if mean is None else 100 * mean >= goal.target, len(values)),
                     _tried(snap, task, arch, run)])
    return rows


def _best_single(task: str, goal: Goal, singles: list) -> list[list[str]]:
    if not singles:
        return []
    top, arch = max(singles)
    return [[f"{task} best single run ≥ {goal.target:.1f} %", f"{pct(top)} ({arch})",
             "**yes**" if 100 * top >= goal.target else "**no**",
             "trials and seed confirmations of every architecture"]]


def _short(task: str, metric: str) -> str:
    """A metric's words, short for a goal's line: "mean bit accuracy" -> "bit acc"."""
    return task_record(task).metric_label(metric).removeprefix("mean ").removeprefix("test ").replace("accuracy", "acc")


def _every_seed(snap: Snapshot, task: str, goal: Goal) -> list[list[str]]:
    rows = []
    for arch in goal.archs or reported_archs(snap, task):
        run = best_run(snap, task, arch)
        if run is None:
            continue
        values = [r.metric(Metric.of("test", goal.metric)) for r in confirmations(snap, run)]
        worst = min(values) if values else None
        reached = (f"worst seed {pct(worst)}" if values
                   else f"{run_kind(run)} {pct(run.metric(Metric.of('test', goal.metric)))} (no seeds)")
        text = f"{task} {arch}: {goal.target:g} % {_short(task, goal.metric)} on 1..{run.param('max_train_length')}"
        met = None if worst is None else 100 * worst >= goal.target - 1e-7
        rows.append([f"{text}, every seed", reached, _verdict(met, len(values)),
                     _tried(snap, task, arch, run)])
    return rows


def _at_length(snap: Snapshot, task: str, goal: Goal) -> list[list[str]]:
    rows, length, history = [], goal.length, Metric.by_length(goal.metric)
    for arch in goal.archs or reported_archs(snap, task):
        run = best_run(snap, task, arch)
        if run is None:
            continue
        seeds = confirmations(snap, run)
        tested = [v for v in (dict(snap.history(r.run_id, history)).get(length) for r in seeds) if v is not None]
        trial_at = dict(snap.history(run.run_id, history)).get(length)
        if tested:
            reached = f"worst seed {pct(min(tested))}"
        elif seeds or trial_at is None:
            reached = f"length {length} not tested (add it to eval_lengths)"
        else:
            reached = f"{run_kind(run)} {pct(trial_at)} (no seeds)"
        rows.append([f"{task} {arch}: {goal.target:g} % {_short(task, goal.metric)} at L={length}, trained on ≤ "
                     f"{run.param('max_train_length')}", reached,
                     _verdict(100 * min(tested) >= goal.target - 1e-7 if tested else None, len(tested)),
                     _tried(snap, task, arch, run)])
    return rows


def _trained_on_length(snap: Snapshot, task: str, goal: Goal) -> list[list[str]]:
    fixed = []
    for arch in goal.archs or reported_archs(snap, task):
        run = best_run(snap, task, arch)
        values = seed_accs(snap, run, goal.length) if run else []
        if values:
            fixed.append((mean_std(values)[0], arch, values))
    text = f"{task} trained on L={goal.length} only: mean {_short(task, goal.metric)} 1..20 ≥ {goal.target:.0f} %"
    if not fixed:
        return [[text, "—", "not measured",
                 f"no fixed-length confirmation (`rnnbench confirm --train-length {goal.length}`)"]]
    mean, arch, values = max(fixed)
    return [[text, f"{mean_pm(values)} ({arch}, best of {plural(len(fixed), 'architecture')})",
             _verdict(100 * mean >= goal.target, len(values)),
             f"the best 1..20 configuration of each architecture retrained on length {goal.length}"]]


def _task_rows(snap: Snapshot, task: str) -> list[list[str]]:
    """The rows of every goal in ``task``'s record, in the record's order."""
    rows, singles = [], []
    for goal in task_record(task).goals:
        if goal.kind == "seed_mean":
            rows += _seed_mean(snap, task, goal, singles)
        elif goal.kind == "best_single":
            rows += _best_single(task, goal, singles)
        elif goal.kind == "every_seed":
            rows += _every_seed(snap, task, goal)
        elif goal.kind == "at_length":
            rows += _at_length(snap, task, goal)
        else:
            rows += _trained_on_length(snap, task, goal)
    return rows


def goals(snap: Snapshot, figures: Figures) -> str:
    """The reference goals against what the store holds: met or missed, the number reached, what was tried."""
    rows = [row for task in reported_tasks(snap) for row in _task_rows(snap, task)]
    if not rows:
        return ""
    met = sum(row[2] == "**yes**" for row in rows)
    missed = sum(row[2] == "**no**" for row in rows)
    partial = sum(row[2].startswith(("yes (", "no (")) for row in rows)
    unmeasured = sum(row[2] == "not measured" for row in rows)
    summary = (f"All {plural(len(rows), 'goal')} met." if met == len(rows) else
               f"{met} of {plural(len(rows), 'goal')} met, {missed} missed, {partial} on fewer than "
               f"{plural(GOAL_SEEDS, 'seed')}, {unmeasured} not measured.")
    return "\n".join(["## Goals", "",
                      f"The reference goals (means over {plural(GOAL_SEEDS, 'seed')} of the best configuration). "
                      + summary,
                      "", table(["goal", "reached", "met?", "what was tried"], rows), ""])
