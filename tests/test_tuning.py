"""Studies end to end on tiny budgets: one parent run, one nested run per trial, prune/fail/resume/workers/faults."""

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from benchmark import cli, train, tuning
from benchmark.schema import StudyAttr, rank_key
from benchmark.store import client_for, mask_url
from benchmark.tuning import load_study, search

REPO = Path(__file__).resolve().parent.parent

TINY = """\
task = "addition"

[fixed]
max_train_length = 6
eval_lengths = [8]
batch_size = 50
threads = 1

[space]
hidden_size = {{ type = "int", low = 4, high = 8 }}
num_layers = {{ type = "int", low = 1, high = 2 }}
lr = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
loss = {{ type = "categorical", choices = ["ce", "mse"] }}

[sampler]
type = "tpe"
seed = 0
n_startup_trials = 2

[pruner]
type = "{pruner}"

[presets.quick.budget]
trials = 3
epochs = {epochs}
train_size = {train_size}

[presets.standard.budget]
trials = 3
epochs = 2

[presets.full.budget]
trials = 3
epochs = 2
"""


def study_file(tmp_path, pruner="none", epochs=2, train_size=200) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(pruner=pruner, epochs=epochs, train_size=train_size))
    return str(path)


def runs(uri, role):
    client = client_for(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.role = '{role}'", max_results=1000)


def subprocess_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def load(tmp_path, name="addition-gru-quick"):
    storage = tuning.open_storage(str(tmp_path / "mlruns" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def test_three_trials_make_one_parent_and_three_nested_runs(tmp_path, tracking_uri, capsys):
    code = cli.main(["tune", study_file(tmp_path), "--arch", "gru", "--tracking-uri", tracking_uri])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("addition-gru-quick trial") == 3 and "COMPLETE" in out
    (parent,) = runs(tracking_uri, "study")
    children = runs(tracking_uri, "trial")
    client = client_for(tracking_uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["suite"] == "tune"
    study = load(tmp_path)
    assert study.user_attrs[StudyAttr.PARENT_RUN] == parent.info.run_id
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2]
    for run in children:
        trial = study.trials[int(run.data.tags["trial_number"])]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["study_name"] == "addition-gru-quick" and run.data.tags["suite"] == "tune"
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert trial.state.name == "COMPLETE" and trial.user_attrs["mlflow_run_id"] == run.info.run_id
        for name, value in trial.params.items():  # the run trained what Optuna suggested
            assert run.data.params[name] == str(value)
        assert run.data.params["epochs"] == "2" and run.data.params["train_size"] == "200"
        assert run.data.metrics["best_val_acc"] == pytest.approx(trial.value)
        chosen = run.info.run_id == parent.data.tags["best_run_id"]
        # Search trials rank on validation alone: only the trial the study chose is scored on the test split, once.
        assert ("test_acc" in run.data.metrics) == chosen, (run.info.run_id, chosen)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert artifacts == {"checkpoint/model.pt"} and not client.list_artifacts(run.info.run_id, "curves")
    best = min(study.trials, key=lambda t: rank_key(t.value, t.user_attrs.get("val_loss"), t.number))
    assert parent.data.metrics["best_test_acc"] == pytest.approx(
        client.get_run(best.user_attrs["mlflow_run_id"]).data.metrics["test_acc"])
    assert study.user_attrs[StudyAttr.TESTED] == {str(best.number): parent.data.metrics["best_test_acc"]}
    assert parent.data.tags["best_trial_number"] == str(best.number)
    assert parent.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best.value)
    assert parent.data.metrics["n_complete"] == 3
    assert all(parent.data.tags[f"best.{k}"] == str(v) for k, v in best.params.items())

    assert cli.main(["studies", "--tracking-uri", tracking_uri]) == 0
    listing = capsys.readouterr().out
    assert "addition-gru-quick" in listing and f"{100 * best.value:.2f}" in listing


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_pruned_trial_run_is_killed_with_state_and_epoch(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setattr(search, "make_pruner", lambda spec: AlwaysPrune())
    assert cli.main(["tune", study_file(tmp_path), "--arch", "lstm", "--trials", "1", "--tracking-uri", tracking_uri,
                     "--quiet"]) == 0
    (run,) = runs(tracking_uri, "trial")
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["pruned_at_epoch"] == "1"
    assert [m.step for m in client_for(tracking_uri).get_metric_history(run.info.run_id, "val_acc")] == [1]
    assert load(tmp_path, "addition-lstm-quick").trials[0].state.name == "PRUNED"
    (parent,) = runs(tracking_uri, "study")
    assert parent.info.status == "FINISHED" and "best_trial_number" not in parent.data.tags


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setattr(search, "make_pruner", lambda spec: AlwaysPrune())
    assert cli.main(["tune", study_file(tmp_path, epochs=1), "--arch", "lstm", "--trials", "1",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    (run,) = runs(tracking_uri, "trial")
    assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
    assert "test_acc" in run.data.metrics
    assert load(tmp_path, "addition-lstm-quick").trials[0].state.name == "COMPLETE"


def test_failing_trial_is_failed_with_reason_and_study_continues(tmp_path, tracking_uri, monkeypatch):
    calls, real_fit = [], train.fit

    def flaky_fit(config, *args, **kwargs):
        calls.append(config)
        if len(calls) == 2:
            raise train.NonFiniteLossError("training loss became non-finite at iteration 3 (epoch 1)")
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(train, "fit", flaky_fit)
    assert cli.main(["tune", study_file(tmp_path), "--arch", "rnn", "--tracking-uri", tracking_uri, "--quiet"]) == 0
    study = load(tmp_path, "addition-rnn-quick")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "non-finite" in study.trials[1].user_attrs["error"]
    by_number = {int(r.data.tags["trial_number"]): r for r in runs(tracking_uri, "trial")}
    assert by_number[1].info.status == "FAILED" and by_number[1].data.tags["optuna.state"] == "FAIL"
    assert "NonFiniteLossError: training loss became non-finite" in by_number[1].data.tags["error"]
    assert by_number[0].info.status == by_number[2].info.status == "FINISHED"


def test_resume_continues_numbering_and_reuses_parent(tmp_path, tracking_uri):
    path = study_file(tmp_path)
    storage = str(tmp_path / "optuna.db")
    argv = ["tune", path, "--arch", "gru", "--tracking-uri", tracking_uri, "--storage", f"sqlite:///{storage}",
            "--quiet", "--study-name", "resumable"]
    assert cli.main([*argv, "--trials", "2"]) == 0
    assert cli.main([*argv, "--trials", "4"]) == 0
    assert cli.main([*argv, "--trials", "4"]) == 0  # budget reached: nothing more runs
    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{storage}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    (parent,) = runs(tracking_uri, "study")
    children = runs(tracking_uri, "trial")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == 4


def test_changed_study_file_is_refused_on_resume(tmp_path, tracking_uri, capsys):
    assert cli.main(["tune", study_file(tmp_path), "--arch", "gru", "--trials", "1", "--tracking-uri", tracking_uri,
                     "--quiet"]) == 0
    code = cli.main(["tune", study_file(tmp_path, epochs=3), "--arch", "gru", "--tracking-uri", tracking_uri])
    assert code == 2 and "different search space" in capsys.readouterr().err


def test_two_workers_share_one_study_without_duplicates(tmp_path, tracking_uri):
    result = subprocess.run([sys.executable, "-m", "benchmark", "tune", study_file(tmp_path), "--arch", "gru",
                             "--trials", "4", "--workers", "2", "--tracking-uri", tracking_uri],
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "database is locked" not in result.stderr
    study = load(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials), \
        ([(t.number, t.state.name, t.user_attrs.get(StudyAttr.ERROR)) for t in study.trials], result.stdout[-2000:])
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both workers ran trials
    (parent,) = runs(tracking_uri, "study")
    children = runs(tracking_uri, "trial")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {r.info.run_id for r in children}
    assert {r.data.tags["torch_threads"] for r in children} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    assert parent.info.status == "FINISHED"


def _start_and_wait_for_trial(tmp_path, tracking_uri, *extra, ignore_sigint=False):
    path = study_file(tmp_path, epochs=200, train_size=2000)  # a trial that would run for minutes
    command = [sys.executable, "-m", "benchmark", "tune", path, "--arch", "gru", "--tracking-uri", tracking_uri,
               "--trials", "2", "--quiet", *extra]
    # An ignored SIGINT is inherited across exec: set it either way, or a test run started in the background
    # (`nohup pytest &` ignores SIGINT) would start a child that Ctrl-C cannot reach.
    disposition = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    deadline = time.time() + 120
    journal = tmp_path / "mlruns" / "optuna.journal"
    while time.time() < deadline:  # poll Optuna, not MLflow: never race the child's store creation
        if journal.exists():
            with contextlib.suppress(KeyError):
                trials = load(tmp_path).trials
                if trials and trials[0].state.name == "RUNNING" and trials[0].intermediate_values:
                    return process, command
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)
    process.kill()
    pytest.fail("no trial started within 120 s")


def test_ctrl_c_fails_trial_kills_runs_exits_130_and_resumes(tmp_path, tracking_uri):
    process, command = _start_and_wait_for_trial(tmp_path, tracking_uri)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert not [r for r in runs(tracking_uri, "trial") + runs(tracking_uri, "study") if r.info.status == "RUNNING"]
    (trial_run,) = runs(tracking_uri, "trial")
    assert trial_run.info.status == "KILLED" and trial_run.data.tags["optuna.state"] == "FAIL"
    (parent,) = runs(tracking_uri, "study")
    assert parent.info.status == "KILLED"
    assert load(tmp_path).trials[0].state.name == "FAIL"

    # Resume (fast trials): the interrupted trial does not use up the budget; numbering continues; same parent.
    monkeypatch_fast_fit()
    assert cli.main(command[3:]) == 0
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    (parent,) = runs(tracking_uri, "study")
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == 2
    assert not [r for r in runs(tracking_uri, "trial") if r.info.status == "RUNNING"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs(tracking_uri, "trial")} == {parent.info.run_id}


def test_sigterm_ends_like_ctrl_c_and_reaches_the_workers(tmp_path, tracking_uri):
    # Started the way `bench ... &` in a script starts it: SIGINT ignored, inherited by the workers.
    process, _ = _start_and_wait_for_trial(tmp_path, tracking_uri, "--workers", "2", ignore_sigint=True)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)  # within 10 s, as every command that is told to stop
    assert process.returncode == 130, err
    assert not [r for r in runs(tracking_uri, "trial") + runs(tracking_uri, "study") if r.info.status == "RUNNING"]
    assert all(t.state.name != "RUNNING" for t in load(tmp_path).trials)
    # No orphaned worker keeps training after its launcher was stopped.
    assert not subprocess.run(["pgrep", "-f", f"tune {study_file(tmp_path, epochs=200, train_size=2000)}"],
                              capture_output=True).stdout


def test_killed_worker_trial_is_failed_and_retried_on_next_start(tmp_path, tracking_uri):
    process, command = _start_and_wait_for_trial(tmp_path, tracking_uri)
    process.kill()
    process.communicate(timeout=30)
    (lost_run,) = runs(tracking_uri, "trial")
    assert lost_run.info.status == "RUNNING"  # nobody could close it: SIGKILL

    monkeypatch_fast_fit()
    assert cli.main(command[3:]) == 0
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    retry = study.trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == study.trials[0].params
    by_number = {int(r.data.tags["trial_number"]): r for r in runs(tracking_uri, "trial")}
    assert by_number[0].info.status == "FAILED" and "worker lost" in by_number[0].data.tags["error"]
    assert by_number[1].data.tags["retried_trial"] == "0"
    assert not [r for r in runs(tracking_uri, "trial") + runs(tracking_uri, "study") if r.info.status == "RUNNING"]


_patches = []


@pytest.fixture(autouse=True)
def _undo_patches():
    yield
    while _patches:
        setattr(*_patches.pop())


def monkeypatch_fast_fit():
    """Trials of one epoch whatever the study says (the study file, hence its fingerprint, is unchanged)."""
    real_fit = train.fit
    _patches.append((train, "fit", real_fit))
    train.fit = lambda config, *args, **kwargs: real_fit(config.replace(epochs=1), *args, **kwargs)


def test_mask_url_hides_passwords():
    assert mask_url("postgresql+psycopg://bench:s3cret@db:5432/optuna") == \
        "postgresql+psycopg://bench:***@db:5432/optuna"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_bench_tunes_each_study_then_writes_the_report(tmp_path, tracking_uri, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "addition.toml").write_text(TINY.format(pruner="none", epochs=1, train_size=100))
    code = cli.main(["bench", "--preset", "quick", "--archs", "gru", "rnn", "--tasks", "addition",
                     "--studies-dir", str(studies), "--tracking-uri", tracking_uri, "--out", str(tmp_path / "rep"),
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| addition-gru-quick | 3/0/0 |" in out and "| addition-rnn-quick | 3/0/0 |" in out
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| gru |" in report and "| rnn |" in report
    assert not [r for r in runs(tracking_uri, "trial") if r.info.status == "RUNNING"]


def test_bench_trials_caps_every_study_and_refuses_zero(tmp_path, tracking_uri, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "addition.toml").write_text(TINY.format(pruner="none", epochs=1, train_size=100))
    common = ["--archs", "gru", "--tasks", "addition", "--studies-dir", str(studies), "--tracking-uri", tracking_uri,
              "--out", str(tmp_path / "rep"), "--quiet"]
    assert cli.main(["bench", "--preset", "quick", "--trials", "1", *common]) == 0
    assert "| addition-gru-quick | 1/0/0 |" in capsys.readouterr().out  # the preset asks for 3
    assert cli.main(["bench", "--preset", "quick", "--trials", "0", *common]) == 2
    assert "rnnbench bench: error: --trials must be >= 1, got 0" in capsys.readouterr().err


def test_study_registers_its_best_model_as_champion(tmp_path, tracking_uri):
    from benchmark.champion import resolve_model

    assert cli.main(["tune", study_file(tmp_path, epochs=1, train_size=100), "--arch", "gru",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    best = max(load(tmp_path).trials, key=lambda t: t.value)
    assert resolve_model("addition-gru@champion", tracking_uri)["run_id"] == best.user_attrs["mlflow_run_id"]


# Every setting differs from Optuna's default, so a pruner built without them fails; the quick preset trains 5
# epochs, Hyperband's max_resource.
@pytest.mark.parametrize(("table", "kind", "expected"), [
    ("type = \"median\"\nn_startup_trials = 3\nn_warmup_steps = 1\ninterval_steps = 4",
     optuna.pruners.MedianPruner, {"_n_startup_trials": 3, "_n_warmup_steps": 1, "_interval_steps": 4,
                                   "_percentile": 50.0}),
    ("type = \"hyperband\"\nmin_resource = 2\nreduction_factor = 2", optuna.pruners.HyperbandPruner,
     {"_min_resource": 2, "_reduction_factor": 2, "_max_resource": 5}),
    ("type = \"successive_halving\"\nmin_resource = 2\nreduction_factor = 4\nmin_early_stopping_rate = 1",
     optuna.pruners.SuccessiveHalvingPruner, {"_min_resource": 2, "_reduction_factor": 4,
                                              "_min_early_stopping_rate": 1}),
    ("type = \"none\"", optuna.pruners.NopPruner, {}),
])
def test_every_study_file_pruner_builds_its_optuna_pruner_with_its_settings(tmp_path, table, kind, expected):
    path = Path(study_file(tmp_path, epochs=5))
    text = path.read_text()
    assert '[pruner]\ntype = "none"\n' in text
    path.write_text(text.replace('[pruner]\ntype = "none"\n', f"[pruner]\n{table}\n"))
    pruner = tuning.make_pruner(load_study(path, "lstm"))
    assert type(pruner) is kind
    assert {name: getattr(pruner, name) for name in expected} == expected  # Optuna keeps them as attributes


def test_open_storage_for_readers_creates_nothing(tmp_path, monkeypatch):
    missing = tmp_path / "absent" / "optuna.journal"
    for url in (str(missing), f"sqlite:///{tmp_path / 'absent' / 'optuna.db'}"):
        with pytest.raises(tuning.StorageNotFound, match="no Optuna storage at"):
            tuning.open_storage(url, create=False)
    assert not (tmp_path / "absent").exists()

    written = tmp_path / "store" / "optuna.journal"
    optuna.create_study(study_name="kept", storage=tuning.open_storage(str(written)))
    assert optuna.get_all_study_names(tuning.open_storage(str(written), create=False)) == ["kept"]
    database = tmp_path / "store" / "optuna.db"
    optuna.create_study(study_name="kept", storage=tuning.open_storage(f"sqlite:///{database}"))
    before = database.stat().st_mtime_ns, sorted(p.name for p in database.parent.iterdir())
    assert optuna.get_all_study_names(tuning.open_storage(f"sqlite:///{database}", create=False)) == ["kept"]
    assert (database.stat().st_mtime_ns, sorted(p.name for p in database.parent.iterdir())) == before


def test_storage_url_is_the_flag_then_the_environment_then_the_journal_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv(tuning.STORAGE_ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert tuning.resolve_storage_url(None, uri) == str(tmp_path / "runs" / "optuna.journal")
    assert not (tmp_path / "runs").exists()  # resolving creates nothing
    monkeypatch.setenv(tuning.STORAGE_ENV, "sqlite:///env.db")
    assert tuning.resolve_storage_url(None, uri) == "sqlite:///env.db"
    assert tuning.resolve_storage_url("flag.journal", uri) == "flag.journal"


def test_the_tuning_package_imports_without_torch_optuna_or_mlflow():
    """The report and the CLI's listings import it; only a trial needs torch."""
    code = ("import sys, benchmark.tuning, benchmark.confirm, benchmark.champion; "
            "print(sorted(m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_a_dead_worker_after_the_budget_is_met_is_reported_as_it_is(tmp_path, tracking_uri, monkeypatch, capsys):
    """The budget met: exit 0, parent FINISHED, no "re-run to resume". Work left: exit 1 and say how much."""
    from benchmark.tuning import session

    def workers_that_finish_then_one_dies(spec, name, storage_url, uri, workers, quiet, system_metrics=False):
        session.run_worker(spec, name, storage_url, uri, spec.trials, 0, quiet=True)
        return ["worker 1 exit -9"]

    monkeypatch.setattr(session, "_run_workers", workers_that_finish_then_one_dies)
    path = study_file(tmp_path)
    argv = ["tune", path, "--arch", "gru", "--tracking-uri", tracking_uri, "--workers", "2", "--trials", "2"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "worker 1 exit -9; the study holds all 2 trials" in err and "re-run" not in err
    (parent,) = runs(tracking_uri, "study")
    assert parent.info.status == "FINISHED"

    monkeypatch.setattr(session, "_run_workers", lambda *args: ["worker 0 exit -9"])
    assert cli.main([*argv[:-1], "3"]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 trials left: re-run to resume" in err
    (parent,) = runs(tracking_uri, "study")
    assert parent.info.status == "FAILED"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_a_study_file_naming_a_missing_device_is_refused_before_any_trial(tmp_path, tracking_uri, capsys):
    path = Path(study_file(tmp_path))
    path.write_text(path.read_text().replace("[fixed]\n", "[fixed]\ndevice = \"cuda\"\n", 1))
    assert cli.main(["tune", str(path), "--arch", "gru", "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[fixed] device: device 'cuda' requested" in err
    assert not (tmp_path / "mlruns").exists()


DIE_AFTER_THE_RUN_ENDS = """
import os, signal, sys
from benchmark import cli, tracking
from benchmark.schema import RunStatus

finish = tracking.RunTracker.finish

def finish_then_die(self, status=RunStatus.FINISHED, error=None):
    finish(self, status, error)
    if status == RunStatus.FINISHED:  # the trial's run is FINISHED and COMPLETE; Optuna has not heard yet
        os.kill(os.getpid(), signal.SIGKILL)

tracking.RunTracker.finish = finish_then_die
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_kill_between_the_mlflow_end_and_the_optuna_tell_is_reconciled_on_resume(tmp_path, tracking_uri):
    command = ["tune", study_file(tmp_path), "--arch", "gru", "--tracking-uri", tracking_uri, "--trials", "2"]
    died = subprocess.run([sys.executable, "-c", DIE_AFTER_THE_RUN_ENDS, *command], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    (run,) = runs(tracking_uri, "trial")
    assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"  # the disagreement
    assert load(tmp_path).trials[0].state.name == "RUNNING"

    assert cli.main(command) == 0  # resume: trial 0 is lost (dead pid) and its parameters run again
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    by_number = {int(r.data.tags["trial_number"]): r for r in runs(tracking_uri, "trial")}
    first = by_number[0]
    assert first.info.status == "FAILED" and first.data.tags["optuna.state"] == "FAIL"
    assert "before Optuna recorded the result" in first.data.tags["error"]
    finished = sorted(n for n, r in by_number.items() if r.info.status == "FINISHED")
    assert finished == [t.number for t in study.trials if t.state.name == "COMPLETE"] == [1, 2]


def test_bench_gives_small_models_two_one_thread_workers_and_says_so(tmp_path, tracking_uri, capsys):
    from benchmark.bench import SMALL_HIDDEN, auto_workers, largest_hidden

    folder = Path(__file__).resolve().parent.parent / "studies"
    addition, mnist = (load_study(folder / f"{task}.toml", "gru", "quick") for task in ("addition", "mnist"))
    assert largest_hidden(addition) <= SMALL_HIDDEN < largest_hidden(mnist)  # the shipped spaces, read back
    assert auto_workers(addition, cores=2)[0] == 2 and auto_workers(mnist, cores=2)[0] == 1
    assert auto_workers(addition, cores=1)[0] == 1  # one core: a second worker only takes turns
    fixed = dataclasses.replace(addition, space=tuple(p for p in addition.space if p.name != "hidden_size"),
                                fixed=(*addition.fixed, ("hidden_size", 96)))
    assert largest_hidden(fixed) == 96 and auto_workers(fixed, cores=2)[0] == 1
    assert cli.main(["bench", "--preset", "quick", "--archs", "gru", "--tasks", "addition", "--studies-dir",
                     str(Path(study_file(tmp_path)).parent), "--trials", "1", "--seeds", "0", "--workers", "0",
                     "--tracking-uri", tracking_uri]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
