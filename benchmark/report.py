"""The markdown report: comparison tables, figures, study insight and provenance, from the tracking store.

Example: rnnbench report --out reports/ --no-timestamp

Reads only the MLflow tracking store (every run fetched in bulk with ``search_runs``; metric
histories only for the few runs a figure draws) and, where one exists, the Optuna storage for trial
counts and parameter distributions. Without an Optuna storage the report still works: trial states
come from the runs' tags (schema at the top of ``benchmark.tracking``).

The report is the ordered list ``SECTIONS``: each section is a function of a loaded ``Snapshot`` and
a ``Figures`` folder that returns markdown (or "" to leave itself out), so new sections plug in
without touching the others; sections marked ``@offline`` (no store access) are drawn in a forked
process on the second core (``OfflineWorker``, forked before the store is read so that it imports the
plotting libraries meanwhile) while the rest fetch histories. Everything is sorted and formatted with
fixed precision: the same store gives byte-identical markdown, apart from the one generation-time line
(``--no-timestamp``).

Best trial per task x architecture: the highest ``best_val_acc`` among trial runs with
``optuna.state=COMPLETE`` and status FINISHED (never a pruned or failed one); ties go to the lower
``best_val_loss``, then the earlier trial, then the smaller run id (``tuning.best_trial``'s order, so
the report shows the trial that ``rnnbench confirm`` retrains). Where an architecture has no trials, its
best finished ``rnnbench train`` run stands in, marked "run". Test numbers are reported for the chosen run only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .confirm import TAG_CONFIRM_LENGTH, TAG_CONFIRM_OF, mean_std, within_noise
from .files import write_atomic
from .tracking import (
    REGISTRY_MARK,
    STORAGE_ENV,
    TAG_ROLE,
    TAG_STUDY,
    TAG_SUITE,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
    default_store_dir,
    mask_url,
)

# The order of models.ARCHITECTURES (a test keeps them equal), spelled out so the report never imports torch.
ARCH_ORDER = ["rnn", "lstm", "gru", "birnn", "bilstm", "bigru"]
TASK_ORDER = ["mnist", "addition"]
LOSS_ORDER = ["ce", "mse"]
PAGE_SIZE = 1000
TIE_POINTS = 0.1  # findings call a margin below this many points a tie (one seed per configuration)
OPTUNA_JOURNAL = "optuna.journal"
NOT_HYPERPARAMETERS = {"task", "arch", "seed", "threads", "device", "impl"}  # never importances

# The notebook's numbers (DESIGN.md): 10 epochs, Adam, hidden 128 (MNIST) / LSTM hidden 10, lr 0.01 (addition).
# Main table: per task and architecture, in percent.
NOTEBOOK_REFERENCE: dict[str, dict[str, float]] = {
    "mnist": {"rnn": 94.42, "lstm": 97.38, "gru": 97.06, "birnn": 95.60, "bilstm": 97.82},
    "addition": {"lstm": 100.0},
}
NOTEBOOK_REFERENCE_NOTE = {
    "mnist": "test accuracy, 10 epochs, Adam 1e-3, batch 500, hidden 128, one layer",
    "addition": "LSTM, hidden 10, lr 0.01, 10 epochs, 250 training strings; mean bit accuracy over lengths 1..20",
}
class ReportError(Exception):
    """Nothing to report (no store, no finished runs); the message is one line saying what to run."""


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment: str
    status: str
    start_time: int
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]  # latest value of each metric, as search_runs returns it
    end_time: int = 0  # ms; 0 while running

    @classmethod
    def from_mlflow(cls, run, experiment: str) -> RunRecord:
        return cls(run_id=run.info.run_id, experiment=experiment, status=run.info.status,
                   start_time=run.info.start_time or 0, end_time=run.info.end_time or 0, tags=dict(run.data.tags),
                   params=dict(run.data.params), metrics=dict(run.data.metrics))

    @property
    def task(self) -> str:
        return self.tags.get("task", "")

    @property
    def arch(self) -> str:
        return self.tags.get("arch", "")

    @property
    def role(self) -> str:
        return self.tags.get(TAG_ROLE, "run")

    @property
    def suite(self) -> str:
        return self.tags.get(TAG_SUITE, "")

    @property
    def study(self) -> str:
        return self.tags.get(TAG_STUDY, "")

    @property
    def trial_number(self) -> int | None:
        value = self.tags.get(TAG_TRIAL)
        return int(value) if value not in (None, "") and value.lstrip("-").isdigit() else None

    @property
    def trial_state(self) -> str:
        """Optuna's state from the tag; a trial run without one counts by its run status."""
        state = self.tags.get(TAG_TRIAL_STATE)
        if state:
            return state
        return {"FINISHED": "COMPLETE", "FAILED": "FAIL"}.get(self.status, self.status)

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else value

    def param(self, key: str, default: str = "") -> str:
        return self.params.get(key, default)

    @property
    def seconds_per_epoch(self) -> float | None:
        total, epochs = self.metric("train_time_s"), self.metric("epochs_run")
        return total / epochs if total is not None and epochs else None


@dataclass
class StudyStats:
    """What the Optuna storage says about one study."""

    name: str
    states: dict[str, int]
    trials: list = field(default_factory=list)  # FrozenTrial, for importances with the true distributions


@dataclass
class Snapshot:
    """Everything the sections read: the runs (bulk), Optuna study statistics, histories on demand."""

    tracking_uri: str
    experiments: list[str]
    runs: list[RunRecord]
    studies: dict[str, StudyStats]
    storage_note: str
    generated_at: str | None = None
    client: Any = None
    _histories: dict = field(default_factory=dict)
    _confirm_groups: dict | None = None

    def _confirm_index(self) -> dict[tuple, list[RunRecord]]:
        """(trial run id, training length or None) -> its finished confirm runs, oldest first; built once."""
        if self._confirm_groups is None:
            self._confirm_groups = defaultdict(list)
            for r in sorted(self.runs, key=lambda r: (r.start_time, r.run_id)):
                if r.suite == "confirm" and r.status == "FINISHED" and r.metric("test_acc") is not None:
                    self._confirm_groups[r.tags.get(TAG_CONFIRM_OF), r.tags.get(TAG_CONFIRM_LENGTH)].append(r)
        return self._confirm_groups

    def confirm_runs(self, trial_run_id: str, length: str | None) -> list[RunRecord]:
        return self._confirm_index().get((trial_run_id, length), [])

    def confirm_lengths(self, trial_run_id: str) -> list[int]:
        """The single training lengths this trial was also retrained on (addition)."""
        return sorted(int(length) for of, length in self._confirm_index() if of == trial_run_id
                      and length is not None and length.isdigit())

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) sorted by step; the last value logged at a step wins. Cached."""
        if (run_id, key) not in self._histories:
            if self.client is None:
                raise RuntimeError(f"history {key!r} of run {run_id} was not prefetched for an offline section")
            points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            self._histories[run_id, key] = sorted({m.step: m.value for m in points}.items())
        return self._histories[run_id, key]

    def tasks(self) -> list[str]:
        present = {r.task for r in self.runs if r.task}
        return [t for t in TASK_ORDER if t in present] + sorted(present - set(TASK_ORDER))

    def trials(self, task: str, arch: str | None = None) -> list[RunRecord]:
        return [r for r in self.runs if r.role == "trial" and r.task == task and (arch is None or r.arch == arch)]


def _plain_uri(uri: str | None) -> tuple[str, Path | None]:
    """The tracking URI (explicit, env, or the embedded default) and its SQLite file, without creating it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        database = default_store_dir() / "mlflow.db"
        return f"sqlite:///{database}", database
    if uri.startswith("sqlite:///"):
        return uri, Path(uri.removeprefix("sqlite:///"))
    return uri, None


