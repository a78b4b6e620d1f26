"""Learning curves: validation accuracy per epoch and training loss per iteration of each best run.

Example: rnnbench report --out reports/   # the "## Learning curves" section
"""

from __future__ import annotations

from ...schema import Metric
from ..markdown import Figures
from ..select import best_run, reported_archs, reported_tasks
from ..snapshot import Snapshot


def learning_curves(snap: Snapshot, figures: Figures) -> str:
    """Validation accuracy per epoch and training loss per iteration of the best runs."""
    from ..figures import curves  # matplotlib

    out = ["## Learning curves", ""]
    for task in reported_tasks(snap):
        bests = {arch: run for arch in reported_archs(snap, task) if (run := best_run(snap, task, arch))}
        val = {arch: snap.history(run.run_id, Metric.VAL_ACC) for arch, run in bests.items()}
        loss = {f"{arch} ({run.param('loss')})": snap.history(run.run_id, Metric.TRAIN_LOSS)
                for arch, run in bests.items()}
        if any(val.values()):
            fig = curves(val, xlabel="epoch", ylabel="validation accuracy (%)", percent=True,
                         title=f"{task}: validation accuracy of the best trial per architecture")
            out += [figures.image(fig, f"{task}_val_acc", f"{task} validation accuracy"), ""]
        if any(loss.values()):
            fig = curves(loss, xlabel="iteration", ylabel="training loss (log scale)", log_y=True, markers=False,
                         title=f"{task}: training loss of the best trial per architecture")
            out += [figures.image(fig, f"{task}_train_loss", f"{task} training loss"), ""]
    return "\n".join(out) if len(out) > 2 else ""
