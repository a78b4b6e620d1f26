"""Cross-entropy against MSE: per task and architecture, the best trial with each loss.

Example: rnnbench report --out reports/   # the "## Loss: cross-entropy against MSE" section
"""

from __future__ import annotations

from ...catalog import LOSSES
from ...registry import task_record
from ...schema import Metric
from ..markdown import Figures, pct, signed, table
from ..select import arch_colours, best_run, reported_archs, reported_tasks, run_kind, trained_on
from ..snapshot import Snapshot
from ..worker import offline


@offline
def loss_comparison(snap: Snapshot, figures: Figures) -> str:
    """Per architecture and task, the best trial with each loss."""
    from ..figures import loss_comparison as draw  # matplotlib

    out = ["## Loss: cross-entropy against MSE", "",
           "Best trial (or, without trials, best `rnnbench train` run) with each loss, chosen by validation; test "
           "accuracy in %; Δ = ce − mse in points.", ""]
    drawn = False
    for task in reported_tasks(snap):
        rows, values, chosen = [], {}, []
        for arch in reported_archs(snap, task):
            runs = {loss: best_run(snap, task, arch, loss=loss) for loss in LOSSES}
            accs = {loss: run.metric(Metric.TEST_ACC) if run else None for loss, run in runs.items()}
            if all(v is None for v in accs.values()):
                continue
            values[arch] = accs
            chosen += list(runs.values())
            diff = 100 * (accs["ce"] - accs["mse"]) if None not in (accs["ce"], accs["mse"]) else None
            rows.append([arch, pct(accs["ce"]), runs["ce"].param("hidden_size") if runs["ce"] else "—",
                         pct(accs["mse"]), runs["mse"].param("hidden_size") if runs["mse"] else "—", signed(diff)])
        if not rows:
            continue
        drawn = True
        metric = task_record(task).metric_label("acc")
        fig = draw(values, list(LOSSES), f"{run_kind(*chosen).capitalize()} per architecture and loss, trained on "
                   f"{trained_on(task, [r for r in chosen if r])}", metric, colours=arch_colours(snap))
        out += [f"### {task}", "", table(["arch", "ce", "ce hidden", "mse", "mse hidden", "Δ"], rows, [1, 2, 3, 4, 5]),
                "", figures.image(fig, f"{task}_loss_comparison", f"{task} loss comparison"), ""]
    return "\n".join(out) if drawn else ""
