"""The performance harness: rnnbench against the course notebook, measured side by side in one process.

Example: rnnbench perf --threads 2 --out reports/performance.md

Sections (each printed as markdown as soon as it is measured, then written to
``--out`` atomically): environment and load; the processor's theoretical FP32
peak and a measured sgemm; the training step per architecture and recurrent
implementation (native nn module, the same with oneDNN off, explicit loop, the loop with fused C++ steps) with
achieved GFLOP/s; MNIST training throughput of rnnbench's ``fit`` against a
faithful copy of the notebook's loop; binary addition likewise, plus the wall
time of the notebook's addition experiment run through ``fit``; the batching
path alone; peak resident memory of one tracked trial (a subprocess); and
evaluation speed. ``--quick`` is a smoke run (synthetic MNIST when none is on
disk, a few iterations) that still prints every row; its numbers mean little.

Rates are the best of ``repeats`` interleaved rounds, so a burst of load from
another process hurts both sides of a ratio alike rather than one of them.
"""

from __future__ import annotations

from .harness import run

__all__ = ["run"]
