"""Figures drawn from results or from the tracking store (matplotlib, no display needed), and the axis
conventions every figure of the suite shares.

Example: rnnbench train --task addition --arch gru   # logs curves/learning_curve.png

Accuracies are drawn in percent with a % formatter and no offset notation (``percent_axis``), epochs and
trial numbers on integer ticks (``integer_axis``), string lengths on a log axis labelled with plain
integers (``length_axis``); figures use constrained layout so no label is clipped, and legends sit
outside the axes (``legend_outside``). Colours of architectures come from ``catalog.arch_colour``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator, PercentFormatter  # noqa: E402

from .catalog import arch_colour  # noqa: E402
from .files import save_figure  # noqa: E402,F401  (re-exported: plots and figures live together)
from .registry import task_record  # noqa: E402

NICE_LENGTHS = (1, 2, 5)  # length ticks: 1, 2, 5, 10, 20, 50, ... (every decade)


def figure(*args, **kwargs):
    """``plt.subplots`` with constrained layout: titles, labels and outside legends are fitted, never cut."""
    return plt.subplots(*args, layout="constrained", **kwargs)


class _AtMost100(MaxNLocator):
    """Percent ticks that stop at 100 %: the margin above 100 shows the line, not a tick nobody can reach."""

    def tick_values(self, vmin, vmax):
        ticks = super().tick_values(vmin, vmax)
        return ticks[ticks <= 100 + 1e-9]


class _Percent(PercentFormatter):
    """'98%', '99.5%', '99.75%': as many decimals as the ticks need, no more (values already in percent)."""

    ticks: list[float] = []

    def set_locs(self, locs):
        super().set_locs(locs)
        self.ticks = [loc for loc in locs if math.isfinite(loc)]

    def format_pct(self, x, display_range):
        locs = self.ticks
        decimals = next((d for d in range(5) if all(abs(round(loc, d) - loc) < 1e-9 for loc in locs)), 4)
        return f"{x:.{decimals}f}{self.symbol}"


def percent_axis(ax, values: Iterable[float], axis: str = "y") -> None:
    """An accuracy axis of values already in percent: '%' ticks, no offset, and a range that shows the data
    (a few points under the lowest value, 100 % plus a margin on top when the values reach it)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 100.0)
    span = hi - lo
    low = max(lo - max(2.0, 0.06 * span), min(lo, 0.0) - 0.5)
    high = hi + max(0.5, 0.04 * span)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(_AtMost100(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    target.set_major_formatter(_Percent(xmax=100))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(low, high)


def integer_axis(ax, axis: str = "x") -> None:
    """Epochs, trial numbers: ticks on whole numbers only, no offset."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    # min_n_ticks=1: with a single whole number in view (one trial, one epoch) MaxNLocator would fall back to
    # fractions.
    target.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def log_axis(ax, axis: str = "y") -> None:
    """A log axis (losses) labelled with plain numbers ('0.5', '2'), not '2 x 10^0'; minor ticks labelled only
    where the axis spans under 0.8 of a decade, else at 2 and 5 of each decade."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")

    def minor(value, _):
        low, high = sorted(target.get_view_interval())
        narrow = low > 0 and math.log10(high / low) < 0.8
        lead = round(value / 10 ** math.floor(math.log10(value)), 6) if value > 0 else 0
        return f"{value:g}" if narrow or lead in (2, 5) else ""

    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(FuncFormatter(minor))


def length_axis(ax, lengths: Iterable[float], axis: str = "x") -> None:
    """String lengths on a log axis, ticked at 1, 2, 5, 10, 20, ... within the data, labelled as integers."""
    lengths = [v for v in lengths if v and v > 0]
    lo, hi = (min(lengths), max(lengths)) if lengths else (1, 10)
    ticks = [m * 10 ** e for e in range(int(math.log10(lo)) - 1, int(math.log10(hi)) + 2) for m in NICE_LENGTHS]
    ticks = [t for t in ticks if lo <= t <= hi] or [lo]
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    target.set_minor_locator(NullLocator())
    pad = (hi / lo) ** 0.03 if hi > lo else 1.3
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo / pad, hi * pad)


def suptitle(fig, text: str, size: float = 12):
    """The figure's title, wrapped to the figure's width (a long 'what was trained on what' is never cut)."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72 / (0.6 * size)))
    return fig.suptitle(textwrap.fill(text, width), fontsize=size)


def legend_outside(ax, **kwargs):
    """The legend to the right of the axes, where it cannot cover a line (constrained layout makes room)."""
    if not ax.get_legend_handles_labels()[0]:
        return None
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


def trained_on(config) -> str:
    """What a configuration was trained on, in words: 'MNIST', 'addition, lengths 1..20', 'addition, length 3'."""
    return task_record(config.task).trained_on(config.train_lengths, config.max_train_length)


def learning_curve(result, config):
    """Training loss per iteration, and validation loss and accuracy per epoch."""
    fig, (left, right) = figure(1, 2, figsize=(11, 4.2))
    colour = arch_colour(config.arch)
    left.plot(range(1, len(result.train_losses) + 1), result.train_losses, lw=0.8, color=colour, alpha=0.8,
              label="train")
    iterations_per_epoch = len(result.train_losses) / max(result.epochs_run, 1)
    epochs = range(1, len(result.val_history) + 1)
    left.plot([e * iterations_per_epoch for e in epochs], [v["loss"] for v in result.val_history], "o-",
              color="black", ms=4, label="validation\n(end of epoch)")
    left.set(xlabel="iteration", ylabel=f"{config.loss} loss (log scale)", title="Loss")
    log_axis(left)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_outside(left)
    accs = [100 * v["acc"] for v in result.val_history]
    right.plot(epochs, accs, "o-", color=colour)
    right.axvline(result.best_epoch, color="gray", ls="--", lw=0.8, label=f"best epoch {result.best_epoch}")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    percent_axis(right, accs)
    integer_axis(right)
    right.set_xlim(0.5, max(len(accs), result.best_epoch) + 0.5)  # the best-epoch line off the frame
    legend_outside(right)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    suptitle(fig, f"{config.arch} trained on {trained_on(config)}: hidden {config.hidden_size} x {config.num_layers}, "
                 f"lr {config.lr:.3g}, {config.loss} loss")
    return fig
