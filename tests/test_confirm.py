"""Seed confirmation: the best trial's config retrained with fresh seeds, nested under the study, resumable."""

import pytest
from test_tuning import TINY, load, runs, study_file

from benchmark import cli, confirm, stats
from benchmark.config import ConfigError, TrainConfig
from benchmark.store import client_for


@pytest.fixture
def tuned(tmp_path, tracking_uri):
    assert cli.main(["tune", study_file(tmp_path, epochs=1, train_size=100), "--arch", "gru",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    return load(tmp_path)


def test_confirm_retrains_the_best_trial_with_fresh_seeds_under_the_study(tuned, tracking_uri, capsys):
    assert cli.main(["confirm", "--task", "addition", "--arch", "gru", "--seeds", "2",
                     "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out
    best = max((t for t in tuned.trials if t.value is not None), key=lambda t: t.value)
    client = client_for(tracking_uri)
    trial_run = client.get_run(best.user_attrs["mlflow_run_id"])
    made = runs(tracking_uri, "confirm")
    assert sorted(int(r.data.tags["seed"]) for r in made) == confirm.confirm_seeds(2)
    parent = tuned.user_attrs["mlflow_parent_run_id"]
    for run in made:
        assert run.info.status == "FINISHED"
        assert run.data.tags["suite"] == "confirm" and run.data.tags["study_name"] == "addition-gru-quick"
        assert run.data.tags["confirm_of"] == trial_run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parent
        # Everything but the seed (and the threads, torch's default unless --threads) is the trial's configuration.
        same = {k: v for k, v in run.data.params.items() if k not in ("seed", "threads")}
        assert same == {k: v for k, v in trial_run.data.params.items() if k not in ("seed", "threads")}
        assert "test_acc" in run.data.metrics
    assert "over 2 seed(s)" in out


def test_confirm_resumes_instead_of_repeating_seeds(tuned, tracking_uri):
    confirm.confirm("addition", "gru", seeds=1, tracking_uri=tracking_uri, quiet=True)
    results = confirm.confirm("addition", "gru", seeds=2, tracking_uri=tracking_uri, quiet=True)
    assert [r.status for r in results] == ["SKIPPED", "FINISHED"]
    assert len(runs(tracking_uri, "confirm")) == 2


def test_fixed_length_confirmation_trains_on_that_length_only(tuned, tracking_uri):
    results = confirm.confirm("addition", "gru", seeds=1, tracking_uri=tracking_uri, train_length=3, quiet=True)
    run = client_for(tracking_uri).get_run(results[0].run_id)
    assert run.data.params["train_lengths"] == "3" and run.data.tags["confirm_train_length"] == "3"
    # A fixed-length run does not count as a seed of the all-lengths confirmation.
    assert [r.status for r in confirm.confirm("addition", "gru", seeds=1, tracking_uri=tracking_uri,
                                              quiet=True)] == ["FINISHED"]


def test_a_crashing_seed_ends_failed_with_its_reason_and_the_next_seed_runs(tuned, tracking_uri, monkeypatch):
    from benchmark import train

    real_fit, calls = train.fit, []

    def flaky(config, **kwargs):
        calls.append(config.seed)
        if len(calls) == 1:
            raise train.NonFiniteLossError("training loss is nan at epoch 1")
        return real_fit(config, **kwargs)

    monkeypatch.setattr(train, "fit", flaky)
    results = confirm.confirm("addition", "gru", seeds=2, tracking_uri=tracking_uri, quiet=True, together=False)
    assert [r.status for r in results] == ["FAILED", "FINISHED"]
    failed = client_for(tracking_uri).get_run(results[0].run_id)
    assert failed.info.status == "FAILED" and "nan" in failed.data.tags["error"]


def test_confirm_without_a_study_says_what_to_run(tmp_path, tracking_uri, capsys):
    code = cli.main(["confirm", "--task", "mnist", "--arch", "lstm", "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no mnist study for lstm" in err and "rnnbench tune studies/mnist.toml --arch lstm" in err


def test_several_studies_need_a_preset(tmp_path, tracking_uri):
    path = study_file(tmp_path, epochs=1, train_size=100)
    for preset in ("quick", "standard"):
        assert cli.main(["tune", path, "--arch", "gru", "--preset", preset, "--tracking-uri", tracking_uri,
                         "--quiet", "--trials", "1"]) == 0
    with pytest.raises(ConfigError, match="several addition studies for gru"):
        confirm.confirm("addition", "gru", seeds=1, tracking_uri=tracking_uri, quiet=True)
    results = confirm.confirm("addition", "gru", seeds=1, preset="standard", tracking_uri=tracking_uri, quiet=True)
    run = client_for(tracking_uri).get_run(results[0].run_id)
    assert run.data.tags["study_name"] == "addition-gru-standard"


def test_bench_confirms_each_study_when_asked(tmp_path, tracking_uri):
    studies = tmp_path / "studies"
    studies.mkdir()
    text = TINY.format(pruner="none", epochs=1, train_size=100).replace(
        "[presets.quick.budget]", "[presets.quick.confirm]\nseeds = 2\nepochs = 2\ntrain_size = 60\n"
        "train_lengths = [3]\n\n[presets.quick.budget]")
    (studies / "addition.toml").write_text(text)
    assert cli.main(["bench", "--preset", "quick", "--archs", "gru", "--tasks", "addition", "--studies-dir",
                     str(studies), "--tracking-uri", tracking_uri, "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    made = runs(tracking_uri, "confirm")
    assert len(made) == 4  # 2 seeds on lengths 1..6, 2 seeds on length 3 only
    assert sorted(r.data.tags.get("confirm_train_length", "-") for r in made) == ["-", "-", "3", "3"]
    # [confirm] epochs and train_size apply; the seeds use torch's threads, not a worker's share.
    assert {(r.data.params["epochs"], r.data.params["train_size"], r.data.params["threads"]) for r in made} == {
        ("2", "60", "0")}
    assert "± " in (tmp_path / "rep" / "report.md").read_text()


def test_config_round_trips_through_run_params():
    config = TrainConfig.for_task("addition", "bigru", train_lengths=[3], eval_lengths=[30, 1000], dropout=0.1,
                                  lr=3e-3, clip_grad=1.0)
    assert TrainConfig.from_params(config.to_params()) == config


def test_within_noise_is_a_welch_t_interval():
    same, diff, band = stats.within_noise([0.990, 0.992, 0.991], [0.989, 0.991, 0.993])
    # Hand-computed, unequal spreads: stds 0.001 and 0.002, se = sqrt((1e-6 + 4e-6) / 3) = 1.291e-3; Welch
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17 = 2.94, so t at df 2 = 4.303 (a pooled df 4 gives 2.776).
    assert same and diff == pytest.approx(0.0) and band == pytest.approx(4.303 * 1.291e-3, rel=1e-3)
    apart, diff, band = stats.within_noise([0.990, 0.991, 0.992], [0.980, 0.981, 0.982])
    # Hand-computed: stds 0.001 each, n = 3: se = sqrt(2 * 1e-6 / 3) = 8.165e-4, Welch df = 4, t = 2.776.
    assert not apart and diff == pytest.approx(0.010) and band == pytest.approx(2.776 * 8.165e-4, rel=1e-3)
    # 0.002 apart is inside that interval (0.00227): not resolved by 3 seeds.
    assert stats.within_noise([0.990, 0.991, 0.992], [0.988, 0.989, 0.990])[0]
    assert stats.within_noise([1.0, 1.0], [1.0, 1.0]) == (True, 0.0, 0.0)
    assert not stats.within_noise([1.0, 1.0], [0.99, 0.99])[0]  # no spread: any difference is real
    assert stats.t_975(4.0) == 2.776 and stats.t_975(4.9) == 2.776 and stats.t_975(500) == 1.96


def test_best_trial_order_is_the_reports(tmp_path):
    """Ties on validation accuracy (every trial at 100 %) go to the lower validation loss, then the earlier trial,
    in Optuna's best_trial (what confirm retrains) and in the report's ranking alike."""
    import optuna

    from benchmark.report import RunRecord, best_of
    from benchmark.tuning import best_trial

    study = optuna.create_study(direction="maximize")
    values = [(0, 1.0, 0.30), (1, 1.0, 0.10), (2, 0.99, 0.01), (3, 1.0, 0.10)]
    for _number, value, loss in values:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"val_loss": loss}))
    records = [RunRecord(f"run-{9 - n}", "addition", "FINISHED", 0,
                         {"role": "trial", "optuna.state": "COMPLETE", "trial_number": str(n)}, {},
                         {"best_val_acc": v, "best_val_loss": loss}) for n, v, loss in values]
    assert best_trial(study).number == 1
    assert best_of(records).trial_number == 1  # not run-6 (trial 3), whose run id sorts first


def test_stacked_seeds_are_plain_runs_whose_checkpoints_score_their_logged_test_accuracy(tuned, tracking_uri, capsys):
    import mlflow

    from benchmark import fused
    from benchmark.checkpoint import load_checkpoint
    from benchmark.schema import Artifact
    from benchmark.tasks import build_task

    results = confirm.confirm("addition", "gru", seeds=2, tracking_uri=tracking_uri)
    assert "2 seed(s) trained together as one stacked model" in capsys.readouterr().out
    client = client_for(tracking_uri)
    for result in results:
        run = client.get_run(result.run_id)
        assert run.data.tags["kernel"] == ("stacked-fused" if fused.available() else "stacked-bmm")
        assert run.data.metrics["epochs_run"] == int(run.data.params["epochs"])
        mlflow.set_tracking_uri(tracking_uri)
        path = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path=Artifact.CHECKPOINT)
        model, config = load_checkpoint(path)
        assert config.seed == result.seed
        score = build_task(config, "cpu").evaluate(model, "test", config.loss)["acc"]
        assert score == pytest.approx(run.data.metrics["test_acc"], abs=1e-9)


def test_a_cell_without_a_stacked_kernel_trains_its_seeds_one_after_the_other(tmp_path, tracking_uri, capsys):
    assert cli.main(["tune", study_file(tmp_path, epochs=1, train_size=100), "--arch", "mingru", "--trials", "1",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    assert cli.main(["confirm", "--task", "addition", "--arch", "mingru", "--seeds", "2",
                     "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out
    assert "2 seed(s) one after the other (mingru has no stacked kernel" in out and "over 2 seed(s)" in out
    made = runs(tracking_uri, "confirm")
    assert sorted(int(r.data.tags["seed"]) for r in made) == confirm.confirm_seeds(2)
    assert all(r.info.status == "FINISHED" and "stacked" not in r.data.tags.get("kernel", "") for r in made)


def test_bench_cost_reads_each_studys_search_confirmation_and_seeds_from_the_store(tuned, tracking_uri, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cost.py"
    spec = importlib.util.spec_from_file_location("bench_cost", path)
    bench_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_cost)
    assert cli.main(["confirm", "--task", "addition", "--arch", "gru", "--seeds", "2",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    assert cli.main(["confirm", "--task", "addition", "--arch", "gru", "--seeds", "1", "--train-length", "3",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    (row,) = bench_cost.study_costs(tracking_uri)
    made = runs(tracking_uri, "confirm")
    whole = [r for r in made if "confirm_train_length" not in r.data.tags]
    assert len(made) == 3 and len(whole) == 2
    assert (row["study"], row["trials"]) == ("addition-gru-quick", len(tuned.trials))
    assert sorted(row["seeds"]) == sorted(r.data.metrics["test_acc"] for r in whole)  # the retrain left out
    (parent,) = runs(tracking_uri, "study")
    assert row["search"] == (parent.info.end_time - parent.info.start_time) / 1000
    starts, ends = [r.info.start_time for r in made], [r.info.end_time for r in made]
    assert row["confirm"] == (max(ends) - min(starts)) / 1000
    assert bench_cost.main(["--tracking-uri", tracking_uri]) == 0
    assert "addition-gru-quick" in capsys.readouterr().out
