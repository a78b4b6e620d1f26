"""Length generalisation: a per-length task's metrics against length (addition: bit and whole-string accuracy),
as far as runs were tested.

Example: rnnbench report --out reports/   # the "## Length generalisation (addition)" section

A section for each task whose record names per-length metrics; its first two are drawn.
"""

from __future__ import annotations

from ...catalog import arch_order_key
from ...registry import task_record
from ...schema import Metric
from ..markdown import Figures, mean_pm, pct, plural, table
from ..select import arch_colours, best_run, confirmations, reported_archs, reported_tasks, run_kind, seed_accs
from ..snapshot import RunRecord, Snapshot


def _mean_history(snap: Snapshot, runs: list[RunRecord], key: str) -> list[tuple[int, float]]:
    """Per-step mean over runs, at the steps every run logged (seeds of one configuration)."""
    histories = [dict(snap.history(r.run_id, key)) for r in runs]
    steps = set.intersection(*(set(h) for h in histories)) if histories else set()
    return [(step, sum(h[step] for h in histories) / len(histories)) for step in sorted(steps)]


def _length_series(snap: Snapshot, run: RunRecord, length: int | None = None) -> tuple[list, list, str]:
    """The task's first two per-length metrics (addition: bit, string accuracy) by length: the mean over seed
    confirmations when there are any, else the run's."""
    keys = [Metric.by_length(name) for name in task_record(run.task).per_length[:2]]
    keys += [None] * (2 - len(keys))
    seeds = confirmations(snap, run, length)
    if seeds:
        first, second = (_mean_history(snap, seeds, key) if key else [] for key in keys)
        return first, second, f"mean of {plural(len(seeds), 'seed')}"
    if length is not None:
        return [], [], ""
    first, second = (snap.history(run.run_id, key) if key else [] for key in keys)
    return first, second, run_kind(run)


def length_plots(snap: Snapshot, figures: Figures) -> str:
    """Each per-length task's metrics against length, as far as the runs were tested: the headline of addition."""
    sections = [_task_lengths(snap, figures, task) for task in reported_tasks(snap) if task_record(task).per_length]
    return "\n".join(section for section in sections if section)


def _task_lengths(snap: Snapshot, figures: Figures, task: str) -> str:
    record = task_record(task)
    names = [record.short_label(name) for name in record.per_length[:2]] + ["—"]
    bits, seqs, train_max, fixed_bits, fixed_seqs = {}, {}, set(), {}, {}
    rows, regime, best_runs = [], {}, []  # label -> (arch, training length or 0 for the 1..max runs), for line styles
    for arch in reported_archs(snap, task):
        run = best_run(snap, task, arch)
        if run is None:
            continue
        best_runs.append(run)
        bit, seq, what = _length_series(snap, run)
        bits[f"{arch} ({what})"], seqs[f"{arch} ({what})"] = bit, seq
        regime[f"{arch} ({what})"] = (arch, 0)
        train_max.add(run.param("max_train_length"))
        span = f"1..{run.param('max_train_length')}"
        if bit:
            accs = seed_accs(snap, run) or [run.metric(Metric.TEST_ACC)]
            rows.append([arch, span, what, mean_pm(accs), str(bit[-1][0]), pct(bit[-1][1]),
                         pct(dict(seq).get(bit[-1][0]))])
        for length in snap.confirm_lengths(run.run_id):
            fbit, fseq, fwhat = _length_series(snap, run, length)
            if fbit:
                label = f"{arch} trained on L={length} ({fwhat})"
                fixed_bits[label], fixed_seqs[label] = fbit, fseq
                regime[label] = (arch, length)
                rows.append([arch, f"{length} only", fwhat, mean_pm(seed_accs(snap, run, length)),
                             str(fbit[-1][0]), pct(fbit[-1][1]), pct(dict(fseq).get(fbit[-1][0]))])
    if not any(bits.values()):
        return ""
    from ..figures import accuracy_by_length  # matplotlib

    longest = int(train_max.pop()) if len(train_max) == 1 and next(iter(train_max)).isdigit() else None
    reach = max((points[-1][0] for points in bits.values() if points), default=0)
    drawn_names = tuple(record.metric_label(name) for name in record.per_length[:2])
    drawn = " and ".join(drawn_names)
    out = [f"## Length generalisation ({task})", "",
           f"Trained on lengths up to {longest or 'the dashed line'}, tested up to length {reach}: "
           f"{drawn} of each architecture's best configuration (the mean over its seed "
           f"confirmations where `rnnbench confirm` ran, else the {run_kind(*best_runs)}). Lengths beyond the "
           "dashed line were never trained on.", ""]
    palette = arch_colours(snap)
    archs = [regime[label][0] for label in bits]
    trained = f"lengths 1..{longest}" if longest else "lengths up to the dashed line"
    fig = accuracy_by_length(bits, seqs, longest,
                             f"{', '.join(archs)} trained on {record.display}, {trained}: test accuracy against "
                             f"string length (tested up to {reach})",
                             styles={label: {"color": palette[regime[label][0]]} for label in bits}, names=drawn_names)
    out += [figures.image(fig, f"{task}_accuracy_by_length", "accuracy against length"), ""]
    if fixed_bits:
        fixed_archs = sorted({regime[label][0] for label in fixed_bits}, key=arch_order_key)
        both_bits = {**{k: v for k, v in bits.items() if regime[k][0] in fixed_archs}, **fixed_bits}
        both_seqs = {**{k: v for k, v in seqs.items() if k in both_bits}, **fixed_seqs}
        # One colour per architecture, one dash pattern per training regime.
        dashes = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
        lengths = sorted({regime[label][1] for label in both_bits})
        styles = {label: {"color": palette[regime[label][0]],
                          "ls": dashes[lengths.index(regime[label][1]) % len(dashes)]} for label in both_bits}
        fig = accuracy_by_length(both_bits, both_seqs, None,
                                 f"{', '.join(fixed_archs)} trained on {record.display} of one length only "
                                 f"(broken lines; the notebook's experiments) or of lengths 1..{longest or 'max'} "
                                 "(solid): test accuracy against string length",
                                 styles=styles, names=drawn_names)
        out += ["The notebook's fixed-length experiments: the same configurations trained on strings of one "
                "length only, tested on every length.", "",
                figures.image(fig, f"{task}_fixed_length_by_length", "fixed-length training against length"), ""]
    out += [table(["arch", "trained on", "series",
                   f"{record.short_label('acc')} {record.scored_span(longest or 'max')}: mean ± std (n)",
                   "longest L", f"{names[0]} at L", f"{names[1]} at L"], rows, [3, 4, 5, 6]), ""]
    return "\n".join(out)
