"""Markdown pieces of the report: fixed-precision numbers, tables, and the figures folder.

Example: rnnbench report --out reports/   # every table cell and figure link goes through here

Every number is written with fixed precision, so the same store gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..files import save_figure
from ..stats import mean_std
from ..store import mask_url


def mean_pm(values: list[float]) -> str:
    """'mean ± std (n)' in %, sample std; '—' without values; one value has no spread to show."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (n=1)"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({len(values)})"


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 trial', '2 trials', '0 trials'; ``words`` for irregular plurals ('study', 'studies')."""
    return f"{count} {word if count == 1 else words or word + 's'}"


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


def shown_location(location, store: Path | str | None = None) -> str:
    """A store, journal or database location as the report prints it, never with the absolute folders of the
    machine that wrote it: relative to the tracking store's folder ``store`` where it lies in it, else to the
    working directory, else masked to '…/name'. Server URLs keep their host, their password masked."""
    text = mask_url(str(location))
    scheme = next((s for s in ("sqlite:///", "file://") if text.startswith(s)), "")
    if "://" in text and not scheme:
        return text
    path = Path(text.removeprefix(scheme))
    try:
        resolved = path.resolve()
    except OSError:
        resolved = path
    if store is not None:
        try:
            return f"{scheme}{resolved.relative_to(Path(store).resolve())} (in the tracking store's folder)"
        except ValueError:
            pass
    try:
        return f"{scheme}{resolved.relative_to(Path.cwd().resolve())}"
    except ValueError:
        return f"{scheme}{path}" if not path.is_absolute() else f"{scheme}…/{path.name}"


class Figures:
    """The report's figures folder: every section saves its figures here, atomically, and it records their
    names (``written``); links are relative to report.md."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []

    def save(self, fig, name: str) -> str:
        save_figure(fig, self.folder / f"{name}.png")
        self.written.append(f"{name}.png")
        return f"{self.folder.name}/{name}.png"

    def image(self, fig, name: str, alt: str) -> str:
        return f"![{alt}]({self.save(fig, name)})"