def load_snapshot(tracking_uri: str | None = None, experiments: Iterable[str] | None = None,
                  storage: str | None = None, timestamp: bool = True) -> Snapshot:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from .config import ConfigError

    uri, database = _plain_uri(tracking_uri)
    if database is not None and not database.exists():
        raise ReportError(f"no tracking store at {database}; run `rnnbench train` or "
                          "`rnnbench bench --preset quick` first, or pass --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    found = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    if experiments:
        unknown = sorted(set(experiments) - set(found))
        if unknown:
            raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; the store has: "
                              f"{', '.join(sorted(found)) or 'none'}")
        names = sorted(set(experiments))
    else:
        names = sorted(found)
    by_id = {found[name]: name for name in names}
    runs: list[RunRecord] = []
    if by_id:
        token = None
        while True:  # a page of up to PAGE_SIZE runs per call, never one call per run
            page = client.search_runs(list(by_id), max_results=PAGE_SIZE, page_token=token)
            runs += [RunRecord.from_mlflow(r, by_id[r.info.experiment_id]) for r in page]
            token = page.token
            if not token:
                break
    runs.sort(key=lambda r: (r.experiment, r.task, r.arch, r.run_id))
    names = sorted({r.experiment for r in runs}) or names  # leave out empty ones (MLflow's "Default")
    if not any(r.status == "FINISHED" for r in runs):
        where = f"experiment(s) {', '.join(names)}" if names else "the store"
        raise ReportError(f"no finished runs in {where} at {uri}; run `rnnbench train` or "
                          "`rnnbench bench --preset quick` first")
    studies, note = load_studies(storage, database)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()) if timestamp else None
    return Snapshot(tracking_uri=uri, experiments=names, runs=runs, studies=studies, storage_note=note,
                    generated_at=stamp, client=client)


def load_studies(storage: str | None, database: Path | None) -> tuple[dict[str, StudyStats], str]:
    """Studies in the Optuna storage (explicit URL or journal file, else the journal beside the store)."""
    import optuna

    storage = storage or os.environ.get(STORAGE_ENV)
    if storage is None:
        folder = database.parent if database is not None else default_store_dir()
        journal = folder / OPTUNA_JOURNAL
        if not journal.exists():
            return {}, f"no Optuna storage at {_short(journal)}; trial states are counted from run tags"
        storage = str(journal)
    try:
        if "://" in storage:
            if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
                return {}, f"no Optuna storage at {storage}; trial states are counted from run tags"
            backend = optuna.storages.RDBStorage(storage)
        else:
            if not Path(storage).exists():
                return {}, f"no Optuna storage at {storage}; trial states are counted from run tags"
            from optuna.storages.journal import JournalFileBackend

            backend = optuna.storages.JournalStorage(JournalFileBackend(storage))
        studies = {}
        for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
            if REGISTRY_MARK in summary.study_name:  # bookkeeping of the scale-out election, not a study
                continue
            trials = optuna.load_study(study_name=summary.study_name, storage=backend).get_trials(deepcopy=False)
            states = Counter(t.state.name for t in trials)
            studies[summary.study_name] = StudyStats(summary.study_name, dict(states), list(trials))
    except Exception as error:  # an unreadable storage must not sink the report
        return {}, (f"Optuna storage {_short(mask_url(storage))} unreadable ({type(error).__name__}: {error}); "
                    "trial states are counted from run tags")
    return studies, f"Optuna storage {_short(mask_url(storage))}: {len(studies)} studies"


def _short(path) -> str:
    """A path relative to the working directory when it is under it (stable across machines)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


# ----------------------------------------------------------------------------------------- selection


def _rank(run: RunRecord) -> tuple:
    """The order of ``tuning.best_trial`` (so seeds, champion and report agree), then run id across studies."""
    loss = run.metric("best_val_loss")
    number = run.trial_number
    return (-run.metric("best_val_acc"), loss if loss is not None else math.inf,
            number if number is not None else math.inf, run.run_id)


def best_of(runs: Iterable[RunRecord]) -> RunRecord | None:
    """Highest best_val_acc; ties: lower best_val_loss, earlier trial, then run id. Only completed, finished
    runs count."""
    eligible = [r for r in runs if r.status == "FINISHED" and r.metric("best_val_acc") is not None
                and (r.role != "trial" or r.tags.get(TAG_TRIAL_STATE) == "COMPLETE")]
    return min(eligible, key=_rank) if eligible else None


def best_run(snap: Snapshot, task: str, arch: str, **params: str) -> RunRecord | None:
    """Best trial for task x arch (optionally with given params); else the best standalone train run."""
    pool = candidates(snap, task, arch)
    return best_of(r for r in pool if all(r.param(k) == v for k, v in params.items()))


def candidates(snap: Snapshot, task: str, arch: str) -> list[RunRecord]:
    """The trials of task x arch; where it has none, its standalone `rnnbench train` runs."""
    return snap.trials(task, arch) or [r for r in snap.runs if r.role == "run" and r.suite in ("train", "")
                                       and r.task == task and r.arch == arch]


def trial_counts(snap: Snapshot, task: str, arch: str) -> dict[str, int] | None:
    """Trials by Optuna state: from the Optuna storage for studies it holds, else from run tags."""
    trials = snap.trials(task, arch)
    names = sorted({r.study for r in trials} | {r.study for r in snap.runs if r.role == "study" and r.task == task
                                                and r.arch == arch and r.study})
    if not names:
        return None
    counts: Counter = Counter()
    for name in names:
        if name in snap.studies:
            counts.update(snap.studies[name].states)
        else:
            counts.update(r.trial_state for r in trials if r.study == name)
    return dict(counts)


def confirmations(snap: Snapshot, run: RunRecord, length: int | None = None) -> list[RunRecord]:
    """Finished fresh-seed retrains of ``run`` (``rnnbench confirm``), on its own lengths or on one length.

    Seeds trained differently (other epochs or training size) are not pooled: the largest such group
    counts (ties: more epochs). A seed run twice (two sessions racing) counts once, its latest run.
    """
    groups: dict[tuple, dict[str, RunRecord]] = defaultdict(dict)
    for r in snap.confirm_runs(run.run_id, None if length is None else str(length)):
        groups[r.param("epochs"), r.param("train_size")][r.tags.get("seed", r.run_id)] = r
    if not groups:
        return []
    chosen = max(groups, key=lambda key: (len(groups[key]), int(key[0]) if key[0].isdigit() else 0, key))
    return [groups[chosen][seed] for seed in sorted(groups[chosen])]


def seed_accs(snap: Snapshot, run: RunRecord | None, length: int | None = None) -> list[float]:
    return [r.metric("test_acc") for r in confirmations(snap, run, length)] if run else []


def headline(snap: Snapshot, task: str, archs: Iterable[str]) -> dict[str, tuple[float, list[float]]]:
    """arch -> (the number it is ranked by, its seeds). That is the seed mean when every one of ``archs``
    with a best run has seed confirmations: a short search's best trial understates what its configuration
    reaches, and seeds are compared with seeds only. Otherwise each best trial's own test accuracy, no seeds."""
    runs = {arch: run for arch in archs if (run := best_run(snap, task, arch)) and run.metric("test_acc") is not None}
    seeded = {arch: seed_accs(snap, run) for arch, run in runs.items()}
    if runs and all(seeded.values()):
        return {arch: (mean_std(values)[0], values) for arch, values in seeded.items()}
    return {arch: (run.metric("test_acc"), []) for arch, run in runs.items()}


