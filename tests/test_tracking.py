"""A tracked run in a temporary store has the params, metrics, steps, tags and artifacts promised."""

import json
import time

import pytest
import torch
from conftest import synthetic_mnist, tiny_config

from benchmark import cli, data
from benchmark.checkpoint import load_run_checkpoint
from benchmark.config import field_names
from benchmark.store import client_for
from benchmark.tasks import build_task


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_addition_run_is_fully_tracked(capsys, tracking_uri):
    code, out, _ = run_cli(capsys, "train", "--task", "addition", "--arch", "lstm", "--hidden-size", "8",
                           "--epochs", "2", "--train-size", "300", "--batch-size", "50", "--max-train-length", "5",
                           "--eval-lengths", "8", "12", "--tracking-uri", tracking_uri, "--json")
    assert code == 0
    summary = json.loads(out)
    assert set(summary) >= {"run_id", "task", "arch", "test_acc", "val_acc", "test_seq_acc", "test_bit_acc_by_len"}
    assert set(summary["test_bit_acc_by_len"]) == {"1", "2", "3", "4", "5", "8", "12"}

    client = client_for(tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "addition"
    assert set(run.data.params) == set(field_names())
    assert run.data.params["hidden_size"] == "8" and run.data.params["eval_lengths"] == "8,12"
    for tag in ("git_commit", "torch_version", "mlflow_version", "device", "seed"):
        assert tag in run.data.tags
    assert run.data.metrics["test_acc"] == pytest.approx(summary["test_acc"])

    train_loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in train_loss] == list(range(1, 2 * 6 + 1))  # 300 strings / 50 per batch, 2 epochs
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
    by_length = client.get_metric_history(run.info.run_id, "test_bit_acc_by_len")
    assert {m.step: m.value for m in by_length} == pytest.approx(
        {int(n): v for n, v in summary["test_bit_acc_by_len"].items()})

    artifacts = {a.path for folder in ("checkpoint", "curves", "metrics")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts == {"checkpoint/model.pt", "curves/learning_curve.png", "metrics/accuracy_by_length.csv"}

    # The run alone rebuilds the model, and it scores what was logged.
    model, config = load_run_checkpoint(summary["run_id"], tracking_uri)
    metrics = build_task(config, "cpu").evaluate(model, "test", config.loss)
    assert metrics["acc"] == pytest.approx(summary["test_acc"])


def test_mnist_run_through_cli(capsys, tracking_uri, monkeypatch):
    monkeypatch.setattr(data, "load_mnist", lambda data_dir=None: synthetic_mnist(300, 60))
    code, out, _ = run_cli(capsys, "train", "--task", "mnist", "--arch", "bigru", "--hidden-size", "8",
                           "--epochs", "1", "--batch-size", "50", "--tracking-uri", tracking_uri, "--json")
    assert code == 0
    summary = json.loads(out)
    assert "test_seq_acc" not in summary
    run = client_for(tracking_uri).get_run(summary["run_id"])
    # One GRU layer each way, 28 inputs, hidden 8: 3 gates x (8 x (28 + 8) weights + 2 x 8 biases) = 912 per
    # direction; the head reads both directions: 16 x 10 + 10. 2 x 912 + 170 = 1994.
    assert run.data.metrics["n_params"] == 1994
    assert {"epoch_time_s", "val_time_s"} <= set(run.data.metrics)
    model, config = load_run_checkpoint(summary["run_id"], tracking_uri)
    assert model(torch.rand(3, 28, 28)).shape == (3, 10)
    task = build_task(config, "cpu", **synthetic_mnist(300, 60))  # the run alone scores what was logged
    assert task.evaluate(model, "test", config.loss)["acc"] == pytest.approx(summary["test_acc"])


def test_failed_run_is_marked_failed_with_reason(tracking_uri, monkeypatch, capsys):
    from benchmark import train

    def explode(*args, **kwargs):
        raise train.NonFiniteLossError("training loss became non-finite at iteration 3 (epoch 1)")

    monkeypatch.setattr(train, "fit", explode)
    code, _, err = run_cli(capsys, "train", "--task", "addition", "--arch", "gru", "--tracking-uri", tracking_uri)
    assert code == 1 and "non-finite" in err
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name("addition")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["error"]


class EpochRecorder:
    """A tracker that keeps each epoch's training and validation seconds and ignores everything else."""

    def __init__(self):
        self.epochs = []

    def log_epoch(self, epoch, first_iteration, train_losses, val, seconds, val_seconds, task):
        self.epochs.append((seconds, val_seconds))

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


SLOW_VALIDATION_S = 1.0  # well above a tiny epoch's training, even on a loaded machine (0.86 s seen at load 3)


def slow_validation(task):
    evaluate = task.evaluate

    def slow(model, split, loss_name):
        if split == "val":
            time.sleep(SLOW_VALIDATION_S)
        return evaluate(model, split, loss_name)

    task.evaluate = slow
    return task


@pytest.mark.parametrize("together", [False, True], ids=["fit", "stacked seeds"])
def test_validation_time_is_logged_apart_from_the_epochs_training(together):
    from benchmark.stacked import build_seeds, fit_together
    from benchmark.train import fit

    configs = [tiny_config("addition", "gru", seed=seed, impl="loop") for seed in (1, 2)]
    recorders = [EpochRecorder(), EpochRecorder()]
    if together:
        seeds = build_seeds(configs, recorders)
        for seed in seeds:
            slow_validation(seed.task)
        fit_together(seeds, quiet=True)
    else:
        recorders = recorders[:1]
        fit(configs[0], slow_validation(build_task(configs[0], "cpu")), recorders[0], quiet=True)
    for recorder in recorders:
        assert len(recorder.epochs) == 2
        for seconds, val_seconds in recorder.epochs:
            assert val_seconds >= SLOW_VALIDATION_S and seconds < SLOW_VALIDATION_S


def test_a_dataset_another_worker_is_inserting_is_logged_on_the_next_try():
    """MLflow's log_inputs looks a dataset up, then inserts it; a worker that loses the race gets a
    UniqueViolation from the server and must try again, not fail its trial."""
    from mlflow.exceptions import MlflowException

    from benchmark.tracking import DATASET_ATTEMPTS, RunTracker

    class RacingClient:
        def __init__(self, losses):
            self.losses, self.calls = losses, 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.calls <= self.losses:
                raise MlflowException("(psycopg.errors.UniqueViolation) duplicate key value")

    tracker = RunTracker.__new__(RunTracker)
    tracker.run_id = "run"
    info = {"name": "addition", "digest": "abc", "source": "benchmark.tasks.addition"}
    tracker.client = RacingClient(losses=1)
    tracker.log_dataset(info)
    assert tracker.client.calls == 2
    tracker.client = RacingClient(losses=DATASET_ATTEMPTS)  # a store that keeps refusing still fails the run
    with pytest.raises(MlflowException):
        tracker.log_dataset(info)
    assert tracker.client.calls == DATASET_ATTEMPTS
