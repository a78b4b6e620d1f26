"""Model registry round trip in a temporary store: register, idempotence, alias moves, --model works."""

import mlflow.artifacts
import pytest
import torch
from conftest import synthetic_mnist, tiny_config, tracked_train
from PIL import Image

from benchmark import cli
from benchmark.champion import parse_reference, register_champion, resolve_model
from benchmark.checkpoint import load_checkpoint
from benchmark.config import ConfigError
from benchmark.schema import PYFUNC_CHECKPOINT
from benchmark.store import client_for
from benchmark.store import time as store_time


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    data = synthetic_mnist(300, 60)
    first = tracked_train(tiny_config("mnist", "lstm", epochs=1), uri, **data)
    second = tracked_train(tiny_config("mnist", "lstm", epochs=1, seed=1), uri, **data)
    addition = tracked_train(tiny_config("addition", "lstm", epochs=1, train_size=60), uri)
    return uri, first, second, addition


def test_register_is_idempotent_and_alias_moves(store):
    uri, first, second, _ = store
    info = register_champion(first, uri)
    assert info["name"] == "mnist-lstm" and info["alias"] == "champion"
    again = register_champion(first, uri)
    assert again["version"] == info["version"] and not again["created"]
    client = client_for(uri)
    assert len(client.search_model_versions("name = 'mnist-lstm'")) == 1
    assert resolve_model("mnist-lstm@champion", uri)["run_id"] == first

    moved = register_champion(second, uri)
    assert moved["created"] and moved["version"] == info["version"] + 1
    assert resolve_model("mnist-lstm@champion", uri)["run_id"] == second
    assert resolve_model(f"mnist-lstm/{info['version']}", uri)["run_id"] == first
    assert resolve_model("mnist-lstm", uri)["run_id"] == second  # latest version
    register_champion(first, uri)  # back to the first run: its old version, no new one
    assert resolve_model("mnist-lstm@champion", uri) == {**resolve_model(f"mnist-lstm/{info['version']}", uri)}
    assert len(client.search_model_versions("name = 'mnist-lstm'")) == 2


def test_registered_source_runs_at_any_batch_size_and_length(store, tmp_path):
    uri, _, _, addition = store
    info = register_champion(addition, uri)
    assert info["name"] == "addition-lstm"
    client = client_for(uri)
    version = client.get_model_version_by_alias("addition-lstm", "champion")
    assert version.source.startswith("models:/m-")  # a pyfunc model logged from the run
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == version.run_id
    folder = logged.artifact_location
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{folder}/{PYFUNC_CHECKPOINT}", dst_path=str(tmp_path),
                                                tracking_uri=uri)
    model, config = load_checkpoint(local)
    assert config.task == "addition"
    for batch, steps in ((1, 3), (7, 20), (2, 150)):
        assert model(torch.rand(batch, steps, 2)).shape == (batch, steps, 1)


def test_predict_with_model_alias_and_register_cli(store, tmp_path, capsys):
    uri, first, _, _ = store
    assert cli.main(["register", first, "--tracking-uri", uri]) == 0
    assert "mnist-lstm version" in capsys.readouterr().out
    image = synthetic_mnist(1, 1)["test_images"][0].numpy()
    Image.fromarray(image).save(tmp_path / "digit.png")
    code = cli.main(["predict", "--model", "mnist-lstm@champion", "--tracking-uri", uri, str(tmp_path / "digit.png")])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(str(tmp_path / "digit.png"))
    code = cli.main(["predict", "--model", "mnist-gru@champion", "--tracking-uri", uri, str(tmp_path / "digit.png")])
    err = capsys.readouterr().err
    assert code == 2 and "no registered model 'mnist-gru@champion'" in err and "mnist-lstm" in err


def test_bad_registrations(store):
    uri, *_ = store
    with pytest.raises(ConfigError, match="no run"):
        register_champion("f" * 32, uri)
    assert parse_reference("a-b@champion") == ("a-b", "champion", None)
    assert parse_reference("a-b/3") == ("a-b", None, "3")


def test_alias_race_on_postgres_is_retried_not_fatal(monkeypatch):
    """Two sessions registering at once: the loser's insert of the alias violates the unique key; it retries."""
    from mlflow.exceptions import MlflowException

    from benchmark import champion

    calls = []

    class Client:
        def set_registered_model_alias(self, name, alias, version):
            calls.append(version)
            if len(calls) == 1:
                raise MlflowException("(psycopg.errors.UniqueViolation) duplicate key value violates unique "
                                      "constraint \"registered_model_alias_pk\"")

    monkeypatch.setattr(store_time, "sleep", lambda seconds: None)
    champion._set_alias(Client(), "addition-gru", "champion", "3")
    assert calls == ["3", "3"]

    class Broken:
        def set_registered_model_alias(self, name, alias, version):
            raise MlflowException("RESOURCE_DOES_NOT_EXIST: no model")

    with pytest.raises(MlflowException, match="no model"):  # other errors are not swallowed
        champion._set_alias(Broken(), "addition-gru", "champion", "3")


def test_registering_draws_no_mlflow_download_bar(tmp_path, capfd, monkeypatch):
    """A study registers its best model between its last trial line and confirm's first; logging the pyfunc
    model downloads what it uploaded, and MLflow's bar for that broke the one-line-per-trial output."""
    import os

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tracked_train(tiny_config("addition", "gru", epochs=1, train_size=60), uri)
    capfd.readouterr()
    assert register_champion(run, uri)["created"]
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # put back as it was