# ------------------------------------------------------------------------------------------ markdown


def mean_pm(values: list[float]) -> str:
    """'mean ± std (n)' in %, sample std; '—' without values; one value has no spread to show."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (n=1)"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({len(values)})"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def number(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def lr_text(value: str) -> str:
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value or "—"


def table(headers: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    """GitHub-flavoured markdown table; columns in ``right`` are right-aligned (numbers)."""
    right = set(right)
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Figures:
    """The figures folder: saves atomically and returns the markdown path (relative to report.md)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []

    def adopt(self, markdown: str) -> str:
        """Count the PNGs another module wrote into this folder and linked from ``markdown``."""
        linked = re.findall(rf"\]\({re.escape(self.folder.name)}/([^)]+\.png)\)", markdown)
        self.written = sorted(set(self.written) | set(linked))
        return markdown

    def save(self, fig, name: str) -> str:
        from .files import save_figure

        save_figure(fig, self.folder / f"{name}.png")
        self.written.append(f"{name}.png")
        return f"{self.folder.name}/{name}.png"

    def image(self, fig, name: str, alt: str) -> str:
        return f"![{alt}]({self.save(fig, name)})"


# ------------------------------------------------------------------------------------------ sections


def _archs(snap: Snapshot, task: str) -> list[str]:
    present = {r.arch for r in snap.runs if r.task == task and r.suite != "reproduce"}
    return [a for a in ARCH_ORDER if a in present] + sorted(present - set(ARCH_ORDER) - {""})


def _tasks(snap: Snapshot) -> list[str]:
    return [t for t in snap.tasks() if any(best_run(snap, t, a) for a in _archs(snap, t))]


def longest_length(snap: Snapshot, run: RunRecord) -> tuple[int, float, float] | None:
    """(length, bit accuracy, whole-string accuracy) at the longest length tested, from the histories."""
    bits = dict(snap.history(run.run_id, "test_bit_acc_by_len"))
    if not bits:
        return None
    length = max(bits)
    return length, bits[length], dict(snap.history(run.run_id, "test_seq_acc_by_len")).get(length)


def comparison(snap: Snapshot, figures: Figures) -> str:
    """Item 1: one table per task, one row per architecture, best trial by validation."""
    out = ["## Comparison", "",
           "Best trial per architecture, chosen by validation accuracy (completed trials only); test numbers "
           "for that trial. Accuracies in %, Δ in points against the notebook (from the seed mean where every "
           "architecture has seeds, else from the best trial). Trials: completed / pruned / failed.", ""]
    if not _tasks(snap):
        return "\n".join([*out[:2], "No finished trial or `rnnbench train` run in these experiments.", ""])
    for task in _tasks(snap):
        rows, longest, trained = [], set(), set()
        seeded = {arch: seed_accs(snap, best_run(snap, task, arch)) for arch in _archs(snap, task)}
        with_seeds = any(seeded.values())
        numbers = headline(snap, task, _archs(snap, task))
        for arch in _archs(snap, task):
            run = best_run(snap, task, arch)
            if run is None:
                continue
            counts = trial_counts(snap, task, arch)
            trials = (f"{counts.get('COMPLETE', 0)} / {counts.get('PRUNED', 0)} / {counts.get('FAIL', 0)}"
                      if counts else "run")
            ref = NOTEBOOK_REFERENCE.get(task, {}).get(arch)
            acc = run.metric("test_acc")
            row = [arch, pct(acc)] + ([mean_pm(seeded[arch])] if with_seeds else [])
            if task == "addition":
                at = longest_length(snap, run)
                longest.add(at[0] if at else None)
                trained.add(run.param("max_train_length"))
                row += [pct(run.metric("test_seq_acc")), pct(at[1]) if at else "—", pct(at[2]) if at else "—"]
            n_params = run.metric("n_params")
            row += [run.param("hidden_size", "—"), run.param("num_layers", "—"), lr_text(run.param("lr")),
                    run.param("loss", "—"), "—" if n_params is None else f"{int(n_params):,}",
                    number(run.seconds_per_epoch), trials, number(ref),
                    signed(100 * numbers[arch][0] - ref if arch in numbers and ref is not None else None)]
            rows.append(row)
        if task == "addition":
            at = f"L={longest.pop()}" if len(longest) == 1 and None not in longest else "longest L"
            span = f"1..{trained.pop()}" if len(trained) == 1 else "train lengths"
            headers = ["arch", f"bit acc {span}", f"string acc {span}", f"bit acc {at}", f"string acc {at}"]
        else:
            headers = ["arch", "test acc"]
        if with_seeds:
            headers.insert(2, "seeds: mean ± std (n)")
        n_metrics = len(headers)
        headers += ["hidden", "layers", "lr", "loss", "params", "s / epoch", "trials", "notebook", "Δ"]
        right = [i for i in range(1, len(headers)) if i not in (n_metrics + 3, n_metrics + 6)]
        out += [f"### {task}", "", table(headers, rows, right), ""]
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
    top = max(scored, key=lambda arch: (mean_std(scored[arch])[0], -ARCH_ORDER.index(arch)
                                        if arch in ARCH_ORDER else 0))
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


