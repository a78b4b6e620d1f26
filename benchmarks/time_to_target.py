"""Time to a target accuracy: rnnbench's ``tune`` against the recipe a user would otherwise write, one after the other.

Example: python benchmarks/time_to_target.py --budget-min 5 --archs gru lstm --tasks mnist addition

For each task and architecture the same search runs twice, each arm capped at --budget-min minutes of wall time:

- **rnnbench**: ``rnnbench tune studies/<task>.toml --arch A --preset P`` with the study file's defaults, in a
  subprocess, into a store of its own under --work.
- **plain**: what a user writes instead: ``optuna.create_study`` with the same TPE sampler (seed, startup trials,
  multivariate), the same search space and fixed settings (read from the same study file, so the two cannot drift
  apart), an
  ``optuna.integration.mlflow.MLflowCallback`` into its own MLflow store, and a textbook training loop: MNIST
  through ``torchvision`` ``ToTensor`` + ``Normalize`` and a ``DataLoader``, ``nn.GRU``/``nn.LSTM`` with a linear
  head; addition strings from a small generator of its own, padded and masked. No pruner (a user's first script
  has none) and no checkpoints or figures.

With ``--same-trials N`` (default 12) both studies start with the same N configurations, drawn once at random
from the space with the study file's sampler seed and enqueued at the head of each study; each arm's own TPE
continues after them. Then time to target measures the recipes (speed per trial, pruning, overheads), not which
arm's sampler happened to draw a good configuration first. ``--same-trials 0`` leaves both samplers free.

Per arm it reports the wall time from the arm's start until the best validation accuracy first reached each target
(at the end of the trial that reached it), trials per hour, and the share of each trial's wall time spent outside
its training epochs (evaluation, tracking, checkpoint, figures, data set-up). The validation sets are the same size
but not the same images: rnnbench's seeded 50k/10k split and the plain script's ``random_split`` with seed 0.
Run it on an idle machine: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_TARGETS = {"mnist": (0.975, 0.985), "addition": (1.0,)}


@dataclass
class Trial:
    finished_s: float  # since the arm started
    value: float  # best validation accuracy the trial reached
    wall_s: float
    train_s: float  # inside its training epochs


@dataclass
class Arm:
    name: str
    trials: list[Trial] = field(default_factory=list)
    elapsed_s: float = 0.0

    def time_to(self, target: float) -> float | None:
        reached = [t.finished_s for t in self.trials if t.value >= target - 1e-9]
        return min(reached) if reached else None

    def per_hour(self) -> float:
        return len(self.trials) / (self.elapsed_s / 3600) if self.elapsed_s else 0.0

    def outside_training(self) -> float:
        wall = sum(t.wall_s for t in self.trials)
        return 1 - sum(t.train_s for t in self.trials) / wall if wall else math.nan


# ---------------------------------------------------------------------------------------------------- rnnbench arm

def shared_configurations(spec, count: int) -> list[dict]:
    """``count`` configurations drawn at random from the study file's space with its sampler seed: the same list
    for both arms, enqueued at the head of each study."""
    import optuna

    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.sampler_dict.get("seed", 0)))
    configurations = []
    for _ in range(count):
        trial = draws.ask()
        configurations.append({param.name: param.suggest(trial) for param in spec.space})
        draws.tell(trial, 0.0)
    return configurations


def arm_env(work: Path, name: str) -> dict[str, str]:
    """The rnnbench arm's environment: ``--impl auto``'s kernel picks in a file of this run's own, so that neither
    the user's picks nor an earlier run's (perhaps measured on a busy machine) decide its kernels. Only the picks:
    the fused cells' build stays in the shared cache root, or each run would time a compilation."""
    picks = work / "kernel-picks" / f"{name}.json"
    return {**os.environ, "PYTHONPATH": str(REPO), "RNNBENCH_KERNEL_CACHE": str(picks)}


