"""Do more worker processes pay on this machine? One fixed study run three ways, side by side.

Example: PYTHONPATH=. python benchmarks/workers.py --trials 12

Runs the same trials (the same parameter sets, enqueued into each study; no pruning, so every
configuration does the same work) on the same kind of storage, one configuration after the other:

  1w x 1t  one worker pinned to one core (taskset -c 0, one torch thread)
  1w x 2t  one worker given both cores (torch's default threads)
  2w x 1t  two workers of one thread each (`rnnbench tune --workers 2`)

Each is a real `python -m benchmark tune` session. The figure is the study's time from the first
trial's start to the last trial's end (from Optuna's timestamps; process start-up excluded), with
the session's wall time beside it. With ``--repeats N`` the three run in N interleaved rounds and
the ratios use each configuration's fastest round (other work only ever slows a round down). The
load average is printed with every figure: on a shared machine, other work blurs the ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STUDY = """\
task = "addition"
description = "benchmarks/workers.py: fixed trials, no pruning"

[fixed]
max_train_length = 20
eval_lengths = [30]

[space]
hidden_size = {{ type = "int", low = {hidden_low}, high = {hidden_high}, log = true }}
num_layers = {{ type = "int", low = 1, high = 2 }}
lr = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
batch_size = {{ type = "categorical", choices = [128, 256] }}

[sampler]
type = "random"
seed = 0

[pruner]
type = "none"

[presets.quick.budget]
trials = {trials}
epochs = {epochs}
train_size = {train_size}
timeout = 0

[presets.standard.budget]
trials = {trials}
epochs = {epochs}

[presets.full.budget]
trials = {trials}
epochs = {epochs}
"""

CONFIGS = {  # label: (workers, pinned to one core)
    "1w x 1t": (1, True),
    "1w x 2t": (1, False),
    "2w x 1t": (2, False),
}


def draw(space, n: int, seed: int) -> list[dict]:
    """n parameter sets from the study's space (the same for every configuration)."""
    rng, rows = random.Random(seed), []
    for _ in range(n):
        row = {}
        for p in space:
            if p.kind == "categorical":
                row[p.name] = rng.choice(list(p.choices))
            elif p.kind == "int":
                row[p.name] = round(p.low * (p.high / p.low) ** rng.random()) if p.log else rng.randint(p.low, p.high)
            else:
                row[p.name] = p.low * (p.high / p.low) ** rng.random() if p.log else rng.uniform(p.low, p.high)
        rows.append(row)
    return rows


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_config(label: str, workers: int, pinned: bool, study_path: str, params: list[dict], folder: Path,
               storage: str | None, tracking: str | None) -> tuple[float, float]:
    import optuna

    from benchmark.tuning import load_study, open_storage, open_study

    name = f"workers-{label.replace(' ', '')}-{os.getpid()}"
    storage = storage or str(folder / "optuna.journal")
    tracking = tracking or f"sqlite:///{folder / 'mlflow.db'}"
    spec = load_study(study_path, "lstm", "quick").with_budget(len(params))
    study = open_study(spec, name, open_storage(storage, tracking))
    for row in params:
        study.enqueue_trial(row)
    command = [sys.executable, "-m", "benchmark", "tune", study_path, "--arch", "lstm", "--study-name", name,
               "--workers", str(workers), "--quiet"]
    env = {**os.environ, "RNNBENCH_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if pinned:
        command = ["taskset", "-c", "0", *command]
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=open_storage(storage, tracking)).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if len(done) != len(params) or sorted(map(str, (t.params for t in done))) != sorted(map(str, params)):
        raise SystemExit(f"{label}: ran {len(done)} trials, not the {len(params)} enqueued ones")
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    each = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return span, wall, each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--hidden", type=int, nargs=2, default=(8, 32), metavar=("LOW", "HIGH"),
                        help="the hidden sizes the trials draw from (default: 8 32, addition's small models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; ratios use the fastest")
    parser.add_argument("--storage", help="Optuna storage for all three (default: a fresh journal file each)")
    parser.add_argument("--tracking-uri", help="MLflow store for all three (default: a fresh sqlite store each)")
    args = parser.parse_args()
    if not shutil.which("taskset"):
        raise SystemExit("needs taskset (util-linux) to pin the one-core configuration")

    from benchmark.tuning import load_study

    results: dict[str, list[float]] = {label: [] for label in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        study_path = Path(tmp) / "workers.toml"
        study_path.write_text(STUDY.format(trials=args.trials, epochs=args.epochs, train_size=args.train_size,
                                           hidden_low=args.hidden[0], hidden_high=args.hidden[1]))
        params = draw(load_study(study_path, "lstm", "quick").space, args.trials, args.seed)
        print(f"addition lstm: {args.trials} fixed trials x {args.epochs} epochs x {args.train_size} strings, "
              f"no pruning; {len(os.sched_getaffinity(0))} cores; load before: {load()}", flush=True)
        for round_ in range(args.repeats):
            for label, (workers, pinned) in CONFIGS.items():
                folder = Path(tmp) / f"{label.replace(' ', '')}-{round_}"
                folder.mkdir()
                span, wall, each = run_config(label, workers, pinned, str(study_path), params, folder, args.storage,
                                              args.tracking_uri)
                results[label].append(span)
                print(f"  {label}: study {span:6.1f}s (session wall {wall:6.1f}s; trials {sum(each):6.1f}s in all, "
                      f"median {each[len(each) // 2]:4.1f}s)  load {load()}", flush=True)
    best = {label: min(spans) for label, spans in results.items()}
    two = best["2w x 1t"]
    print("  fastest rounds: " + ", ".join(f"{label} {span:.1f}s" for label, span in best.items()))
    print(f"  2 workers x 1 thread vs 1 worker x 2 threads: {best['1w x 2t'] / two:.2f}x (goal >= 1.25)")
    print(f"  2 workers x 1 thread vs 1 worker on 1 core:   {best['1w x 1t'] / two:.2f}x (goal >= 1.8)")

if __name__ == "__main__":
    main()
