"""Every figure the suite draws is readable: inspected on its returned axes, not by looking at pixels.

No offset notation on any axis; accuracy axes in % with a range that shows data sitting at 100 %; integer
ticks for epochs, trials and lengths; every label inside the canvas; limits that contain the data; legends
off the data; one colour per architecture across all the report's figures.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from benchmark import catalog, plots  # noqa: E402
from benchmark.cells import BUILTIN_CELLS  # noqa: E402
from benchmark.config import TrainConfig  # noqa: E402
from benchmark.report import figures  # noqa: E402

LENGTHS = [*range(1, 21), 30, 50, 100, 200, 500, 1000]


def _flat(acc=1.0, drop=0.0):
    return [(n, acc - (drop if n == LENGTHS[-1] else 0.0)) for n in LENGTHS]


def _by_length_all_100():
    bit = {f"{arch} (mean of 3 seeds)": _flat(1.0, 0.0033 if arch == "lstm" else 0.0) for arch in catalog.ARCH_COLOURS}
    return figures.accuracy_by_length(bit, bit, 20, "all at 100 %")


def _by_length_mixed():
    bit = {"rnn (best trial)": [(n, 1.0 - 0.4 * (n > 20)) for n in LENGTHS], "gru (best trial)": _flat()}
    seq = {label: [(n, max(0.0, v - 0.3)) for n, v in points] for label, points in bit.items()}
    return figures.accuracy_by_length(bit, seq, 20, "mixed", styles={"rnn (best trial)": {"color": "C0"}})


def _learning_curve():
    result = SimpleNamespace(train_losses=[2.0 * 0.9 ** i for i in range(30)], epochs_run=3, best_epoch=3,
                             val_history=[{"loss": 0.5, "acc": 0.9999}, {"loss": 0.3, "acc": 1.0},
                                          {"loss": 0.2, "acc": 1.0}])
    return plots.learning_curve(result, TrainConfig.for_task("addition", "lstm", epochs=3))


def _contact_sheet():
    import torch

    from benchmark.predict import Prediction, contact_sheet_figure

    predictions = [Prediction(f"d{i}.png", i, 0.9, [], i if i % 3 else (i + 1) % 10) for i in range(12)]
    images = [torch.randint(0, 255, (28, 28), dtype=torch.uint8) for _ in predictions]
    return contact_sheet_figure(predictions, images, title="lstm trained on MNIST: 12 test digits")


def _confusion():
    matrix = np.diag(np.full(10, 980))
    matrix[3, 5] = 12
    return figures.confusion_matrix(matrix, "lstm trained on MNIST: confusion matrix")


# Each figure function of the suite, with data that is hard on it (values at 100 %, few points).
CASES = {
    "accuracy_by_length/all 100": _by_length_all_100,
    "accuracy_by_length/mixed": _by_length_mixed,
    "curves/accuracy": lambda: figures.curves(
        {"lstm": [(1, 0.99991), (2, 0.99998), (3, 1.0)], "gru": [(1, 0.9999), (2, 1.0), (3, 1.0)]},
        xlabel="epoch", ylabel="validation accuracy", title="t", percent=True, integer_x=True,
        colours={"lstm": catalog.arch_colour("lstm")}),
    "curves/loss": lambda: figures.curves({"lstm (ce)": [(i, 2 * 0.9 ** i) for i in range(1, 60)]},
                                          xlabel="iteration", ylabel="training loss (log scale)", title="t",
                                          log_y=True, markers=False),
    "loss_comparison": lambda: figures.loss_comparison(
        {"lstm": {"ce": 1.0, "mse": 0.9999}, "gru": {"ce": 1.0, "mse": None}, "bigru": {"ce": 0.98, "mse": 1.0}},
        ["ce", "mse"], "t", "mean bit accuracy", colours=dict(catalog.ARCH_COLOURS)),
    "loss_comparison/every shipped cell": lambda: figures.loss_comparison(
        {name: {"ce": 0.5, "mse": 0.25} for name, *_ in BUILTIN_CELLS}, ["ce", "mse"], "t", "recall accuracy",
        colours=dict(catalog.ARCH_COLOURS)),
    "optimisation_histories": lambda: figures.optimisation_histories(
        {f"addition-{arch}": {"complete": [(0, 0.9), (3, 1.0), (4, 0.9995)], "pruned": [(1, 0.6), (2, 0.7)],
                              "colour": catalog.arch_colour(arch)} for arch in ("rnn", "lstm", "gru", "bigru")},
        "t"),
    "optimisation_histories/one trial": lambda: figures.optimisation_histories(
        {"addition-gru": {"complete": [(0, 0.547)], "pruned": [], "colour": catalog.arch_colour("gru")}}, "t"),
    "curves/one epoch": lambda: figures.curves({"gru": [(1, 0.5)]}, xlabel="epoch", ylabel="validation accuracy",
                                               title="t", percent=True, integer_x=True),
    "importances": lambda: figures.importances({"mnist-lstm": {"lr": 0.7, "hidden_size": 0.2, "num_layers": 0.1},
                                                "mnist-gru": {"lr": 0.9, "loss": 0.1}}, "t"),
    "notebook_lengths": lambda: figures.notebook_lengths(
        [("LSTM hidden 3: mean of 2 seeds", [_flat(0.99), _flat(1.0)]), ("LSTM hidden 10", [_flat(1.0)])], "t"),
    "confusion_matrix": _confusion,
    "learning_curve": _learning_curve,
    "contact_sheet_figure": _contact_sheet,
}


def _inside(box, canvas, slack=1.0) -> bool:
    return (box.x0 >= canvas.x0 - slack and box.y0 >= canvas.y0 - slack and box.x1 <= canvas.x1 + slack
            and box.y1 <= canvas.y1 + slack)


def _data_lines(ax):
    return [line for line in ax.get_lines() if line.get_transform() == ax.transData and len(line.get_xdata())]


def problems(fig) -> list[str]:
    """What a reader would trip over in ``fig``; empty when it is readable."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas, found = fig.bbox, []
    texts = [t for t in fig.texts if t.get_text()] + ([fig._suptitle] if fig._suptitle else [])
    for ax in (a for a in fig.axes if a.get_visible()):
        name = ax.get_title() or ax.get_ylabel() or "axes"
        for axis in (ax.xaxis, ax.yaxis) if ax.axison else ():
            if axis.get_offset_text().get_text():
                found.append(f"{name}: offset notation {axis.get_offset_text().get_text()!r}")
            low, high = sorted(axis.get_view_interval())
            shown = [tick.label1 for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                     if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high]
            boxes = [label.get_window_extent(renderer) for label in shown]
            if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
                found.append(f"{name}: tick labels overlap {[label.get_text() for label in shown]}")
            texts += shown
            texts.append(axis.label)
        texts += [ax.title] + [t for t in ax.texts if t.get_text()]
        xlim, ylim = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        for line in _data_lines(ax):
            xs = np.asarray(line.get_xdata(), float)
            ys = np.asarray(line.get_ydata(), float)
            if xs.min() < xlim[0] or xs.max() > xlim[1] or ys.min() < ylim[0] or ys.max() > ylim[1]:
                found.append(f"{name}: line {line.get_label()!r} outside the limits {xlim} x {ylim}")
        for bar in (p for p in ax.patches if isinstance(p, Rectangle)):
            if bar.get_x() + bar.get_width() > xlim[1] + 1e-9 or bar.get_x() < xlim[0] - 1e-9:
                found.append(f"{name}: a bar outside the limits {xlim}")
        if "accuracy" in ax.get_ylabel():
            if not isinstance(ax.yaxis.get_major_formatter(), PercentFormatter):
                found.append(f"{name}: accuracy axis without a % formatter")
            labels = [t.get_text() for t in ax.yaxis.get_ticklabels() if ylim[0] <= t.get_position()[1] <= ylim[1]]
            if len(set(labels)) < 3:
                found.append(f"{name}: accuracy axis with fewer than 3 distinct ticks {labels}")
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if any(word in label for word in ("epoch", "trial", "length")):
                inside = [t for t in axis.get_majorticklocs() if min(axis.get_view_interval()) <= t
                          <= max(axis.get_view_interval())]
                if any(abs(t - round(t)) > 1e-9 for t in inside):
                    found.append(f"{name}: non-integer ticks {inside} on {label!r}")
    for text in (t for t in texts if t.get_text() and t.get_visible()):
        if not _inside(text.get_window_extent(renderer), canvas):
            found.append(f"text {text.get_text()!r} clipped by the canvas")
    legends = [a.get_legend() for a in fig.axes if a.get_legend()] + list(fig.legends)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if not _inside(box, canvas):
            found.append("a legend clipped by the canvas")
        for ax in fig.axes:
            for line in _data_lines(ax):
                points = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float))
                if any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in points):
                    found.append(f"a legend covers the data of {line.get_label()!r}")
                    break
    return found


