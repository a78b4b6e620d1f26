"""The markdown report: comparison tables, figures, study insight and provenance, from the tracking store.

Example: rnnbench report --out reports/ --no-timestamp

``snapshot`` loads the store, ``select`` chooses the runs every table shows, ``sections`` write the
markdown through ``markdown`` and ``figures``, ``worker`` draws the offline ones in a fork and ``build``
puts them in order.
"""

from .build import SECTIONS, render, write_report
from .markdown import Figures
from .select import best_of
from .snapshot import ReportError, RunRecord, Snapshot, load_snapshot

__all__ = ["SECTIONS", "Figures", "ReportError", "RunRecord", "Snapshot", "best_of", "load_snapshot", "render",
           "write_report"]
