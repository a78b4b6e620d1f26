"""The notebook, reproduced: its numbers, ours (mean over seeds) and the tuned best, and its figures redrawn.

Example: rnnbench reproduce && rnnbench report --out reports/   # the "## The notebook, reproduced" section

The runs come from the snapshot's one bulk load; only the accuracy-by-length curves are fetched, before
the fork (``prefetch_curves``), so the section can be drawn where the store is out of reach.
"""

from __future__ import annotations

import statistics

from ...notebook import BY_ID, EXPERIMENTS, FIGURES, signed_points
from ...schema import Metric, RunStatus, Suite, Tag
from ..markdown import Figures, plural
from ..select import tuned_best
from ..snapshot import RunRecord, Snapshot
from ..worker import offline


def _finished_by_ref(snap: Snapshot) -> dict[str, list[RunRecord]]:
    """Finished reproduce runs with a test accuracy, by notebook experiment id."""
    by_ref: dict[str, list[RunRecord]] = {}
    for run in snap.runs:
        if (run.suite == Suite.REPRODUCE and run.status == RunStatus.FINISHED
                and run.tags.get(Tag.NOTEBOOK_REF) in BY_ID and run.metric(Metric.TEST_ACC) is not None):
            by_ref.setdefault(run.tags[Tag.NOTEBOOK_REF], []).append(run)
    return by_ref


def prefetch_curves(snap: Snapshot) -> None:
    """Cache the accuracy-by-length curves the section draws (so it can run where the store is not)."""
    for ref, runs in _finished_by_ref(snap).items():
        if BY_ID[ref].figure:
            for run in runs:
                snap.history(run.run_id, Metric.TEST_BIT_ACC_BY_LEN)


@offline(prefetch=prefetch_curves)
def reproduction(snap: Snapshot, figures: Figures) -> str:
    """The notebook's numbers, ours (mean over seeds) and the tuned best, plus the notebook's figures redrawn."""
    by_ref = _finished_by_ref(snap)
    lines = ["## The notebook, reproduced", ""]
    if not by_ref:
        return "\n".join(lines + ["No reproduction runs yet: run `rnnbench reproduce`.", ""])
    tuned = tuned_best(snap)
    lines += ["Each row re-runs one of the course notebook's configurations exactly (`rnnbench reproduce`);",
              "'ours' is the mean test accuracy over the seeds run, 'tuned' the test accuracy of the tuned",
              "trial with the best validation accuracy for that task and architecture (Optuna studies train",
              "on lengths 1..20, so fixed-length rows have no tuned counterpart). MNIST: test accuracy;",
              "addition: bit accuracy averaged over lengths 1..20.", "",
              "| experiment | notebook % | ours % | seeds | diff | tuned % |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for experiment in EXPERIMENTS:
        found = by_ref.get(experiment.id)
        if not found:
            continue
        values = [100 * r.metric(Metric.TEST_ACC) for r in found]
        ours = statistics.fmean(values)
        spread = f"{len(values)} ({min(values):.1f}..{max(values):.1f})" if len(values) > 1 else "1"
        tuned_cell = "—"
        if experiment.settings.get("train_lengths"):  # one training length: no tuned study to hold it against
            tuned_cell = "n/a"
        elif (experiment.task, experiment.arch) in tuned:
            tuned_cell = f"{100 * tuned[experiment.task, experiment.arch].metric(Metric.TEST_ACC):.2f}"
        lines.append(f"| {experiment.title} | {experiment.notebook:.2f} | {ours:.2f} | {spread} | "
                     f"{signed_points(ours - experiment.notebook)} | {tuned_cell} |")
        if experiment.note:
            notes.append(f"- **{experiment.title}**: {experiment.note}.")
    lines.append("")
    if notes:
        lines += ["Where ours differ from the notebook's, and why:", "", *notes, ""]
    for figure, title in FIGURES.items():
        members = [e for e in EXPERIMENTS if e.figure == figure and e.id in by_ref]
        if not members:
            continue
        from ..figures import notebook_lengths  # matplotlib

        curves = []
        for experiment in members:
            runs = by_ref[experiment.id]
            seeds = len(runs)
            label = (f"{experiment.label}: mean of {plural(seeds, 'seed')} "
                     f"(notebook {experiment.notebook:.1f}%)")
            curves.append((label, [snap.history(run.run_id, Metric.TEST_BIT_ACC_BY_LEN) for run in runs]))
        archs = ", ".join(sorted({e.arch.upper() for e in members}))
        fixed = any(e.settings.get("train_lengths") for e in members)
        spans = "" if fixed else f", lengths 1..{members[0].settings.get('max_train_length', 20)}"
        heading = f"{title}: the notebook's {archs} trained on addition{spans}"
        lines += [figures.image(notebook_lengths(curves, heading), f"reproduce_{figure}", title), ""]
    return "\n".join(lines)
