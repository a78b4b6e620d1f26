"""What the MLflow UI shows of a run: its experiment's kind, its dataset input, its name, its system metrics."""

import json
from pathlib import Path

import pytest
from conftest import synthetic_mnist, tiny_config, tracked_train
from test_tuning import AlwaysPrune, runs, study_file

from benchmark import cli, data
from benchmark.catalog import ADDITION_EVAL_LENGTHS
from benchmark.config import TrainConfig
from benchmark.schema import PRUNED_RUN_SUFFIX, DatasetTag, ExperimentTag
from benchmark.store import client_for, get_or_create_experiment
from benchmark.tasks.addition import TEST_PER_LENGTH, VAL_PER_LENGTH
from benchmark.tracking import trial_run_name
from benchmark.tuning import load_study, search

REPO_STUDIES = Path(__file__).resolve().parent.parent / "studies"


def train_run(uri, config, **data_kwargs):
    return client_for(uri).get_run(tracked_train(config, uri, **data_kwargs))


def dataset_of(run):
    (found,) = run.inputs.dataset_inputs
    return found.dataset, {tag.key: tag.value for tag in found.tags}


def test_every_experiment_opens_as_model_training(tracking_uri):
    client = client_for(tracking_uri)
    made = client.get_experiment(get_or_create_experiment(client, "addition"))
    assert made.tags[ExperimentTag.KIND] == ExperimentTag.KIND_TRAINING
    older = client.create_experiment("mnist")  # as an older rnnbench made it: no kind
    assert get_or_create_experiment(client, "mnist") == older
    assert client.get_experiment(older).tags[ExperimentTag.KIND] == ExperimentTag.KIND_TRAINING
    chosen = client.create_experiment("mine", tags={ExperimentTag.KIND: "genai_development"})
    get_or_create_experiment(client, "mine")
    assert client.get_experiment(chosen).tags[ExperimentTag.KIND] == "genai_development"  # a user's choice stays


def test_addition_run_logs_its_generator_as_dataset(tracking_uri):
    config = tiny_config("addition", train_size=60, epochs=1, seed=3)
    dataset, tags = dataset_of(train_run(tracking_uri, config))
    assert tags[DatasetTag.CONTEXT] == DatasetTag.ALL_SPLITS
    assert dataset.name == "addition-L1-6-to9"
    profile = json.loads(dataset.profile)
    assert profile["generator_seed"] == 3 and profile["train_lengths"] == "1-6" and profile["test_lengths"] == "1-6,9"
    assert (profile["train"], profile["val"], profile["test"]) == (60, 6 * VAL_PER_LENGTH, 7 * TEST_PER_LENGTH)
    other, _ = dataset_of(train_run(tracking_uri, config.replace(seed=4)))
    assert other.name == dataset.name and other.digest != dataset.digest  # another seed: other strings


def test_mnist_run_logs_its_data_digest_and_split_sizes(tracking_uri):
    images = synthetic_mnist(300, 60)
    dataset, _ = dataset_of(train_run(tracking_uri, tiny_config("mnist", epochs=1), **images))
    profile = json.loads(dataset.profile)
    assert dataset.name == "mnist" and len(dataset.digest) == 32 and profile["md5"] == dataset.digest
    assert (profile["train"], profile["val"], profile["test"]) == (250, 50, 60)
    subset, _ = dataset_of(train_run(tracking_uri, tiny_config("mnist", epochs=1, train_size=100), **images))
    assert subset.name == "mnist-train100" and subset.digest == dataset.digest  # the same images
    changed = dict(images, test_labels=(images["test_labels"] + 1) % 10)
    relabelled, _ = dataset_of(train_run(tracking_uri, tiny_config("mnist", epochs=1), **changed))
    assert relabelled.digest != dataset.digest


def test_trials_are_named_for_what_they_train_and_pruned_ones_say_so(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setattr(search, "make_pruner", lambda spec: AlwaysPrune())
    assert cli.main(["tune", study_file(tmp_path), "--arch", "lstm", "--trials", "1", "--tracking-uri", tracking_uri,
                     "--quiet"]) == 0
    (trial,), (parent,) = runs(tracking_uri, "trial"), runs(tracking_uri, "study")
    assert parent.info.run_name == "addition-lstm-quick"
    params = trial.data.params
    assert trial.info.run_name == f"lstm-h{params['hidden_size']}x{params['num_layers']}-t00{PRUNED_RUN_SUFFIX}"
    assert trial_run_name(tiny_config("mnist", hidden_size=128), 7) == "lstm-h128x1-t07"


def test_system_metrics_flag_logs_system_metrics(tracking_uri, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    assert cli.main(["train", "--task", "addition", "--arch", "gru", "--hidden-size", "4", "--epochs", "1",
                     "--train-size", "100", "--max-train-length", "4", "--tracking-uri", tracking_uri,
                     "--system-metrics", "--json"]) == 0
    run = client_for(tracking_uri).get_run(json.loads(capsys.readouterr().out)["run_id"])
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
    assert run.info.status == "FINISHED"


def test_system_metrics_without_psutil_is_one_line(tracking_uri, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("No module named 'psutil'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    code = cli.main(["train", "--task", "addition", "--arch", "gru", "--tracking-uri", tracking_uri,
                     "--system-metrics"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "system-metrics" in err and "psutil" in err
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()  # refused before the store was touched


def test_one_set_of_evaluation_lengths_for_train_and_studies(tmp_path):
    assert TrainConfig.for_task("addition", "lstm").eval_lengths == ADDITION_EVAL_LENGTHS
    shipped = load_study(str(REPO_STUDIES / "addition.toml"), "lstm")
    assert shipped.train_config({}).eval_lengths == ADDITION_EVAL_LENGTHS
    assert max(ADDITION_EVAL_LENGTHS) == 1000
    # A stored study made when the shipped file still spelled the lengths out keeps its fingerprint.
    spelled = tmp_path / "addition.toml"
    text = (REPO_STUDIES / "addition.toml").read_text().replace(
        "[fixed]\n", f"[fixed]\neval_lengths = {list(ADDITION_EVAL_LENGTHS)}\n", 1)
    spelled.write_text(text)
    assert load_study(str(spelled), "lstm").fingerprint() == shipped.fingerprint()


@pytest.fixture(autouse=True)
def _no_real_mnist(monkeypatch):
    monkeypatch.setattr(data, "load_mnist", lambda data_dir=None: pytest.fail("a test loaded real MNIST"))


def test_the_source_column_names_the_subcommand_and_nothing_else_of_the_command_line(tracking_uri, monkeypatch):
    from benchmark.schema import Tag
    from benchmark.tracking import source_name

    assert source_name(["--plugin", "cells.py", "tune", "studies/x.toml", "--storage", "postgresql://u:pw@h/db"]) \
        == "rnnbench tune"
    assert source_name(["--version"]) == "rnnbench"
    assert source_name(["/tmp/x y.toml"]) == "rnnbench"  # not a subcommand: no path or text of it shown
    monkeypatch.setattr("sys.argv", ["rnnbench", "train", "--task", "addition"])
    run = train_run(tracking_uri, tiny_config("addition", "gru", epochs=1))
    assert run.data.tags[Tag.MLFLOW_SOURCE_NAME] == "rnnbench train"
    assert run.data.tags[Tag.MLFLOW_SOURCE_TYPE] == "LOCAL"
