"""reproduce: the notebook's configurations as data, tagged runs, skip on re-run, the report section."""

import pytest
from conftest import synthetic_mnist
from PIL import Image

from benchmark import cli
from benchmark.config import ConfigError
from benchmark.notebook import BY_ID, EXPERIMENTS, NOTEBOOK_REFERENCE, signed_points
from benchmark.report import Figures, Snapshot, load_snapshot
from benchmark.report.sections.reproduction import reproduction
from benchmark.reproduce import format_table, reproduce, select
from benchmark.schema import REPRODUCE_EXPERIMENT, Metric, Role, RunStatus, Suite, Tag, TrialState
from benchmark.store import client_for

TINY = {"train_size": 40, "max_train_length": 6, "eval_lengths": (9,)}


def test_config_table_matches_the_notebook():
    assert [e.id for e in select(["mnist"])] == ["mnist-rnn-128", "mnist-rnn-256", "mnist-rnn-2layers", "mnist-lstm",
                                                 "mnist-gru", "mnist-birnn", "mnist-bilstm"]
    assert len(select(["addition"])) == 7 and len(EXPERIMENTS) == 14
    for experiment in select(["mnist"]):
        config = experiment.config()
        assert (config.lr, config.batch_size, config.epochs, config.loss, config.optimizer, config.schedule) == \
            (1e-3, 500, 10, "ce", "adam", "constant")
    assert BY_ID["mnist-rnn-128"].config().hidden_size == 128
    assert BY_ID["mnist-rnn-256"].config().hidden_size == 256
    assert BY_ID["mnist-rnn-2layers"].config().num_layers == 2
    assert BY_ID["mnist-bilstm"].config().arch == "bilstm" and BY_ID["mnist-bilstm"].notebook == 97.82
    assert BY_ID["mnist-rnn-128"].notebook == 94.42 and BY_ID["mnist-lstm"].notebook == 97.38
    for experiment in select(["addition"]):
        config = experiment.config()
        assert (config.arch, config.lr, config.epochs, config.batch_size, config.train_size,
                config.max_train_length) == ("lstm", 0.01, 10, 1, 250, 20)
    assert BY_ID["addition-h3"].config().hidden_size == 3 and BY_ID["addition-h3"].notebook == 92.33
    assert BY_ID["addition-h10"].config().hidden_size == 10
    assert BY_ID["addition-h5-mse"].config().loss == "mse" and BY_ID["addition-h5-ce"].config().loss == "ce"
    assert BY_ID["addition-h5-len3"].config().train_lengths == (3,) and BY_ID["addition-h5-len3"].notebook == 81.35
    assert BY_ID["addition-h5-len10"].config().train_lengths == (10,)
    assert BY_ID["addition-h5-len5"].config().hidden_size == 5
    assert BY_ID["addition-h10"].config(epochs=None).epochs == 10  # None keeps the notebook's value


def test_unknown_selection_is_a_config_error(capsys):
    with pytest.raises(ConfigError, match="unknown experiment"):
        select(["imagenet"])
    assert cli.main(["reproduce", "--only", "mnist-transformer"]) == 2
    assert "unknown experiment(s) mnist-transformer" in capsys.readouterr().err
    assert cli.main(["reproduce", "--list", "--only", "addition"]) == 0
    assert capsys.readouterr().out.count("\n") == 7


