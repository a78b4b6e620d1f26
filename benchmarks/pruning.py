"""Does pruning pay? The same study (spec, seed, time budget) with each pruner and with none.

Example: RNNBENCH_DATA=/work/main/data PYTHONPATH=. python benchmarks/pruning.py --budget 240 --pruners file hyperband

The sessions run one after the other in this process, into a throwaway tracking store and journal,
with the same sampler seed and the same wall-clock budget: first without pruning, then once per
pruner (``file``: the study file's own for the preset; the others: the settings in PRUNERS). It
prints finished (complete + pruned) trials per hour and the best validation accuracy of each, and
each pruner's ratio / difference against no pruning.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import NamedTuple

import optuna

from benchmark.tuning import load_study, open_storage, resolve_storage_url, run_study


class Session(NamedTuple):
    pruner: dict
    finished: int  # complete + pruned
    pruned: int
    per_hour: float
    best: float  # best validation accuracy
    seconds: float
    epochs: float  # mean epochs run per finished trial
    pruned_at: dict  # epoch -> trials pruned there
    trial_seconds: dict  # state -> mean seconds per trial


def summarise(pruner: dict, trials, seconds: float, best: float | None) -> Session:
    """A session's throughput and where its time went, from its trials."""
    from collections import Counter

    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    by_state = {state: [t for t in finished if t.state.name == state] for state in ("COMPLETE", "PRUNED")}
    epochs = sum(len(t.intermediate_values) for t in finished) / max(len(finished), 1)
    pruned_at = Counter(t.last_step for t in by_state["PRUNED"])
    trial_seconds = {state: sum(t.duration.total_seconds() for t in group) / len(group)
                     for state, group in by_state.items() if group}
    return Session(pruner, len(finished), len(by_state["PRUNED"]), len(finished) / seconds * 3600, best or 0.0,
                   seconds, epochs, dict(sorted(pruned_at.items())), trial_seconds)


PRUNERS = {
    "median": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    # Brackets of successive halving from epoch 1, 3, 9.. up to --epochs; the last bracket never prunes.
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    # Hyperband's first bracket alone: every trial is judged at epoch 1, the survivors again at epoch 3.
    "successive_halving": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3},
    # The same with a quarter promoted at each rung: judged at epoch 1, the survivors again at epoch 4.
    "successive_halving_eta4": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(Path(__file__).resolve().parent.parent / "studies" / "mnist.toml"))
    parser.add_argument("--arch", default="gru")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--budget", type=float, default=300, help="seconds per session")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (pruning needs a few)")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="sampler seed for every session (default: the file's)")
    parser.add_argument("--pruners", nargs="+", default=["file"], choices=["file", *PRUNERS],
                        help="pruners to compare with no pruning (file: the study file's)")
    args = parser.parse_args()

    base = load_study(args.study, args.arch, args.preset)
    fixed = {**base.fixed_dict, "train_size": args.train_size, "threads": args.threads}
    sampler = {**base.sampler_dict, **({"seed": args.seed} if args.seed is not None else {})}
    base = dataclasses.replace(base, epochs=args.epochs, trials=100_000, timeout=args.budget,
                               fixed=tuple(sorted(fixed.items())), sampler=tuple(sorted(sampler.items())))
    sessions = [("unpruned", (("type", "none"),))]
    for name in args.pruners:
        pruner = base.pruner if name == "file" else tuple(sorted(PRUNERS[name].items()))
        sessions.append((f"{name}:{dict(pruner)['type']}" if name == "file" else name, pruner))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # Untimed: the first session in a process also pays for loading MNIST and creating the store's tables.
        run_study(dataclasses.replace(base, trials=1, epochs=1, timeout=0, pruner=(("type", "none"),)),
                  study_name="pruning-warmup", tracking_uri=uri, quiet=True)
        for label, pruner in sessions:
            spec = dataclasses.replace(base, pruner=pruner)
            result = run_study(spec, study_name=f"pruning-{label.replace(':', '-')}", tracking_uri=uri, quiet=True)
            storage = open_storage(resolve_storage_url(None, uri))
            study = optuna.load_study(study_name=result.study_name, storage=storage)
            rows[label] = summarise(dict(pruner), study.get_trials(deepcopy=False), result.seconds,
                                    result.best_value)
    print(f"{base.task} {base.arch}: {args.epochs} epochs/trial, train_size {args.train_size}, budget "
          f"{args.budget:.0f}s per session, sampler seed {base.sampler_dict.get('seed')}")
    for label, row in rows.items():
        print(f"  {label:<14} {row.finished:>3} trials ({row.pruned} pruned) in {row.seconds:5.0f}s = "
              f"{row.per_hour:6.1f} trials/h, best val acc {100 * row.best:.2f}%  {row.pruner}")
        seconds = ", ".join(f"{state.lower()} {value:.1f}s" for state, value in row.trial_seconds.items())
        print(f"  {'':<14} {row.epochs:.1f} epochs/trial; pruned at epoch: {row.pruned_at or '-'}; "
              f"per trial: {seconds}")
    baseline = rows["unpruned"]
    for label, row in rows.items():
        if label == "unpruned":
            continue
        ratio = row.per_hour / max(baseline.per_hour, 1e-9)
        delta = 100 * (row.best - baseline.best)
        print(f"  {label}: trials/h ratio {ratio:.2f}x (goal >= 2x); best val acc difference {delta:+.2f} points "
              "(goal >= -0.3)")


if __name__ == "__main__":
    main()
