"""Time to a target accuracy: rnnbench's ``tune`` against the tuning script a user writes from Optuna's examples.

Example: python benchmarks/time_to_target.py --budget-min 5 --repeats 3 --archs gru lstm --tasks mnist addition

For each task, architecture and repeat (sampler seed: the study file's seed + 0, 1, 2, ...) two arms run one after
the other, each as a subprocess capped at --budget-min minutes of wall time:

- **rnnbench**: ``rnnbench tune`` on a copy of ``studies/<task>.toml`` with that sampler seed (its preset, pruner,
  ``auto`` kernels with picks in a file of the run's own, tracking, checkpoints, figures), into a store of its own.
- **plain**: ``benchmarks/time_to_target_plain.py``, what a user writes from Optuna's PyTorch and MLflow examples
  (``MedianPruner``, ``trial.report`` / ``trial.should_prune`` each epoch, ``MLflowCallback``, a ``DataLoader``
  with ``--plain-workers`` workers, ``nn.GRU`` / ``nn.LSTM`` with a linear head), over the same space, fixed
  settings, epochs and TPE settings (seed, startup trials, multivariate), read here from the same study file. Its
  ``MedianPruner`` takes the study file's median settings when the preset prunes by median, else Optuna's defaults.

Both clocks start just before ``Popen`` and stop when the first completed trial whose value reaches the target has
its result stored, logging included: for rnnbench the later of the trial's MLflow run end time and its completion
in the Optuna storage, for the plain arm the time its own callback, registered after ``MLflowCallback``, recorded
once that callback had returned. A trial counts only if it completed (a pruned trial stores no value) within the
budget. Once an arm has reached its highest target, or its budget is spent, this script stops it (SIGTERM; both
arms are polled the same way every --poll-s seconds). The table shows, per task x arch x target and arm, the
median and the range (min..max) over the repeats; a repeat that did not reach the target within the budget is
"not reached in N min" and counts as the budget in the median. Run it on an idle machine: the processor and the
load average before and after are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLAIN_SCRIPT = Path(__file__).resolve().parent / "time_to_target_plain.py"
sys.path.insert(0, str(REPO))

DEFAULT_TARGETS = {"mnist": (0.98, 0.985), "addition": (1.0,)}
PLAIN_ARCHS = ("gru", "lstm", "rnn")  # nn.GRU, nn.LSTM, nn.RNN: one direction, so right padding needs no packing


@dataclass
class Trial:
    number: int
    value: float
    stored_at: float  # epoch seconds: the trial's result stored, logging included
    run_id: str | None = None


@dataclass
class Arm:
    name: str
    seed: int
    started: float  # epoch seconds, just before Popen
    ended: float = 0.0
    returncode: int | None = None
    store: str = ""  # the arm's MLflow tracking URI
    finished: int = 0  # complete + pruned trials
    pruned: int = 0
    trials: list[Trial] = field(default_factory=list)  # completed ones, stored within the budget

    def time_to(self, target: float) -> float | None:
        reached = [t.stored_at - self.started for t in self.trials if t.value >= target - 1e-9]
        return min(reached) if reached else None


# ------------------------------------------------------------------------------------------------------- both arms

def arm_env(work: Path, name: str, threads: int) -> dict[str, str]:
    """An arm's environment. rnnbench's ``--impl auto`` kernel picks go to a file of this run's own, so that neither
    the user's picks nor an earlier run's (perhaps measured on a busy machine) decide its kernels; only the picks:
    the fused cells' build stays in the shared cache root, or each run would time a compilation."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RNNBENCH_KERNEL_CACHE": str(work / "kernel-picks" / f"{name}.json")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def supervise(command: list[str], env: dict, log: Path, budget_s: float, poll_s: float, reached) -> tuple[float, int]:
    """Start ``command`` and stop it once ``reached()`` says so or the budget is spent; returns (started, code)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        started = time.time()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            try:
                process.wait(timeout=max(0.05, min(poll_s, started + budget_s - time.time())))
            except subprocess.TimeoutExpired:
                if time.time() >= started + budget_s or reached():
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=120)
                    except subprocess.TimeoutExpired:  # a hung arm is read as far as it got
                        process.kill()
                        process.wait()
    return started, process.returncode


# ---------------------------------------------------------------------------------------------------- rnnbench arm

def seeded_study_file(source: Path, seed: int, work: Path, arch: str, preset: str) -> Path:
    """A copy of the study file whose ``[sampler]`` seed is ``seed``."""
    from benchmark.tuning.study_file import load_study

    text, count = re.subn(r"(?ms)(^\[sampler\]\s*$.*?^seed\s*=\s*)\d+", rf"\g<1>{seed}", source.read_text(), count=1)
    path = work / f"{source.stem}-seed{seed}.toml"
    path.write_text(text)
    if load_study(path, arch, preset).sampler_dict.get("seed") != seed:
        raise SystemExit(f"time_to_target: cannot set the sampler seed in {source} (no 'seed = N' under [sampler])")
    return path


def rnnbench_trials(arm: Arm, name: str, journal: Path, budget_s: float) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from benchmark.schema import StudyAttr
    from benchmark.store import client_for

    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))
    client = client_for(arm.store)
    for trial in study.get_trials(deepcopy=False):
        arm.finished += trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        arm.pruned += trial.state == optuna.trial.TrialState.PRUNED
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        run_id = trial.user_attrs.get(StudyAttr.RUN_ID)
        run_end = client.get_run(run_id).info.end_time / 1000 if run_id else 0.0
        stored_at = max(run_end, trial.datetime_complete.timestamp())
        if stored_at - arm.started <= budget_s:
            arm.trials.append(Trial(trial.number, trial.value, stored_at, run_id))


def run_rnnbench(task: str, arch: str, preset: str, seed: int, budget_s: float, work: Path, *, study_dir: Path,
                 stop_at: float = 2.0, poll_s: float = 5.0, threads: int = 0) -> Arm:
    work.mkdir(parents=True, exist_ok=True)
    study_file = seeded_study_file(study_dir / f"{task}.toml", seed, work, arch, preset)
    # A study of its own per run: a name reused would resume the last run's study and count its trials.
    name = f"ttt-{task}-{arch}-s{seed}-{time.time_ns()}"
    uri, journal = f"sqlite:///{work / 'mlflow.db'}", work / "optuna.journal"
    command = [sys.executable, "-m", "benchmark", "tune", str(study_file), "--arch", arch, "--preset", preset,
               "--trials", "100000", "--timeout", str(budget_s), "--study-name", name, "--tracking-uri", uri,
               "--storage", str(journal), "--quiet"]

    def reached() -> bool:
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))
        except KeyError:  # not created yet
            return False
        return any(t.state == optuna.trial.TrialState.COMPLETE and t.value >= stop_at - 1e-9
                   for t in study.get_trials(deepcopy=False))

    started, code = supervise(command, arm_env(work, name, threads), work / "tune.log", budget_s, poll_s, reached)
    arm = Arm("rnnbench", seed, started, time.time(), code, uri)
    if journal.exists():
        rnnbench_trials(arm, name, journal, budget_s)
    return arm


# ------------------------------------------------------------------------------------------------------- plain arm

def plain_setup(spec, seed: int, budget_s: float, work: Path, data_dir: str, workers: int) -> dict:
    """What the plain script reads: the study file's search, resolved here so that the two arms cannot drift."""
    pruner = spec.pruner_dict
    median = ({k: v for k, v in pruner.items() if k in ("n_startup_trials", "n_warmup_steps", "interval_steps")}
              if pruner.get("type") == "median" else {})
    sampler = {k: v for k, v in spec.sampler_dict.items() if k in ("n_startup_trials", "multivariate")}
    return {"task": spec.task, "arch": spec.arch, "fixed": {k: v for k, v in spec.fixed_dict.items()},
            "epochs": spec.epochs, "space": [asdict(p) for p in spec.space], "sampler": {**sampler, "seed": seed},
            "pruner": median, "budget_s": budget_s, "data_dir": str(Path(data_dir).resolve()),
            "num_workers": workers, "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "study_name": f"plain-{spec.task}-{spec.arch}-s{seed}", "results": str(work / "results.jsonl")}


def plain_records(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]


def run_plain(spec, seed: int, budget_s: float, work: Path, *, data_dir: str, workers: int, stop_at: float = 2.0,
              poll_s: float = 5.0, threads: int = 0) -> Arm:
    work.mkdir(parents=True, exist_ok=True)
    setup = plain_setup(spec, seed, budget_s, work, data_dir, workers)
    (work / "setup.json").write_text(json.dumps(setup, indent=1))
    results = Path(setup["results"])
    results.unlink(missing_ok=True)

    def reached() -> bool:
        return any(r["state"] == "COMPLETE" and r["value"] >= stop_at - 1e-9 for r in plain_records(results))

    command = [sys.executable, str(PLAIN_SCRIPT), str(work / "setup.json")]
    env = arm_env(work, setup["study_name"], threads)
    started, code = supervise(command, env, work / "plain.log", budget_s, poll_s, reached)
    arm = Arm("plain", seed, started, time.time(), code, setup["tracking_uri"])
    for record in plain_records(results):
        arm.finished += record["state"] in ("COMPLETE", "PRUNED")
        arm.pruned += record["state"] == "PRUNED"
        if record["state"] == "COMPLETE" and record["stored_at"] - started <= budget_s:
            arm.trials.append(Trial(record["number"], record["value"], record["stored_at"]))
    return arm


# ----------------------------------------------------------------------------------------------------------- table

def median_s(times: list[float | None], budget_s: float) -> float:
    """The median over repeats, a repeat that did not reach the target counted as the budget."""
    return statistics.median(budget_s if t is None else t for t in times)


def minutes(seconds: float | None, budget_s: float) -> str:
    if seconds is None or seconds >= budget_s:
        return f"not reached in {budget_s / 60:g} min"
    return f"{seconds / 60:.1f} min"


def spread(times: list[float | None], budget_s: float) -> str:
    ordered = sorted(times, key=lambda t: budget_s if t is None else t)
    low, high = minutes(ordered[0], budget_s), minutes(ordered[-1], budget_s)
    return low if low == high else f"{low} .. {high}"


def ratio(plain: float, ours: float, budget_s: float) -> str:
    if plain >= budget_s and ours >= budget_s:
        return "-"
    if plain >= budget_s:
        return f">= {plain / ours:.1f}x"  # plain's median is only a lower bound
    if ours >= budget_s:
        return f"<= {plain / ours:.1f}x"
    return f"{plain / ours:.1f}x"


def table(results: dict, targets: dict, budget_s: float) -> str:
    lines = ["| task | arch | target | rnnbench median | rnnbench range | plain median | plain range "
             "| plain / rnnbench |", "|---|---|---|---|---|---|---|---|"]
    for (task, arch), arms in results.items():
        for target in targets[task]:
            times = {name: [arm.time_to(target) for arm in arms[name]] for name in ("rnnbench", "plain")}
            medians = {name: median_s(times[name], budget_s) for name in times}
            lines.append(f"| {task} | {arch} | {target:.1%} | {minutes(medians['rnnbench'], budget_s)} "
                         f"| {spread(times['rnnbench'], budget_s)} | {minutes(medians['plain'], budget_s)} "
                         f"| {spread(times['plain'], budget_s)} "
                         f"| {ratio(medians['plain'], medians['rnnbench'], budget_s)} |")
    lines += ["", "| task | arch | arm | seed | finished trials (pruned) | best val acc | ran for |",
              "|---|---|---|---|---|---|---|"]
    for (task, arch), arms in results.items():
        for name in ("rnnbench", "plain"):
            for arm in arms[name]:
                best = f"{max(t.value for t in arm.trials):.2%}" if arm.trials else "-"
                lines.append(f"| {task} | {arch} | {name} | {arm.seed} | {arm.finished} ({arm.pruned}) | {best} "
                             f"| {(arm.ended - arm.started) / 60:.1f} min |")
    return "\n".join(lines)


def processor() -> str:
    import torch

    model = platform.processor() or "unknown"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} CPU capability " \
           f"{torch.backends.cpu.get_cpu_capability()}"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist", "addition"], choices=sorted(DEFAULT_TARGETS))
    parser.add_argument("--archs", nargs="+", default=["gru", "lstm"], choices=PLAIN_ARCHS)
    parser.add_argument("--preset", default="standard", help="study-file preset both arms search (default: standard)")
    parser.add_argument("--budget-min", type=float, default=5.0, help="wall-time cap of each arm (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="sampler seeds per arm (default: 3)")
    parser.add_argument("--targets", type=float, nargs="+", metavar="FRACTION",
                        help="validation accuracies to time, for every task (default: MNIST 0.98 0.985, "
                             "addition 1.0)")
    parser.add_argument("--plain-workers", type=int, default=2,
                        help="the plain arm's MNIST DataLoader num_workers (default: 2, one per core here)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of each arm via OMP_NUM_THREADS (default: 0, torch's default)")
    parser.add_argument("--poll-s", type=float, default=5.0, help="how often an arm is checked (default: 5 s)")
    parser.add_argument("--study-dir", default=str(REPO / "studies"), help="where <task>.toml is (default: studies)")
    parser.add_argument("--work", default="/tmp/time_to_target", help="stores of both arms (default: %(default)s)")
    parser.add_argument("--data-dir", default=os.environ.get("RNNBENCH_DATA", "data"),
                        help="MNIST folder, as rnnbench's (default: $RNNBENCH_DATA or ./data)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.budget_min <= 0:
        parser.error("--repeats and --budget-min must be positive")

    from benchmark.tuning.study_file import load_study

    if "mnist" in args.tasks:
        from benchmark.data import fetch

        fetch(Path(args.data_dir), quiet=True)
    targets = {task: tuple(args.targets) if args.targets else DEFAULT_TARGETS[task] for task in args.tasks}
    budget_s, study_dir = args.budget_min * 60, Path(args.study_dir)
    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    print(f"processor: {processor()}", flush=True)
    print(f"load average before: {load()}; budget {args.budget_min:g} min per arm, {args.repeats} repeats, preset "
          f"{args.preset}, plain DataLoader num_workers {args.plain_workers}, threads "
          f"{args.threads or 'torch default'}; stores under {work}", flush=True)
    results: dict = {}
    for task in args.tasks:
        for arch in args.archs:
            spec = load_study(study_dir / f"{task}.toml", arch, args.preset)
            arms = results[(task, arch)] = {"rnnbench": [], "plain": []}
            for repeat in range(args.repeats):
                seed = spec.sampler_dict.get("seed", 0) + repeat
                where = work / f"{task}-{arch}" / f"seed{seed}"
                common = dict(stop_at=max(targets[task]), poll_s=args.poll_s, threads=args.threads)
                arms["rnnbench"].append(run_rnnbench(task, arch, args.preset, seed, budget_s, where / "rnnbench",
                                                     study_dir=study_dir, **common))
                arms["plain"].append(run_plain(spec, seed, budget_s, where / "plain", data_dir=args.data_dir,
                                               workers=args.plain_workers, **common))
                print(f"{task} {arch} seed {seed}: " + "; ".join(
                    f"{name} {arms[name][-1].finished} trials, exit {arms[name][-1].returncode}" for name in arms),
                    flush=True)
    print(f"load average after: {load()}\n")
    text = table(results, targets, budget_s)
    print(text)
    work.mkdir(parents=True, exist_ok=True)
    (work / "time_to_target.md").write_text(text + "\n")
    raw = [{"task": task, "arch": arch, **asdict(arm)} for (task, arch), arms in results.items()
           for name in arms for arm in arms[name]]
    (work / "results.json").write_text(json.dumps(raw, indent=1))
    print(f"\nwritten: {work / 'time_to_target.md'}, {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