def test_tiny_run_is_tagged_and_skipped_on_rerun(tracking_uri):
    lines = []
    rows = reproduce(["addition-h10"], epochs=1, tracking_uri=tracking_uri, quiet=True, overrides=TINY,
                     log=lines.append)
    (row,) = rows
    (outcome,) = row.outcomes
    assert not outcome.skipped
    client = client_for(tracking_uri)
    run = client.get_run(outcome.run_id)
    assert client.get_experiment(run.info.experiment_id).name == REPRODUCE_EXPERIMENT
    assert run.info.status == RunStatus.FINISHED
    tags = run.data.tags
    assert tags[Tag.SUITE] == Suite.REPRODUCE and tags[Tag.NOTEBOOK_REF] == "addition-h10"
    assert tags[Tag.NOTEBOOK_VALUE] == "100"
    assert tags[Tag.ROLE] == Role.RUN and tags[Tag.TASK] == "addition" and tags[Tag.ARCH] == "lstm"
    assert run.data.metrics[Metric.NOTEBOOK_ACC] == 1.0
    assert run.data.params["batch_size"] == "1" and run.data.params["epochs"] == "1"
    assert outcome.test_acc == pytest.approx(100 * run.data.metrics[Metric.TEST_ACC])

    again = reproduce(["addition"], epochs=1, tracking_uri=tracking_uri, quiet=True, overrides=TINY,
                      log=lines.append)
    skipped = [o for r in again for o in r.outcomes if o.skipped]
    assert [o.run_id for o in skipped] == [outcome.run_id]
    assert [line for line in lines if "skipped" in line] == [
        f"[2/7] addition-h10 seed 0: already FINISHED in run {outcome.run_id} ({outcome.test_acc:.2f}%), "
        "skipped (--force re-runs)"]
    experiment_id = run.info.experiment_id
    assert len(client.search_runs([experiment_id], f"tags.{Tag.NOTEBOOK_REF} = 'addition-h10'")) == 1
    assert len(client.search_runs([experiment_id])) == 7

    # A different config (more epochs) is a new run; --force re-runs a finished one.
    reproduce(["addition-h10"], epochs=2, tracking_uri=tracking_uri, quiet=True, overrides=TINY, log=lines.append)
    reproduce(["addition-h10"], epochs=1, tracking_uri=tracking_uri, quiet=True, overrides=TINY, force=True,
              log=lines.append)
    keys = [r.data.tags[Tag.REPRODUCE_KEY]
            for r in client.search_runs([experiment_id], f"tags.{Tag.NOTEBOOK_REF} = 'addition-h10'")]
    assert len(keys) == 3 and len(set(keys)) == 2

    table = format_table(again)
    assert table.splitlines()[0].split()[:4] == ["experiment", "notebook", "%", "ours"]
    assert "addition-h5-len3" in table


def test_mnist_runs_and_report_section(tracking_uri, tmp_path):
    data = synthetic_mnist(200, 40)
    overrides = {**TINY, "hidden_size": 8, "batch_size": 50}
    reproduce(["mnist-gru", "addition-h3", "addition-h10"], epochs=1, seeds=2, tracking_uri=tracking_uri,
              quiet=True, overrides=overrides, task_data=data, log=lambda line: None)
    client = client_for(tracking_uri)
    # A tuned trial for addition x lstm shows up in the 'tuned' column; a study parent run does not.
    experiment = client.create_experiment("addition")
    trial = client.create_run(experiment, tags={Tag.SUITE: Suite.TUNE, Tag.ROLE: Role.TRIAL, Tag.TASK: "addition",
                                                  Tag.ARCH: "lstm", Tag.TRIAL_STATE: TrialState.COMPLETE})
    for key, value in {Metric.TEST_ACC: 0.9987, Metric.BEST_VAL_ACC: 0.999, Metric.BEST_VAL_LOSS: 0.01}.items():
        client.log_metric(trial.info.run_id, key, value)
    client.set_terminated(trial.info.run_id)

    figures = Figures(tmp_path / "figures")
    markdown = reproduction(load_snapshot(tracking_uri, timestamp=False), figures)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 3
    gru = next(line for line in rows if line.startswith("| GRU"))
    assert "| 97.06 |" in gru and "| 2 (" in gru
    h3 = next(line for line in rows if "hidden 3" in line)
    assert h3.rstrip(" |").endswith("99.87")
    assert (tmp_path / "figures" / "reproduce_hidden.png").exists()
    assert Image.open(tmp_path / "figures" / "reproduce_hidden.png").size[0] > 300
    assert "reproduce_hidden.png" in markdown and "reproduce_length" not in markdown
    assert figures.written == ["reproduce_hidden.png"]
    nothing = Snapshot(tracking_uri=tracking_uri, experiments=[], runs=[], studies={}, storage_note="")
    assert "No reproduction runs" in reproduction(nothing, Figures(tmp_path / "f"))


def test_the_comparison_reference_is_the_notebooks_base_configurations():
    assert NOTEBOOK_REFERENCE == {"mnist": {"rnn": 94.42, "lstm": 97.38, "gru": 97.06, "birnn": 95.60, "bilstm": 97.82},
                                  "addition": {"lstm": 100.0}}
    for task, values in NOTEBOOK_REFERENCE.items():
        for arch, value in values.items():
            (experiment,) = [e for e in EXPERIMENTS if e.reference and e.task == task and e.arch == arch]
            assert experiment.notebook == value and experiment.config().train_lengths == ()
    assert signed_points(-0.004) == "+0.00" and signed_points(0.126) == "+0.13" and signed_points(-1.5) == "-1.50"
