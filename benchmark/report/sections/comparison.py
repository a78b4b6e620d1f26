"""The comparison tables: per task one row per architecture, its best trial by validation, tested.

Example: rnnbench report --out reports/   # the "## Comparison" section
"""

from __future__ import annotations

from ...catalog import arch_order_key
from ...notebook import NOTEBOOK_REFERENCE, NOTEBOOK_REFERENCE_NOTE
from ...registry import task_record
from ...schema import Metric, TrialState
from ...stats import mean_std, within_noise
from ..markdown import Figures, lr_text, mean_pm, number, pct, signed, table
from ..select import best_run, headline, longest_length, reported_archs, reported_tasks, seed_accs, trial_counts
from ..snapshot import Snapshot


def describe(record) -> str:
    """The sentence that opens a task's section: its description, after its label unless it names the task
    already ("pixel MNIST: 784 steps ..." would read "pixel MNIST: pixel MNIST: ...")."""
    text = record.description
    if not text:
        return ""
    if record.display.lower() in text.lower():
        return f"{text[0].upper()}{text[1:]}."
    return f"{record.display}: {text}."


def comparison(snap: Snapshot, figures: Figures) -> str:
    """One table per task, one row per architecture, best trial by validation."""
    out = ["## Comparison", "",
           "Best trial per architecture, chosen by validation accuracy (completed trials only; an architecture "
           "without trials shows its best `rnnbench train` run, 'run' under trials); test numbers for that run. "
           "Accuracies in % (a task's raw metrics, such as an MSE, as plain numbers), Δ in points against the "
           "notebook (from the seed mean where every architecture has seeds, else from the best run). The second "
           "table gives each run's configuration and cost; trials: completed / pruned / failed.", ""]
    if not reported_tasks(snap):
        return "\n".join([*out[:2], "No finished trial or `rnnbench train` run in these experiments.", ""])
    for task in reported_tasks(snap):
        rows, setups, longest, trained = [], [], set(), set()
        record = task_record(task)
        archs = reported_archs(snap, task)
        seeded = {arch: seed_accs(snap, best_run(snap, task, arch)) for arch in archs}
        with_seeds = any(seeded.values())
        numbers = headline(snap, task, archs)
        for arch in archs:
            run = best_run(snap, task, arch)
            if run is None:
                continue
            counts = trial_counts(snap, task, arch)
            trials = (f"{counts.get(TrialState.COMPLETE, 0)} / {counts.get(TrialState.PRUNED, 0)} / "
                      f"{counts.get(TrialState.FAIL, 0)}" if counts else "run")
            ref = NOTEBOOK_REFERENCE.get(task, {}).get(arch)
            acc = run.metric(Metric.TEST_ACC)
            row = [arch, pct(acc)] + ([mean_pm(seeded[arch])] if with_seeds else [])
            row += [record.shown(name, run.metric(Metric.of("test", name))) for name in record.metrics[1:]]
            if record.per_length:
                at = longest_length(snap, run)
                longest.add(at[0] if at else None)
                trained.add(run.param("max_train_length"))
                row += [pct(value) if at else "—" for value in (at[1:] if at else record.per_length)]
            n_params = run.metric(Metric.N_PARAMS)
            row += [number(ref), signed(100 * numbers[arch][0] - ref if arch in numbers and ref is not None else None)]
            rows.append(row)
            setups.append([arch, run.param("hidden_size", "—"), run.param("num_layers", "—"), lr_text(run.param("lr")),
                           run.param("loss", "—"), "—" if n_params is None else f"{int(n_params):,}",
                           number(run.seconds_per_epoch), trials])
        if record.per_length:
            at = f"L={longest.pop()}" if len(longest) == 1 and None not in longest else "longest L"
            span = record.scored_span(trained.pop()) if len(trained) == 1 else "lengths scored"
            headers = ["arch", *(f"{record.short_label(name)} {span}" for name in record.metrics),
                       *(f"{record.short_label(name)} {at}" for name in record.per_length)]
        else:
            headers = ["arch", *(record.short_label(name) for name in record.metrics)]
        if with_seeds:
            headers.insert(2, "seeds: mean ± std (n)")
        headers += ["notebook", "Δ"]
        # Two tables of at most 8 columns each: one wide table overflows a GitHub page.
        about = describe(record)
        out += [f"### {task}", "", *([about, ""] if about else []), table(headers, rows, range(1, len(headers))), "",
                table(["arch", "hidden", "layers", "lr", "loss", "params", "s / epoch", "trials"], setups,
                      [1, 2, 3, 5, 6]), ""]
        if with_seeds:
            out += [noise_note(seeded), ""]
        if task in NOTEBOOK_REFERENCE_NOTE:
            out += [f"Notebook: {NOTEBOOK_REFERENCE_NOTE[task]}.", ""]
    out += [f"Trial states: {snap.storage_note}.", ""]
    return "\n".join(out)


def noise_note(seeded: dict[str, list[float]]) -> str:
    """Which architectures the seeds cannot separate from the best by seed mean (95 % Welch t interval)."""
    text = ("Seeds: the best trial's configuration retrained with fresh seeds (new split and initialisation; "
            "`rnnbench confirm`), test accuracy mean ± sample std.")
    scored = {arch: values for arch, values in seeded.items() if len(values) >= 2}
    if len(scored) < 2:
        return text + " At least two architectures need two or more seeds to compare them."
    top = min(scored, key=lambda arch: (-mean_std(scored[arch])[0], arch_order_key(arch)))
    close, apart = [], []
    for arch in (a for a in scored if a != top):
        same, diff, band = within_noise(scored[top], scored[arch])
        (close if same else apart).append(f"{arch} ({100 * diff:.2f} {'≤' if same else '>'} {100 * band:.2f})")
    verdict = (f" **Within noise of {top}** (its difference of means lies inside the 95 % Welch t interval, "
               "points: difference ≤ half-width): "
               f"{', '.join(close)}." if close else f" Every architecture is clear of {top} beyond noise (95 % "
               "Welch t interval).")
    if close and apart:
        verdict += f" Clear of it: {', '.join(apart)}."
    return text + verdict
