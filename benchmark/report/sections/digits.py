"""Random test digits with the best MNIST model's predictions, and its confusion matrix.

Example: RNNBENCH_DATA=data rnnbench report --out reports/   # the "## Test digits and confusion matrix" section

Drawn only where the MNIST test images are on disk (a report never downloads) and the best MNIST run
kept a checkpoint; the model is loaded and run on the CPU, so this section is the one that needs torch.
"""

from __future__ import annotations

from ...registry import task_record
from ...schema import Artifact, RunStatus
from ...store import client_for
from ..markdown import Figures
from ..select import best_digits
from ..snapshot import RunRecord, Snapshot


def digits(snap: Snapshot, figures: Figures) -> str:
    """The section: left out without MNIST runs, test images on disk or a checkpoint of the best run."""
    has_mnist = any(task_record(r.task).pixel_rows and r.status == RunStatus.FINISHED for r in snap.runs)
    if not has_mnist:
        return ""
    from ...data import bad_files, default_data_dir  # numpy: not needed before the fork

    if bad_files(default_data_dir()):
        return ""
    client = snap.client or client_for(snap.tracking_uri)
    found = best_digits(snap.runs)
    if not found or not any(a.path == Artifact.CHECKPOINT
                            for a in client.list_artifacts(found.run_id, Artifact.CHECKPOINT_FOLDER)):
        return ""
    return digits_markdown(snap, figures, run=found)


def digits_markdown(snap: Snapshot, figures: Figures, *, run: RunRecord | None = None, count: int = 20, seed: int = 0,
                    task_data: dict | None = None) -> str:
    """Markdown + two figures: ``count`` seeded random test digits with predictions, and the confusion matrix.

    The model is ``run``'s, else the best MNIST run of the snapshot; ``task_data`` replaces the MNIST files.
    """
    lines = ["## Test digits and confusion matrix", ""]
    run = run or best_digits(snap.runs)
    if run is None:
        return "\n".join(lines + ["No finished MNIST run in the store yet.", ""])
    # torch: loading and running the model
    import torch

    # torch and matplotlib: only a report with an MNIST checkpoint and the test images on disk draws digits.
    from ...checkpoint import load_run_checkpoint
    from ...predict import Prediction, contact_sheet_figure
    from ...tasks.mnist import MnistTask
    from ..figures import confusion_matrix

    run_id = run.run_id
    network, config = load_run_checkpoint(run_id, snap.tracking_uri)
    task = MnistTask(config, "cpu", **(task_data or {}))
    probs, labels = task.predict(network, "test")
    predicted = probs.argmax(-1)
    accuracy = float((predicted == labels).float().mean())
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)

    images = task.splits["test"][0]
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
    sample = [Prediction(f"test[{int(i)}]", int(predicted[i]), float(probs[i, predicted[i]]),
                         [], int(labels[i])) for i in pick]
    model = f"{config.arch} trained on MNIST (run {run_id[:8]})"
    sheet = contact_sheet_figure(sample, [images[i].cpu() for i in pick],
                                 title=f"{model}: {count} random test digits, predicted digit (probability), "
                                       "wrong in red")
    grid = figures.image(sheet, "digits_grid", "random test digits")
    title = f"{model}: test confusion matrix, accuracy {100 * accuracy:.2f}%"
    matrix = figures.image(confusion_matrix(confusion.numpy(), title), "digits_confusion", "confusion matrix")

    off_diagonal = [(int(confusion[t, p]), t, p) for t in range(10) for p in range(10) if t != p]
    worst = [f"{t}→{p} ({n})" for n, t, p in sorted(off_diagonal, reverse=True)[:5] if n]
    wrong = sum(1 for s in sample if not s.correct)
    lines += [f"Model: run `{run_id}` ({config.arch}, hidden {config.hidden_size} x {config.num_layers}), chosen by",
              f"validation accuracy; test accuracy {100 * accuracy:.2f}% "
              f"({int((predicted != labels).sum())} of {len(labels)} wrong).", "",
              f"{count} random test digits (seed {seed}) with the prediction and its probability; "
              f"{wrong} wrong (red):", "",
              grid, "",
              f"Most frequent confusions (true→predicted): {', '.join(worst) or 'none'}.", "",
              matrix, ""]
    return "\n".join(lines)
