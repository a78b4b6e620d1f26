"""`rnnbench perf --quick` as a CI smoke test: every section and row is printed and written; no timing asserted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.catalog import BUILTIN_ARCHITECTURES
from benchmark.perf.machine import cpu_info, theoretical_peak, train_flops_per_sample
from benchmark.perf.notebook_loops import NotebookModel

SECTIONS = ["# rnnbench performance", "## Processor peak", "## Training step", "## Small shapes", "## MNIST training",
            "## Binary addition", "## Data pipeline", "## Memory", "## Evaluation"]
ROWS = ["theoretical FP32 peak", "measured sgemm", "strings/s", "ratio", "notebook's experiment via fit",
        "images/s", "share of a training epoch", "peak resident memory", "accuracy vs length up to 1000",
        "Load average after"]


def test_quick_run_prints_every_section_and_writes_the_file(tmp_path):
    out = tmp_path / "reports" / "performance.md"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "RNNBENCH_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "benchmark", "perf", "--quick", "--threads", "1",
                           "--hidden-size", "8", "--batch-size", "20", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    written = out.read_text()
    for text in (done.stdout, written):
        for heading in SECTIONS:
            assert heading in text
        for row in ROWS:
            assert row in text
        assert "synthetic" in text  # no MNIST under RNNBENCH_DATA: it said so rather than fetching
        tables = text.split("## ")
        for section in ("Training step", "MNIST training", "Evaluation"):
            table = next(part for part in tables if part.startswith(section))
            for arch in BUILTIN_ARCHITECTURES:
                assert f"| {arch} |" in table, f"{section} lacks a row for {arch}"
    assert f"torch {torch.__version__}" in written and "1 threads" in written
    small = next(part for part in written.split("## ") if part.startswith("Small shapes"))
    for task in ("mnist", "addition"):
        for arch, hidden, batch in (("lstm", 32, 32), ("gru", 64, 64)):
            assert f"| {task} | {arch} | {hidden} | {batch} |" in small


def test_bad_perf_flags_exit_2():
    from benchmark.cli import main

    assert main(["perf", "--threads", "0", "--quick"]) == 2
    assert main(["perf", "--arch", "transformer", "--quick"]) == 2


def test_flops_and_peak_arithmetic():
    # LSTM, hidden 128, 28 inputs, 28 steps: 3 x 28 x 2 x 512 x 156 = 13.4 MFLOP per training sample.
    assert train_flops_per_sample("lstm", 1, 1, 28, 128, 28) == 3 * 28 * 2 * 512 * 156
    # A second layer reads both directions of the first.
    assert train_flops_per_sample("gru", 2, 2, 28, 8, 1) == 3 * 2 * 2 * 24 * ((28 + 8) + (16 + 8))
    info = {"flags": {"avx", "avx2", "fma"}, "mhz": 2500.0, "name": "x", "family": "25"}
    peak, how = theoretical_peak(info, 2)
    assert peak == pytest.approx(2 * 2 * 8 * 2 * 2.5) and "AVX2+FMA" in how
    assert theoretical_peak({**info, "flags": info["flags"] | {"avx512f"}}, 1)[0] == pytest.approx(160.0)
    assert "name" in cpu_info()


@pytest.mark.parametrize("arch", list(BUILTIN_ARCHITECTURES))
def test_notebook_models_take_the_notebooks_input(arch):
    assert NotebookModel(arch, 8)(torch.rand(5, 28, 28)).shape == (5, 10)
