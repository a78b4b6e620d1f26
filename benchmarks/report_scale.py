"""Time `rnnbench report` over a synthetic store of about 500 runs (the target: under 15 s on 2 cores).

Example: python benchmarks/report_scale.py --runs 500 --store /tmp/report_scale

Builds the store once (12 studies: 2 tasks x 6 architectures, each with pruned and failed trials and
3 seed confirmations of its best trial, plus the notebook's reproduce runs; see tests/fake_store.py),
reuses it when --store already holds one, then runs the real command in a fresh process `--repeat`
times and prints the wall times, and a breakdown in CPU seconds (load, sections here, sections in the forked child).
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
        # Per study: the parent run and 3 seed confirmations; addition also 3 seeds trained on length 3 only.
        per_study = 1 + 3 + 3 * len(QUALITY) / studies
        trials = max(3, math.ceil((args.runs - 8) / studies - per_study))
        start = time.perf_counter()
        store = build_store(uri, trials=trials, epochs=args.epochs, iterations=args.iterations, confirm_seeds=3,
                            confirm_lengths=(3,))
        print(f"built {len(store.runs)} runs ({studies} studies x {trials} trials + parents + seed confirmations + "
              f"reproduce) in {time.perf_counter() - start:.0f} s under {folder}")
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

    # Where the time goes, in CPU seconds (robust to other processes on the cores): this process loads the
    # store and draws the store-reading sections while a forked child draws the offline ones; on idle cores the
    # wall time is about load + max(parent sections, child).
    from benchmark import report

    start = time.process_time()
    snap = report.load_snapshot(uri, timestamp=False)
    loaded = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report.render(snap, report.Figures(folder / "report_breakdown" / "figures"))
    drawn = time.process_time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    print(f"{len(snap.runs)} runs; CPU: mlflow import + load {loaded - start:.1f} s, sections in this process "
          f"{drawn - loaded:.1f} s, offline sections in the child {child:.1f} s; critical path "
          f"{loaded - start + max(drawn - loaded, child):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