def run_rnnbench(task: str, arch: str, preset: str, budget_s: float, work: Path,
                 configurations: list[dict] = ()) -> Arm:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from benchmark.schema import Metric, StudyAttr
    from benchmark.store import client_for

    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # A study of its own per run: a name reused would resume the last run's study and count its trials.
    uri, journal = f"sqlite:///{work / 'mlflow.db'}", work / "optuna.journal"
    name = f"ttt-{task}-{arch}-{int(started)}"
    command = [sys.executable, "-m", "benchmark", "tune", str(REPO / "studies" / f"{task}.toml"), "--arch", arch,
               "--preset", preset, "--trials", "10000", "--timeout", str(budget_s), "--study-name", name,
               "--tracking-uri", uri, "--storage", str(journal), "--quiet"]
    if configurations:  # tune opens this study and stamps it with its spec; the enqueued trials run first
        head = optuna.create_study(study_name=name, direction="maximize",
                                   storage=JournalStorage(JournalFileBackend(str(journal))))
        for params in configurations:
            head.enqueue_trial(params)
        started = time.time()
    with contextlib.suppress(subprocess.TimeoutExpired):  # a hung arm is read as far as it got
        subprocess.run(command, check=False, timeout=budget_s * 2 + 600, env=arm_env(work, name))
    arm = Arm("rnnbench", elapsed_s=min(time.time() - started, budget_s))
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))
    client = client_for(uri)
    for trial in study.trials:
        if trial.datetime_complete is None or trial.state not in (optuna.trial.TrialState.COMPLETE,
                                                                  optuna.trial.TrialState.PRUNED):
            continue
        finished = trial.datetime_complete.timestamp() - started
        if finished > budget_s:
            continue
        value = trial.value if trial.value is not None else max(trial.intermediate_values.values(), default=0.0)
        run_id = trial.user_attrs.get(StudyAttr.RUN_ID)
        # A pruned trial's run stops before its totals are logged: its epochs' times add up to the same.
        train_s = sum(m.value for m in client.get_metric_history(run_id, Metric.EPOCH_TIME)) if run_id else math.nan
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        arm.trials.append(Trial(finished, value, wall, train_s))
    return arm


# ------------------------------------------------------------------------------------------------------- plain arm

def plain_model(task: str, arch: str, hidden: int, layers: int, dropout: float):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[arch.removeprefix("bi")]
            self.bidirectional = arch.startswith("bi")
            self.rnn = rnn(28 if task == "mnist" else 2, hidden, layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0, bidirectional=self.bidirectional)
            self.head = nn.Linear(hidden * (2 if self.bidirectional else 1), 10 if task == "mnist" else 1)

        def forward(self, x):
            out, state = self.rnn(x)
            if task == "addition":
                return self.head(out).squeeze(-1)
            h = state[0] if isinstance(state, tuple) else state
            return self.head(torch.cat(list(h[-(2 if self.bidirectional else 1):]), dim=-1))

    return Net()


def mnist_loaders(data_dir: str, train_size: int, batch_size: int, seed: int = 0):
    import torch
    from torch.utils.data import DataLoader, Subset, random_split
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST(data_dir, train=True, download=False, transform=transform)
    train, val = random_split(full, [50_000, 10_000], generator=torch.Generator().manual_seed(seed))
    if train_size:
        train = Subset(train, range(train_size))
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(val, batch_size=1000))


