"""Running the report's sections: those marked ``@offline`` in a forked process on the second core.

Example: rnnbench report --out reports/   # studies, losses and the notebook's figures drawn in a fork

An offline section reads only the loaded snapshot (no store access), so it can be drawn in a process
forked before the store is read (``OfflineWorker``): the fork imports the plotting libraries while this
process imports MLflow and loads the runs, then draws while this process fetches histories for the other
sections. The markdown is the same either way; only the wall time differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

from .markdown import Figures
from .snapshot import Snapshot

Section = Callable[[Snapshot, Figures], str]
# What the offline sections import (matplotlib; Optuna and scikit-learn for fANOVA): the worker loads them
# while this process imports MLflow and reads the store.
OFFLINE_IMPORTS = ("benchmark.report.figures", "optuna", "sklearn")


def offline(section=None, *, prefetch: Callable[[Snapshot], None] | None = None):
    """Mark a section that reads only the loaded snapshot: ``run_sections`` may run it in a forked process on
    the second core while the others fetch histories and draw. ``prefetch(snap)`` caches the metric histories
    it needs, in this process before the fork; in the fork the store is out of reach."""
    def mark(function):
        function.offline = True
        function.prefetch = prefetch
        return function

    return mark(section) if section is not None else mark


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


def run_sections(snap: Snapshot, figures: Figures, sections: list[Section],
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
