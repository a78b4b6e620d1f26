"""Where a bench's wall time went, per study: the search, the seed confirmations, and what the seeds scored.

Example: python benchmarks/bench_cost.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db

Read from a tracking store alone. A study's search is its study run's span, from its start to the end the
session writes after the last trial. The chosen trial's test scoring comes after that end, so it is counted in
neither column, nor are start-up, the report and the gaps between studies: the bench's wall time is the sum plus
those. A confirmation is the span of the confirmation runs of that study's trials, from the first start to the
last end; one still running counts to now. A study or confirmation resumed in a later session spans the idle
time between the sessions too. The seeds' test accuracy is the mean and sample standard deviation of the
finished confirmation runs of the whole-range configuration (not the single-length retrains).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.catalog import arch_order_key  # noqa: E402
from benchmark.schema import Metric, Role, RunStatus, Tag  # noqa: E402
from benchmark.store import client_for, search_runs  # noqa: E402


def span(runs) -> float:
    """Seconds from the first run's start to the last run's end (now for a run still going)."""
    now = time.time() * 1000
    return (max(r.info.end_time or now for r in runs) - min(r.info.start_time for r in runs)) / 1000


def study_costs(tracking_uri: str) -> list[dict]:
    """One row per study: task, arch, study, search seconds, confirm seconds, trials, seeds' test accuracies."""
    client = client_for(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = list(search_runs(client, "", experiments))
    studies = [r for r in runs if r.data.tags.get(Tag.ROLE) == Role.STUDY]
    trial_study = {r.info.run_id: r.data.tags.get(Tag.STUDY) for r in runs if r.data.tags.get(Tag.ROLE) == Role.TRIAL}
    confirms = defaultdict(list)
    for run in runs:
        if run.data.tags.get(Tag.ROLE) == Role.CONFIRM:
            confirms[trial_study.get(run.data.tags.get(Tag.CONFIRM_OF))].append(run)
    rows = []
    for study in studies:
        name = study.data.tags.get(Tag.STUDY)
        trials = sum(1 for s in trial_study.values() if s == name)
        seeds = [r.data.metrics[Metric.TEST_ACC] for r in confirms[name] if r.info.status == RunStatus.FINISHED
                 and Tag.CONFIRM_LENGTH not in r.data.tags and Metric.TEST_ACC in r.data.metrics]
        rows.append({"task": study.data.tags.get(Tag.TASK), "arch": study.data.tags.get(Tag.ARCH), "study": name,
                     "trials": trials, "search": span([study]),
                     "confirm": span(confirms[name]) if confirms[name] else 0.0, "seeds": seeds})
    return sorted(rows, key=lambda r: (r["task"], arch_order_key(r["arch"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args(argv)
    rows = study_costs(args.tracking_uri)
    if not rows:
        print(f"no study runs in {args.tracking_uri}")
        return 1
    print(f"{'study':<30} {'trials':>6} {'search':>8} {'confirm':>8} {'total':>8}  seeds' test accuracy")
    for row in rows:
        seeds = row["seeds"]
        score = (f"{100 * statistics.mean(seeds):.2f} ± {100 * statistics.stdev(seeds):.2f} % ({len(seeds)})"
                 if len(seeds) > 1 else (f"{100 * seeds[0]:.2f} % (1)" if seeds else "-"))
        print(f"{row['study']:<30} {row['trials']:>6} {row['search'] / 60:>7.1f}m {row['confirm'] / 60:>7.1f}m "
              f"{(row['search'] + row['confirm']) / 60:>7.1f}m  {score}")
    search, confirm = sum(r["search"] for r in rows), sum(r["confirm"] for r in rows)
    print(f"{'all ' + str(len(rows)) + ' studies':<30} {'':>6} {search / 60:>7.1f}m {confirm / 60:>7.1f}m "
          f"{(search + confirm) / 60:>7.1f}m")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
