"""The report: every section in order over one loaded snapshot, written to report.md atomically.

Example: rnnbench report --out reports/ --no-timestamp

The report is the ordered list ``SECTIONS``: each section is a function of a loaded ``Snapshot`` and a
``Figures`` folder that returns markdown (or "" to leave itself out), so new sections plug in without
touching the others; those marked ``@offline`` are drawn in a forked process (``worker``). Everything is
sorted and formatted with fixed precision: the same store gives byte-identical markdown, apart from the
one generation-time line (``--no-timestamp``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..config import ConfigError
from ..files import write_atomic
from ..schema import RunStatus
from .markdown import Figures, plural
from .sections.comparison import comparison
from .sections.curves import learning_curves
from .sections.digits import digits
from .sections.findings import findings
from .sections.goals import goals
from .sections.lengths import length_plots
from .sections.losses import loss_comparison
from .sections.provenance import provenance
from .sections.reproduction import reproduction
from .sections.studies import studies
from .select import reported_tasks
from .snapshot import Snapshot, load_snapshot
from .worker import OfflineWorker, Section, run_sections

HOW_TO_READ = (
    "**How to read this report.** Each task's architectures were tuned by Optuna studies (or trained once "
    "with `rnnbench train`); each 'best' is the completed trial with the highest validation accuracy (without "
    "trials, the best train run), and every number shown for it is measured on the held-out test set. "
    "Accuracies are in %, differences in points. A best trial is one draw: where `rnnbench confirm` retrained "
    "it with fresh seeds, the seed mean ± std is the number to trust, and differences within the seeds' noise "
    "are flagged as such. Each finding says how many runs it rests on; with few trials per study, read the "
    "optimisation histories as hints, not results. Provenance (commits, versions, hardware) closes the report.")

SECTIONS: list[Section] = [comparison, goals, findings, length_plots, learning_curves, loss_comparison, studies,
                           reproduction, digits, provenance]


def render(snap: Snapshot, figures: Figures, sections: list[Section] | None = None,
           worker: OfflineWorker | None = None) -> str:
    finished = sum(r.status == RunStatus.FINISHED for r in snap.runs)
    parts = ["# rnnbench report", "",
             f"{plural(len(snap.runs), 'run')} ({finished} finished) in {', '.join(snap.experiments)}; "
             f"tasks: {', '.join(reported_tasks(snap)) or 'none with a finished run'}.", "",
             HOW_TO_READ, ""]
    sections = SECTIONS if sections is None else sections
    texts = run_sections(snap, figures, sections, worker)
    parts += [text.rstrip("\n") + "\n" for text in texts if text]
    return "\n".join(parts).rstrip("\n") + "\n"


def check_writable(folder: Path) -> None:
    """One line, before anything is read or written, when ``folder`` could not be created or written."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = ("is not a folder" if not existing.is_dir() else "is read-only" if not os.access(existing, os.W_OK)
               else None)
    if problem:
        raise ConfigError(f"cannot write the report to {folder.parent}: {existing} {problem}; pass --out a folder "
                          "you can write")


def write_report(out: Path | str = "reports", *, tracking_uri: str | None = None, storage: str | None = None,
                 experiments: Iterable[str] | None = None, timestamp: bool = True) -> tuple[Path, Snapshot, Figures]:
    """Load the store, render every section, write report.md atomically; returns its path."""
    out = Path(out)
    check_writable(out / "figures")
    with OfflineWorker() if OfflineWorker.available() else contextlib.nullcontext() as worker:
        snap = load_snapshot(tracking_uri, experiments, storage, timestamp=timestamp)
        figures = Figures(out / "figures")
        markdown = render(snap, figures, worker=worker)
    path = out / "report.md"
    write_atomic(path, markdown)
    return path, snap, figures