def test_every_figure_function_is_covered():
    functions = {name for name, f in inspect.getmembers(figures, inspect.isfunction)
                 if f.__module__ == figures.__name__ and not name.startswith("_")}
    functions |= {"learning_curve", "contact_sheet_figure"}
    assert functions == {case.split("/")[0] for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_figure_is_readable(case):
    fig = CASES[case]()
    try:
        assert problems(fig) == []
    finally:
        plt.close(fig)


def test_accuracy_at_100_percent_gets_a_range_that_shows_it():
    fig = _by_length_all_100()
    try:
        for ax in fig.axes[:2]:
            low, high = ax.get_ylim()
            assert 95 <= low < 99.6 and 100 < high <= 101  # a few points under the minimum, 100 % plus a margin
            labels = [t.get_text() for t in ax.yaxis.get_ticklabels() if low <= t.get_position()[1] <= high]
            assert labels and all(text.endswith("%") for text in labels)
            assert 100 in [float(text.rstrip("%")) for text in labels]
    finally:
        plt.close(fig)


def test_the_checker_catches_what_it_looks_for():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0.5, 1.5, 2.5], [100.0001, 100.0002, 100.0003], label="x" * 10)
    ax.set_xticks([0.6, 0.62], ["one label", "another"])  # a label on top of another
    ax.set(xlabel="epoch", ylabel="validation accuracy")
    ax.set_xlim(0.5, 2.0)
    ax.legend(loc="center")
    fig.supylabel("a long label " * 5)
    found = "\n".join(problems(fig))
    plt.close(fig)
    for expected in ("tick labels overlap", "offset notation", "outside the limits", "without a % formatter",
                     "non-integer ticks", "clipped by the canvas", "covers the data"):
        assert expected in found


