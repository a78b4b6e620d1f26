"""Time `rnnbench report` over a synthetic store of about 500 runs (issue 4: under 15 s on 2 cores).

Example: python benchmarks/report_scale.py --runs 500 --store /tmp/report_scale

Builds the store once (12 studies: 2 tasks x 6 architectures, each with pruned and failed trials,
plus the notebook's reproduce runs; see tests/fake_store.py), reuses it when --store already holds
one, then runs the real command in a fresh process `--repeat` times and prints the wall times, and
one in-process breakdown by stage (load, each section).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="approximate number of runs in the store")
    parser.add_argument("--store", help="folder for the store (reused if it holds one; default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=40, help="training-loss points per epoch")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    folder = Path(args.store or tempfile.mkdtemp(prefix="report_scale_"))
    database = folder / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{database}"
    if not database.exists():
        from fake_store import QUALITY, build_store

        (folder / "mlruns").mkdir(parents=True, exist_ok=True)
        studies = 2 * len(QUALITY)
        trials = max(3, math.ceil((args.runs - 8) / studies) - 1)  # minus the parent run per study
        start = time.perf_counter()
        store = build_store(uri, trials=trials, epochs=args.epochs, iterations=args.iterations)
        print(f"built {len(store.runs)} runs ({studies} studies x {trials} trials + parents + reproduce) "
              f"in {time.perf_counter() - start:.0f} s under {folder}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    times, cpu = [], []
    for i in range(args.repeat):
        out = folder / f"report_{i}"
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchmark", "report", "--tracking-uri", uri, "--out", str(out),
                        "--no-timestamp", "--quiet"], check=True, env=env, cwd=folder)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    same = len({(folder / f"report_{i}" / "report.md").read_bytes() for i in range(args.repeat)}) == 1
    # CPU seconds say what the command costs when other processes share the cores (wall time then lies).
    print(f"rnnbench report, fresh process, {args.repeat} runs: wall " + ", ".join(f"{t:.1f}" for t in times)
          + " s; CPU " + ", ".join(f"{t:.1f}" for t in cpu) + f" s; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; identical markdown: {same}")

    # Where the time goes, in this process (imports already paid).
    from benchmark import report

    start = time.perf_counter()
    snap = report.load_snapshot(uri, timestamp=False)
    stages = [("load (search_runs)", time.perf_counter() - start)]
    figures = report.Figures(folder / "report_breakdown" / "figures")
    for section in report.SECTIONS:
        start = time.perf_counter()
        section(snap, figures)
        stages.append((section.__name__, time.perf_counter() - start))
    print(f"{len(snap.runs)} runs; in-process stages: " + ", ".join(f"{name} {t:.2f} s" for name, t in stages)
          + f"; total {sum(t for _, t in stages):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