# Issue 8's goals (mean over 3 seeds): what the reference results must reach; the report says plainly where not.
MNIST_GOALS = {"rnn": 97.5, "lstm": 99.0, "gru": 98.9, "birnn": 97.8, "bilstm": 99.1, "bigru": 99.0}
MNIST_BEST_SINGLE_GOAL = 99.2
ADDITION_LONG_GOAL = (("lstm", "gru"), 1000)  # 100 % whole-string accuracy at this length, trained on <= 20
ADDITION_SHORT_GOAL = (3, 98.0)  # trained on this length only: mean bit accuracy over 1..20 at least this
GOAL_SEEDS = 3


def _tried(snap: Snapshot, task: str, arch: str, run: RunRecord) -> str:
    counts = trial_counts(snap, task, arch) or {}
    seeds = confirmations(snap, run)
    epochs = {r.param("epochs") for r in seeds}
    seed_text = f"; {len(seeds)} seeds x {', '.join(sorted(epochs))} epochs" if seeds else "; no seed confirmation"
    preset = run.tags.get("preset")
    return (f"{sum(counts.values()) or 1} trials{f' ({preset})' if preset else ''}, best h{run.param('hidden_size')}"
            f"x{run.param('num_layers')} {run.param('loss')} lr {lr_text(run.param('lr'))} "
            f"{run.param('epochs')} epochs{seed_text}")


def _verdict(ok: bool | None, seeds: int) -> str:
    if ok is None:
        return "not measured"
    if seeds < GOAL_SEEDS:
        return f"{'yes' if ok else 'no'} ({seeds} of {GOAL_SEEDS} seeds)"
    return "**yes**" if ok else "**no**"


def goals(snap: Snapshot, figures: Figures) -> str:
    """The reference goals against what the store holds: met or missed, the number reached, what was tried."""
    rows = []
    if "mnist" in _tasks(snap):
        singles = []
        for arch, goal in MNIST_GOALS.items():
            run = best_run(snap, "mnist", arch)
            if run is None:
                rows.append([f"mnist {arch}: mean test acc ≥ {goal:.1f} %", "—", "not measured", "no run"])
                continue
            accs = seed_accs(snap, run)
            singles += [(a, arch) for a in accs] + [(run.metric("test_acc") or 0.0, arch)]
            mean = mean_std(accs)[0] if accs else None
            reached = mean_pm(accs) if accs else f"best trial {pct(run.metric('test_acc'))} (no seeds)"
            rows.append([f"mnist {arch}: mean test acc ≥ {goal:.1f} %", reached,
                         _verdict(None if mean is None else 100 * mean >= goal, len(accs)),
                         _tried(snap, "mnist", arch, run)])
        if singles:
            top, arch = max(singles)
            rows.append([f"mnist best single run ≥ {MNIST_BEST_SINGLE_GOAL:.1f} %", f"{pct(top)} ({arch})",
                         "**yes**" if 100 * top >= MNIST_BEST_SINGLE_GOAL else "**no**",
                         "trials and seed confirmations of every architecture"])
    if "addition" in _tasks(snap):
        long_archs, long_length = ADDITION_LONG_GOAL
        short_length, short_goal = ADDITION_SHORT_GOAL
        short = []
        for arch in _archs(snap, "addition"):
            run = best_run(snap, "addition", arch)
            if run is None:
                continue
            seeds = confirmations(snap, run)
            accs = [r.metric("test_acc") for r in seeds]
            worst = min(accs) if accs else None
            rows.append([f"addition {arch}: 100 % bit acc on 1..{run.param('max_train_length')}, every seed",
                         f"worst seed {pct(worst)}" if accs else f"best trial {pct(run.metric('test_acc'))} (no seeds)",
                         _verdict(None if worst is None else worst >= 1 - 1e-9, len(accs)),
                         _tried(snap, "addition", arch, run)])
            if arch in long_archs:
                at = [dict(snap.history(r.run_id, "test_seq_acc_by_len")).get(long_length) for r in seeds]
                tested = [value for value in at if value is not None]
                trial_at = dict(snap.history(run.run_id, "test_seq_acc_by_len")).get(long_length)
                if tested:
                    reached = f"worst seed {pct(min(tested))}"
                elif seeds or trial_at is None:
                    reached = f"length {long_length} not tested (add it to eval_lengths)"
                else:
                    reached = f"best trial {pct(trial_at)} (no seeds)"
                rows.append([f"addition {arch}: 100 % string acc at L={long_length}, trained on ≤ "
                             f"{run.param('max_train_length')}", reached,
                             _verdict(min(tested) >= 1 - 1e-9 if tested else None, len(tested)),
                             _tried(snap, "addition", arch, run)])
            fixed = seed_accs(snap, run, short_length)
            if fixed:
                short.append((mean_std(fixed)[0], arch, fixed))
        if short:
            mean, arch, values = max(short)
            rows.append([f"addition trained on L={short_length} only: mean bit acc 1..20 ≥ {short_goal:.0f} %",
                         f"{mean_pm(values)} ({arch}, best of {len(short)} architectures)",
                         _verdict(100 * mean >= short_goal, len(values)),
                         f"the best 1..20 configuration of each architecture retrained on length {short_length}"])
        else:
            rows.append([f"addition trained on L={short_length} only: mean bit acc 1..20 ≥ {short_goal:.0f} %", "—",
                         "not measured", f"no fixed-length confirmation (`rnnbench confirm --train-length "
                         f"{short_length}`)"])
    if not rows:
        return ""
    met = sum(row[2] == "**yes**" for row in rows)
    missed = sum(row[2] == "**no**" for row in rows)
    partial = sum(row[2].startswith(("yes (", "no (")) for row in rows)
    unmeasured = sum(row[2] == "not measured" for row in rows)
    summary = (f"All {len(rows)} goals met." if met == len(rows) else
               f"{met} of {len(rows)} goals met, {missed} missed, {partial} on fewer than {GOAL_SEEDS} seeds, "
               f"{unmeasured} not measured.")
    return "\n".join(["## Goals", "",
                      f"The reference goals (issue 8; means over {GOAL_SEEDS} seeds of the best configuration). "
                      + summary, "", table(["goal", "reached", "met?", "what was tried"], rows), ""])