def test_architecture_colours_are_fixed_for_builtins_and_stable_for_plugins():
    assert catalog.arch_colour("lstm") == catalog.arch_colour("lstm", ["zcell", "lstm"]) == "#ff7f0e"
    assert len({catalog.arch_colour(a) for a in catalog.BUILTIN_ARCHITECTURES}) == len(catalog.BUILTIN_ARCHITECTURES)
    # every cell rnnbench ships has a colour of its own: a report over all of them draws no two alike
    shipped = [name for name, *_ in BUILTIN_CELLS]
    assert set(catalog.ARCH_COLOURS) >= set(shipped)
    assert len({catalog.arch_colour(a) for a in shipped}) == len(shipped)
    first, second = catalog.arch_colour("zcell", ["lstm", "zcell", "acell"]), catalog.arch_colour("acell", ["zcell",
                                                                                                          "acell"])
    assert first == catalog.PLUGIN_COLOURS[0] and second == catalog.PLUGIN_COLOURS[1]
    assert catalog.arch_colour("unseen") == catalog.arch_colour("unseen")  # by name: the same in every run
    assert not set(catalog.PLUGIN_COLOURS) & set(catalog.ARCH_COLOURS.values())


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Every figure the report draws over a synthetic store, inspected before it is saved."""
    from fake_store import build_store

    from benchmark import report
    from benchmark.report import markdown, worker

    folder = tmp_path_factory.mktemp("figstore")
    (folder / "mlruns").mkdir()
    store = build_store(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", archs=("rnn", "lstm", "bigru"), trials=4,
                        epochs=3, confirm_seeds=2, confirm_lengths=(3,))
    seen: dict[str, tuple] = {}  # name -> (problems, (label, colour, marker) per line, titles, legend texts)
    save = markdown.Figures.save

    def inspect_then_save(self, fig, name):
        lines = [(line.get_label(), matplotlib.colors.to_hex(line.get_color()), line.get_marker()) for ax in fig.axes
                 for line in ax.get_lines()]
        legends = [text.get_text() for legend in [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]
                   for text in legend.get_texts()]
        seen[name] = (problems(fig), lines, [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()], legends)
        return save(self, fig, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(markdown.Figures, "save", inspect_then_save)
        patch.setattr(worker.os, "cpu_count", lambda: 1)  # every section in this process, where the patch is
        report.write_report(folder / "out", tracking_uri=store.uri, timestamp=False)
    return seen


def test_every_report_figure_is_readable(drawn):
    assert len(drawn) >= 8
    assert {name: found for name, (found, *_) in drawn.items() if found} == {}


def test_one_colour_per_architecture_across_the_report(drawn):
    colours: dict[str, set[str]] = {}
    for _, lines, *_ in drawn.values():
        for label, colour, _ in lines:
            arch = label.split(" ")[0]
            if arch in catalog.ARCH_COLOURS and colour:
                colours.setdefault(arch, set()).add(colour)
    assert set(colours) == {"rnn", "lstm", "bigru"}
    assert colours == {arch: {catalog.arch_colour(arch)} for arch in colours}


def test_report_titles_say_what_was_trained_on_what(drawn):
    for name in ("addition_accuracy_by_length", "addition_val_acc", "mnist_val_acc", "mnist_train_loss"):
        title = " ".join(drawn[name][2]).replace("\n", " ")
        assert "trained on" in title, (name, title)
        assert ("MNIST" in title) == name.startswith("mnist"), (name, title)


def test_optimisation_history_marks_pruned_trials(drawn):
    found, lines, _, legend = drawn["addition_optimisation_history"]
    pruned = [(label, marker) for label, _, marker in lines if label.startswith("pruned")]
    completed = {marker for label, _, marker in lines if label.startswith("completed")}
    assert len(pruned) == 3 and {marker for _, marker in pruned} == {"x"} and completed == {"o"}  # 1 per study
    assert found == [] and "pruned trial (last value)" in legend
