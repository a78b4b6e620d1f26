"""The reference goals against what the store holds: met or missed, the number reached, what was tried.

Example: rnnbench report --out reports/   # the "## Goals" section
"""

from __future__ import annotations

from ...schema import Metric, Tag
from ...stats import mean_std
from ..markdown import Figures, lr_text, mean_pm, pct, plural, table
from ..select import best_run, confirmations, reported_archs, reported_tasks, run_kind, seed_accs, trial_counts
from ..snapshot import RunRecord, Snapshot

# The reference goals, each a mean over GOAL_SEEDS seeds of the best configuration; the report says plainly where
# they are not met.
MNIST_GOALS = {"rnn": 97.5, "lstm": 99.0, "gru": 98.9, "birnn": 97.8, "bilstm": 99.1, "bigru": 99.0}
MNIST_BEST_SINGLE_GOAL = 99.2
ADDITION_LONG_GOAL = (("lstm", "gru"), 1000)  # 100 % whole-string accuracy at this length, trained on <= 20
ADDITION_SHORT_GOAL = (3, 98.0)  # trained on this length only: mean bit accuracy over 1..20 at least this
GOAL_SEEDS = 3


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


def _mnist_rows(snap: Snapshot) -> list[list[str]]:
    rows, singles = [], []
    for arch, goal in MNIST_GOALS.items():
        run = best_run(snap, "mnist", arch)
        if run is None:
            rows.append([f"mnist {arch}: mean test acc ≥ {goal:.1f} %", "—", "not measured", "no run"])
            continue
        accs = seed_accs(snap, run)
        singles += [(a, arch) for a in accs] + [(run.metric(Metric.TEST_ACC) or 0.0, arch)]
        mean = mean_std(accs)[0] if accs else None
        reached = mean_pm(accs) if accs else f"{run_kind(run)} {pct(run.metric(Metric.TEST_ACC))} (no seeds)"
        rows.append([f"mnist {arch}: mean test acc ≥ {goal:.1f} %", reached,
                     _verdict(None if mean is None else 100 * mean >= goal, len(accs)),
                     _tried(snap, "mnist", arch, run)])
    if singles:
        top, arch = max(singles)
        rows.append([f"mnist best single run ≥ {MNIST_BEST_SINGLE_GOAL:.1f} %", f"{pct(top)} ({arch})",
                     "**yes**" if 100 * top >= MNIST_BEST_SINGLE_GOAL else "**no**",
                     "trials and seed confirmations of every architecture"])
    return rows


def _addition_rows(snap: Snapshot) -> list[list[str]]:
    long_archs, long_length = ADDITION_LONG_GOAL
    short_length, short_goal = ADDITION_SHORT_GOAL
    rows, short = [], []
    for arch in reported_archs(snap, "addition"):
        run = best_run(snap, "addition", arch)
        if run is None:
            continue
        seeds = confirmations(snap, run)
        accs = [r.metric(Metric.TEST_ACC) for r in seeds]
        worst = min(accs) if accs else None
        reached = (f"worst seed {pct(worst)}" if accs
                   else f"{run_kind(run)} {pct(run.metric(Metric.TEST_ACC))} (no seeds)")
        rows.append([f"addition {arch}: 100 % bit acc on 1..{run.param('max_train_length')}, every seed", reached,
                     _verdict(None if worst is None else worst >= 1 - 1e-9, len(accs)),
                     _tried(snap, "addition", arch, run)])
        if arch in long_archs:
            at = [dict(snap.history(r.run_id, Metric.TEST_SEQ_ACC_BY_LEN)).get(long_length) for r in seeds]
            tested = [value for value in at if value is not None]
            trial_at = dict(snap.history(run.run_id, Metric.TEST_SEQ_ACC_BY_LEN)).get(long_length)
            if tested:
                reached = f"worst seed {pct(min(tested))}"
            elif seeds or trial_at is None:
                reached = f"length {long_length} not tested (add it to eval_lengths)"
            else:
                reached = f"{run_kind(run)} {pct(trial_at)} (no seeds)"
            rows.append([f"addition {arch}: 100 % string acc at L={long_length}, trained on ≤ "
                         f"{run.param('max_train_length')}", reached,
                         _verdict(min(tested) >= 1 - 1e-9 if tested else None, len(tested)),
                         _tried(snap, "addition", arch, run)])
        fixed = seed_accs(snap, run, short_length)
        if fixed:
            short.append((mean_std(fixed)[0], arch, fixed))
    goal = f"addition trained on L={short_length} only: mean bit acc 1..20 ≥ {short_goal:.0f} %"
    if short:
        mean, arch, values = max(short)
        rows.append([goal, f"{mean_pm(values)} ({arch}, best of {plural(len(short), 'architecture')})",
                     _verdict(100 * mean >= short_goal, len(values)),
                     f"the best 1..20 configuration of each architecture retrained on length {short_length}"])
    else:
        rows.append([goal, "—", "not measured",
                     f"no fixed-length confirmation (`rnnbench confirm --train-length {short_length}`)"])
    return rows


def goals(snap: Snapshot, figures: Figures) -> str:
    """The reference goals against what the store holds: met or missed, the number reached, what was tried."""
    tasks = reported_tasks(snap)
    rows = (_mnist_rows(snap) if "mnist" in tasks else []) + (_addition_rows(snap) if "addition" in tasks else [])
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