def _winner_line(task: str, numbers: dict[str, tuple[float, list[float]]]) -> list[str]:
    """The winner by ``headline``'s numbers, its margin, and whether the seeds can tell it from the runner-up."""
    scored = [(acc, arch) for arch, (acc, _) in numbers.items()]
    if not scored:
        return []
    scored.sort(key=lambda item: (-item[0], ARCH_ORDER.index(item[1]) if item[1] in ARCH_ORDER else 99))
    metric = "mean bit accuracy" if task == "addition" else "test accuracy"
    (top, winner), lines = scored[0], []
    seeds = numbers[winner][1]
    basis = f"mean of {len(seeds)} seeds" if seeds else "best trial"
    if len(scored) == 1:
        return [f"- **{task}**: only {winner} has a finished run ({metric} {pct(top)} %, {basis})."]
    second, runner_up = scored[1]
    margin = 100 * (top - second)
    tied = [arch for acc, arch in scored if 100 * (top - acc) < TIE_POINTS]
    if len(tied) > 1:
        lines.append(f"- **{task}**: {', '.join(tied)} tie within {TIE_POINTS:g} points at {pct(top)} % {metric} "
                     f"({basis}); the weakest, {scored[-1][1]}, reaches {pct(scored[-1][0])} %.")
    else:
        noise = ""
        if len(seeds) >= 2 and len(numbers[runner_up][1]) >= 2:
            same = within_noise(seeds, numbers[runner_up][1])[0]
            noise = (", within the seeds' noise (95 % Welch t)" if same else ", beyond the seeds' noise (95 % "
                     "Welch t)")
        lines.append(f"- **{task}**: {winner} wins with {pct(top)} % {metric} ({basis}), {margin:.2f} points ahead "
                     f"of {runner_up} ({pct(second)} %){noise}; the weakest, {scored[-1][1]}, reaches "
                     f"{pct(scored[-1][0])} %.")
    return lines


def _pair_line(snap: Snapshot, task: str, what: str, pairs: list[tuple[str, str, str, str]]) -> list[str]:
    """One finding comparing pairs of best runs (name_a, run key a, name_b, run key b)."""
    diffs = []
    for label_a, a, label_b, b in pairs:
        if a is None or b is None or a.metric("test_acc") is None or b.metric("test_acc") is None:
            continue
        diffs.append((label_a, label_b, 100 * (b.metric("test_acc") - a.metric("test_acc"))))
    if not diffs:
        return []
    helped = [d for d in diffs if d[2] >= TIE_POINTS]
    hurt = [d for d in diffs if d[2] <= -TIE_POINTS]
    detail = ", ".join(f"{x} → {y} {d:+.2f}" for x, y, d in diffs)
    if len(helped) == len(diffs):
        verdict = "helped"
    elif len(hurt) == len(diffs):
        verdict = "hurt"
    elif not helped and not hurt:
        verdict = f"made no difference beyond {TIE_POINTS:g} points"
    else:
        verdict = f"helped in {len(helped)} of {len(diffs)} cases and hurt in {len(hurt)}"
    return [f"- **{task}**: {what} {verdict} ({detail} points)."]


def findings(snap: Snapshot, figures: Figures) -> str:
    """Item 5: findings worded from the numbers: best runs chosen by validation and compared on test; the
    winner and the notebook comparison by seed means where every architecture of the task has seeds."""
    lines: list[str] = []
    for task in _tasks(snap):
        numbers = headline(snap, task, _archs(snap, task))
        lines += _winner_line(task, numbers)
        bests = {arch: best_run(snap, task, arch) for arch in _archs(snap, task)}
        pairs = [(uni, bests.get(uni), f"bi{uni}", bests.get(f"bi{uni}")) for uni in ("rnn", "lstm", "gru")]
        lines += _pair_line(snap, task, "bidirectionality", pairs)
        depth = []
        for arch in _archs(snap, task):
            pool = candidates(snap, task, arch)
            shallow = best_of(r for r in pool if r.param("num_layers") == "1")
            deep = best_of(r for r in pool if r.param("num_layers") not in ("", "1"))
            if shallow and deep:
                depth.append((f"{arch} 1 layer", shallow, f"{deep.param('num_layers')} layers", deep))
        lines += _pair_line(snap, task, "depth (best 1-layer vs best deeper trial)", depth)
        losses = [(f"{arch} ce", best_run(snap, task, arch, loss="ce"), "mse", best_run(snap, task, arch, loss="mse"))
                  for arch in _archs(snap, task)]
        lines += _pair_line(snap, task, "MSE instead of cross-entropy", losses)
        refs = [(arch, NOTEBOOK_REFERENCE.get(task, {}).get(arch), acc) for arch, (acc, _) in numbers.items()]
        refs = [(arch, ref, acc) for arch, ref, acc in refs if ref is not None]
        if refs:
            beaten = [arch for arch, ref, acc in refs if 100 * acc > ref]
            top, ref, acc = max(refs, key=lambda item: (100 * item[2] - item[1], item[0]))
            closest = "largest gain" if beaten else "closest"
            basis = "seed means" if numbers[top][1] else "best trials"
            lines.append(f"- **{task}**: beats the notebook for {len(beaten)} of {len(refs)} architectures it "
                         f"reported ({basis}); {closest}: {top} {100 * acc - ref:+.2f} points ({pct(acc)} % "
                         f"against {ref:.2f} %).")
        if task == "addition":
            at = {arch: longest_length(snap, run) for arch, run in bests.items() if run is not None}
            at = {arch: value for arch, value in at.items() if value is not None}
            if at:
                length = max(value[0] for value in at.values())
                perfect = [arch for arch, value in at.items() if value[0] == length and value[1] >= 0.999]
                best_arch = max(at, key=lambda arch: (at[arch][0] == length, at[arch][1]))
                lines.append(f"- **{task}**: at length {length}, {len(perfect)} of {len(at)} architectures keep "
                             f"≥ 99.9 % bit accuracy; best {best_arch} at {pct(at[best_arch][1])} %.")
    if not lines:
        return ""
    return "\n".join(["## Findings", "", *lines, ""])


def _mean_history(snap: Snapshot, runs: list[RunRecord], key: str) -> list[tuple[int, float]]:
    """Per-step mean over runs, at the steps every run logged (seeds of one configuration)."""
    histories = [dict(snap.history(r.run_id, key)) for r in runs]
    steps = set.intersection(*(set(h) for h in histories)) if histories else set()
    return [(step, sum(h[step] for h in histories) / len(histories)) for step in sorted(steps)]


def _length_series(snap: Snapshot, run: RunRecord, length: int | None = None) -> tuple[list, list, str]:
    """(bit, string) accuracy by length: the mean over seed confirmations when there are any, else the run's."""
    seeds = confirmations(snap, run, length)
    if seeds:
        return (_mean_history(snap, seeds, "test_bit_acc_by_len"), _mean_history(snap, seeds, "test_seq_acc_by_len"),
                f"mean of {len(seeds)} seeds")
    if length is not None:
        return [], [], ""
    return snap.history(run.run_id, "test_bit_acc_by_len"), snap.history(run.run_id, "test_seq_acc_by_len"), \
        "best trial"


def _arch_key(arch: str) -> tuple:
    return (ARCH_ORDER.index(arch) if arch in ARCH_ORDER else len(ARCH_ORDER), arch)


