"""Figures of the report, drawn from plain numbers the sections read from the tracking store.

Example: rnnbench report --out reports/   # writes reports/figures/*.png

Every function takes data (series as lists of (x, y) pairs, keyed by a label, in the order to draw)
and returns a matplotlib figure; ``Figures.save`` writes it. Nothing here touches MLflow.
"""

from __future__ import annotations

import math
import statistics

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

Series = dict[str, list[tuple[float, float]]]


def _grid(ax) -> None:
    ax.grid(alpha=0.4)  # major ticks only: minor ticks triple the drawing time


def accuracy_by_length(bit: Series, seq: Series, max_train_length: int | None, title: str,
                       styles: dict[str, dict] | None = None):
    """Bit and whole-string accuracy against string length, one line per label, log-scaled lengths.

    ``styles`` maps a label to matplotlib line keywords (e.g. one colour per architecture, one dash
    pattern per training regime)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharex=True)
    for ax, series, name in ((axes[0], bit, "bit accuracy (%)"), (axes[1], seq, "whole-string accuracy (%)")):
        for label, points in series.items():
            if points:
                style = {"marker": "o", "ms": 3, "lw": 1.2, **(styles or {}).get(label, {})}
                ax.plot([p[0] for p in points], [100 * p[1] for p in points], label=label, **style)
        if max_train_length:
            ax.axvline(max_train_length, color="gray", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel="string length L (log scale)", ylabel=name)
        _grid(ax)
    if max_train_length:
        axes[0].annotate("longest training length", (max_train_length, 0.02), xycoords=("data", "axes fraction"),
                         rotation=90, fontsize=8, color="gray", ha="right", va="bottom")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.9, wspace=0.18)
    return fig


def curves(series: Series, *, xlabel: str, ylabel: str, title: str, percent: bool = False,
           log_y: bool = False, markers: bool = True):
    fig, ax = plt.subplots(figsize=(9, 5))
    scale = 100 if percent else 1
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [scale * p[1] for p in points], "o-" if markers else "-",
                    ms=3, lw=1.2 if markers else 0.8, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    _grid(ax)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93)
    return fig


def loss_comparison(values: dict[str, dict[str, float | None]], losses: list[str], title: str, ylabel: str):
    """Dot plot: for each architecture (x), the best value reached with each loss."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    archs = list(values)
    for i, loss in enumerate(losses):
        shift = (i - (len(losses) - 1) / 2) * 0.15  # side by side, not on top of each other
        present = [(j, values[arch][loss]) for j, arch in enumerate(archs) if values[arch].get(loss) is not None]
        xs, ys = [j + shift for j, _ in present], [100 * v for _, v in present]
        ax.plot(xs, ys, "os^D"[i % 4], ms=8, ls="none", label=loss)
    ax.set_xticks(range(len(archs)), archs)
    ax.set(ylabel=ylabel, title=title)
    _grid(ax)
    ax.legend(title="loss")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.92)
    return fig


def _panels(n: int, width: float = 4.2, height: float = 3.2, left: float = 0.6):
    """A grid of up to 3 columns; margins in inches, so they hold for any number of rows."""
    cols = min(3, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    size = (width * cols, height * rows + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    fig.subplots_adjust(left=left / size[0], right=1 - 0.15 / size[0], bottom=0.5 / size[1], top=1 - 0.7 / size[1],
                        wspace=0.35 if left < 1 else 0.7, hspace=0.6)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def optimisation_histories(studies: dict[str, dict], title: str):
    """One panel per study: objective per trial (completed dots, pruned crosses at their last value), best so far."""
    fig, axes = _panels(len(studies))
    for ax, (name, data) in zip(axes, studies.items(), strict=False):
        complete, pruned = data["complete"], data["pruned"]
        if complete:
            ax.plot([p[0] for p in complete], [100 * p[1] for p in complete], "o", ms=4, label="complete")
            best, running = [], -math.inf
            for number, value in complete:
                running = max(running, value)
                best.append((number, running))
            ax.step([p[0] for p in best], [100 * p[1] for p in best], where="post", color="tab:red", lw=1.2,
                    label="best so far")
        if pruned:
            ax.plot([p[0] for p in pruned], [100 * p[1] for p in pruned], "x", ms=5, color="gray", label="pruned")
        ax.set(title=name, xlabel="trial", ylabel="validation accuracy (%)")
        _grid(ax)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def importances(studies: dict[str, dict[str, float]], title: str):
    """One panel per study: horizontal bars of parameter importance (largest on top)."""
    fig, axes = _panels(len(studies), left=1.1)
    for ax, (name, values) in zip(axes, studies.items(), strict=False):
        items = list(values.items())[::-1]
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set(title=name, xlabel="importance", xlim=(0, 1))
        ax.grid(axis="x", alpha=0.4)
    fig.suptitle(title)
    return fig


def notebook_lengths(lines: list[tuple[str, list[list[tuple[int, float]]]]], title: str):
    """The notebook's accuracy-vs-length figures redrawn: for each (label, one bit-accuracy history per seed),
    the mean over the seeds (thick) and each seed (thin), lengths 1..20 and the generalisation beyond."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for colour, (label, histories) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], lines, strict=False):
        curves: dict[int, list[float]] = {}
        for history in histories:
            for step, value in history:
                curves.setdefault(step, []).append(100 * value)
            if len(histories) > 1:
                ax.plot([step for step, _ in history], [100 * value for _, value in history], "-", color=colour,
                        lw=0.6, alpha=0.35)
        lengths = sorted(curves)
        ax.plot(lengths, [statistics.fmean(curves[n]) for n in lengths], "o-", ms=3, color=colour, label=label)
    ax.axvline(20.5, color="gray", ls=":", lw=0.8)
    ax.set(xlabel="string length", ylabel="bit accuracy (%)", title=title, xscale="log",
           ylim=(min(ax.get_ylim()[0], 90), 100.5))
    ax.text(21, ax.get_ylim()[0], " beyond the training lengths", fontsize=7, color="gray", va="bottom")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(confusion, title: str):
    """A 10 x 10 count matrix (true rows, predicted columns) with its counts written in."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    # Log colour scale so the few errors show next to ~1000 correct per class.
    shown = ax.imshow(np.log1p(confusion), cmap="Blues")
    for t in range(10):
        for p in range(10):
            n = int(confusion[t, p])
            if n:
                ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                        color="white" if t == p else ("tab:red" if n >= 5 else "black"))
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    return fig
