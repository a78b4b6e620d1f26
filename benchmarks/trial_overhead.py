"""How much of each tune trial's wall time is spent outside its training epochs, read from a tracking store.

Example: python benchmarks/trial_overhead.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db

A trial run's wall time is its MLflow start to end; its training time is the sum of its ``epoch_time_s``. The rest
is outside the epochs: building the task, the run's tags and params, validation after each epoch, logging, the
checkpoint, and whatever else a trial does. Runs that log ``val_time_s`` (validation after each epoch, timed apart)
also get the share outside both training and validation: what a trial costs beyond the work a search needs.
Completed and pruned trials both count (a pruned trial pays the same fixed costs for fewer epochs). Prints one
line per trial with ``--each``, and per task the median, the worst and the trials over 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.schema import Metric, Role, Tag  # noqa: E402
from benchmark.store import client_for, search_runs  # noqa: E402

LIMIT = 0.10  # the share of a trial's wall time it may spend outside its epochs


def trial_shares(tracking_uri: str) -> list[dict]:
    """One row per ended trial run: task, arch, study, trial, wall seconds, epoch seconds, outside share."""
    client = client_for(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    rows = []
    for run in search_runs(client, f"tags.{Tag.ROLE} = '{Role.TRIAL}'", experiments):
        if not run.info.end_time:
            continue
        wall = (run.info.end_time - run.info.start_time) / 1000
        epochs = sum(m.value for m in client.get_metric_history(run.info.run_id, Metric.EPOCH_TIME))
        val = sum(m.value for m in client.get_metric_history(run.info.run_id, Metric.VAL_TIME))
        rows.append({"task": run.data.tags.get(Tag.TASK), "arch": run.data.tags.get(Tag.ARCH),
                     "study": run.data.tags.get(Tag.STUDY), "trial": run.data.tags.get(Tag.TRIAL),
                     "state": run.data.tags.get(Tag.TRIAL_STATE), "wall": wall, "epochs": epochs,
                     "outside": (wall - epochs) / wall if wall > 0 else 0.0,
                     "beyond_val": (wall - epochs - val) / wall if wall > 0 and val else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--each", action="store_true", help="one line per trial")
    args = parser.parse_args(argv)
    rows = trial_shares(args.tracking_uri)
    if not rows:
        print(f"no ended trial runs in {args.tracking_uri}")
        return 1
    by_task = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["task"], r["study"], int(r["trial"] or 0))):
        by_task[row["task"]].append(row)
        if args.each:
            print(f"{row['study']:<28} trial {row['trial']:>3} {row['state']:<9} wall {row['wall']:7.2f} s  "
                  f"epochs {row['epochs']:7.2f} s  outside {100 * row['outside']:5.1f} %")
    print(f"{'task':<22} {'trials':>6} {'median outside':>15} {'worst':>7} {'over 10 %':>10} {'wall s':>8} "
          f"{'median beyond validation':>25}")
    for task, task_rows in by_task.items():
        shares = [r["outside"] for r in task_rows]
        over = sum(share > LIMIT for share in shares)
        beyond = [r["beyond_val"] for r in task_rows if r["beyond_val"] is not None]
        beyond_text = f"{100 * statistics.median(beyond):.1f}%" if beyond else "-"
        print(f"{task:<22} {len(shares):>6} {100 * statistics.median(shares):>14.1f}% {100 * max(shares):>6.1f}% "
              f"{over:>10} {sum(r['wall'] for r in task_rows):>8.1f} {beyond_text:>25}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