def length_plots(snap: Snapshot, figures: Figures) -> str:
    """Item 2 and the headline: bit and whole-string accuracy against length, as far as the runs were tested."""
    if "addition" not in _tasks(snap):
        return ""
    bits, seqs, train_max, fixed_bits, fixed_seqs = {}, {}, set(), {}, {}
    rows, regime = [], {}  # label -> (arch, training length or 0 for the 1..max runs), for line styles
    for arch in _archs(snap, "addition"):
        run = best_run(snap, "addition", arch)
        if run is None:
            continue
        bit, seq, what = _length_series(snap, run)
        bits[f"{arch} ({what})"], seqs[f"{arch} ({what})"] = bit, seq
        regime[f"{arch} ({what})"] = (arch, 0)
        train_max.add(run.param("max_train_length"))
        span = f"1..{run.param('max_train_length')}"
        if bit:
            accs = seed_accs(snap, run) or [run.metric("test_acc")]
            rows.append([arch, span, what, mean_pm(accs), str(bit[-1][0]), pct(bit[-1][1]),
                         pct(dict(seq).get(bit[-1][0]))])
        for length in snap.confirm_lengths(run.run_id):
            fbit, fseq, fwhat = _length_series(snap, run, length)
            if fbit:
                label = f"{arch} trained on L={length} ({fwhat})"
                fixed_bits[label], fixed_seqs[label] = fbit, fseq
                regime[label] = (arch, length)
                rows.append([arch, f"{length} only", fwhat, mean_pm(seed_accs(snap, run, length)),
                             str(fbit[-1][0]), pct(fbit[-1][1]), pct(dict(fseq).get(fbit[-1][0]))])
    if not any(bits.values()):
        return ""
    from .report_figures import accuracy_by_length

    longest = int(train_max.pop()) if len(train_max) == 1 and next(iter(train_max)).isdigit() else None
    reach = max((points[-1][0] for points in bits.values() if points), default=0)
    out = ["## Length generalisation (addition)", "",
           f"Trained on lengths up to {longest or 'the dashed line'}, tested up to length {reach}: bit and "
           "whole-string accuracy of each architecture's best configuration (the mean over its seed "
           "confirmations where `rnnbench confirm` ran, else the best trial). Lengths beyond the dashed line "
           "were never trained on.", ""]
    fig = accuracy_by_length(bits, seqs, longest, f"Addition: accuracy against string length, up to {reach}")
    out += [figures.image(fig, "addition_accuracy_by_length", "accuracy against length"), ""]
    if fixed_bits:
        fixed_archs = sorted({regime[label][0] for label in fixed_bits}, key=_arch_key)
        both_bits = {**{k: v for k, v in bits.items() if regime[k][0] in fixed_archs}, **fixed_bits}
        both_seqs = {**{k: v for k, v in seqs.items() if k in both_bits}, **fixed_seqs}
        # One colour per architecture, one dash pattern per training regime.
        dashes = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
        lengths = sorted({regime[label][1] for label in both_bits})
        styles = {label: {"color": f"C{fixed_archs.index(regime[label][0]) % 10}",
                          "ls": dashes[lengths.index(regime[label][1]) % len(dashes)]} for label in both_bits}
        fig = accuracy_by_length(both_bits, both_seqs, None,
                                 "Addition: trained on one length only (the notebook's experiments) vs 1..20",
                                 styles=styles)
        out += ["The notebook's fixed-length experiments: the same configurations trained on strings of one "
                "length only, tested on every length.", "",
                figures.image(fig, "addition_fixed_length_by_length", "fixed-length training against length"), ""]
    out += [table(["arch", "trained on", "series", f"bit acc 1..{longest or 'max'}: mean ± std (n)", "longest L",
                   "bit acc at L", "string acc at L"], rows, [3, 4, 5, 6]), ""]
    return "\n".join(out)


def learning_curves(snap: Snapshot, figures: Figures) -> str:
    """Item 3: validation accuracy per epoch and training loss per iteration of the best runs."""
    from .report_figures import curves

    out = ["## Learning curves", ""]
    for task in _tasks(snap):
        bests = {arch: run for arch in _archs(snap, task) if (run := best_run(snap, task, arch))}
        val = {arch: snap.history(run.run_id, "val_acc") for arch, run in bests.items()}
        loss = {f"{arch} ({run.param('loss')})": snap.history(run.run_id, "train_loss") for arch, run in bests.items()}
        if any(val.values()):
            fig = curves(val, xlabel="epoch", ylabel="validation accuracy (%)", percent=True,
                         title=f"{task}: validation accuracy of the best trial per architecture")
            out += [figures.image(fig, f"{task}_val_acc", f"{task} validation accuracy"), ""]
        if any(loss.values()):
            fig = curves(loss, xlabel="iteration", ylabel="training loss (log scale)", log_y=True, markers=False,
                         title=f"{task}: training loss of the best trial per architecture")
            out += [figures.image(fig, f"{task}_train_loss", f"{task} training loss"), ""]
    return "\n".join(out) if len(out) > 2 else ""


def offline(section=None, *, prefetch: Callable[[Snapshot], None] | None = None):
    """Mark a section that reads only the loaded snapshot: ``render`` may run it in a forked process on the
    second core while the others fetch histories and draw. ``prefetch(snap)`` caches the metric histories it
    needs, in this process before the fork; in the fork the store is out of reach."""
    def mark(function):
        function.offline = True
        function.prefetch = prefetch
        return function

    return mark(section) if section is not None else mark


@offline
def loss_comparison(snap: Snapshot, figures: Figures) -> str:
    """Item 4: per architecture and task, the best trial with each loss."""
    from .report_figures import loss_comparison as draw

    out = ["## Loss: cross-entropy against MSE", "",
           "Best trial with each loss (chosen by validation), test accuracy in %; Δ = ce − mse in points.", ""]
    drawn = False
    for task in _tasks(snap):
        rows, values = [], {}
        for arch in _archs(snap, task):
            runs = {loss: best_run(snap, task, arch, loss=loss) for loss in LOSS_ORDER}
            accs = {loss: run.metric("test_acc") if run else None for loss, run in runs.items()}
            if all(v is None for v in accs.values()):
                continue
            values[arch] = accs
            diff = 100 * (accs["ce"] - accs["mse"]) if None not in (accs["ce"], accs["mse"]) else None
            rows.append([arch, pct(accs["ce"]), runs["ce"].param("hidden_size") if runs["ce"] else "—",
                         pct(accs["mse"]), runs["mse"].param("hidden_size") if runs["mse"] else "—", signed(diff)])
        if not rows:
            continue
        drawn = True
        metric = "mean bit accuracy (%)" if task == "addition" else "test accuracy (%)"
        fig = draw(values, LOSS_ORDER, f"{task}: best trial per loss", metric)
        out += [f"### {task}", "", table(["arch", "ce", "ce hidden", "mse", "mse hidden", "Δ"], rows, [1, 2, 3, 4, 5]),
                "", figures.image(fig, f"{task}_loss_comparison", f"{task} loss comparison"), ""]
    return "\n".join(out) if drawn else ""


