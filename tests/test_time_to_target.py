"""benchmarks/time_to_target.py end to end at a tiny size: both arms, one repeat, addition on a tiny study file.

Example: python -m pytest -q tests/test_time_to_target.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import mlflow

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_target.py"

TINY = """\
task = "addition"

[fixed]
optimizer = "adam"
max_train_length = 4
eval_lengths = [6]
batch_size = 32
num_layers = 1
train_size = 512

[space]
hidden_size = { type = "int", low = 8, high = 12 }
lr = { type = "float", low = 2e-2, high = 4e-2, log = true }
loss = { type = "categorical", choices = ["ce", "mse"] }

[sampler]
type = "tpe"
seed = 0
n_startup_trials = 2

[pruner]
type = "median"
n_startup_trials = 2
n_warmup_steps = 1

[presets.quick.budget]
trials = 4
epochs = 3

[presets.standard.budget]
trials = 4
epochs = 3

[presets.full.budget]
trials = 4
epochs = 3
"""


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("time_to_target", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "time_to_target", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_both_arms_are_timed_from_popen_to_a_stored_result(tmp_path, monkeypatch, capsys):
    module = load_script(monkeypatch)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "addition.toml").write_text(TINY)
    popens, real_popen = [], module.subprocess.Popen

    def popen(command, **options):
        popens.append((time.time(), command))
        return real_popen(command, **options)

    monkeypatch.setattr(module.subprocess, "Popen", popen)
    assert module.main(["--tasks", "addition", "--archs", "gru", "--repeats", "1", "--budget-min", "0.75",
                        "--targets", "0.55", "0.6", "--threads", "1", "--poll-s", "0.5", "--preset", "quick",
                        "--study-dir", str(tmp_path / "studies"), "--work", str(tmp_path / "work")]) == 0
    (out,) = (tmp_path / "work").glob("*/time_to_target.md")
    (raw,) = (tmp_path / "work").glob("*/results.json")
    printed = capsys.readouterr().out
    assert "processor: " in printed and "CPU capability" in printed
    assert "load average before: " in printed and "load average after: " in printed

    # The table: one row per target with both arms' median and range and the ratio; then one row per arm and seed.
    first, second = out.read_text().strip().split("\n\n")
    rows = first.splitlines()[2:]
    assert len(rows) == 2 and all(row.count("|") == 9 for row in rows)
    assert rows[0].startswith("| addition | gru | 55.0% |")
    assert [row.split("|")[3].strip() for row in second.splitlines()[2:]] == ["rnnbench", "plain"]

    arms = {arm["name"]: arm for arm in json.loads(raw.read_text())}
    assert set(arms) == {"rnnbench", "plain"}
    for name, arm in arms.items():
        (called,) = [at for at, command in popens if (("tune" in command) if name == "rnnbench"
                                                      else str(module.PLAIN_SCRIPT) in command)]
        # The clock starts just before the subprocess does.
        assert arm["started"] <= called < arm["started"] + 0.5
        reached = [t for t in arm["trials"] if t["value"] >= 0.6]
        assert reached, f"{name} never reached 60 %: {arm}"
        first_hit = min(reached, key=lambda t: t["stored_at"])
        # It stops at a result in the arm's MLflow store: the run is ended and holds the value, at most a moment
        # before the clock stopped (rnnbench: its Optuna completion; plain: its callback after MLflowCallback).
        client = mlflow.MlflowClient(tracking_uri=arm["store"])
        if name == "rnnbench":
            run = client.get_run(first_hit["run_id"])
            assert run.data.metrics["best_val_acc"] == first_hit["value"]
        else:
            experiments = [e.experiment_id for e in client.search_experiments()]
            (run,) = [r for r in client.search_runs(experiments) if r.info.run_name == str(first_hit["number"])]
            assert run.data.metrics["val_acc"] == first_hit["value"]
        assert run.info.status == "FINISHED"
        assert run.info.end_time / 1000 <= first_hit["stored_at"] < run.info.end_time / 1000 + 3
        assert first_hit["stored_at"] - arm["started"] <= 45


def test_a_repeat_that_misses_counts_as_the_budget_in_the_median(monkeypatch):
    module = load_script(monkeypatch)

    def arm(name, seconds):
        trials = [module.Trial(0, 1.0, 100.0 + seconds)] if seconds is not None else []
        return module.Arm(name, 0, 100.0, trials=trials)

    results = {("addition", "gru"): {"rnnbench": [arm("rnnbench", s) for s in (30, 90, None)],
                                     "plain": [arm("plain", s) for s in (60, None, None)]},
               ("addition", "lstm"): {"rnnbench": [arm("rnnbench", s) for s in (30, 60, 90)],
                                      "plain": [arm("plain", s) for s in (90, 120, 150)]}}
    rows = module.table(results, {"addition": (1.0,)}, 300).split("\n\n")[0].splitlines()[2:]
    cells = [[cell.strip() for cell in row.split("|")[4:-1]] for row in rows]
    assert cells[0] == ["1.5 min", "0.5 min .. not reached in 5 min", "not reached in 5 min",
                        "1.0 min .. not reached in 5 min", ">= 3.3x"]
    assert cells[1] == ["1.0 min", "0.5 min .. 1.5 min", "2.0 min", "1.5 min .. 2.5 min", "2.0x"]
