"""Checkpoints: what is not one of ours is refused in one line, and nothing in a file runs on load."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from benchmark import cli
from benchmark.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from benchmark.tracking import tracked_run
from benchmark.train import fit


class Boom:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("payload, message", [
    ({"hello": 1}, "not an rnnbench checkpoint (format None"),
    ([1, 2, 3], "not an rnnbench checkpoint (format 'list'"),
    ({"format": "rnnbench-checkpoint/1", "model": {}}, "a damaged rnnbench checkpoint (KeyError"),
])
def test_a_torch_file_that_is_not_ours_is_one_line(tmp_path, payload, message):
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        load_checkpoint(path)


def test_a_code_running_pickle_is_refused_without_torchs_advice(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"format": Boom()}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert "run code" in str(refused.value) and "weights_only=False" not in str(refused.value)
    assert "code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="not a readable torch file") as unreadable:
        load_checkpoint(tmp_path / "junk.pt")
    assert "weights_only" not in str(unreadable.value)


def test_predict_on_a_run_with_a_foreign_checkpoint_says_so_in_one_line(tmp_path, tracking_uri, mnist_data, capsys):
    config = tiny_config("mnist", epochs=1)
    with tracked_run(config, tracking_uri=tracking_uri) as tracker:
        fit(config, tracker=tracker, quiet=True, task_data=mnist_data)
    foreign = tmp_path / "model.pt"
    torch.save({"hello": 1}, foreign)
    tracker.client.log_artifact(tracker.run_id, str(foreign), "checkpoint")  # overwrites ours
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28), 0).save(image)
    code = cli.main(["predict", "--run", tracker.run_id, "--tracking-uri", tracking_uri, str(image)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not an rnnbench checkpoint" in err


def test_round_trip_rebuilds_the_same_function(tmp_path, mnist_data):
    config = tiny_config("mnist", epochs=1)
    result = fit(config, quiet=True, task_data=mnist_data)
    save_checkpoint(tmp_path / "model.pt", result.model, config)
    model, loaded = load_checkpoint(tmp_path / "model.pt")
    x = torch.randn(3, 28, 28)
    assert loaded == config
    torch.testing.assert_close(model(x), result.model.eval()(x))


@pytest.mark.parametrize("arch", ["lstm", "bigru"])
def test_a_checkpoint_from_before_the_cells_loads_into_the_one_model(tmp_path, arch):
    """Built-in architectures were once their own model class, whose weights were named ``rnn.*``; the same tensors
    now sit under ``cell.rnn.*`` and load with the same outputs."""
    from benchmark.models import Model

    torch.manual_seed(0)
    config = tiny_config("addition", arch)
    model = Model(arch, 2, 4, 1, readout="per_step").eval()
    save_checkpoint(tmp_path / "new.pt", model, config)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["state_dict"] = {key.removeprefix("cell."): value for key, value in payload["state_dict"].items()}
    assert any(key.startswith("rnn.") for key in payload["state_dict"])
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    x = torch.randn(3, 5, 2)
    assert torch.equal(loaded(x), model(x))


def test_a_run_checkpoint_loads_without_mlflow_download_bars(tracking_uri, capfd, monkeypatch):
    """The chosen trial is scored between a study's last trial line and confirm's first: a download bar there
    broke the one-line-per-trial output."""
    from benchmark.checkpoint import load_run_checkpoint

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    config = tiny_config("addition", epochs=1)
    with tracked_run(config, tracking_uri=tracking_uri) as tracker:
        result = fit(config, tracker=tracker, quiet=True)
    capfd.readouterr()
    model, loaded = load_run_checkpoint(tracker.run_id, tracking_uri)
    assert loaded == config
    x = torch.randint(0, 2, (3, 5, 2)).float()
    torch.testing.assert_close(model(x), result.model.eval()(x))
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err
    import os

    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # put back as it was
