"""Atomic file writes: a reader (or a crash) never sees half a file.

Example: rnnbench report   # report.md and every figure go through write_atomic / save_figure
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path | str, payload: bytes | str) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial",
                                     delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.replace(handle.name, path)
    except OSError:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def cache_root() -> Path:
    """Where rnnbench keeps what it can rebuild (the fused C++ cells, auto's kernel picks): $RNNBENCH_CACHE, else
    ~/.cache/rnnbench."""
    return Path(os.environ.get("RNNBENCH_CACHE") or Path.home() / ".cache" / "rnnbench")


def save_figure(fig, path: Path | str) -> Path:
    """A matplotlib figure as PNG, atomically; frees the figure (pyplot keeps open ones alive otherwise).

    Fixed metadata, so the same data gives the same bytes.
    """
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
