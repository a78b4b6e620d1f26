"""Figures drawn from results or from the tracking store (matplotlib, no display needed).

Example: rnnbench train --task addition --arch gru   # logs curves/learning_curve.png
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

from .files import save_figure  # noqa: E402,F401  (re-exported: plots and figures live together)


def learning_curve(result, config):
    """Training loss per iteration, and validation loss and accuracy per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(range(1, len(result.train_losses) + 1), result.train_losses, lw=0.8, label="train loss")
    iterations_per_epoch = len(result.train_losses) / max(result.epochs_run, 1)
    epochs = range(1, len(result.val_history) + 1)
    left.plot([e * iterations_per_epoch for e in epochs], [v["loss"] for v in result.val_history], "o-",
              label="validation loss")
    left.set(xlabel="iteration", ylabel=f"{config.loss} loss", yscale="log", title="Loss")
    left.legend()
    right.plot(epochs, [100 * v["acc"] for v in result.val_history], "o-", color="tab:green")
    right.axvline(result.best_epoch, color="gray", ls="--", lw=0.8, label=f"best epoch {result.best_epoch}")
    right.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config.arch} on {config.task}: hidden {config.hidden_size} x {config.num_layers}, "
                 f"lr {config.lr:g}, {config.loss}")
    fig.tight_layout()
    return fig
