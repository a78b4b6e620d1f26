"""Does pruning pay? The same study (spec, seed, time budget) with the file's pruner and with none.

Example: RNNBENCH_DATA=/work/main/data PYTHONPATH=. python benchmarks/pruning.py --budget 300

Both sessions run one after the other in this process, into a throwaway tracking store and
journal, with the same sampler seed and the same wall-clock budget; it prints finished trials
per hour and the best validation accuracy of each, and their ratio / difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from benchmark.studies import load_study
from benchmark.tuning import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(Path(__file__).resolve().parent.parent / "studies" / "mnist.toml"))
    parser.add_argument("--arch", default="gru")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--budget", type=float, default=300, help="seconds per session")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (pruning needs a few)")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    base = load_study(args.study, args.arch, args.preset)
    fixed = {**base.fixed_dict, "train_size": args.train_size, "threads": args.threads}
    base = dataclasses.replace(base, epochs=args.epochs, trials=100_000, timeout=args.budget,
                               fixed=tuple(sorted(fixed.items())))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for label, pruner in (("pruned", base.pruner), ("unpruned", (("type", "none"),))):
            spec = dataclasses.replace(base, pruner=pruner)
            result = run_study(spec, study_name=f"pruning-{label}", tracking_uri=uri, quiet=True)
            finished = result.counts.get("COMPLETE", 0) + result.counts.get("PRUNED", 0)
            rows[label] = (finished, result.counts.get("PRUNED", 0), finished / result.seconds * 3600,
                           result.best_value or 0.0, result.seconds)
    print(f"{base.task} {base.arch}: {args.epochs} epochs/trial, train_size {args.train_size}, budget "
          f"{args.budget:.0f}s per session, pruner {dict(base.pruner)}, sampler seed {base.sampler_dict.get('seed')}")
    for label, (finished, pruned, per_hour, best, seconds) in rows.items():
        print(f"  {label:<9} {finished:>3} trials ({pruned} pruned) in {seconds:5.0f}s = {per_hour:6.1f} trials/h, "
              f"best val acc {100 * best:.2f}%")
    ratio = rows["pruned"][2] / max(rows["unpruned"][2], 1e-9)
    delta = 100 * (rows["pruned"][3] - rows["unpruned"][3])
    print(f"  trials/h ratio {ratio:.2f}x (goal >= 2x); best val acc difference {delta:+.2f} points (goal >= -0.3)")


if __name__ == "__main__":
    main()
