"""Provenance: when, which commits, library versions, hardware, preset and how many runs.

Example: rnnbench report --out reports/ --no-timestamp   # the "## Provenance" section, without its one dated line
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Iterable

from ...schema import Role, Tag
from ..markdown import Figures, plural, shown_location
from ..snapshot import RunRecord, Snapshot


def provenance(snap: Snapshot, figures: Figures | None) -> str:
    """When, which commits, library versions, hardware, preset and how many runs."""
    # Only for their version numbers.
    import matplotlib
    import mlflow
    import optuna

    def values(tag: str, runs: Iterable[RunRecord] | None = None, counted: bool = False) -> str:
        counts = Counter(r.tags[tag] for r in (snap.runs if runs is None else runs) if tag in r.tags)
        return ", ".join(f"{v} ({plural(n, 'run')})" if counted or len(counts) > 1 else v
                         for v, n in sorted(counts.items())) or "—"

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
        f"- Git commits of the runs: {values(Tag.GIT_COMMIT, counted=True)}",
        f"- First run start to last run end: {_span(snap.runs)}",
        f"- Preset: {values(Tag.PRESET, [r for r in snap.runs if r.role == Role.STUDY])}",
        f"- Versions in the runs: python {values(Tag.PYTHON_VERSION)}; torch {values(Tag.TORCH_VERSION)}; "
        f"mlflow {values(Tag.MLFLOW_VERSION)}; optuna {values(Tag.OPTUNA_VERSION)}; "
        f"rnnbench {values(Tag.RNNBENCH_VERSION)}",
        f"- Hardware in the runs: processor {values(Tag.PROCESSOR)}; device {values(Tag.DEVICE)}; "
        f"torch threads {values(Tag.TORCH_THREADS)}",
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
    return shown_location(uri)