def _importances(trials: list) -> dict[str, float] | str:
    """Parameter importances (fANOVA, seeded) over completed trials, or the reason there are none."""
    import optuna

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if len(complete) < 2:
        return f"importances need at least 2 completed trials ({len(complete)} so far)"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(complete)
    try:
        try:
            import sklearn  # noqa: F401  (fANOVA's random forest)

            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=8, seed=0)
        except ImportError:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as error:  # too few distinct values, constant objective, ...
        return f"importances unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if not values:
        return "importances unavailable (no parameter varied)"
    # Rounded and sorted so that the markdown does not depend on float noise.
    rounded = sorted(((k, round(float(v), 2)) for k, v in values.items()), key=lambda kv: (-kv[1], kv[0]))
    return dict(rounded)


def _trials_from_runs(runs: list[RunRecord]) -> list:
    """FrozenTrials rebuilt from trial runs (objective: best_val_acc), over the params that varied."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    complete = [r for r in runs if r.trial_state == "COMPLETE" and r.status == "FINISHED"
                and r.metric("best_val_acc") is not None]
    varied = sorted(k for k in set().union(*(r.params for r in complete)) - NOT_HYPERPARAMETERS
                    if len({r.param(k) for r in complete}) > 1)
    distributions = {}
    for key in varied:
        values = sorted({r.param(key) for r in complete})
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            distributions[key] = CategoricalDistribution(values)
            continue
        if all(v.lstrip("-").isdigit() for v in values):
            distributions[key] = IntDistribution(int(min(numbers)), int(max(numbers)))
        else:
            low, high = min(numbers), max(numbers)
            distributions[key] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
    trials = []
    for r in sorted(complete, key=lambda r: (r.trial_number or 0, r.run_id)):
        params = {}
        for key, dist in distributions.items():
            raw = r.param(key)
            params[key] = (raw if isinstance(dist, CategoricalDistribution)
                           else int(raw) if isinstance(dist, IntDistribution) else float(raw))
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions,
                                                value=r.metric("best_val_acc")))
    return trials


@offline
def studies(snap: Snapshot, figures: Figures) -> str:
    """Item 5: per study, the optimisation history and parameter importances."""
    from .report_figures import importances, optimisation_histories

    out = ["## Studies", ""]
    any_study = False
    for task in _tasks(snap):
        trials = snap.trials(task)
        names = sorted({r.study for r in trials if r.study},
                       key=lambda n: (ARCH_ORDER.index(_study_arch(trials, n)) if _study_arch(trials, n) in ARCH_ORDER
                                      else 99, n))
        if not names:
            continue
        any_study = True
        rows, histories, weights, notes = [], {}, {}, []
        for name in names:
            runs = [r for r in trials if r.study == name]
            complete = sorted((r.trial_number, r.metric("best_val_acc")) for r in runs
                              if r.trial_state == "COMPLETE" and r.status == "FINISHED"
                              and r.trial_number is not None and r.metric("best_val_acc") is not None)
            pruned = sorted((r.trial_number, r.metric("val_acc")) for r in runs if r.trial_state == "PRUNED"
                            and r.trial_number is not None and r.metric("val_acc") is not None)
            histories[name] = {"complete": complete, "pruned": pruned}
            stats = snap.studies.get(name)
            counts = stats.states if stats else Counter(r.trial_state for r in runs)
            best = best_of(runs)
            preset = sorted({r.tags["preset"] for r in snap.runs if r.study == name and "preset" in r.tags})
            rows.append([name, _study_arch(trials, name), str(counts.get("COMPLETE", 0)), str(counts.get("PRUNED", 0)),
                         str(counts.get("FAIL", 0)), str(sum(counts.values())),
                         pct(best.metric("best_val_acc")) if best else "—",
                         str(best.trial_number) if best and best.trial_number is not None else "—",
                         ", ".join(preset) or "—"])
            source = stats.trials if stats and stats.trials else _trials_from_runs(runs)
            result = _importances(source)
            if isinstance(result, str):
                notes.append(f"- {name}: {result}.")
            else:
                weights[name] = result
                notes.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()) + ".")
        out += [f"### {task}", "",
                table(["study", "arch", "complete", "pruned", "failed", "all", "best val acc", "best trial",
                       "preset"], rows, [2, 3, 4, 5, 6, 7]), "",
                figures.image(optimisation_histories(histories, f"{task}: optimisation history per study"),
                              f"{task}_optimisation_history", f"{task} optimisation history"), "",
                "Parameter importances (fANOVA over completed trials; objective: best validation accuracy):", "",
                *notes, ""]
        if weights:
            out += [figures.image(importances(weights, f"{task}: parameter importances per study"),
                                  f"{task}_param_importances", f"{task} parameter importances"), ""]
    return "\n".join(out) if any_study else ""


def _study_arch(trials: list[RunRecord], name: str) -> str:
    return min((r.arch for r in trials if r.study == name), default="")


def _prefetch_reproduction(snap: Snapshot) -> None:
    from .reproduce import prefetch_curves

    prefetch_curves(snap)


@offline(prefetch=_prefetch_reproduction)
def reproduction(snap: Snapshot, figures: Figures) -> str:
    """The notebook's experiments re-run: benchmark.reproduce owns their table, notes and redrawn figures."""
    from .reproduce import reproduce_section

    return figures.adopt(reproduce_section(snap, figures.folder))


def digits(snap: Snapshot, figures: Figures) -> str:
    """Random test digits with the best MNIST model's predictions, and its confusion matrix."""
    from .data import bad_files, default_data_dir

    # Drawn only where the test images are on disk (a report never downloads) and the best run kept a checkpoint.
    if not any(r.task == "mnist" and r.status == "FINISHED" for r in snap.runs) or bad_files(default_data_dir()):
        return ""
    from .predict import best_mnist, digits_section  # imports torch: only when there is something to draw
    from .tracking import CHECKPOINT_ARTIFACT, client_for

    client = client_for(snap.tracking_uri)
    found = best_mnist(snap.runs)
    folder = CHECKPOINT_ARTIFACT.rsplit("/", 1)[0]
    if not found or not any(a.path == CHECKPOINT_ARTIFACT for a in client.list_artifacts(found.run_id, folder)):
        return ""
    return figures.adopt(digits_section(client, figures.folder, run_id=found.run_id))