def addition_strings(n: int, max_length: int, generator):
    """A user's generator: n strings of random lengths 1..max_length, operands below 2^(L-1), LSB first."""
    import torch

    lengths = torch.randint(1, max_length + 1, (n,), generator=generator)
    below_top = torch.arange(max_length)[None, :] < (lengths[:, None] - 1)
    a = torch.randint(0, 2, (n, max_length), generator=generator) * below_top
    b = torch.randint(0, 2, (n, max_length), generator=generator) * below_top
    weights = 2 ** torch.arange(max_length)
    total = (a * weights).sum(1) + (b * weights).sum(1)
    y = (total[:, None] // weights) % 2
    mask = torch.arange(max_length)[None, :] < lengths[:, None]
    return torch.stack([a, b], -1).float(), (y * mask).float(), mask


def run_plain(task: str, arch: str, spec, budget_s: float, work: Path, data_dir: str,
              configurations: list[dict] = ()) -> Arm:
    import mlflow
    import optuna
    import torch
    import torch.nn.functional as F
    from optuna.integration.mlflow import MLflowCallback

    work.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed, arm, started = spec.fixed_dict, Arm("plain"), time.time()
    max_length = fixed.get("max_train_length", 20)

    def objective(trial) -> float:
        trial_started = time.time()
        params = {**fixed, **{p.name: p.suggest(trial) for p in spec.space}}
        torch.manual_seed(0)
        model = plain_model(task, arch, params["hidden_size"], params["num_layers"], params.get("dropout", 0.0))
        opt_class = torch.optim.AdamW if params.get("optimizer", "adam") == "adamw" else torch.optim.Adam
        optimizer = opt_class(model.parameters(), lr=params["lr"], weight_decay=params.get("weight_decay", 0.0))
        if task == "mnist":
            train, val = mnist_loaders(data_dir, params.get("train_size", 0), params["batch_size"])
        else:
            g = torch.Generator().manual_seed(0)
            x, y, m = addition_strings(params.get("train_size", 10_000), max_length, g)
            train = [(x[i:i + params["batch_size"]], y[i:i + params["batch_size"]], m[i:i + params["batch_size"]])
                     for i in range(0, len(x), params["batch_size"])]
            val = [addition_strings(50 * max_length, max_length, g)]
        steps = spec.epochs * len(train)
        schedule = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, params["lr"], total_steps=steps),
                    "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)}.get(
                        params.get("schedule", "constant"), lambda: None)()
        best, train_s = 0.0, 0.0
        for _ in range(spec.epochs):
            model.train()
            epoch_started = time.perf_counter()
            for batch in train:
                if task == "mnist":
                    images, labels = batch
                    logits = model(images.squeeze(1))
                    loss = (F.cross_entropy(logits, labels) if params["loss"] == "ce" else
                            F.mse_loss(logits.softmax(-1), F.one_hot(labels, 10).float()))
                else:
                    xb, yb, mb = batch
                    logits = model(xb)
                    per_bit = (F.binary_cross_entropy_with_logits(logits, yb, reduction="none")
                               if params["loss"] == "ce" else (logits.sigmoid() - yb) ** 2)
                    loss = (per_bit * mb).sum() / mb.sum()
                optimizer.zero_grad()
                loss.backward()
                if params.get("clip_grad"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), params["clip_grad"])
                optimizer.step()
                if schedule:
                    schedule.step()
            train_s += time.perf_counter() - epoch_started
            model.eval()
            with torch.no_grad():
                if task == "mnist":
                    right = sum((model(i.squeeze(1)).argmax(-1) == lab).sum().item() for i, lab in val)
                    acc = right / len(val.dataset)
                else:
                    xv, yv, mv = val[0]
                    hits = ((model(xv) > 0).float() == yv) & mv
                    lengths = mv.sum(1)
                    acc = torch.stack([hits[lengths == n].sum() / mv[lengths == n].sum()
                                       for n in range(1, max_length + 1)]).mean().item()
            best = max(best, acc)
        trial.set_user_attr("train_s", train_s)
        trial.set_user_attr("wall_s", time.time() - trial_started)
        return best

    # The study file's TPE settings, so that both arms draw the same first configurations.
    sampler_settings = {k: v for k, v in spec.sampler_dict.items() if k in ("seed", "n_startup_trials", "multivariate")}
    callback = MLflowCallback(tracking_uri=f"sqlite:///{work / 'mlflow.db'}", metric_name="val_acc")
    study = optuna.create_study(direction="maximize", study_name=f"plain-{task}-{arch}",
                                sampler=optuna.samplers.TPESampler(**sampler_settings))
    for params in configurations:
        study.enqueue_trial(params)
    study.optimize(objective, timeout=budget_s, callbacks=[callback])
    arm.elapsed_s = min(time.time() - started, budget_s)
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        finished = trial.datetime_complete.timestamp() - started
        if finished <= budget_s:
            # The callback logs after the objective returns: its cost is in datetime_complete, not in wall_s.
            wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
            arm.trials.append(Trial(finished, trial.value, wall, trial.user_attrs["train_s"]))
    mlflow.end_run()
    return arm


