"""Figures of the report, drawn from plain numbers the sections read from the tracking store.

Example: rnnbench report --out reports/   # writes reports/figures/*.png

Every function takes data (series as lists of (x, y) pairs, keyed by a label, in the order to draw)
and returns a matplotlib figure; ``Figures.save`` writes it. Nothing here touches MLflow.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from matplotlib.lines import Line2D

from ..plots import figure, integer_axis, legend_outside, length_axis, log_axis, percent_axis, suptitle

Series = dict[str, list[tuple[float, float]]]
Colours = dict[str, str]  # label -> colour (``catalog.arch_colour`` of the label's architecture)


def _grid(ax) -> None:
    ax.grid(alpha=0.4)  # major ticks only: minor ticks triple the drawing time


def _values(series: Series, scale: float = 100) -> list[float]:
    return [scale * y for points in series.values() for _, y in points]


def accuracy_by_length(bit: Series, seq: Series, max_train_length: int | None, title: str,
                       styles: dict[str, dict] | None = None,
                       names: tuple[str, ...] = ("bit accuracy", "whole-string accuracy")):
    """Bit and whole-string accuracy (a task's first two per-length metrics, named by ``names``; one panel where
    it has one) against string length, one line per label, log-scaled lengths.

    ``styles`` maps a label to matplotlib line keywords (one colour per architecture, one dash pattern per
    training regime)."""
    fig, axes = figure(1, len(names[:2]), figsize=(6.5 * len(names[:2]), 4.8), sharex=True, squeeze=False)
    axes = axes[0]
    lengths = [x for series in (bit, seq) for points in series.values() for x, _ in points]
    for ax, series, name in zip(axes, (bit, seq), names, strict=False):
        for label, points in series.items():
            if points:
                style = {"marker": "o", "ms": 3, "lw": 1.2, **(styles or {}).get(label, {})}
                ax.plot([p[0] for p in points], [100 * p[1] for p in points], label=label, **style)
        if max_train_length:
            ax.axvline(max_train_length, color="gray", ls="--", lw=0.8)
        ax.set(xlabel="string length L (log scale)", ylabel=name, title=name)
        length_axis(ax, lengths + ([max_train_length] if max_train_length else []))
        percent_axis(ax, _values(series))
        _grid(ax)
    if max_train_length:
        axes[0].annotate("longest training length", (max_train_length, 0.03), xycoords=("data", "axes fraction"),
                         rotation=90, fontsize=8, color="gray", ha="right", va="bottom")
    legend_outside(axes[-1])
    suptitle(fig, title)
    return fig


def curves(series: Series, *, xlabel: str, ylabel: str, title: str, percent: bool = False,
           log_y: bool = False, markers: bool = True, colours: Colours | None = None, integer_x: bool = False):
    """One line per label; ``percent`` draws accuracies in %, ``integer_x`` puts epochs on whole numbers."""
    fig, ax = figure(figsize=(10, 5))
    scale = 100 if percent else 1
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [scale * p[1] for p in points], "o-" if markers else "-",
                    ms=3, lw=1.2 if markers else 0.8, label=label, color=(colours or {}).get(label))
    ax.set(xlabel=xlabel, ylabel=ylabel)
    suptitle(fig, title)
    if log_y:
        log_axis(ax)
    if percent:
        percent_axis(ax, _values(series))
    if integer_x:
        integer_axis(ax)
    _grid(ax)
    legend_outside(ax)
    return fig


LOSS_MARKERS = "os^D"


def loss_comparison(values: dict[str, dict[str, float | None]], losses: list[str], title: str, ylabel: str,
                    colours: Colours | None = None):
    """Dot plot: for each architecture (x, in its colour), the best value reached with each loss (marker)."""
    fig, ax = figure(figsize=(10, 4.5))
    archs = list(values)
    for i, loss in enumerate(losses):
        shift = (i - (len(losses) - 1) / 2) * 0.15  # side by side, not on top of each other
        for j, arch in enumerate(archs):
            if values[arch].get(loss) is not None:
                ax.plot([j + shift], [100 * values[arch][loss]], LOSS_MARKERS[i % 4], ms=8, ls="none",
                        color=(colours or {}).get(arch, "black"), markeredgecolor="black", markeredgewidth=0.6)
    # upright where 18 cells' names side by side would run into each other at this width
    ax.set_xticks(range(len(archs)), archs, rotation=90 if len(archs) > 8 else 0)
    ax.set_xlim(-0.5, len(archs) - 0.5)
    ax.set(ylabel=ylabel, xlabel="architecture")
    suptitle(fig, title)
    percent_axis(ax, [100 * v for by_loss in values.values() for v in by_loss.values() if v is not None])
    _grid(ax)
    handles = [Line2D([], [], marker=LOSS_MARKERS[i % 4], ls="none", color="white", markeredgecolor="black", ms=8,
                      label=loss) for i, loss in enumerate(losses)]
    ax.legend(handles=handles, title="loss", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    """A grid of up to 3 columns, the unused cells hidden."""
    cols = min(3, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = figure(rows, cols, figsize=(width * cols, height * rows + 0.8), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def optimisation_histories(studies: dict[str, dict], title: str):
    """One panel per study: objective per trial (completed dots in the architecture's colour, pruned trials
    as crosses at their last reported value), and the best so far. ``studies`` maps a study name to
    {"complete": [(trial, value)], "pruned": [(trial, value)], optionally "colour" and "pruned_count"}."""
    fig, axes = _panels(len(studies))
    for ax, (name, data) in zip(axes, studies.items(), strict=False):
        complete, pruned = data["complete"], data["pruned"]
        colour = data.get("colour", "tab:blue")
        if complete:
            ax.plot([p[0] for p in complete], [100 * p[1] for p in complete], "o", ms=4, color=colour,
                    label="completed trial")
            best, running = [], -math.inf
            for number, value in complete:
                running = max(running, value)
                best.append((number, running))
            ax.step([p[0] for p in best], [100 * p[1] for p in best], where="post", color="black", lw=1.0,
                    label="best so far")
        if pruned:
            ax.plot([p[0] for p in pruned], [100 * p[1] for p in pruned], "x", ms=6, mew=1.5, color="tab:red",
                    label="pruned trial (last value)")
        n_pruned = data.get("pruned_count", len(pruned))
        ax.set(title=f"{name}\n{len(complete)} completed, {n_pruned} pruned", xlabel="trial number",
               ylabel="validation accuracy")
        ax.title.set_fontsize(9)
        percent_axis(ax, [100 * v for _, v in complete + pruned])
        numbers = [p[0] for p in complete + pruned]
        if numbers:
            ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        integer_axis(ax)
        _grid(ax)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles),
                   fontsize=8)
    suptitle(fig, title)
    return fig


def importances(studies: dict[str, dict[str, float]], title: str):
    """One panel per study: horizontal bars of parameter importance (largest on top)."""
    fig, axes = _panels(len(studies))
    for ax, (name, values) in zip(axes, studies.items(), strict=False):
        items = list(values.items())[::-1]
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set(title=name, xlabel="importance (fraction of the objective's variance)", xlim=(0, 1))
        ax.title.set_fontsize(9)
        ax.grid(axis="x", alpha=0.4)
    suptitle(fig, title)
    return fig


def notebook_lengths(lines: list[tuple[str, list[list[tuple[int, float]]]]], title: str):
    """The notebook's accuracy-vs-length figures redrawn: for each (label, one bit-accuracy history per seed),
    the mean over the seeds (thick) and each seed (thin), lengths 1..20 and the generalisation beyond."""
    import matplotlib.pyplot as plt

    fig, ax = figure(figsize=(10, 4.8))
    every = []
    for colour, (label, histories) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], lines, strict=False):
        by_length: dict[int, list[float]] = {}
        for history in histories:
            for step, value in history:
                by_length.setdefault(step, []).append(100 * value)
            if len(histories) > 1:
                ax.plot([step for step, _ in history], [100 * value for _, value in history], "-", color=colour,
                        lw=0.6, alpha=0.35)
        lengths = sorted(by_length)
        every += [v for values in by_length.values() for v in values]
        ax.plot(lengths, [statistics.fmean(by_length[n]) for n in lengths], "o-", ms=3, color=colour, label=label)
    steps = [step for _, histories in lines for history in histories for step, _ in history]
    ax.axvline(20.5, color="gray", ls=":", lw=0.8)
    ax.set(xlabel="string length (log scale)", ylabel="bit accuracy")
    suptitle(fig, title)
    length_axis(ax, steps + [20.5])
    percent_axis(ax, every)
    ax.text(21, ax.get_ylim()[0], " beyond the training lengths", fontsize=7, color="gray", va="bottom")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return fig


def confusion_matrix(confusion, title: str):
    """A 10 x 10 count matrix (true rows, predicted columns) with its counts written in."""
    fig, ax = figure(figsize=(7, 5.8))
    # Log colour scale so the few errors show next to ~1000 correct per class.
    shown = ax.imshow(np.log1p(confusion), cmap="Blues")
    for t in range(10):
        for p in range(10):
            n = int(confusion[t, p])
            if n:
                ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                        color="white" if t == p else ("tab:red" if n >= 5 else "black"))
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit")
    suptitle(fig, title, size=11)
    bar = fig.colorbar(shown, ax=ax, label="count (log scale)")
    top = int(np.max(confusion)) if np.size(confusion) else 1
    counts = [c for c in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10_000) if c <= max(top, 1)]
    bar.set_ticks(np.log1p(counts), labels=[f"{c:,}" for c in counts])
    return fig