def provenance(snap: Snapshot, figures: Figures) -> str:
    """Item 6: when, which commits, library versions, hardware, preset and how many runs."""
    import matplotlib
    import mlflow
    import optuna

    def values(tag: str, runs: Iterable[RunRecord] | None = None) -> str:
        counts = Counter(r.tags[tag] for r in (snap.runs if runs is None else runs) if tag in r.tags)
        return ", ".join(f"{v} ({n})" if len(counts) > 1 else v for v, n in sorted(counts.items())) or "—"

    statuses = Counter(r.status for r in snap.runs)
    suites = Counter(r.suite or "untagged" for r in snap.runs)
    lines = ["## Provenance", ""]
    if snap.generated_at:
        lines.append(f"- Generated: {snap.generated_at}")
    lines += [
        f"- Tracking store: {_store_text(snap.tracking_uri)}; experiments: {', '.join(snap.experiments)}",
        f"- {snap.storage_note}",
        f"- Runs: {len(snap.runs)} (" + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + "; by suite: "
        + ", ".join(f"{k} {v}" for k, v in sorted(suites.items())) + ")",
        f"- Git commits of the runs (runs each): {values('git_commit')}",
        f"- First run start to last run end: {_span(snap.runs)}",
        f"- Preset: {values('preset', [r for r in snap.runs if r.role == 'study'])}",
        f"- Versions in the runs: python {values('python_version')}; torch {values('torch_version')}; "
        f"mlflow {values('mlflow_version')}; optuna {values('optuna_version')}; "
        f"rnnbench {values('rnnbench_version')}",
        f"- Hardware in the runs: processor {values('processor')}; device {values('device')}; "
        f"torch threads {values('torch_threads')}",
        f"- Report written by rnnbench on python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"optuna {optuna.__version__}, matplotlib {matplotlib.__version__}",
        "",
    ]
    return "\n".join(lines)


def _span(runs: list[RunRecord]) -> str:
    """First run's start to last run's end (includes any idle time between sessions)."""
    starts = [r.start_time for r in runs if r.start_time]
    ends = [r.end_time for r in runs if r.end_time]
    if not starts or not ends:
        return "—"
    first, last = min(starts), max(ends)
    stamp = "%Y-%m-%d %H:%M UTC"
    return (f"{(last - first) / 60_000:.1f} min ({time.strftime(stamp, time.gmtime(first / 1000))} to "
            f"{time.strftime(stamp, time.gmtime(last / 1000))})")


def _store_text(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{_short(uri.removeprefix('sqlite:///'))}"
    return uri


Section = Callable[[Snapshot, Figures], str]
SECTIONS: list[Section] = [comparison, goals, findings, length_plots, learning_curves, loss_comparison, studies,
                           reproduction, digits, provenance]


# ----------------------------------------------------------------------------------------- generate


def render(snap: Snapshot, figures: Figures, sections: list[Section] | None = None,
           worker: OfflineWorker | None = None) -> str:
    finished = sum(r.status == "FINISHED" for r in snap.runs)
    parts = ["# rnnbench report", "",
             f"{len(snap.runs)} runs ({finished} finished) in {', '.join(snap.experiments)}; "
             f"tasks: {', '.join(_tasks(snap)) or 'none with a finished run'}.", ""]
    sections = SECTIONS if sections is None else sections
    texts = _run_sections(snap, figures, sections, worker)
    parts += [text.rstrip("\n") + "\n" for text in texts if text]
    return "\n".join(parts).rstrip("\n") + "\n"


# What the offline sections import (matplotlib; Optuna and scikit-learn for fANOVA): the worker loads them
# while this process imports MLflow and reads the store.
OFFLINE_IMPORTS = ("benchmark.report_figures", "optuna", "sklearn")


class OfflineWorker:
    """A forked process that draws the ``@offline`` sections on the second core.

    Forked before the store is read (``write_report``), it imports OFFLINE_IMPORTS while this process
    imports MLflow and loads the runs; then it receives the snapshot through a pipe, without its client
    (an inherited SQLite connection must not serve two processes), and sends back markdown. One job.
    """

    def __init__(self):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        job_receiver, self._job_sender = context.Pipe(duplex=False)
        self._result_receiver, result_sender = context.Pipe(duplex=False)
        self._process = context.Process(target=self._serve, args=(job_receiver, result_sender), daemon=True)
        self._process.start()
        job_receiver.close()
        result_sender.close()
        self._submitted = False

    @staticmethod
    def available() -> bool:
        import multiprocessing

        return (os.cpu_count() or 1) >= 2 and "fork" in multiprocessing.get_all_start_methods()

    @staticmethod
    def _serve(jobs, results) -> None:
        import importlib

        for name in OFFLINE_IMPORTS:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        try:
            job = jobs.recv()
        except EOFError:
            return
        if job is None:
            return
        snap, folder, sections = job
        figures = Figures(folder)
        try:
            results.send(("ok", [section(snap, figures) for section in sections], figures.written))
        except BaseException as error:  # report it to the parent rather than die silently
            results.send(("error", f"{type(error).__name__}: {error}", []))

    def submit(self, snap: Snapshot, figures: Figures, sections: list[Section]) -> None:
        self._job_sender.send((dataclasses.replace(snap, client=None), figures.folder, sections))
        self._submitted = True

    def result(self) -> tuple[list[str], list[str]]:
        """The sections' markdown in order, and the figures they wrote."""
        try:
            status, texts, written = self._result_receiver.recv()
        except EOFError:
            raise RuntimeError("the report's offline sections died without an answer") from None
        if status != "ok":
            raise RuntimeError(f"report section failed: {texts}")
        return texts, written

    def close(self) -> None:
        if not self._submitted:
            with contextlib.suppress(OSError):
                self._job_sender.send(None)
        self._job_sender.close()
        self._result_receiver.close()
        self._process.join()

    def __enter__(self) -> OfflineWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run_sections(snap: Snapshot, figures: Figures, sections: list[Section],
                  worker: OfflineWorker | None = None) -> list[str]:
    """Every section's markdown, in order; the offline ones in an OfflineWorker where one can run (the
    figures are the cost; the markdown is the same either way)."""
    background = [s for s in sections if getattr(s, "offline", False)]
    if len(background) in (0, len(sections)) or not OfflineWorker.available():
        return [section(snap, figures) for section in sections]
    for section in background:
        if section.prefetch:
            section.prefetch(snap)
    own = worker is None
    worker = worker or OfflineWorker()
    try:
        worker.submit(snap, figures, background)
        texts = {s: s(snap, figures) for s in sections if s not in background}
        result, written = worker.result()
    finally:
        if own:
            worker.close()
    texts.update(zip(background, result, strict=True))
    figures.written = sorted(set(figures.written) | set(written))
    return [texts[s] for s in sections]


def write_report(out: Path | str = "reports", *, tracking_uri: str | None = None, storage: str | None = None,
                 experiments: Iterable[str] | None = None, timestamp: bool = True) -> tuple[Path, Snapshot, Figures]:
    """Load the store, render every section, write report.md atomically; returns its path."""
    out = Path(out)
    with OfflineWorker() if OfflineWorker.available() else contextlib.nullcontext() as worker:
        snap = load_snapshot(tracking_uri, experiments, storage, timestamp=timestamp)
        figures = Figures(out / "figures")
        markdown = render(snap, figures, worker=worker)
    path = out / "report.md"
    write_atomic(path, markdown)
    return path, snap, figures