# ----------------------------------------------------------------------------------------------------------- table

def minutes(seconds: float | None, budget_s: float) -> str:
    return f"not reached in {budget_s / 60:.0f} min" if seconds is None else f"{seconds / 60:.1f} min"


def table(rows: list[tuple[str, str, Arm, Arm, tuple[float, ...]]], budget_s: float) -> str:
    lines = ["| task | arch | target | rnnbench | plain | plain / rnnbench |", "|---|---|---|---|---|---|"]
    for task, arch, ours, plain, targets in rows:
        for target in targets:
            a, b = ours.time_to(target), plain.time_to(target)
            ratio = f"{b / a:.1f}x" if a and b else ("rnnbench only" if a else "-")
            lines.append(f"| {task} | {arch} | {target:.1%} | {minutes(a, budget_s)} | {minutes(b, budget_s)} "
                         f"| {ratio} |")
    lines += ["", "| task | arch | arm | trials | trials/hour | best val acc | outside training epochs |",
              "|---|---|---|---|---|---|---|"]
    for task, arch, ours, plain, _ in rows:
        for arm in (ours, plain):
            best = max((t.value for t in arm.trials), default=math.nan)
            lines.append(f"| {task} | {arch} | {arm.name} | {len(arm.trials)} | {arm.per_hour():.0f} | {best:.2%} "
                         f"| {arm.outside_training():.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist", "addition"], choices=sorted(DEFAULT_TARGETS))
    parser.add_argument("--archs", nargs="+", default=["gru", "lstm"])
    parser.add_argument("--preset", default="standard", help="study-file preset both arms search (default: standard)")
    parser.add_argument("--budget-min", type=float, default=5.0, help="wall-time cap of each arm (default: 5)")
    parser.add_argument("--same-trials", type=int, default=12, metavar="N",
                        help="enqueue the same N random configurations at the head of both studies (default: 12; "
                             "0: each arm's sampler draws its own)")
    parser.add_argument("--work", default="/tmp/time_to_target", help="stores of both arms (default: %(default)s)")
    parser.add_argument("--data-dir", default=os.environ.get("RNNBENCH_DATA", "data"),
                        help="MNIST folder, as rnnbench's (default: $RNNBENCH_DATA or ./data)")
    args = parser.parse_args(argv)

    import torch

    from benchmark.data import fetch
    from benchmark.tuning.study_file import load_study

    if "mnist" in args.tasks:
        fetch(Path(args.data_dir), quiet=True)
    torch.set_num_threads(os.cpu_count() or 1)
    budget_s = args.budget_min * 60
    print(f"load average before: {os.getloadavg()[0]:.2f}; budget {args.budget_min:g} min per arm; "
          f"{args.same_trials} shared configurations first", flush=True)
    rows = []
    for task in args.tasks:
        for arch in args.archs:
            spec = load_study(REPO / "studies" / f"{task}.toml", arch, args.preset)
            work = Path(args.work) / f"{task}-{arch}"
            configurations = shared_configurations(spec, args.same_trials)
            ours = run_rnnbench(task, arch, args.preset, budget_s, work / "rnnbench", configurations)
            plain = run_plain(task, arch, spec, budget_s, work / "plain", args.data_dir, configurations)
            rows.append((task, arch, ours, plain, DEFAULT_TARGETS[task]))
            print(f"{task} {arch}: rnnbench {len(ours.trials)} trials, plain {len(plain.trials)} trials", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(table(rows, budget_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
