"""The training loop: results, divergence, early stopping, schedules, checkpoints."""

import pytest
import torch
from conftest import tiny_config

from benchmark import cli
from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.tasks import build_task
from benchmark.train import NonFiniteLossError, fit


def test_fit_learns_synthetic_mnist_and_restores_best_epoch(mnist_data):
    config = tiny_config("mnist", "gru", epochs=3, batch_size=25, lr=2e-2)
    result = fit(config, quiet=True, task_data=mnist_data)
    assert result.test["acc"] > 0.5
    assert result.epochs_run == 3 and len(result.val_history) == 3
    assert len(result.train_losses) == 3 * 20  # 500 training images / batch 25
    best = max(result.val_history, key=lambda v: (v["acc"], -v["loss"]))
    assert result.val == pytest.approx({k: best[k] for k in ("loss", "acc")})
    assert result.val_history[result.best_epoch - 1] == best


def test_same_seed_same_result(mnist_data):
    config = tiny_config("mnist", "rnn", epochs=1)
    first = fit(config, quiet=True, task_data=mnist_data)
    second = fit(config, quiet=True, task_data=mnist_data)
    assert first.train_losses == second.train_losses


def test_non_finite_loss_stops_with_clear_error(mnist_data):
    config = tiny_config("mnist", "lstm", epochs=2, batch_size=10)
    task = build_task(config, "cpu", **mnist_data)
    real_loss, calls = task.loss, []

    def diverging_loss(name, logits, batch):
        if torch.is_grad_enabled():  # training steps only, not validation
            calls.append(1)
        total, count = real_loss(name, logits, batch)
        return (total * float("nan") if len(calls) == 57 and torch.is_grad_enabled() else total), count

    task.loss = diverging_loss
    with pytest.raises(NonFiniteLossError, match="non-finite at iteration 57 .*lower --lr"):
        fit(config, task=task, quiet=True)
    assert len(calls) <= 100, "divergence must be caught within the check window, not at the end"


def test_an_overflowing_learning_rate_fails_the_run_in_one_line(tracking_uri, capsys):
    argv = ["train", "--task", "addition", "--arch", "lstm", "--lr", "1e38", "--epochs", "1", "--train-size", "200",
            "--quiet", "--tracking-uri", tracking_uri]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optimizer step overflowed at iteration 1" in err and "lower --lr" in err
    from benchmark.store import client_for, search_runs

    (run,) = search_runs(client_for(tracking_uri))
    assert run.info.status == "FAILED" and "overflowed" in run.data.tags["error"]


# Validation (acc, loss) per epoch, scripted. A better score is a higher accuracy, or the same accuracy with a
# lower loss; a tie is no improvement. Improvements: epochs 1, 2, 4, 8 and 9 (3 and 6 tie with 2 and 4).
SCRIPTED_VAL = [(0.5, 1.0), (0.6, 1.0), (0.6, 1.0), (0.6, 0.9), (0.5, 0.5),
                (0.6, 0.9), (0.6, 0.95), (0.7, 0.9), (0.7, 0.8), (0.65, 0.1)]


@pytest.mark.parametrize(("early_stop", "stops_after", "best_epoch"), [
    (1, 3, 2),  # epoch 3 ties epoch 2: one epoch without improvement
    (2, 6, 4),  # the last improvement at 4, then 5 and 6 without
    (3, 7, 4),
    (0, 10, 9),  # off: every epoch runs
])
def test_early_stopping_stops_exactly_early_stop_epochs_after_the_last_improvement(early_stop, stops_after,
                                                                                    best_epoch):
    config = tiny_config("addition", "gru", epochs=len(SCRIPTED_VAL), early_stop=early_stop)
    task = build_task(config, "cpu")
    real_evaluate, scripted = task.evaluate, iter(SCRIPTED_VAL)

    def evaluate(model, split, loss_name):
        if split != "val":
            return real_evaluate(model, split, loss_name)
        acc, loss = next(scripted)
        return {"acc": acc, "loss": loss}

    task.evaluate = evaluate
    result = fit(config, task=task, quiet=True)
    assert result.epochs_run == stops_after and len(result.val_history) == stops_after
    assert result.best_epoch == best_epoch
    assert result.val == {"acc": SCRIPTED_VAL[best_epoch - 1][0], "loss": SCRIPTED_VAL[best_epoch - 1][1]}


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_and_adamw_train(schedule):
    # An untrained model scores a bit loss of about ln 2 = 0.69 and the majority bit's accuracy (0.61 here).
    config = tiny_config("addition", "gru", schedule=schedule, optimizer="adamw", weight_decay=1e-4,
                         clip_grad=1.0, epochs=4, lr=5e-2, train_size=1000, hidden_size=16, batch_size=25)
    result = fit(config, quiet=True)
    assert result.epochs_run == 4
    assert result.test["loss"] < 0.3 and result.test["acc"] > 0.9, result.test


@pytest.mark.parametrize("arch", ["lstm", "bigru"])
def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, arch):
    config = tiny_config("addition", arch, epochs=1)
    result = fit(config, quiet=True)
    save_checkpoint(tmp_path / "model.pt", result.model, config, best_epoch=1)
    model, loaded_config = load_checkpoint(tmp_path / "model.pt")
    assert loaded_config == config
    task = build_task(config, "cpu")
    x, _, lengths = task.split("test")
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, lengths), result.model(x, lengths))
    assert model.cell.rnn.hidden_size == config.hidden_size


def test_the_fused_build_happens_before_the_first_epoch_clock(monkeypatch):
    from benchmark import fused

    module = fused.load()  # the real build (cached), returned by the slow stand-in below
    builds = []

    def slow_build(library):
        builds.append(library)
        import time
        time.sleep(1.5)  # a compile that would dominate this tiny epoch if it were timed
        return module

    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setattr(fused, "cached_library", lambda key=None: fused.cache_dir() / "absent.so")
    monkeypatch.setattr(fused, "_build", slow_build)
    config = tiny_config("addition", "lstm", hidden_size=64, epochs=1)  # auto runs fused from hidden 64 on
    result = fit(config, quiet=True)
    assert len(builds) == 1
    assert result.epoch_seconds[0] < 1.5
