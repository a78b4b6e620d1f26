"""Learning curves: validation accuracy per epoch and training loss per iteration of each best run.

Example: rnnbench report --out reports/   # the "## Learning curves" section
"""

from __future__ import annotations

from ...schema import Metric
from ..markdown import Figures
from ..select import arch_colours, best_run, reported_archs, reported_tasks, run_kind, trained_on
from ..snapshot import Snapshot


def learning_curves(snap: Snapshot, figures: Figures) -> str:
    """Validation accuracy per epoch and training loss per iteration of the best runs."""
    from ..figures import curves  # matplotlib

    out = ["## Learning curves", ""]
    palette = arch_colours(snap)
    for task in reported_tasks(snap):
        bests = {arch: run for arch in reported_archs(snap, task) if (run := best_run(snap, task, arch))}
        val = {arch: snap.history(run.run_id, Metric.VAL_ACC) for arch, run in bests.items()}
        loss = {f"{arch} ({run.param('loss')})": snap.history(run.run_id, Metric.TRAIN_LOSS)
                for arch, run in bests.items()}
        what = f"Each architecture's {run_kind(*bests.values())} trained on {trained_on(task, bests.values())}"
        if any(val.values()):
            fig = curves(val, xlabel="epoch", ylabel="validation accuracy", percent=True, integer_x=True,
                         colours={arch: palette[arch] for arch in val}, title=f"{what}: validation accuracy")
            out += [figures.image(fig, f"{task}_val_acc", f"{task} validation accuracy"), ""]
        if any(loss.values()):
            fig = curves(loss, xlabel="iteration", ylabel="training loss (log scale)", log_y=True, markers=False,
                         colours={f"{arch} ({run.param('loss')})": palette[arch] for arch, run in bests.items()},
                         title=f"{what}: training loss")
            out += [figures.image(fig, f"{task}_train_loss", f"{task} training loss"), ""]
    return "\n".join(out) if len(out) > 2 else ""
